//! From the observed objects to what the allocator should do — pure functions, tested as such:
//!
//! - [`observe`]: the [`Snapshot`] a round works on. An agent's and a framework's allocation is what its
//!   non-terminal Tasks hold plus its Outstanding Offers — and an Accepted offer until every task it created is seen
//!   (the offer and its tasks are written in one transaction but arrive on two watches: counting neither for a
//!   moment would offer the same resources twice).
//! - [`housekeeping`]: liveness and expiry — agents whose lease lapsed (Unreachable, their tasks Unreachable, later
//!   Gone), agents that renew again (Ready), frameworks that stopped renewing (their offers rescinded; past their
//!   failover timeout, their tasks killed), offers that expired or whose agent cannot take them, decided offers
//!   past any filter.
//! - [`next_wakeup`]: the earliest time any of those decisions can change without an event.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use agora_schemas::cluster::OfferPhase;
use agora_schemas::{Agent, ConditionStatus, Framework, Lease, Offer, PortRange, Task, TaskState};
use jiff::{SignedDuration, Timestamp};

use super::round::{AgentView, FrameworkView, RoleView, Snapshot};
use super::sorter::Amount;

/// How the allocator's timers are set.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long an offer stands before it is rescinded.
    pub offer_timeout: Duration,
    /// How long an agent may be unreachable before its tasks are Gone.
    pub agent_gone_after: Duration,
    /// How long a decided offer without a filter is kept (for people to look at) before it is deleted.
    pub keep_decided: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            offer_timeout: Duration::from_secs(60),
            agent_gone_after: Duration::from_secs(600),
            keep_decided: Duration::from_secs(60),
        }
    }
}

/// How long an accepted offer holds its resources at most while its tasks have not arrived on the task watch: they
/// are created in the acceptance's own transaction, so tasks still missing by then were deleted since (a framework
/// forgetting finished runs) — by a predecessor's watch, perhaps, which a new leader never saw.
pub const ACCEPTED_HOLD: Duration = Duration::from_secs(10);

/// Everything observed, as the reflectors hold it.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Every Agent.
    pub agents: Vec<Arc<Agent>>,
    /// Every Framework.
    pub frameworks: Vec<Arc<Framework>>,
    /// Every Offer (and those the allocator made that its watch has not shown yet).
    pub offers: Vec<Arc<Offer>>,
    /// Every Task.
    pub tasks: Vec<Arc<Task>>,
    /// How many of each accepted offer's tasks the task watch has ever shown: a task seen and deleted since (a
    /// framework forgetting a finished task) no longer keeps its offer's resources held.
    pub arrived_ever: HashMap<String, usize>,
    /// The agents' heartbeat leases, by agent name.
    pub agent_leases: HashMap<String, Arc<Lease>>,
    /// The frameworks' leases, by framework name.
    pub framework_leases: HashMap<String, Arc<Lease>>,
}

fn amount(resources: &agora_schemas::Resources) -> Amount {
    Amount::new(resources.cpus, resources.mem, resources.disk)
}

fn name<T: agora_schemas::Resource>(object: &Arc<T>) -> String {
    object.metadata().name.clone().unwrap_or_default()
}

/// How long after its registration an agent whose lease was never seen counts as reachable (a lease's default
/// length).
const UNSEEN_LEASE_GRACE_SECONDS: i64 = 15;

/// When `lease` lapses (never renewed, or released — no holder: already).
#[must_use]
pub fn lease_expiry(lease: Option<&Lease>) -> Timestamp {
    lease
        .filter(|l| l.spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty()))
        .and_then(|l| {
            let renewed = l.spec.renew_time.or(l.spec.acquire_time)?;
            Some(renewed + SignedDuration::from_secs(i64::from(l.spec.lease_duration_seconds.unwrap_or(15))))
        })
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn phase(offer: &Offer) -> OfferPhase {
    offer.status.as_ref().map_or(OfferPhase::Outstanding, |s| s.phase)
}

/// What an agent's tasks and offers hold: per role, the tasks' ports, the offers' port ranges.
type AgentHoldings = (BTreeMap<String, Amount>, BTreeSet<u16>, Vec<PortRange>);

/// What tasks and offers hold, by agent and by (framework, role) — keyed by the observed objects' own strings, so
/// counting tens of thousands of tasks allocates nothing per task.
#[derive(Default)]
struct Holdings<'a> {
    by_agent: HashMap<&'a str, AgentHoldings>,
    by_framework: HashMap<&'a str, HashMap<&'a str, Amount>>,
    /// Where the holdings of agents not wanted go.
    ignored: AgentHoldings,
}

