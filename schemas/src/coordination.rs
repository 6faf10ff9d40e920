//! `Lease` (leader election and agent heartbeats, as Kubernetes' `coordination.k8s.io` Lease) and `Event` (how every
//! component explains what it did, as Kubernetes' core Event).

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Resource;
use crate::meta::{ObjectMeta, ObjectReference};
use crate::validation::{NameRule, Path, Validator};

/// How Leases are printed.
pub const LEASE_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new("Holder", "string", "Who holds it.", Cell::Path("/spec/holderIdentity")),
        Column::new("Renewed", "string", "How long ago it was renewed.", Cell::Age("/spec/renewTime")),
        Column::new("Duration", "integer", "Seconds it lasts unrenewed.", Cell::Path("/spec/leaseDurationSeconds"))
            .wide(),
    ]
};

crate::object! {
    /// A lock with a time limit: the holder renews it; when it lapses, another may take it.
    Lease {
        spec: LeaseSpec,
        plural: "leases",
        singular: "lease",
        short_names: [],
        namespaced: true,
        subresources: [],
        field_selectors: [],
        name_rule: Subdomain,
        columns: LEASE_COLUMNS,
    }
}

/// Who holds the lease, since when, for how long.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseSpec {
    /// The holder's identity (a controller replica, an agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long after `renewTime` the lease lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    /// When the current holder took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<Timestamp>,
    /// When the holder last renewed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<Timestamp>,
    /// How many times it changed hands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
}

impl LeaseSpec {
    /// Leases have no defaults.
    pub fn apply_defaults(&mut self) {}

    /// A positive duration, a non-negative transition count.
    pub fn validate(&self, v: &mut Validator, path: &Path, _meta: &ObjectMeta) {
        if let Some(d) = self.lease_duration_seconds.filter(|d| *d <= 0) {
            v.invalid(&path.field("leaseDurationSeconds"), format!("must be greater than 0 (got {d})"));
        }
        if let Some(t) = self.lease_transitions.filter(|t| *t < 0) {
            v.invalid(&path.field("leaseTransitions"), format!("must be greater than or equal to 0 (got {t})"));
        }
    }

    /// True when the lease has a holder whose last renewal is less than the duration ago.
    #[must_use]
    pub fn is_held_at(&self, now: Timestamp) -> bool {
        match (&self.holder_identity, self.renew_time, self.lease_duration_seconds) {
            (Some(holder), Some(renewed), Some(duration)) if !holder.is_empty() => {
                now < renewed + jiff::SignedDuration::from_secs(i64::from(duration))
            }
            _ => false,
        }
    }
}

/// Something that happened to an object, told by the component that did it. Repeats are counted, not duplicated.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = Event::schema_defaults)]
pub struct Event {
    /// `agora/v1`.
    pub api_version: String,
    /// `Event`.
    pub kind: String,
    /// Name (usually `<object>.<unique suffix>`) and namespace (the object's).
    pub metadata: ObjectMeta,
    /// The object it is about.
    pub involved_object: ObjectReference,
    /// A PascalCase word: `Scheduled`, `Killing`, `BackOff`, `Unhealthy`, `MissedRun`.
    pub reason: String,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<EventType>,
    /// How many times it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    /// The first time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<Timestamp>,
    /// The latest time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Timestamp>,
    /// The component (and host) that reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EventSource>,
}

/// Whether an event is routine or a problem.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Something went wrong.
    Warning,
}

/// Who reported an event.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSource {
    /// `marathon`, `chronos`, `allocator`, `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The host it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The longest event message kept, in bytes (longer ones are rejected; the recorder shortens them first).
pub const MAX_EVENT_MESSAGE_BYTES: usize = 4096;

crate::defaults!(Event { type_: EventType = EventType::Normal, count: i32 = 1 });

/// How Events are printed, as `kubectl get events` shows them.
pub const EVENT_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new("Last Seen", "string", "How long ago it last happened.", Cell::Age("/lastTimestamp")),
        Column::new("Type", "string", "Normal or Warning.", Cell::Path("/type")),
        Column::new("Reason", "string", "Why, in one word.", Cell::Path("/reason")),
        Column::new(
            "Object",
            "string",
            "What it is about.",
            Cell::With(|e, _| {
                match (
                    e.pointer("/involvedObject/kind").and_then(serde_json::Value::as_str),
                    e.pointer("/involvedObject/name").and_then(serde_json::Value::as_str),
                ) {
                    (Some(kind), Some(name)) => serde_json::json!(format!("{}/{name}", kind.to_ascii_lowercase())),
                    _ => serde_json::Value::Null,
                }
            }),
        ),
        Column::new("Message", "string", "What happened.", Cell::Path("/message")),
        Column::new("Count", "integer", "How many times.", Cell::Path("/count")).wide(),
        Column::new("Source", "string", "Who reported it.", Cell::Path("/source/component")).wide(),
    ]
};

impl Resource for Event {
    const KIND: &'static str = "Event";
    const PLURAL: &'static str = "events";
    const SINGULAR: &'static str = "event";
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const NAMESPACED: bool = true;
    const SUBRESOURCES: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[
        "involvedObject.kind",
        "involvedObject.name",
        "involvedObject.namespace",
        "involvedObject.uid",
        "reason",
        "type",
    ];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [crate::columns::Column] = EVENT_COLUMNS;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn apply_defaults(&mut self) {
        self.fill_defaults();
    }
    fn validate_spec(&self, v: &mut Validator) {
        let at = Path::root("involvedObject");
        if self.involved_object.kind.is_empty() {
            v.required(&at.field("kind"), "the kind of the object the event is about is required");
        }
        if self.involved_object.name.is_empty() {
            v.required(&at.field("name"), "the name of the object the event is about is required");
        }
        if self.reason.is_empty() {
            v.required(&Path::root("reason"), "a PascalCase reason is required (e.g. \"Scheduled\")");
        } else if !self.reason.chars().all(|c| c.is_ascii_alphanumeric()) {
            v.invalid(
                &Path::root("reason"),
                format!("\"{}\" must be one PascalCase word (letters and digits)", self.reason),
            );
        }
        if let Some(message) = self.message.as_ref().filter(|m| m.len() > MAX_EVENT_MESSAGE_BYTES) {
            v.push(
                &Path::root("message"),
                crate::FieldErrorKind::TooLong,
                format!("must be at most {MAX_EVENT_MESSAGE_BYTES} bytes (has {})", message.len()),
            );
        }
        if let Some(count) = self.count.filter(|c| *c < 1) {
            v.invalid(&Path::root("count"), format!("must be at least 1 (got {count})"));
        }
    }
    fn type_meta(&self) -> (&str, &str) {
        (&self.api_version, &self.kind)
    }
}
