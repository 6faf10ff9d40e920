//! The allocator's I/O: reflectors over Agents, Frameworks, Roles, Offers, Tasks and the two kinds of lease, and a
//! loop that — when something that can matter changes, or a timer from [`next_wakeup`] fires — runs
//! [`housekeeping`] and one [`allocate`] round and writes what they decided.
//!
//! - A burst of changes coalesces into one round. Lease renewals alone wake nothing (their lapses are timers).
//! - A round visits only the agents whose resources changed (a task ended, an offer was declined, the agent joined)
//!   unless something that concerns every agent changed (a framework registered, revived or reconnected, a role's
//!   weight or quota, a timer): the work of one task finishing is one agent's, not the cluster's.
//! - Offers the allocator created are counted as held until its Offer watch shows them, so a round never offers
//!   resources a previous round offered a moment ago. Rescinds and task transitions are guarded by the object's
//!   resourceVersion: an acceptance (or an agent's report) that got there first wins.
//! - Status figures (Agent `status.allocated`, Framework and Role status) are written only when they change, and at
//!   most once a second per object.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agora_client::{Api, Client, DeleteParams, Patch, PatchParams, PostParams};
use agora_schemas::cluster::OfferSpec;
use agora_schemas::{
    Agent, Framework, Lease, ObjectMeta, ObjectReference, Offer, QuotaResources, Resources, Role, Task, TaskState,
};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::json;
use tokio::sync::Notify;

use super::observed::{
    Action, Observed, Statuses, Timing, housekeeping, lease_expiry, next_wakeup, observe_agents, statuses,
};
use super::round::{OfferPlan, RoleView, allocate};
use super::sorter::Amount;
use crate::runtime::cache::{Cache, Seen};
use crate::runtime::events::{Record, Recorder, Reporter};
use crate::runtime::watcher;

/// The field manager of the allocator's writes.
pub const FIELD_MANAGER: &str = "agora-allocator";
pub use agora_schemas::names::{AGENT_LEASE_NAMESPACE, FRAMEWORK_LEASE_NAMESPACE};
/// The least time between two status writes to one object.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// How the allocator runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Offer lifetimes, liveness timeouts.
    pub timing: Timing,
    /// How long a burst of changes is gathered into one round.
    pub coalesce: Duration,
    /// How many writes are in flight at once.
    pub concurrency: usize,
    /// This replica's name, in the Events it reports.
    pub identity: String,
}

impl Default for Config {
    fn default() -> Self {
        Self { timing: Timing::default(), coalesce: Duration::from_millis(5), concurrency: 32, identity: String::new() }
    }
}

/// Which agents the next round should visit, and whether housekeeping must look (its decisions change with time —
/// timers mark everything — and with agents, frameworks and leases, not with tasks and offers coming and going).
#[derive(Debug, Default)]
struct Dirty {
    all: bool,
    housekeeping: bool,
    agents: HashSet<String>,
}

type Shared = Arc<(Mutex<Dirty>, Notify)>;

fn mark(shared: &Shared, what: Mark) {
    {
        let mut dirty = shared.0.lock().unwrap_or_else(PoisonError::into_inner);
        match what {
            Mark::All => dirty.all = true,
            Mark::Agent(name) => {
                dirty.agents.insert(name);
            }
            Mark::AgentItself(name) => {
                dirty.housekeeping = true;
                dirty.agents.insert(name);
            }
        }
    }
    shared.1.notify_one();
}

/// What a change calls for: a round over every agent (and housekeeping), over one agent whose resources changed,
/// or over one agent whose own object or lease changed (and housekeeping).
enum Mark {
    All,
    Agent(String),
    AgentItself(String),
}