impl<'a> Holdings<'a> {
    /// Counts `held` for the framework, and for the agent when `per_agent` (its view is wanted).
    fn add(
        &mut self,
        agent: &'a str,
        framework: &'a str,
        role: &'a str,
        held: Amount,
        per_agent: bool,
    ) -> &mut AgentHoldings {
        let entry = self.by_framework.entry(framework).or_default().entry(role).or_default();
        *entry = entry.plus(held);
        if !per_agent {
            return &mut self.ignored;
        }
        let holdings = self.by_agent.entry(agent).or_default();
        let entry = holdings.0.entry(role.to_owned()).or_default();
        *entry = entry.plus(held);
        holdings
    }
}

/// The snapshot a round works on, at `now`, over every agent.
#[must_use]
pub fn observe(observed: &Observed, roles: &BTreeMap<String, RoleView>, now: Timestamp) -> Snapshot {
    observe_agents(observed, roles, now, None)
}

/// As [`observe`], with views of only the agents in `only` (when given): what a round after one event needs — the
/// frameworks' allocations and the cluster's total stay complete.
#[must_use]
pub fn observe_agents(
    observed: &Observed,
    roles: &BTreeMap<String, RoleView>,
    now: Timestamp,
    only: Option<&HashSet<String>>,
) -> Snapshot {
    let wanted = |agent: &str| only.is_none_or(|set| set.contains(agent));
    // A framework's revive time: declines before it filter nothing.
    let revived: HashMap<&str, Timestamp> =
        observed.frameworks.iter().filter_map(|f| Some((f.metadata.name.as_deref()?, f.spec.revived_at?))).collect();
    let revived_after = |offer: &Offer| {
        let decided = offer.status.as_ref().and_then(|s| s.decided_at).unwrap_or(Timestamp::UNIX_EPOCH);
        revived.get(offer.spec.framework.as_str()).is_some_and(|at| *at >= decided)
    };
    let mut holdings = Holdings::default();
    // How many tasks of each offer's acceptance have arrived.
    let mut arrived: HashMap<&str, usize> = HashMap::new();
    for task in &observed.tasks {
        if let Some(offer) = &task.spec.offer {
            *arrived.entry(offer.as_str()).or_default() += 1;
        }
    }
    for task in &observed.tasks {
        if task.status.as_ref().is_some_and(|s| s.state.is_terminal()) {
            continue;
        }
        let spec = &task.spec;
        let held = Amount::new(spec.cpus, spec.mem, spec.disk);
        let per_agent = wanted(&spec.agent);
        let role = spec.role.as_deref().unwrap_or("*");
        let ports = holdings.add(&spec.agent, &spec.framework, role, held, per_agent);
        if per_agent {
            ports.1.extend(spec.ports.iter().map(|p| p.port));
        }
    }
    // Declined offers' filters, by framework and agent.
    let mut filters: HashMap<&str, BTreeMap<String, Timestamp>> = HashMap::new();
    for offer in &observed.offers {
        if phase(offer) == OfferPhase::Declined
            && let Some(until) = offer.status.as_ref().and_then(|s| s.refuse_until)
            && !revived_after(offer)
        {
            let entry = filters.entry(offer.spec.framework.as_str()).or_default().entry(offer.spec.agent.clone());
            let at = entry.or_insert(until);
            *at = (*at).max(until);
        }
        let counted = match phase(offer) {
            OfferPhase::Outstanding => true,
            // Until its tasks arrive on their own watch.
            // Until its tasks arrive on their own watch (seen once is enough: one deleted since holds nothing).
            OfferPhase::Accepted => {
                let created = offer.status.as_ref().map_or(0, |s| s.tasks.len());
                let offer_name = name(offer);
                let arrived_now = arrived.get(offer_name.as_str()).copied().unwrap_or(0);
                let decided = offer.status.as_ref().and_then(|s| s.decided_at).unwrap_or(now);
                arrived_now.max(observed.arrived_ever.get(&offer_name).copied().unwrap_or(0)) < created
                    && now < after(decided, ACCEPTED_HOLD)
            }
            OfferPhase::Declined | OfferPhase::Rescinded => false,
        };
        if counted {
            let spec = &offer.spec;
            let role = spec.role.as_deref().unwrap_or("*");
            let per_agent = wanted(&spec.agent);
            let held = holdings.add(&spec.agent, &spec.framework, role, amount(&spec.resources), per_agent);
            if per_agent {
                held.2.extend(spec.resources.ports.iter().copied());
            }
        }
    }
    let total = observed.agents.iter().fold(Amount::default(), |sum, a| sum.plus(amount(&a.spec.resources)));
    let agents = observed
        .agents
        .iter()
        .filter(|agent| wanted(agent.metadata.name.as_deref().unwrap_or_default()))
        .map(|agent| {
            let agent_name = name(agent);
            let (used, used_ports, offered_ports) = holdings.by_agent.remove(agent_name.as_str()).unwrap_or_default();
            let fresh = lease_expiry(observed.agent_leases.get(&agent_name).map(|l| &**l)) > now;
            AgentView {
                total: amount(&agent.spec.resources),
                ports: agent.spec.resources.ports.clone(),
                reservations: agent
                    .spec
                    .reservations
                    .iter()
                    .map(|(role, r)| (role.clone(), (amount(r), r.ports.clone())))
                    .collect(),
                used,
                used_ports,
                offered_ports,
                offerable: fresh && !agent.spec.unschedulable() && agent.metadata.deletion_timestamp.is_none(),
                name: agent_name,
            }
        })
        .collect();
    let frameworks = observed
        .frameworks
        .iter()
        .map(|framework| {
            let framework_name = name(framework);
            let filters = filters.remove(framework_name.as_str()).unwrap_or_default();
            FrameworkView {
                roles: framework.spec.roles(),
                weight: framework.spec.weight(),
                suppressed: framework.spec.suppressed(),
                connected: lease_expiry(observed.framework_leases.get(&framework_name).map(|l| &**l)) > now
                    && framework.metadata.deletion_timestamp.is_none(),
                filters,
                allocated: holdings
                    .by_framework
                    .remove(framework_name.as_str())
                    .map(|roles| roles.into_iter().map(|(role, held)| (role.to_owned(), held)).collect())
                    .unwrap_or_default(),
                name: framework_name,
            }
        })
        .collect();
    Snapshot { agents, total, frameworks, roles: roles.clone() }
}

