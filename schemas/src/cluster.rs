//! The cluster-scoped kinds of the two-level scheduler: `Agent` (a machine and what it offers), `Framework` (a
//! scheduler that receives offers) and `Offer` (resources of one agent offered to one framework).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{PortRange, Resources, validate_role};
use crate::meta::{Condition, ObjectMeta};
use crate::validation::{FieldErrorKind, Path, Validator, check_qualified_name};

/// An agent's Status cell: `Ready`, `NotReady` or `Unknown` (no Ready condition yet), then `,SchedulingDisabled`
/// when it is cordoned.
fn agent_status(agent: &serde_json::Value, _: jiff::Timestamp) -> serde_json::Value {
    let ready = match crate::columns::condition(agent, "Ready").as_str() {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    };
    let cordoned = agent.pointer("/spec/unschedulable").and_then(serde_json::Value::as_bool) == Some(true);
    serde_json::Value::String(if cordoned { format!("{ready},SchedulingDisabled") } else { ready.to_owned() })
}

/// How Agents are printed: readiness and how much of each is allocated.
pub const AGENT_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new(
            "Status",
            "string",
            "Ready or NotReady (the Ready condition), and SchedulingDisabled when cordoned, as kubectl shows nodes.",
            Cell::With(agent_status),
        ),
        Column::new(
            "CPUs",
            "string",
            "CPUs allocated of the total.",
            Cell::With(|agent, _| crate::columns::used_of(agent, "cpus")),
        ),
        Column::new(
            "Mem",
            "string",
            "Memory (MiB) allocated of the total.",
            Cell::With(|agent, _| crate::columns::used_of(agent, "mem")),
        ),
        Column::new(
            "Disk",
            "string",
            "Disk (MiB) allocated of the total.",
            Cell::With(|agent, _| crate::columns::used_of(agent, "disk")),
        )
        .wide(),
        Column::new("Cordoned", "boolean", "Whether new tasks are kept off it.", Cell::Path("/spec/unschedulable"))
            .wide(),
        Column::new("Hostname", "string", "The machine's hostname.", Cell::Path("/status/hostname")).wide(),
        Column::new("Address", "string", "Where the agent serves logs and health.", Cell::Path("/status/address"))
            .wide(),
        Column::new("Version", "string", "The agent's version.", Cell::Path("/status/version")).wide(),
    ]
};

crate::object! {
    /// A machine that runs tasks: what it has, how it is labelled, and whether it is reachable.
    Agent {
        spec: AgentSpec,
        status: AgentStatus,
        plural: "agents",
        singular: "agent",
        short_names: ["ag"],
        namespaced: false,
        subresources: ["status"],
        field_selectors: [],
        name_rule: Subdomain,
        columns: AGENT_COLUMNS,
    }
}

/// What an agent offers, written by the agent at registration (and by operators for `unschedulable`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = AgentSpec::schema_defaults)]
pub struct AgentSpec {
    /// Everything the agent has, reservations included.
    pub resources: Resources,
    /// Parts of `resources` reserved for a role: offered only to frameworks of that role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reservations: BTreeMap<String, Resources>,
    /// Labels for placement constraints (`rack: a`, `zone: z1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// An unschedulable agent gets no new tasks; running ones stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<bool>,
}

crate::defaults!(AgentSpec { unschedulable: bool = false });

impl AgentSpec {
    /// Sets every unset field to its default.
    pub fn apply_defaults(&mut self) {
        self.fill_defaults();
    }

