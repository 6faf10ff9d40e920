//! [`Recorder`]: how a controller explains itself — `Event` objects about the objects it acts on, as `kubectl describe`
//! shows them.
//!
//! A repeat of the same event (same object, type, reason and message) from the same recorder is not a new object: the
//! existing one gets `count + 1` and a new `lastTimestamp`, as Kubernetes' event correlator does. Events about
//! cluster-scoped objects go to the `default` namespace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use agora_client::{Api, Client, Patch, PatchParams, PostParams};
use agora_schemas::coordination::MAX_EVENT_MESSAGE_BYTES;
use agora_schemas::{Event, EventSource, EventType, ObjectMeta, ObjectReference, Resource};
use jiff::Timestamp;
use serde_json::json;

/// Repeated events remembered for aggregation; beyond this the oldest half is forgotten (a repeat then starts a new
/// Event object, which is harmless).
const REMEMBERED: usize = 4096;

/// Who reports: the component (`marathon`) and the replica (`host-1`, or a pod-like identity).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reporter {
    /// The controller's name.
    pub component: String,
    /// The replica, when there are several.
    pub instance: Option<String>,
}

impl Reporter {
    /// A reporter named `component`, on this `instance`.
    #[must_use]
    pub fn new(component: &str, instance: Option<&str>) -> Self {
        Self { component: component.to_owned(), instance: instance.map(str::to_owned) }
    }
}

/// One thing that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `Normal` or `Warning`.
    pub type_: EventType,
    /// A PascalCase word: `Scheduled`, `Killing`, `LabelUpdated`.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
}

impl Record {
    /// A routine event.
    #[must_use]
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        Self { type_: EventType::Normal, reason: reason.to_owned(), message: message.into() }
    }

    /// Something went wrong.
    #[must_use]
    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        Self { type_: EventType::Warning, reason: reason.to_owned(), message: message.into() }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    kind: String,
    name: String,
    uid: Option<String>,
    reason: String,
    normal: bool,
    message: String,
}

#[derive(Clone)]
struct Seen {
    name: String,
    count: i32,
    sequence: u64,
}

/// Writes events. Cheap to clone; clones share the aggregation memory.
///
/// ```no_run
/// # async fn run(app: agora_schemas::App) -> agora_client::Result<()> {
/// use agora_client::Client;
/// use agora_controllers::runtime::events::{Record, Recorder, Reporter, reference};
///
/// let recorder = Recorder::new(Client::try_default()?, Reporter::new("my-controller", Some("replica-1")));
/// recorder.publish(&reference(&app), Record::normal("Scaled", "scaled to 3 instances")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    seen: Arc<Mutex<(HashMap<Key, Seen>, u64)>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("reporter", &self.reporter).finish_non_exhaustive()
    }
}

/// A reference to `object`, for [`Recorder::publish`].
#[must_use]
pub fn reference<K: Resource>(object: &K) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(agora_schemas::API_VERSION.to_owned()),
        kind: K::KIND.to_owned(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

impl Recorder {
    /// A recorder writing through `client` as `reporter`.
    #[must_use]
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter, seen: Arc::default() }
    }

    /// Records `record` about `object`: a new Event, or one more count on the same event published before.
    ///
    /// # Errors
    /// The apiserver's refusal or absence; callers usually log it and go on (an event is never worth failing for).
    pub async fn publish(&self, object: &ObjectReference, record: Record) -> agora_client::Result<()> {
        let namespace = object.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".to_owned());
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let message = truncate(&record.message, MAX_EVENT_MESSAGE_BYTES);
        let key = Key {
            namespace,
            kind: object.kind.clone(),
            name: object.name.clone(),
            uid: object.uid.clone(),
            reason: record.reason.clone(),
            normal: record.type_ == EventType::Normal,
            message: message.clone(),
        };
        let now = Timestamp::now();
        let seen = self.lock().0.get(&key).cloned();
        if let Some(seen) = seen {
            let patch = Patch::Merge(json!({ "count": seen.count + 1, "lastTimestamp": now }));
            match events.patch(&seen.name, &PatchParams::default(), &patch).await {
                Ok(_) => {
                    self.remember(key, seen.name, seen.count + 1);
                    return Ok(());
                }
                // Deleted meanwhile (events expire): start a new one.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let mut object = object.clone();
        object.namespace = object.namespace.filter(|n| !n.is_empty());
        // `<object>.<time>`, within the 253 characters a name may have.
        let prefix: String = object.name.chars().take(200).collect();
        let name = format!("{}.{:x}", prefix.trim_end_matches('.'), now.as_nanosecond());
        let meta = ObjectMeta::named(Some(&key.namespace), &name);
        let event = Event {
            api_version: agora_schemas::API_VERSION.to_owned(),
            kind: "Event".to_owned(),
            metadata: meta,
            involved_object: object,
            reason: record.reason,
            message: Some(message),
            type_: Some(record.type_),
            count: Some(1),
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(self.reporter.component.clone()),
                host: self.reporter.instance.clone(),
            }),
        };
        events.create(&PostParams::default(), &event).await?;
        self.remember(key, name, 1);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<Key, Seen>, u64)> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, key: Key, name: String, count: i32) {
        let mut guard = self.lock();
        let (seen, sequence) = &mut *guard;
        *sequence += 1;
        seen.insert(key, Seen { name, count, sequence: *sequence });
        if seen.len() > REMEMBERED {
            let cutoff = *sequence - (REMEMBERED as u64) / 2;
            seen.retain(|_, s| s.sequence > cutoff);
        }
    }
}

/// `message` cut to at most `limit` bytes on a character boundary, marked with `…` when cut.
fn truncate(message: &str, limit: usize) -> String {
    if message.len() <= limit {
        return message.to_owned();
    }
    let mut end = limit.saturating_sub('…'.len_utf8());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Records to publish, sent from anywhere without waiting: a publisher in the background writes them.
#[derive(Clone, Debug)]
pub struct Events(tokio::sync::mpsc::UnboundedSender<(ObjectReference, Record)>);

impl Events {
    /// The sender, and its publisher (running until dropped) writing Events as `reporter`.
    #[must_use]
    pub fn spawn(client: Client, reporter: Reporter) -> (Self, crate::runtime::AbortOnDrop) {
        let (events, published) = tokio::sync::mpsc::unbounded_channel();
        let publisher = tokio::spawn(publish_all(Recorder::new(client, reporter), published));
        (Self(events), crate::runtime::AbortOnDrop(publisher.abort_handle()))
    }

    /// Publishes `record` about `object` (dropped once the publisher is gone).
    pub fn send<K: Resource>(&self, object: &K, record: Record) {
        let _ = self.0.send((reference(object), record));
    }
}

/// Publishes every `(object, record)` sent on `events`, several at once, until the senders are gone (an Event that
/// cannot be written is logged and dropped: never worth stalling a controller for).
async fn publish_all(recorder: Recorder, mut events: tokio::sync::mpsc::UnboundedReceiver<(ObjectReference, Record)>) {
    use futures::StreamExt;
    futures::stream::poll_fn(move |cx| events.poll_recv(cx))
        .for_each_concurrent(16, |(object, record)| {
            let recorder = recorder.clone();
            async move {
                if let Err(e) = recorder.publish(&object, record).await {
                    tracing::debug!(error = %e, "event not published");
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let message = "é".repeat(3000); // 6000 bytes
        let cut = truncate(&message, MAX_EVENT_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_EVENT_MESSAGE_BYTES);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
    }
}