/// What housekeeping does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Rescind an Outstanding offer (guarded by its resourceVersion, so an acceptance that got there first wins).
    Rescind {
        /// The offer.
        offer: String,
        /// Its resourceVersion when decided.
        resource_version: String,
        /// `Expired`, `AgentUnreachable`, `AgentUnschedulable`, `FrameworkDisconnected`, `AgentGone`.
        reason: &'static str,
        /// In words.
        message: String,
    },
    /// Delete a decided offer that carries no live filter.
    DeleteOffer {
        /// The offer.
        offer: String,
    },
    /// Set an agent's Ready condition.
    AgentReady {
        /// The agent.
        agent: String,
        /// Ready or not.
        ready: bool,
        /// `Unreachable`, `Heartbeating`.
        reason: &'static str,
        /// In words.
        message: String,
    },
    /// Move a task to a state the allocator owns (Unreachable, Gone), guarded by its resourceVersion (a state the
    /// agent wrote meanwhile wins).
    TaskState {
        /// Its namespace.
        namespace: String,
        /// Its name.
        task: String,
        /// Its resourceVersion when decided.
        resource_version: String,
        /// The new state.
        state: TaskState,
        /// In words.
        message: String,
    },
    /// Ask a task's agent to kill it.
    KillTask {
        /// Its namespace.
        namespace: String,
        /// Its name.
        task: String,
        /// Why.
        message: String,
    },
}