struct Caches {
    agents: Store<Agent>,
    frameworks: Store<Framework>,
    roles: Store<Role>,
    offers: Store<Offer>,
    tasks: Store<Task>,
    /// Each accepted offer's tasks ever seen, by offer.
    arrivals: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    agent_leases: Store<Lease>,
    framework_leases: Store<Lease>,
    /// The watch tasks, stopped when the allocator stops (or loses its leadership).
    watches: Vec<tokio::task::AbortHandle>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        self.watches.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

type Store<K> = Cache<K>;

/// Watches `api` into a cache, telling `seen` of every event; the watch stops with the allocator.
fn reflect<K: agora_schemas::Resource + Clone + Send + Sync + 'static>(
    api: Api<K>,
    watches: &mut Vec<tokio::task::AbortHandle>,
    seen: impl FnMut(Seen<'_, K>) + Send + 'static,
) -> Store<K> {
    let (cache, handle) = crate::runtime::cache::cache(api, watcher::Config::default(), seen);
    watches.push(handle);
    cache
}

/// Watches `api` into a cache; each change is marked as `what` says.
fn cache<K: agora_schemas::Resource + Clone + Send + Sync + 'static>(
    api: Api<K>,
    shared: &Shared,
    watches: &mut Vec<tokio::task::AbortHandle>,
    what: fn(&K) -> Mark,
) -> Store<K> {
    let shared = shared.clone();
    reflect(api, watches, move |event| match event {
        Seen::Applied(object) => mark(&shared, what(object)),
        Seen::Deleted(object) => mark(&shared, what(object)),
        Seen::Listed => mark(&shared, Mark::All),
        Seen::Listing(_) => {}
    })
}

/// As [`cache`], for leases: a renewal of a lease that was fresh changes nothing (its lapse is a timer), so only a
/// new lease, a lapsed one renewed, or one deleted is marked — for its agent, or (a framework's) for every agent.
fn lease_cache(
    api: Api<Lease>,
    shared: &Shared,
    watches: &mut Vec<tokio::task::AbortHandle>,
    agents: bool,
) -> Store<Lease> {
    let mut expiries: HashMap<String, Timestamp> = HashMap::new();
    let shared = shared.clone();
    let what = move |name: String| if agents { Mark::AgentItself(name) } else { Mark::All };
    reflect(api, watches, move |event| match event {
        Seen::Applied(lease) | Seen::Listing(lease) => {
            let name = lease.metadata.name.clone().unwrap_or_default();
            let previous = expiries.insert(name.clone(), lease_expiry(Some(lease)));
            if matches!(event, Seen::Applied(_)) && previous.is_none_or(|t| t <= Timestamp::now()) {
                mark(&shared, what(name));
            }
        }
        Seen::Deleted(lease) => {
            let name = lease.metadata.name.clone().unwrap_or_default();
            expiries.remove(&name);
            mark(&shared, what(name));
        }
        Seen::Listed => mark(&shared, Mark::All),
    })
}

/// A Role object's view for the round: weight, guarantee (kinds not named: 0), limit (kinds not named: unbounded).
fn role_view(role: &Role) -> RoleView {
    let quota = role.spec.quota.as_ref();
    let amounts = |q: Option<&QuotaResources>, unset: f64| {
        q.map(|q| Amount::new(q.cpus.unwrap_or(unset), q.mem.unwrap_or(unset), q.disk.unwrap_or(unset)))
    };
    RoleView {
        weight: role.spec.weight(),
        guarantee: amounts(quota.and_then(|q| q.guarantee.as_ref()), 0.0),
        limit: amounts(quota.and_then(|q| q.limit.as_ref()), f64::INFINITY),
    }
}