    /// Checks amounts, port ranges, reservations (within the total) and attribute names.
    pub fn validate(&self, v: &mut Validator, path: &Path, _meta: &ObjectMeta) {
        self.resources.validate(v, &path.field("resources"));
        let mut reserved = Resources::default();
        for (role, r) in &self.reservations {
            let at = path.field("reservations").key(role);
            validate_role(v, &at, role);
            if role == "*" {
                v.invalid(&at, "\"*\" is the unreserved role; reservations are for named roles");
            }
            r.validate(v, &at);
            reserved.cpus += r.cpus;
            reserved.mem += r.mem;
            reserved.disk += r.disk;
            for (i, range) in r.ports.iter().enumerate() {
                let inside = self.resources.ports.iter().any(|total| total.0 <= range.0 && range.1 <= total.1);
                if !inside {
                    v.invalid(
                        &at.field("ports").index(i),
                        format!("[{}, {}] is not within the agent's ports", range.0, range.1),
                    );
                }
            }
        }
        for (field, sum, total) in [
            ("cpus", reserved.cpus, self.resources.cpus),
            ("mem", reserved.mem, self.resources.mem),
            ("disk", reserved.disk, self.resources.disk),
        ] {
            if sum > total {
                v.invalid(
                    &path.field("reservations"),
                    format!("reserve {sum} {field} in all, more than the agent has ({total})"),
                );
            }
        }
        for (key, value) in &self.attributes {
            let at = path.field("attributes").key(key);
            if let Err(why) = check_qualified_name(key) {
                v.invalid(&at, why);
            }
            if value.is_empty() {
                v.required(&at, "an attribute needs a value");
            }
        }
    }
}

/// What is observed of an agent: where it is, what is allocated, whether it is reachable.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentStatus {
    /// The machine's hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The agent's own endpoint (`https://10.0.0.5:5051`), for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The CA (PEM) that signed the certificate the agent's HTTPS endpoint presents: the apiserver trusts exactly
    /// this when it proxies a log there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// Resources held by non-terminal tasks and outstanding offers (kept by the allocator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Resources>,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `Ready`, `Unreachable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How Frameworks are printed: their roles, weight, dominant share and whether they are connected.
pub const FRAMEWORK_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new(
            "Roles",
            "string",
            "The roles it takes offers for.",
            Cell::With(|f, _| crate::columns::joined(f.pointer("/spec/roles"), None)),
        ),
        Column::new("Weight", "number", "Its weight in fair sharing.", Cell::Path("/spec/weight")),
        Column::new(
            "Share",
            "string",
            "Its dominant share of the cluster.",
            Cell::With(|f, _| crate::columns::share(f)),
        ),
        Column::new(
            "Connected",
            "string",
            "The Connected condition.",
            Cell::With(|f, _| crate::columns::condition(f, "Connected")),
        ),
        Column::new("Offers", "integer", "Offers outstanding to it.", Cell::Path("/status/outstandingOffers")).wide(),
        Column::new("Suppressed", "boolean", "Whether it asked for no offers.", Cell::Path("/spec/suppressed")).wide(),
        Column::new("Last Seen", "string", "How long ago it was last heard from.", Cell::Age("/status/lastSeen"))
            .wide(),
    ]
};

crate::object! {
    /// A scheduler that receives offers: the built-in marathon and chronos, or your own.
    Framework {
        spec: FrameworkSpec,
        status: FrameworkStatus,
        plural: "frameworks",
        singular: "framework",
        short_names: ["fw"],
        namespaced: false,
        subresources: ["status"],
        field_selectors: [],
        name_rule: Subdomain,
        columns: FRAMEWORK_COLUMNS,
    }
}

/// How a framework takes part in allocation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = FrameworkSpec::schema_defaults)]
pub struct FrameworkSpec {
    /// The roles whose resources (and reservations) it may use; `*` is the unreserved pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Its weight in Dominant Resource Fairness: a weight of 2 gets twice the share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The user its tasks run as, when they do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// How long its tasks keep running after it stops renewing its registration, seconds (default one week; Mesos'
    /// 0 kills everything at the first hiccup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout_seconds: Option<u64>,
    /// A suppressed framework gets no offers (it needs nothing now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<bool>,
    /// Revive: offers declined before this time no longer filter their agents for the framework (set it to now,
    /// with `suppressed: false`, to be offered everything again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revived_at: Option<Timestamp>,
}