fn ready(agent: &Agent) -> Option<bool> {
    let condition = agent.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(condition.status == ConditionStatus::True)
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t + SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// What liveness and expiry call for at `now`.
#[must_use]
pub fn housekeeping(observed: &Observed, timing: Timing, now: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    let agents: HashMap<String, &Agent> = observed.agents.iter().map(|a| (name(a), &**a)).collect();
    let frameworks: HashMap<String, &Framework> = observed.frameworks.iter().map(|f| (name(f), &**f)).collect();
    // Agents: Ready while the lease is fresh; Unreachable when it lapses; Gone (their tasks) long after.
    let mut unreachable = BTreeSet::new();
    let mut gone = BTreeSet::new();
    for (agent_name, agent) in &agents {
        // An agent whose lease has not been seen yet (it registers first, then heartbeats) has a lease's length
        // from its registration before it counts as lapsed.
        let lease = observed.agent_leases.get(agent_name).map(|l| &**l);
        let expiry = match (lease, agent.metadata.creation_timestamp) {
            (None, Some(created)) => created + SignedDuration::from_secs(UNSEEN_LEASE_GRACE_SECONDS),
            _ => lease_expiry(lease),
        };
        let fresh = expiry > now;
        if !fresh {
            unreachable.insert(agent_name.clone());
            if after(expiry, timing.agent_gone_after) <= now {
                gone.insert(agent_name.clone());
            }
        }
        match (ready(agent), fresh) {
            (Some(true) | None, false) => actions.push(Action::AgentReady {
                agent: agent_name.clone(),
                ready: false,
                reason: "Unreachable",
                message: format!("no heartbeat since {expiry} (its lease lapsed)"),
            }),
            (Some(false), true) => actions.push(Action::AgentReady {
                agent: agent_name.clone(),
                ready: true,
                reason: "Heartbeating",
                message: "the agent renews its lease again".to_owned(),
            }),
            _ => {}
        }
    }
    // Tasks of unreachable agents become Unreachable, of gone (or deleted) agents Gone; tasks of frameworks past
    // their failover timeout are killed.
    for task in &observed.tasks {
        let Some(state) = task.status.as_ref().map(|s| s.state).or(Some(TaskState::Staging)) else { continue };
        if state.is_terminal() {
            continue;
        }
        let (namespace, task_name) = (task.metadata.namespace.clone().unwrap_or_default(), name(task));
        let resource_version = task.metadata.resource_version.clone().unwrap_or_default();
        let agent = &task.spec.agent;
        let agent_deleted = !agents.contains_key(agent);
        if (gone.contains(agent) || agent_deleted) && state != TaskState::Gone {
            let why = if agent_deleted { "was deleted" } else { "has been unreachable too long" };
            actions.push(Action::TaskState {
                namespace,
                task: task_name,
                resource_version,
                state: TaskState::Gone,
                message: format!("its agent {agent} {why}"),
            });
            continue;
        }
        if unreachable.contains(agent) && !matches!(state, TaskState::Unreachable | TaskState::Gone) {
            actions.push(Action::TaskState {
                namespace: namespace.clone(),
                task: task_name.clone(),
                resource_version,
                state: TaskState::Unreachable,
                message: format!("its agent {agent} stopped heartbeating"),
            });
        }
        if let Some(framework) = frameworks.get(&task.spec.framework) {
            let expiry = lease_expiry(observed.framework_leases.get(&task.spec.framework).map(|l| &**l));
            let timeout = Duration::from_secs(framework.spec.failover_timeout_seconds());
            if after(expiry, timeout) <= now && task.spec.kill_requested != Some(true) {
                actions.push(Action::KillTask {
                    namespace,
                    task: task_name,
                    message: format!(
                        "framework {} has been disconnected longer than its failover timeout ({} s)",
                        task.spec.framework,
                        timeout.as_secs()
                    ),
                });
            }
        }
    }
    // Offers.
    for offer in &observed.offers {
        let offer_name = name(offer);
        let Some(resource_version) = offer.metadata.resource_version.clone() else { continue };
        match phase(offer) {
            OfferPhase::Outstanding => {
                let spec = &offer.spec;
                let framework_connected = frameworks.contains_key(&spec.framework)
                    && lease_expiry(observed.framework_leases.get(&spec.framework).map(|l| &**l)) > now;
                let rescind = |reason: &'static str, message: String| Action::Rescind {
                    offer: offer_name.clone(),
                    resource_version: resource_version.clone(),
                    reason,
                    message,
                };
                let agent = agents.get(&spec.agent);
                if spec.expires_at.is_some_and(|t| t <= now) {
                    actions.push(rescind("Expired", "the offer was not used before it expired".to_owned()));
                } else if agent.is_none() {
                    actions.push(rescind("AgentGone", format!("agent {} is gone", spec.agent)));
                } else if unreachable.contains(&spec.agent) {
                    actions.push(rescind("AgentUnreachable", format!("agent {} stopped heartbeating", spec.agent)));
                } else if agent.is_some_and(|a| a.spec.unschedulable()) {
                    actions.push(rescind("AgentUnschedulable", format!("agent {} was cordoned", spec.agent)));
                } else if !framework_connected {
                    let message = format!("framework {} is not connected (its lease lapsed)", spec.framework);
                    actions.push(rescind("FrameworkDisconnected", message));
                }
            }
            _ => {
                let status = offer.status.as_ref();
                let filter_ends = status.and_then(|s| s.refuse_until);
                let decided = status.and_then(|s| s.decided_at).unwrap_or(Timestamp::UNIX_EPOCH);
                let keep_until = filter_ends.unwrap_or(Timestamp::UNIX_EPOCH).max(after(decided, timing.keep_decided));
                if keep_until <= now {
                    actions.push(Action::DeleteOffer { offer: offer_name });
                }
            }
        }
    }
    actions
}