/// Allocates until `shutdown` completes. Call it only while leading (see `runtime::leader`).
pub async fn run(client: Client, config: Config, shutdown: impl Future<Output = ()>) {
    let shared: Shared = Arc::new((Mutex::new(Dirty::default()), Notify::new()));
    let mut watches = Vec::new();
    let agent_of_task: fn(&Task) -> Mark = |t| Mark::Agent(t.spec.agent.clone());
    let agent_of_offer: fn(&Offer) -> Mark = |o| Mark::Agent(o.spec.agent.clone());
    let arrivals: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    let agent_itself: fn(&Agent) -> Mark = |a| Mark::AgentItself(a.metadata.name.clone().unwrap_or_default());
    let mut caches = Caches {
        agents: cache(Api::all(client.clone()), &shared, &mut watches, agent_itself),
        frameworks: cache(Api::all(client.clone()), &shared, &mut watches, |_| Mark::All),
        roles: cache(Api::all(client.clone()), &shared, &mut watches, |_| Mark::All),
        offers: cache(Api::all(client.clone()), &shared, &mut watches, agent_of_offer),
        tasks: {
            // The tasks each acceptance created, as they are first seen (an offer's tasks may be deleted later).
            let (shared, arrivals) = (shared.clone(), arrivals.clone());
            reflect(Api::all(client.clone()), &mut watches, move |seen| {
                let task = match seen {
                    Seen::Applied(task) | Seen::Listing(task) => &**task,
                    Seen::Deleted(task) => task,
                    Seen::Listed => return mark(&shared, Mark::All),
                };
                if let (Some(offer), Some(name)) = (&task.spec.offer, &task.metadata.name)
                    && !matches!(seen, Seen::Deleted(_))
                {
                    let mut arrivals = arrivals.lock().unwrap_or_else(PoisonError::into_inner);
                    arrivals.entry(offer.clone()).or_default().insert(name.clone());
                }
                mark(&shared, agent_of_task(task));
            })
        },
        arrivals,
        agent_leases: lease_cache(Api::namespaced(client.clone(), AGENT_LEASE_NAMESPACE), &shared, &mut watches, true),
        framework_leases: lease_cache(
            Api::namespaced(client.clone(), FRAMEWORK_LEASE_NAMESPACE),
            &shared,
            &mut watches,
            false,
        ),
        watches: Vec::new(),
    };
    caches.watches = watches;
    // A new leader acts only on complete caches.
    for ready in [
        caches.agents.wait_until_ready().await,
        caches.frameworks.wait_until_ready().await,
        caches.roles.wait_until_ready().await,
        caches.offers.wait_until_ready().await,
        caches.tasks.wait_until_ready().await,
        caches.agent_leases.wait_until_ready().await,
        caches.framework_leases.wait_until_ready().await,
    ] {
        if !ready {
            return;
        }
    }
    tracing::info!("allocator caches synced");
    let recorder = Recorder::new(client.clone(), Reporter::new(FIELD_MANAGER, Some(&config.identity)));
    let mut writer = StatusWriter::default();
    let mut pending: BTreeMap<String, Arc<Offer>> = BTreeMap::new();
    let mut shutdown = std::pin::pin!(shutdown);
    mark(&shared, Mark::All);
    loop {
        // Time spent deciding (not waiting on writes), which paces the next round.
        let mut busy = Duration::ZERO;
        let mut timed = Instant::now();
        let dirty = std::mem::take(&mut *shared.0.lock().unwrap_or_else(PoisonError::into_inner));
        let observed = observed(&caches, &mut pending);
        let now = Timestamp::now();
        if dirty.all || dirty.housekeeping {
            let actions = housekeeping(&observed, config.timing, now);
            busy += timed.elapsed();
            explain(&recorder, &observed, &actions, config.concurrency).await;
            apply(&client, &config, actions).await;
            timed = Instant::now();
        }
        let roles: BTreeMap<String, RoleView> = caches.roles.state().iter().map(|r| (r.role(), role_view(r))).collect();
        let snapshot = observe_agents(&observed, &roles, now, (!dirty.all).then_some(&dirty.agents));
        let mut order: Vec<usize> = (0..snapshot.agents.len()).collect();
        fastrand::shuffle(&mut order);
        let plans = allocate(&snapshot, &order, now);
        if !plans.is_empty() {
            tracing::debug!(offers = plans.len(), visited = order.len(), "round");
        }
        let figures = statuses(&observed, &snapshot, now);
        busy += timed.elapsed();
        for offer in offer_all(&client, &config, &observed, plans, now).await {
            pending.insert(offer.metadata.name.clone().unwrap_or_default(), Arc::new(offer));
        }
        let deferred = writer.write(&client, &config, &recorder, &caches, &figures).await;
        let mut wakeup = next_wakeup(&observed, config.timing, now)
            .map(|t| Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600));
        if deferred {
            wakeup = wakeup.min(STATUS_INTERVAL);
        }
        tokio::select! {
            () = shared.1.notified() => {}
            () = tokio::time::sleep(wakeup) => mark(&shared, Mark::All),
            () = &mut shutdown => return,
        }
        // Gather the rest of a burst — for at least twice as long as the last round took, so a storm of changes
        // (thousands of tasks starting) costs at most a third of a core in rounds, however large the cluster.
        tokio::time::sleep(config.coalesce.max(busy * 2)).await;
    }
}