crate::defaults!(FrameworkSpec {
    roles: Vec<String> = vec!["*".to_owned()],
    weight: f64 = 1.0,
    failover_timeout_seconds: u64 = 7 * 24 * 3600,
    suppressed: bool = false,
});

impl FrameworkSpec {
    /// Sets every unset field to its default.
    pub fn apply_defaults(&mut self) {
        self.fill_defaults();
    }

    /// Roles valid and unique, weight positive.
    pub fn validate(&self, v: &mut Validator, path: &Path, _meta: &ObjectMeta) {
        let roles = self.roles();
        if roles.is_empty() {
            v.required(&path.field("roles"), "at least one role is needed (\"*\" for the unreserved pool)");
        }
        let mut seen = BTreeSet::new();
        for (i, role) in roles.iter().enumerate() {
            validate_role(v, &path.field("roles").index(i), role);
            if !seen.insert(role) {
                v.push(&path.field("roles").index(i), FieldErrorKind::Duplicate, format!("\"{role}\" is listed twice"));
            }
        }
        v.positive(&path.field("weight"), self.weight());
    }
}

/// What the allocator observes of a framework.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrameworkStatus {
    /// Resources held by its non-terminal tasks and outstanding offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Resources>,
    /// Its dominant share divided by its weight: DRF offers to the lowest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dominant_share: Option<f64>,
    /// Its offers now outstanding.
    #[serde(default)]
    pub outstanding_offers: u32,
    /// When it last renewed its registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// `Registered`, `Connected`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How Roles are printed.
pub const ROLE_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new("Weight", "number", "Its weight in fair sharing.", Cell::Path("/spec/weight")),
        Column::new(
            "Share",
            "string",
            "Its dominant share of the cluster.",
            Cell::With(|r, _| crate::columns::share(r)),
        ),
        Column::new(
            "Allocated",
            "string",
            "What its frameworks hold.",
            Cell::With(|r, _| crate::columns::resources(r.pointer("/status/allocated"))),
        )
        .wide(),
        Column::new(
            "Quota",
            "string",
            "Its guaranteed resources.",
            Cell::With(|r, _| crate::columns::resources(r.pointer("/spec/quota/guarantee"))),
        )
        .wide(),
    ]
};

crate::object! {
    /// A role's place in Dominant Resource Fairness: its weight and its quota. Roles nest by name (`eng/web` under
    /// `eng`); the Role object of role `eng/web` is named `eng.web` (a `/` is written `.`, since names are DNS
    /// subdomains). A role without a Role object has weight 1 and no quota.
    Role {
        spec: RoleSpec,
        status: RoleStatus,
        plural: "roles",
        singular: "role",
        short_names: [],
        namespaced: false,
        subresources: ["status"],
        field_selectors: [],
        name_rule: Subdomain,
        columns: ROLE_COLUMNS,
    }
}

impl Role {
    /// The role this object describes (`eng/web` for the object `eng.web`).
    #[must_use]
    pub fn role(&self) -> String {
        role_of_object(self.metadata.name.as_deref().unwrap_or_default())
    }
}

/// The role a Role object's name stands for: each `.` is a `/`.
#[must_use]
pub fn role_of_object(name: &str) -> String {
    name.replace('.', "/")
}

/// The name of the Role object of `role`: each `/` is a `.`.
#[must_use]
pub fn role_object_name(role: &str) -> String {
    role.replace('/', ".")
}

/// A role's weight and quota.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = RoleSpec::schema_defaults)]
pub struct RoleSpec {
    /// Its weight in Dominant Resource Fairness against its sibling roles: a weight of 2 gets twice the share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// What it is guaranteed and what it may never exceed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

crate::defaults!(RoleSpec { weight: f64 = 1.0 });

/// A role's quota, over its whole subtree (`eng` counts `eng/web`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quota {
    /// Offered to the role before any role gets its fair share, and held back from others while unmet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarantee: Option<QuotaResources>,
    /// Never offered beyond. Must be at least the guarantee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<QuotaResources>,
}