/// The status figures the allocator keeps on Agents, Frameworks and Roles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Statuses {
    /// Each agent's `status.allocated` (tasks and outstanding offers), for the agents in the snapshot.
    pub agents: HashMap<String, Amount>,
    /// Each framework's figures.
    pub frameworks: HashMap<String, FrameworkFigures>,
    /// Each role with a Role object: (held by tasks, in outstanding offers, weighted dominant share).
    pub roles: HashMap<String, RoleFigures>,
}

/// A framework's status figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrameworkFigures {
    /// Tasks and outstanding offers.
    pub allocated: Amount,
    /// Dominant share ÷ weight.
    pub dominant_share: f64,
    /// How many offers are outstanding.
    pub outstanding_offers: u32,
    /// Whether its lease is fresh.
    pub connected: bool,
    /// When it last renewed its lease.
    pub last_seen: Option<Timestamp>,
}

/// A role's status figures (its whole subtree).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoleFigures {
    /// Held by non-terminal tasks.
    pub allocated: Amount,
    /// In outstanding offers.
    pub offered: Amount,
    /// (allocated + offered) as a dominant share of the cluster, ÷ the role's weight.
    pub dominant_share: f64,
    /// Whether any kind is at its limit.
    pub at_limit: bool,
}

/// The status figures of everything observed, given the snapshot made of it.
#[must_use]
pub fn statuses(observed: &Observed, snapshot: &Snapshot, now: Timestamp) -> Statuses {
    let total = snapshot.total;
    let mut out = Statuses::default();
    for agent in &snapshot.agents {
        out.agents.insert(agent.name.clone(), agent.used.values().fold(Amount::default(), |s, a| s.plus(*a)));
    }
    let mut outstanding: HashMap<&str, u32> = HashMap::new();
    let mut offered_by_role: HashMap<String, Amount> = HashMap::new();
    for offer in &observed.offers {
        if phase(offer) == OfferPhase::Outstanding {
            *outstanding.entry(offer.spec.framework.as_str()).or_default() += 1;
            let role = offer.spec.role.clone().unwrap_or_else(|| "*".to_owned());
            let entry = offered_by_role.entry(role).or_default();
            *entry = entry.plus(amount(&offer.spec.resources));
        }
    }
    for framework in &snapshot.frameworks {
        let allocated = framework.allocated.values().fold(Amount::default(), |s, a| s.plus(*a));
        let lease = observed.framework_leases.get(&framework.name);
        out.frameworks.insert(
            framework.name.clone(),
            FrameworkFigures {
                allocated,
                dominant_share: allocated.dominant_share(total) / framework.weight.max(1e-9),
                outstanding_offers: outstanding.get(framework.name.as_str()).copied().unwrap_or(0),
                connected: lease_expiry(lease.map(|l| &**l)) > now,
                last_seen: lease.and_then(|l| l.spec.renew_time),
            },
        );
    }
    // Everything held per role (tasks and offers, from the snapshot) less the offers: what tasks hold.
    let mut held_by_role: HashMap<String, Amount> = HashMap::new();
    for framework in &snapshot.frameworks {
        for (role, held) in &framework.allocated {
            let entry = held_by_role.entry(role.clone()).or_default();
            *entry = entry.plus(*held);
        }
    }
    let within = |role: &str, of: &str| role == of || role.strip_prefix(of).is_some_and(|r| r.starts_with('/'));
    for (role, view) in &snapshot.roles {
        let sum = |map: &HashMap<String, Amount>| {
            map.iter().filter(|(r, _)| within(r, role)).fold(Amount::default(), |s, (_, a)| s.plus(*a))
        };
        let (held, offered) = (sum(&held_by_role), sum(&offered_by_role));
        let at_limit = view.limit.is_some_and(|l| {
            [(held.cpus, l.cpus), (held.mem, l.mem), (held.disk, l.disk)]
                .iter()
                .any(|(h, l)| l.is_finite() && *h + 1e-9 >= *l)
        });
        out.roles.insert(
            role.clone(),
            RoleFigures {
                allocated: held.minus(offered),
                offered,
                dominant_share: held.dominant_share(total) / view.weight.max(1e-9),
                at_limit,
            },
        );
    }
    out
}