/// The caches' contents, with the offers this allocator created that its watch has not shown yet.
fn observed(caches: &Caches, pending: &mut BTreeMap<String, Arc<Offer>>) -> Observed {
    let name = |lease: &Lease| lease.metadata.name.clone().unwrap_or_default();
    let mut offers = caches.offers.state();
    if !pending.is_empty() {
        let seen: HashSet<&str> = offers.iter().filter_map(|o| o.metadata.name.as_deref()).collect();
        pending.retain(|name, _| !seen.contains(name.as_str()));
        offers.extend(pending.values().cloned());
    }
    // Offers gone are forgotten.
    let arrived_ever = {
        let mut arrivals = caches.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        let names: HashSet<&str> = offers.iter().filter_map(|o| o.metadata.name.as_deref()).collect();
        arrivals.retain(|offer, _| names.contains(offer.as_str()));
        arrivals.iter().map(|(offer, tasks)| (offer.clone(), tasks.len())).collect()
    };
    Observed {
        agents: caches.agents.state(),
        frameworks: caches.frameworks.state(),
        offers,
        tasks: caches.tasks.state(),
        arrived_ever,
        agent_leases: caches.agent_leases.state().into_iter().map(|l| (name(&l), l)).collect(),
        framework_leases: caches.framework_leases.state().into_iter().map(|l| (name(&l), l)).collect(),
    }
}

/// Creates the planned offers; returns those created.
async fn offer_all(
    client: &Client,
    config: &Config,
    observed: &Observed,
    plans: Vec<OfferPlan>,
    now: Timestamp,
) -> Vec<Offer> {
    if plans.is_empty() {
        return Vec::new();
    }
    let offers: Api<Offer> = Api::all(client.clone());
    let agents: HashMap<&str, &Agent> =
        observed.agents.iter().map(|a| (a.metadata.name.as_deref().unwrap_or_default(), &**a)).collect();
    let expires = now + jiff::SignedDuration::try_from(config.timing.offer_timeout).unwrap_or_default();
    let params = PostParams::default().manager(FIELD_MANAGER);
    futures::stream::iter(plans)
        .map(|plan| {
            let agent = agents.get(plan.agent.as_str());
            let hostname = agent.and_then(|a| a.status.as_ref()).and_then(|s| s.hostname.clone());
            let attributes = agent.map(|a| a.spec.attributes.clone()).unwrap_or_default();
            let (offers, params) = (offers.clone(), params.clone());
            async move {
                let prefix: String =
                    format!("{}-{}-", plan.agent, plan.framework)
                        .chars()
                        .take(40)
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c.to_ascii_lowercase() } else { '-' }
                        })
                        .collect();
                let metadata = ObjectMeta { generate_name: Some(prefix), ..ObjectMeta::default() };
                let spec = OfferSpec {
                    framework: plan.framework.clone(),
                    agent: plan.agent.clone(),
                    hostname,
                    role: Some(plan.role.clone()),
                    resources: resources(plan.resources, plan.ports.clone()),
                    attributes,
                    expires_at: Some(expires),
                };
                match offers.create(&params, &Offer::new(metadata, spec)).await {
                    Ok(offer) => Some(offer),
                    Err(e) => {
                        tracing::warn!(agent = %plan.agent, framework = %plan.framework, error = %e, "offer not made");
                        None
                    }
                }
            }
        })
        .buffer_unordered(config.concurrency)
        .filter_map(|offer| async move { offer })
        .collect()
        .await
}