/// Amounts of a quota: a kind not named is no guarantee of it (0) or no limit on it (unbounded).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaResources {
    /// CPU shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<f64>,
    /// Disk in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<f64>,
}

/// The most a quota may name of a kind (a cluster of 100,000 machines at the machine bounds).
const MAX_QUOTA: f64 = 1e15;

impl QuotaResources {
    fn kinds(&self) -> [(&'static str, Option<f64>); 3] {
        [("cpus", self.cpus), ("mem", self.mem), ("disk", self.disk)]
    }

    fn validate(&self, v: &mut Validator, path: &Path) {
        for (field, value) in self.kinds() {
            if let Some(value) = value {
                v.in_range(&path.field(field), value, 0.0, MAX_QUOTA);
            }
        }
    }
}

impl RoleSpec {
    /// Sets every unset field to its default.
    pub fn apply_defaults(&mut self) {
        self.fill_defaults();
    }

    /// The name is a role's; weight positive; quota amounts in range, and no guarantee above its limit.
    pub fn validate(&self, v: &mut Validator, path: &Path, meta: &ObjectMeta) {
        if let Some(name) = meta.name.as_deref() {
            let role = role_of_object(name);
            validate_role(v, &Path::root("metadata").field("name"), &role);
        }
        v.positive(&path.field("weight"), self.weight());
        let Some(quota) = &self.quota else { return };
        let at = path.field("quota");
        if let Some(g) = &quota.guarantee {
            g.validate(v, &at.field("guarantee"));
        }
        if let Some(l) = &quota.limit {
            l.validate(v, &at.field("limit"));
        }
        if let (Some(g), Some(l)) = (&quota.guarantee, &quota.limit) {
            for ((field, g), (_, l)) in g.kinds().into_iter().zip(l.kinds()) {
                if let (Some(g), Some(l)) = (g, l)
                    && g > l
                {
                    v.invalid(
                        &at.field("guarantee").field(field),
                        format!("the guarantee ({g}) is more than the limit ({l})"),
                    );
                }
            }
        }
    }
}

/// What the allocator observes of a role (its whole subtree).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleStatus {
    /// Resources held by its frameworks' non-terminal tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Resources>,
    /// Resources in its frameworks' outstanding offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered: Option<Resources>,
    /// What it holds (tasks and offers) as its largest share of the cluster, divided by its weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dominant_share: Option<f64>,
    /// `QuotaGuaranteeMet`, `AtQuotaLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How Offers are printed: to whom, from where, what, and in what phase.
pub const OFFER_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new("Framework", "string", "The framework offered to.", Cell::Path("/spec/framework")),
        Column::new("Agent", "string", "The agent offering.", Cell::Path("/spec/agent")),
        Column::new(
            "Resources",
            "string",
            "What is offered.",
            Cell::With(|o, _| crate::columns::resources(o.pointer("/spec/resources"))),
        ),
        Column::new(
            "Phase",
            "string",
            "Outstanding, Accepted, Declined, Rescinded or Expired.",
            Cell::Path("/status/phase"),
        ),
        Column::new("Role", "string", "The role offered under.", Cell::Path("/spec/role")).wide(),
        Column::new(
            "Expires",
            "string",
            "When it lapses.",
            Cell::With(|o, now| crate::columns::until(o, "/spec/expiresAt", now)),
        )
        .wide(),
        Column::new(
            "Tasks",
            "string",
            "The tasks it was accepted with.",
            Cell::With(|o, _| crate::columns::joined(o.pointer("/status/tasks"), None)),
        )
        .wide(),
    ]
};

crate::object! {
    /// Resources of one agent offered to one framework, used once: accepted (creating tasks), declined or rescinded.
    Offer {
        spec: OfferSpec,
        status: OfferStatus,
        plural: "offers",
        singular: "offer",
        short_names: [],
        namespaced: false,
        subresources: ["status", "accept"],
        field_selectors: ["spec.framework", "spec.agent", "status.phase"],
        name_rule: Subdomain,
        columns: OFFER_COLUMNS,
    }
}