/// The earliest moment after `now` at which [`observe`] or [`housekeeping`] would decide differently without any
/// object changing: a lease lapsing, an offer expiring, a filter ending, a decided offer's keeping time running
/// out, a failover or gone timeout passing.
#[must_use]
pub fn next_wakeup(observed: &Observed, timing: Timing, now: Timestamp) -> Option<Timestamp> {
    let mut times = Vec::new();
    for lease in observed.agent_leases.values() {
        let expiry = lease_expiry(Some(lease));
        times.extend([expiry, after(expiry, timing.agent_gone_after)]);
    }
    for (framework, lease) in &observed.framework_leases {
        let expiry = lease_expiry(Some(lease));
        times.push(expiry);
        if let Some(f) = observed.frameworks.iter().find(|f| name(*f) == *framework) {
            times.push(after(expiry, Duration::from_secs(f.spec.failover_timeout_seconds())));
        }
    }
    for offer in &observed.offers {
        let status = offer.status.as_ref();
        times.extend(offer.spec.expires_at);
        times.extend(status.and_then(|s| s.refuse_until));
        if let Some(decided) = status.and_then(|s| s.decided_at) {
            times.push(after(decided, timing.keep_decided));
            if status.is_some_and(|s| s.phase == OfferPhase::Accepted) {
                times.push(after(decided, ACCEPTED_HOLD));
            }
        }
    }
    times.into_iter().filter(|t| *t > now).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: Timestamp = Timestamp::UNIX_EPOCH;

    fn at(seconds: i64) -> Timestamp {
        T0 + SignedDuration::from_secs(seconds)
    }

    fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    fn agent(name: &str, ready: bool) -> Arc<Agent> {
        Arc::new(from_json(json!({"apiVersion": "agora/v1", "kind": "Agent", "metadata": {"name": name},
            "spec": {"resources": {"cpus": 4.0, "mem": 4096.0, "ports": [[31000, 31009]]}},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})))
    }

    fn lease(name: &str, renewed: i64) -> Arc<Lease> {
        Arc::new(from_json(
            json!({"apiVersion": "agora/v1", "kind": "Lease", "metadata": {"name": name, "namespace": "x"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 15, "renewTime": at(renewed)}}),
        ))
    }

    fn framework(name: &str) -> Arc<Framework> {
        Arc::new(from_json(json!({"apiVersion": "agora/v1", "kind": "Framework", "metadata": {"name": name},
            "spec": {"failoverTimeoutSeconds": 100}})))
    }

    fn offer(name: &str, agent: &str, status: serde_json::Value) -> Arc<Offer> {
        let mut offer: Offer = from_json(json!({"apiVersion": "agora/v1", "kind": "Offer",
            "metadata": {"name": name, "resourceVersion": "7"},
            "spec": {"framework": "f", "agent": agent, "resources": {"cpus": 1.0, "mem": 512.0}, "expiresAt": at(60)}}));
        if !status.is_null() {
            offer.status = Some(from_json(status));
        }
        Arc::new(offer)
    }

    fn task(name: &str, agent: &str, offer: &str, state: &str) -> Arc<Task> {
        Arc::new(from_json(
            json!({"apiVersion": "agora/v1", "kind": "Task", "metadata": {"name": name, "namespace": "default"},
            "spec": {"agent": agent, "framework": "f", "offer": offer, "cmd": "x", "cpus": 1.0, "mem": 512.0,
                     "ports": [{"port": 31003}]},
            "status": {"state": state}}),
        ))
    }

    fn observed() -> Observed {
        Observed {
            agents: vec![agent("a1", true)],
            frameworks: vec![framework("f")],
            agent_leases: HashMap::from([("a1".to_owned(), lease("a1", 0))]),
            framework_leases: HashMap::from([("f".to_owned(), lease("f", 0))]),
            ..Observed::default()
        }
    }

    fn used(snapshot: &Snapshot) -> Amount {
        snapshot.agents[0].used.values().fold(Amount::default(), |sum, a| sum.plus(*a))
    }

    #[test]
    fn tasks_and_offers_hold_resources_and_an_accepted_offer_until_its_tasks_arrive() {
        let mut seen = observed();
        seen.offers = vec![offer("o1", "a1", serde_json::Value::Null)];
        let snapshot = observe(&seen, &BTreeMap::new(), at(1));
        assert_eq!(used(&snapshot), Amount::new(1.0, 512.0, 0.0), "an outstanding offer holds its resources");
        assert_eq!(snapshot.frameworks[0].allocated["*"], Amount::new(1.0, 512.0, 0.0));
        // Accepted: still held while its task has not arrived on the task watch...
        seen.offers = vec![offer("o1", "a1", json!({"phase": "Accepted", "tasks": ["t1"]}))];
        assert_eq!(used(&observe(&seen, &BTreeMap::new(), at(1))), Amount::new(1.0, 512.0, 0.0));
        // Its task seen once and deleted since (a framework forgetting a finished task): the offer holds nothing.
        seen.arrived_ever.insert("o1".into(), 1);
        assert_eq!(used(&observe(&seen, &BTreeMap::new(), at(1))), Amount::default(), "seen, then deleted");
        seen.arrived_ever.clear();
        // Never seen by this allocator, 10 s after the acceptance: deleted before it was watching; nothing held.
        seen.offers = vec![offer("o1", "a1", json!({"phase": "Accepted", "tasks": ["t1"], "decidedAt": at(0)}))];
        assert_eq!(used(&observe(&seen, &BTreeMap::new(), at(9))), Amount::new(1.0, 512.0, 0.0));
        assert_eq!(used(&observe(&seen, &BTreeMap::new(), at(10))), Amount::default(), "a predecessor saw it go");
        // ...and then held by the task alone.
        seen.tasks = vec![task("t1", "a1", "o1", "Running")];
        let snapshot = observe(&seen, &BTreeMap::new(), at(1));
        assert_eq!(used(&snapshot), Amount::new(1.0, 512.0, 0.0));
        assert!(snapshot.agents[0].used_ports.contains(&31003));
        // A finished task holds nothing; a declined offer filters its agent for the framework.
        seen.tasks = vec![task("t1", "a1", "o1", "Finished")];
        seen.offers.push(offer("o2", "a1", json!({"phase": "Declined", "refuseUntil": at(5)})));
        let snapshot = observe(&seen, &BTreeMap::new(), at(1));
        assert_eq!(used(&snapshot), Amount::default());
        assert_eq!(snapshot.frameworks[0].filters["a1"], at(5));
        assert!(snapshot.agents[0].offerable && snapshot.frameworks[0].connected);
        assert!(!observe(&seen, &BTreeMap::new(), at(20)).agents[0].offerable, "a lapsed lease is not offered");
    }

    #[test]
    fn a_lapsed_agent_is_unreachable_with_its_tasks_and_offers_then_gone_and_ready_when_it_renews() {
        let mut seen = observed();
        seen.offers = vec![offer("o1", "a1", serde_json::Value::Null)];
        seen.tasks = vec![task("t1", "a1", "o0", "Running")];
        assert!(housekeeping(&seen, Timing::default(), at(10)).is_empty(), "all fresh");
        let actions = housekeeping(&seen, Timing::default(), at(16));
        assert!(matches!(&actions[0], Action::AgentReady { ready: false, reason: "Unreachable", .. }), "{actions:?}");
        assert!(matches!(&actions[1], Action::TaskState { state: TaskState::Unreachable, .. }), "{actions:?}");
        assert!(matches!(&actions[2], Action::Rescind { reason: "AgentUnreachable", .. }), "{actions:?}");
        // Long unreachable: its tasks are Gone.
        let actions = housekeeping(&seen, Timing::default(), at(15 + 600));
        assert!(actions.iter().any(|a| matches!(a, Action::TaskState { state: TaskState::Gone, .. })), "{actions:?}");
        // Renewing again: Ready.
        seen.agents = vec![agent("a1", false)];
        seen.offers.clear();
        seen.agent_leases.insert("a1".into(), lease("a1", 100));
        seen.framework_leases.insert("f".into(), lease("f", 100));
        let actions = housekeeping(&seen, Timing::default(), at(101));
        assert!(matches!(&actions[..], [Action::AgentReady { ready: true, .. }]), "{actions:?}");
    }

    #[test]
    fn a_just_registered_agent_whose_lease_is_not_seen_yet_is_not_unreachable_at_once() {
        let mut seen = observed();
        let mut newcomer = (*agent("a2", false)).clone();
        newcomer.status = None;
        newcomer.metadata.creation_timestamp = Some(at(100));
        seen.agents.push(Arc::new(newcomer));
        seen.agent_leases.insert("a1".into(), lease("a1", 110));
        seen.framework_leases.insert("f".into(), lease("f", 110));
        assert!(housekeeping(&seen, Timing::default(), at(101)).is_empty(), "a lease's length of grace");
        // Still no lease 15 s after it registered: unreachable, as any agent whose lease lapsed.
        let actions = housekeeping(&seen, Timing::default(), at(116));
        assert!(
            matches!(&actions[..], [Action::AgentReady { ready: false, reason: "Unreachable", agent, .. }] if agent == "a2"),
            "{actions:?}"
        );
    }

    #[test]
    fn offers_expire_disconnected_frameworks_lose_theirs_and_past_failover_their_tasks() {
        let mut seen = observed();
        seen.agent_leases.insert("a1".into(), lease("a1", 1000));
        seen.offers = vec![offer("o1", "a1", serde_json::Value::Null)];
        seen.tasks = vec![task("t1", "a1", "o0", "Running")];
        let actions = housekeeping(&seen, Timing::default(), at(16));
        assert!(matches!(&actions[..], [Action::Rescind { reason: "FrameworkDisconnected", .. }]), "{actions:?}");
        seen.framework_leases.insert("f".into(), lease("f", 1000));
        let actions = housekeeping(&seen, Timing::default(), at(60));
        assert!(matches!(&actions[..], [Action::Rescind { reason: "Expired", .. }]), "{actions:?}");
        // The framework's lease lapses at 1015; its failover timeout is 100 s.
        let actions = housekeeping(&seen, Timing::default(), at(1016 + 100));
        assert!(actions.iter().any(|a| matches!(a, Action::KillTask { task, .. } if task == "t1")), "{actions:?}");
    }

    #[test]
    fn decided_offers_are_deleted_once_no_filter_needs_them() {
        let mut seen = observed();
        seen.offers = vec![
            offer("declined", "a1", json!({"phase": "Declined", "refuseUntil": at(300), "decidedAt": at(1)})),
            offer("accepted", "a1", json!({"phase": "Accepted", "tasks": ["t"], "decidedAt": at(1)})),
        ];
        let deleted = |now| {
            housekeeping(&seen, Timing::default(), now)
                .into_iter()
                .filter_map(|a| match a {
                    Action::DeleteOffer { offer } => Some(offer),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert!(deleted(at(10)).is_empty());
        assert_eq!(deleted(at(61)), ["accepted"]);
        assert_eq!(deleted(at(300)), ["declined", "accepted"]);
        assert_eq!(next_wakeup(&seen, Timing::default(), at(10)), Some(at(11)), "the acceptance stops holding");
        assert_eq!(next_wakeup(&seen, Timing::default(), at(11)), Some(at(15)), "the first lease lapses");
    }

    #[test]
    fn a_revive_clears_the_filters_of_earlier_declines() {
        let mut seen = observed();
        seen.offers = vec![offer("o", "a1", json!({"phase": "Declined", "refuseUntil": at(300), "decidedAt": at(5)}))];
        assert!(observe(&seen, &BTreeMap::new(), at(10)).frameworks[0].filters.contains_key("a1"));
        let mut revived = (*seen.frameworks[0]).clone();
        revived.spec.revived_at = Some(at(6));
        seen.frameworks = vec![Arc::new(revived)];
        assert!(observe(&seen, &BTreeMap::new(), at(10)).frameworks[0].filters.is_empty());
    }

    #[test]
    fn a_partial_snapshot_keeps_the_frameworks_and_the_total_whole() {
        let mut seen = observed();
        seen.agents.push(agent("a2", true));
        seen.tasks = vec![task("t1", "a2", "o0", "Running")];
        let only = HashSet::from(["a1".to_owned()]);
        let partial = observe_agents(&seen, &BTreeMap::new(), at(1), Some(&only));
        assert_eq!(partial.agents.len(), 1);
        assert_eq!(partial.total, Amount::new(8.0, 8192.0, 0.0), "both agents count in the total");
        assert_eq!(partial.frameworks[0].allocated["*"], Amount::new(1.0, 512.0, 0.0), "a2's task counts");
        let figures = statuses(&seen, &observe(&seen, &BTreeMap::new(), at(1)), at(1));
        assert_eq!(figures.agents["a2"], Amount::new(1.0, 512.0, 0.0));
        assert!((figures.frameworks["f"].dominant_share - 0.125).abs() < 1e-9);
        assert!(figures.frameworks["f"].connected);
    }

    #[test]
    fn a_released_lease_is_lapsed() {
        let mut released = (*lease("f", 100)).clone();
        released.spec.holder_identity = Some(String::new());
        assert_eq!(lease_expiry(Some(&released)), Timestamp::UNIX_EPOCH);
        assert_eq!(lease_expiry(Some(&lease("f", 100))), at(115));
    }
}