/// Amounts to a thousandth, rounded down (DRF arithmetic leaves long fractions; an offer never exceeds what is free).
fn resources(amount: Amount, ports: Vec<agora_schemas::PortRange>) -> Resources {
    let round = |value: f64| (value * 1000.0 + 1e-6).floor() / 1000.0;
    Resources { cpus: round(amount.cpus), mem: round(amount.mem), disk: round(amount.disk), ports }
}

/// Reports the decisions people ask about as Events on the objects concerned.
async fn explain(recorder: &Recorder, observed: &Observed, actions: &[Action], concurrency: usize) {
    let reference = |kind: &str, namespace: Option<&str>, name: &str| ObjectReference {
        api_version: Some(agora_schemas::API_VERSION.to_owned()),
        kind: kind.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
        ..ObjectReference::default()
    };
    let mut rescinds_per_framework: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let offers: HashMap<&str, &Offer> =
        observed.offers.iter().map(|o| (o.metadata.name.as_deref().unwrap_or_default(), &**o)).collect();
    let mut records = Vec::new();
    for action in actions {
        match action {
            Action::AgentReady { agent, ready, message, .. } => {
                let record = if *ready {
                    Record::normal("AgentReachable", format!("agent {agent} is back: {message}"))
                } else {
                    Record::warning("AgentUnreachable", format!("agent {agent} is unreachable: {message}"))
                };
                records.push((reference("Agent", None, agent), record));
            }
            Action::TaskState { namespace, task, state: TaskState::Gone, message, .. } => {
                records.push((reference("Task", Some(namespace), task), Record::warning("TaskGone", message.clone())));
            }
            Action::KillTask { namespace, task, message } => {
                records
                    .push((reference("Task", Some(namespace), task), Record::warning("FailedOver", message.clone())));
            }
            Action::Rescind { offer, reason, .. } => {
                if let Some(o) = offers.get(offer.as_str()) {
                    *rescinds_per_framework.entry((o.spec.framework.as_str(), reason)).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    // One event per framework and reason, not one per offer.
    for ((framework, reason), count) in rescinds_per_framework {
        let message = format!("{count} offer(s) rescinded: {}", rescind_reason(reason));
        records.push((reference("Framework", None, framework), Record::normal("OffersRescinded", message)));
    }
    // Concurrently: a rack going dark is thousands of agents, each with its Event.
    futures::stream::iter(records)
        .for_each_concurrent(concurrency, |(object, record)| async move {
            if let Err(e) = recorder.publish(&object, record).await {
                tracing::debug!(error = %e, "event not recorded");
            }
        })
        .await;
}

fn rescind_reason(reason: &str) -> &'static str {
    match reason {
        "Expired" => "not used before they expired",
        "AgentUnreachable" => "their agent stopped heartbeating",
        "AgentUnschedulable" => "their agent was cordoned",
        "AgentGone" => "their agent is gone",
        _ => "the framework is not connected (its lease lapsed)",
    }
}

/// Writes what housekeeping decided.
async fn apply(client: &Client, config: &Config, actions: Vec<Action>) {
    let params = PatchParams::default().manager(FIELD_MANAGER);
    futures::stream::iter(actions)
        .for_each_concurrent(config.concurrency, |action| {
            let (client, params) = (client.clone(), params.clone());
            async move {
                let now = Timestamp::now();
                let written = match &action {
                    Action::Rescind { offer, resource_version, reason, message } => {
                        let patch = json!({"metadata": {"resourceVersion": resource_version},
                            "status": {"phase": "Rescinded", "reason": reason, "message": message, "decidedAt": now}});
                        Api::<Offer>::all(client).patch_status(offer, &params, &Patch::Merge(patch)).await.map(drop)
                    }
                    Action::DeleteOffer { offer } => {
                        Api::<Offer>::all(client).delete(offer, &DeleteParams::default()).await.map(drop)
                    }
                    Action::AgentReady { agent, ready, reason, message } => {
                        let condition = json!({"type": "Ready", "status": if *ready { "True" } else { "False" },
                            "reason": reason, "message": message, "lastTransitionTime": now});
                        let patch = json!({"status": {"conditions": [condition]}});
                        Api::<Agent>::all(client).patch_status(agent, &params, &Patch::Merge(patch)).await.map(drop)
                    }
                    Action::TaskState { namespace, task, resource_version, state, message } => {
                        let mut status = json!({"state": state, "message": message, "reason": "Allocator"});
                        if state.is_terminal() {
                            status["finishedAt"] = json!(now);
                        }
                        let patch = json!({"metadata": {"resourceVersion": resource_version}, "status": status});
                        let tasks = Api::<Task>::namespaced(client, namespace);
                        tasks.patch_status(task, &params, &Patch::Merge(patch)).await.map(drop)
                    }
                    Action::KillTask { namespace, task, message } => {
                        tracing::info!(task = %format!("{namespace}/{task}"), %message, "killing");
                        let patch = json!({"spec": {"killRequested": true}});
                        Api::<Task>::namespaced(client, namespace)
                            .patch(task, &params, &Patch::Merge(patch))
                            .await
                            .map(drop)
                    }
                };
                match written {
                    Ok(()) => tracing::debug!(?action, "done"),
                    Err(e) if e.is_conflict() || e.is_not_found() => tracing::debug!(?action, error = %e, "overtaken"),
                    Err(e) => tracing::warn!(?action, error = %e, "not written; the next round tries again"),
                }
            }
        })
        .await;
}

/// Status writes, each object at most once per [`STATUS_INTERVAL`].
#[derive(Default)]
struct StatusWriter {
    last: HashMap<String, Instant>,
    /// Roles last reported at their limit.
    at_limit: HashSet<String>,
}

/// Whether `have` already says `want` (nothing written yet says zero: an idle agent needs no write).
fn same_resources(have: Option<&Resources>, want: &Resources) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-3;
    let zero = Resources::default();
    let have = have.unwrap_or(&zero);
    close(have.cpus, want.cpus) && close(have.mem, want.mem) && close(have.disk, want.disk)
}

impl StatusWriter {
    /// Whether `key` may be written now (and if so, records it as written).
    fn may_write(&mut self, key: String) -> bool {
        let now = Instant::now();
        match self.last.get(&key) {
            Some(at) if now.duration_since(*at) < STATUS_INTERVAL => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }

    /// Writes the figures that changed; returns whether some had to wait for their interval.
    async fn write(
        &mut self,
        client: &Client,
        config: &Config,
        recorder: &Recorder,
        caches: &Caches,
        figures: &Statuses,
    ) -> bool {
        // Forget writes older than the interval (once per pass), so objects long gone are not remembered forever.
        let now = Instant::now();
        self.last.retain(|_, at| now.duration_since(*at) < STATUS_INTERVAL);
        let mut deferred = false;
        let mut writes: Vec<(String, &'static str, serde_json::Value)> = Vec::new();
        for (name, held) in &figures.agents {
            let Some(agent) = caches.agents.get(name) else { continue };
            let name = name.clone();
            let want = resources(*held, Vec::new());
            if !same_resources(agent.status.as_ref().and_then(|s| s.allocated.as_ref()), &want) {
                if self.may_write(format!("agents/{name}")) {
                    writes.push((name, "agents", json!({"status": {"allocated": want}})));
                } else {
                    deferred = true;
                }
            }
        }
        for framework in caches.frameworks.state() {
            let name = framework.metadata.name.clone().unwrap_or_default();
            let Some(want) = figures.frameworks.get(&name) else { continue };
            let allocated = resources(want.allocated, Vec::new());
            let status = framework.status.clone().unwrap_or_default();
            let connected = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Connected")
                .map(|c| if c.status == agora_schemas::ConditionStatus::True { "True" } else { "False" });
            let want_connected = if want.connected { "True" } else { "False" };
            let share = (want.dominant_share * 1e4).round() / 1e4;
            let unchanged = same_resources(status.allocated.as_ref(), &allocated)
                && status.dominant_share.is_some_and(|s| (s - share).abs() < 1e-4)
                && status.outstanding_offers == want.outstanding_offers
                && connected == Some(want_connected);
            if unchanged {
                continue;
            }
            if !self.may_write(format!("frameworks/{name}")) {
                deferred = true;
                continue;
            }
            let now = Timestamp::now();
            let mut patch = json!({"status": {"allocated": allocated, "dominantShare": share,
                "outstandingOffers": want.outstanding_offers, "lastSeen": want.last_seen}});
            if connected != Some(want_connected) {
                let (reason, message) = if want.connected {
                    ("LeaseRenewed", format!("framework {name} renews its lease in {FRAMEWORK_LEASE_NAMESPACE}"))
                } else {
                    ("LeaseLapsed", format!("framework {name} stopped renewing its lease; its offers are rescinded"))
                };
                let condition = json!({"type": "Connected", "status": want_connected, "reason": reason,
                    "message": message, "lastTransitionTime": now});
                patch["status"]["conditions"] = json!([condition]);
                // Events for changes only: a framework first seen before its lease (it registers, then renews)
                // was never connected, so nothing "stopped".
                if connected.is_some() {
                    let record = if want.connected {
                        Record::normal("FrameworkConnected", message)
                    } else {
                        Record::warning("FrameworkDisconnected", message)
                    };
                    let _ = recorder.publish(&crate::runtime::events::reference(&*framework), record).await;
                }
            }
            writes.push((name, "frameworks", patch));
        }
        for role in caches.roles.state() {
            let name = role.metadata.name.clone().unwrap_or_default();
            let Some(want) = figures.roles.get(&role.role()) else { continue };
            let (allocated, offered) = (resources(want.allocated, Vec::new()), resources(want.offered, Vec::new()));
            let share = (want.dominant_share * 1e4).round() / 1e4;
            let status = role.status.clone().unwrap_or_default();
            if want.at_limit && self.at_limit.insert(name.clone()) {
                let record = Record::normal("AtQuotaLimit", format!("role {} holds its quota limit", role.role()));
                let _ = recorder.publish(&crate::runtime::events::reference(&*role), record).await;
            } else if !want.at_limit {
                self.at_limit.remove(&name);
            }
            let unchanged = same_resources(status.allocated.as_ref(), &allocated)
                && same_resources(status.offered.as_ref(), &offered)
                && status.dominant_share.is_some_and(|s| (s - share).abs() < 1e-4);
            if unchanged {
                continue;
            }
            if !self.may_write(format!("roles/{name}")) {
                deferred = true;
                continue;
            }
            writes.push((
                name,
                "roles",
                json!({"status": {"allocated": allocated, "offered": offered, "dominantShare": share}}),
            ));
        }
        let params = PatchParams::default().manager(FIELD_MANAGER);
        futures::stream::iter(writes)
            .for_each_concurrent(config.concurrency, |(name, plural, patch)| {
                let (client, params) = (client.clone(), params.clone());
                async move {
                    let patch = Patch::Merge(patch);
                    let written = match plural {
                        "agents" => Api::<Agent>::all(client).patch_status(&name, &params, &patch).await.map(drop),
                        "frameworks" => {
                            Api::<Framework>::all(client).patch_status(&name, &params, &patch).await.map(drop)
                        }
                        _ => Api::<Role>::all(client).patch_status(&name, &params, &patch).await.map(drop),
                    };
                    if let Err(e) = written
                        && !e.is_not_found()
                    {
                        tracing::warn!(object = %format!("{plural}/{name}"), error = %e, "status not written");
                    }
                }
            })
            .await;
        deferred
    }
}