/// What is offered, to whom, until when.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfferSpec {
    /// The framework it is offered to.
    pub framework: String,
    /// The agent whose resources these are.
    pub agent: String,
    /// The agent's hostname (for `hostname` constraints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The role the resources belong to (`*` or a reservation's role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The resources offered.
    pub resources: Resources,
    /// The agent's attributes (for constraints).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// After this the allocator rescinds the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl OfferSpec {
    /// Offers have no defaults.
    pub fn apply_defaults(&mut self) {}

    /// Framework and agent named; resources well-formed.
    pub fn validate(&self, v: &mut Validator, path: &Path, _meta: &ObjectMeta) {
        if self.framework.is_empty() {
            v.required(&path.field("framework"), "the framework the offer is for is required");
        }
        if self.agent.is_empty() {
            v.required(&path.field("agent"), "the agent whose resources are offered is required");
        }
        if let Some(role) = &self.role {
            validate_role(v, &path.field("role"), role);
        }
        self.resources.validate(v, &path.field("resources"));
    }

    /// True when `port` is among the offered ports.
    #[must_use]
    pub fn offers_port(&self, port: u16) -> bool {
        self.resources.ports.iter().any(|r: &PortRange| r.contains(port))
    }
}

/// Where an offer is in its one-shot life.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OfferPhase {
    /// Waiting for the framework; its resources count as allocated.
    Outstanding,
    /// Used: tasks were created from it; the unused rest went back to the pool.
    Accepted,
    /// Refused by the framework.
    Declined,
    /// Taken back by the allocator (agent lost, offer expired).
    Rescinded,
}

/// The phase of an offer and why it ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfferStatus {
    /// Outstanding, Accepted, Declined or Rescinded.
    pub phase: OfferPhase,
    /// Why it was declined or rescinded (`Expired`, `AgentUnreachable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The tasks created by accepting it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    /// After a decline: the framework gets no offer from this agent before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_until: Option<Timestamp>,
    /// When it left Outstanding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
}

/// The body of `POST offers/{name}/accept`: the tasks to launch from the offer. No tasks declines it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfferAcceptance {
    /// Optional `agora/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Optional `OfferAcceptance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The tasks, bound by the server to the offer's agent and framework.
    #[serde(default)]
    pub tasks: Vec<TaskTemplate>,
    /// When declining (no tasks): how long this agent's resources are not offered to the framework again
    /// (Mesos' `refuse_seconds`, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_seconds: Option<f64>,
}

/// A task to create from an offer: its metadata (name or generateName, namespace, labels, ownerReferences) and
/// spec. `spec.agent`, `spec.framework` and `spec.offer` are filled in from the offer.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskTemplate {
    /// Name (or generateName) and namespace of the task, its labels and owner.
    pub metadata: ObjectMeta,
    /// What to run.
    pub spec: crate::task::TaskSpec,
}

/// Mesos' default refuse filter for a decline, seconds.
pub const DEFAULT_REFUSE_SECONDS: f64 = 5.0;

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn an_agents_status_says_ready_and_cordoned_as_kubectl_says_it_of_nodes() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let agent = |ready: Option<&str>, cordoned: bool| {
            let conditions: Vec<_> = ready.map(|s| json!({"type": "Ready", "status": s})).into_iter().collect();
            json!({"spec": {"unschedulable": cordoned}, "status": {"conditions": conditions}})
        };
        assert_eq!(super::agent_status(&agent(Some("True"), false), now), "Ready");
        assert_eq!(super::agent_status(&agent(Some("True"), true), now), "Ready,SchedulingDisabled");
        assert_eq!(super::agent_status(&agent(Some("False"), true), now), "NotReady,SchedulingDisabled");
        assert_eq!(super::agent_status(&agent(None, false), now), "Unknown");
    }
}
