//! The framework SDK: everything a framework needs besides its own decisions.
//!
//! A framework implements [`Scheduler`] — the whole contract:
//!
//! ```text
//! offers(offers, tasks) -> launches   what to run on which offer; offers left out are declined
//! wants_offers(tasks)   -> bool       false suppresses the framework, true revives it
//! done(tasks)           -> bool       true: unregister and return
//! hold(offer)           -> bool       true: leave an unused offer unanswered, to use it soon (default false)
//! failed(launch, error)               an acceptance failed; its offer is presented again (default: nothing)
//! ```
//!
//! and [`Framework::run`] does the rest: it registers the Framework object (server-side apply: roles, weight,
//! failover timeout, user), elects one leader among replicas on the Lease named after the framework in
//! `agora-frameworks` — the same lease the allocator reads as "connected" — watches the framework's Outstanding
//! Offers and its Tasks, accepts and declines (with a refuse filter), suppresses and revives, retries transient
//! errors, and converges after a restart from the objects alone. [`placement`] has the pure helpers to decide with.

pub mod companion;
pub mod placement;
pub mod timers;
pub mod writes;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agora_client::{Api, Client, DeleteParams, Patch, PatchParams};
use agora_schemas::{Framework as FrameworkObject, Lease, Offer, OfferAcceptance, OfferPhase, Task, TaskTemplate};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::json;
use tokio::sync::{Mutex, Notify};

use crate::allocator::controller::FRAMEWORK_LEASE_NAMESPACE;
use crate::runtime::AbortOnDrop;
use crate::runtime::cache::{Cache, Seen, cache, cache_trimmed};
use crate::runtime::leader::{LeaderElector, LeaseConfig};
use crate::runtime::watcher;

/// Offer answers (accepts and declines) in flight at once.
const ANSWERS_IN_FLIGHT: usize = 32;

/// What to launch from one offer.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The offer's name.
    pub offer: String,
    /// The tasks (the server binds them to the offer's agent and framework).
    pub tasks: Vec<TaskTemplate>,
}

impl Launch {
    /// Adds `task` to the launch from `offer` in `launches` (a new launch if it has none yet).
    pub fn add(launches: &mut Vec<Self>, offer: &str, task: TaskTemplate) {
        match launches.iter_mut().find(|l| l.offer == offer) {
            Some(launch) => launch.tasks.push(task),
            None => launches.push(Self { offer: offer.to_owned(), tasks: vec![task] }),
        }
    }
}

/// How a framework replica registers and leads: the settings every framework shares.
#[derive(Clone, Debug)]
pub struct Registration {
    /// This replica's name in the leader election (default: `<framework>-<pid>`).
    pub identity: Option<String>,
    /// The roles it takes offers in.
    pub roles: Vec<String>,
    /// The lease timing.
    pub lease: LeaseConfig,
}

impl Default for Registration {
    fn default() -> Self {
        Self { identity: None, roles: vec!["*".to_owned()], lease: LeaseConfig::default() }
    }
}

impl Registration {
    /// This replica's identity as framework `name`.
    #[must_use]
    pub fn identity(&self, name: &str) -> String {
        self.identity.clone().unwrap_or_else(|| format!("{name}-{}", std::process::id()))
    }
}

/// A framework's decisions. `tasks` are the framework's Tasks as last seen (terminal ones included).
pub trait Scheduler: Send + 'static {
    /// What to launch from these Outstanding offers. Offers not named are declined.
    fn offers(&mut self, offers: &[Arc<Offer>], tasks: &[Arc<Task>]) -> Vec<Launch>;
    /// Whether the framework wants offers now.
    fn wants_offers(&self, tasks: &[Arc<Task>]) -> bool;
    /// Whether its work is done: the runner then unregisters the framework and returns.
    fn done(&self, _tasks: &[Arc<Task>]) -> bool {
        false
    }
    /// Whether to keep an offer it did not launch on, neither accepted nor declined, so it is at hand when work is
    /// due (a held offer is presented again on every later decision, until it is used, rescinded or expires). A
    /// declined offer's agent is filtered for the refuse time; a held one is not.
    fn hold(&mut self, _offer: &Offer) -> bool {
        false
    }
    /// An acceptance failed (the offer was rescinded, a task's name exists already, the apiserver was away); the
    /// offer, if still outstanding, is presented again.
    fn failed(&mut self, _launch: &Launch, _error: &agora_client::Error) {}
}

/// What a leader's companion (see [`Framework::run_with`]) works with: the framework's Tasks, already listed, and
/// every change to them as it arrives.
pub struct Leading {
    /// The framework's Tasks (the cache the runner decides on).
    pub tasks: Cache<Task>,
    /// Each change to them, after the cache has applied it.
    pub changes: tokio::sync::mpsc::UnboundedReceiver<TaskChange>,
    /// Notify to have the runner ask the scheduler again (what it wants changed without a task or offer change).
    pub wake: Arc<Notify>,
}

/// A change to one of the framework's Tasks, or a relist after which any of them may have changed.
#[derive(Clone, Debug)]
pub enum TaskChange {
    /// The task was created or changed; this is its new state.
    Applied(Arc<Task>),
    /// The task was deleted; this is its last state.
    Deleted(Arc<Task>),
    /// The watch listed again: anything may have changed.
    Relisted,
}

/// Why a framework could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Framework object could not be written.
    #[error("registering framework {name}: {source}")]
    Register {
        /// The framework.
        name: String,
        /// What the apiserver said.
        #[source]
        source: agora_client::Error,
    },
    /// The leader election's timing is wrong.
    #[error(transparent)]
    Election(#[from] crate::runtime::leader::Error),
}

/// A framework and how it takes part in allocation.
#[derive(Clone, Debug)]
#[must_use]
pub struct Framework {
    client: Client,
    name: String,
    roles: Vec<String>,
    weight: f64,
    failover_timeout: Duration,
    user: Option<String>,
    identity: String,
    refuse: Duration,
    lease: LeaseConfig,
    trim: fn(&mut Task),
}

impl Framework {
    /// The framework `name` as `registration` says (roles, identity, lease).
    pub fn registered(client: Client, name: &str, registration: &Registration) -> Self {
        let roles: Vec<&str> = registration.roles.iter().map(String::as_str).collect();
        Self::new(client, name).roles(&roles).identity(&registration.identity(name)).lease(registration.lease)
    }

    /// The framework `name` (a DNS subdomain), in role `*` with weight 1, a one-week failover timeout and a 5 s
    /// refuse filter on declines.
    pub fn new(client: Client, name: &str) -> Self {
        Self {
            client,
            name: name.to_owned(),
            roles: vec!["*".to_owned()],
            weight: 1.0,
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            user: None,
            identity: format!("{}-{}", name, std::process::id()),
            refuse: Duration::from_secs(5),
            lease: LeaseConfig::default(),
            trim: |_| {},
        }
    }

    /// The roles it receives offers in.
    pub fn roles(mut self, roles: &[&str]) -> Self {
        self.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        self
    }

    /// Its DRF weight within its roles.
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// How long its tasks outlive it when it stops renewing its lease.
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.failover_timeout = timeout;
        self
    }

    /// The user its tasks run as when they do not say.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// This replica's name in the leader election.
    pub fn identity(mut self, identity: &str) -> Self {
        identity.clone_into(&mut self.identity);
        self
    }

    /// How long a declined offer's agent is not offered again.
    pub fn refuse(mut self, refuse: Duration) -> Self {
        self.refuse = refuse;
        self
    }

    /// The lease timing (how fast a standby replica takes over, and the allocator notices a dead framework).
    pub fn lease(mut self, lease: LeaseConfig) -> Self {
        self.lease = lease;
        self
    }

    /// Drops fields of its Tasks the scheduler never reads before they are cached (memory, at 100,000 tasks).
    pub fn trim_tasks(mut self, trim: fn(&mut Task)) -> Self {
        self.trim = trim;
        self
    }

    /// Registers the framework, competes for its lease and, while leading, feeds `scheduler` until it is done (the
    /// Framework object is then deleted) or `shutdown` completes (the lease is released; the framework stays
    /// registered and its tasks run on, for a successor).
    ///
    /// # Errors
    /// When the Framework object cannot be written or the lease timing is invalid.
    pub async fn run<S: Scheduler>(
        self,
        scheduler: S,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<S, Error> {
        self.run_with(scheduler, |_| async {}, shutdown).await
    }

    /// As [`run`](Self::run), and while leading, after the caches are listed, also runs `companion` — the part of a
    /// framework that acts on its tasks outside offers (kills, status, cleanup): it starts with each leadership and
    /// is stopped when the leadership ends, so only the leader ever acts.
    ///
    /// # Errors
    /// When the Framework object cannot be written or the lease timing is invalid.
    pub async fn run_with<S, C, F>(
        self,
        scheduler: S,
        companion: C,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<S, Error>
    where
        S: Scheduler,
        C: Fn(Leading) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let companion = Arc::new(companion);
        self.register().await?;
        let scheduler = Arc::new(Mutex::new(scheduler));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), FRAMEWORK_LEASE_NAMESPACE);
        // One signal stops both the election and the leader's work (the elector waits for the work to end before it
        // releases the lease).
        let stop = futures::FutureExt::shared(Box::pin(shutdown) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>);
        LeaderElector::new(leases, &self.name, &self.identity)
            .config(self.lease)
            .shutdown_on(stop.clone())
            .run(|| {
                let (this, scheduler, done, companion, stop) =
                    (self.clone(), scheduler.clone(), done.clone(), companion.clone(), stop.clone());
                async move {
                    tokio::select! {
                        finished = this.lead(&scheduler, &*companion) => {
                            if finished {
                                done.store(true, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                        () = stop => {}
                    }
                }
            })
            .await?;
        if done.load(std::sync::atomic::Ordering::SeqCst) {
            let frameworks: Api<FrameworkObject> = Api::all(self.client.clone());
            if let Err(e) = frameworks.delete(&self.name, &DeleteParams::default()).await {
                tracing::warn!(framework = %self.name, error = %e, "could not unregister");
            }
        }
        let scheduler = Arc::try_unwrap(scheduler).map_err(|_| ()).map(Mutex::into_inner);
        // The election has ended, so no other holder of the scheduler is left.
        Ok(scheduler.unwrap_or_else(|()| unreachable!("the scheduler is shared only while leading")))
    }

    /// The Framework object, written with server-side apply (retried while the apiserver is away).
    async fn register(&self) -> Result<(), Error> {
        let frameworks: Api<FrameworkObject> = Api::all(self.client.clone());
        let mut spec = json!({"roles": self.roles, "weight": self.weight,
            "failoverTimeoutSeconds": self.failover_timeout.as_secs()});
        if let Some(user) = &self.user {
            spec["user"] = json!(user);
        }
        let intent = json!({"apiVersion": agora_schemas::API_VERSION, "kind": "Framework",
            "metadata": {"name": self.name}, "spec": spec});
        let params = PatchParams::apply(&self.manager()).force();
        let mut delay = Duration::from_millis(100);
        loop {
            match frameworks.patch(&self.name, &params, &Patch::Apply(&intent)).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_transient() && delay < Duration::from_secs(30) => {
                    tracing::warn!(framework = %self.name, error = %e, "registering; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(source) => return Err(Error::Register { name: self.name.clone(), source }),
            }
        }
    }

    fn manager(&self) -> String {
        format!("framework-{}", self.name)
    }

    /// The leader's loop: returns true when the scheduler is done (false when its watches ended first).
    async fn lead<S, C, F>(&self, shared_scheduler: &Mutex<S>, companion: &C) -> bool
    where
        S: Scheduler,
        C: Fn(Leading) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let changed = Arc::new(Notify::new());
        let selector = format!("spec.framework={}", self.name);
        let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
        let offers = watch::<Offer>(&self.client, &selector, &changed);
        let tasks = watch_tasks(&self.client, &selector, &changed, changes_tx, self.trim);
        let frameworks = watch::<FrameworkObject>(&self.client, &format!("metadata.name={}", self.name), &changed);
        for store in [offers.0.wait_until_ready().await, tasks.0.wait_until_ready().await] {
            if !store {
                return false;
            }
        }
        frameworks.0.wait_until_ready().await;
        let leading = Leading { tasks: tasks.0.clone(), changes, wake: changed.clone() };
        let _companion = AbortOnDrop(tokio::spawn(companion(leading)).abort_handle());
        // Offers answered whose new phase the watch has not shown yet, and tasks accepted but not yet seen.
        let mut answered: HashSet<String> = HashSet::new();
        let mut awaited: HashSet<String> = HashSet::new();
        loop {
            // The time spent deciding (not waiting on the apiserver) paces the loop: after an iteration that took t,
            // the next waits at least t, so a storm of task changes costs at most half a core however large the
            // cache.
            let started = std::time::Instant::now();
            let compute;
            let all_tasks = tasks.0.state();
            awaited.retain(|key| tasks.0.get(key).is_none());
            let outstanding: Vec<Arc<Offer>> = offers
                .0
                .state()
                .into_iter()
                .filter(|o| o.status.as_ref().is_none_or(|s| s.phase == OfferPhase::Outstanding))
                .collect();
            let live: HashSet<&str> = outstanding.iter().filter_map(|o| o.metadata.name.as_deref()).collect();
            answered.retain(|o| live.contains(o.as_str()));
            let mut scheduler = shared_scheduler.lock().await;
            if scheduler.done(&all_tasks) {
                return true;
            }
            let suppressed = frameworks.0.state().first().map(|f| f.spec.suppressed());
            let wants = scheduler.wants_offers(&all_tasks);
            if let Some(suppressed) = suppressed
                && suppressed == wants
            {
                self.set_suppressed(!wants).await;
            }
            let fresh: Vec<Arc<Offer>> = outstanding
                .into_iter()
                .filter(|o| !answered.contains(o.metadata.name.as_deref().unwrap_or_default()))
                .collect();
            // Decide only on tasks already seen: until an acceptance's tasks arrive, new offers wait.
            let mut retry = false;
            if !fresh.is_empty() && !awaited.is_empty() {
                tracing::debug!(framework = %self.name, offers = fresh.len(), awaited = awaited.len(),
                    "offers wait until the tasks of the last acceptances are seen");
            }
            if !fresh.is_empty() && awaited.is_empty() {
                let launches = scheduler.offers(&fresh, &all_tasks);
                // Offers neither launched on nor held are declined.
                let used: HashSet<&str> = launches.iter().map(|l| l.offer.as_str()).collect();
                let answering: Vec<Arc<Offer>> = fresh
                    .iter()
                    .filter(|o| {
                        let name = o.metadata.name.as_deref().unwrap_or_default();
                        used.contains(name) || !scheduler.hold(o)
                    })
                    .cloned()
                    .collect();
                drop(used);
                drop(scheduler);
                compute = started.elapsed();
                let (created, failed) = self.answer(&answering, launches).await;
                for offer in &answering {
                    let name = offer.metadata.name.clone().unwrap_or_default();
                    if !failed.iter().any(|(o, _)| *o == name) {
                        answered.insert(name);
                    }
                }
                awaited.extend(created);
                retry = failed.iter().any(|(o, _)| !o.is_empty());
                if !failed.is_empty() {
                    let mut scheduler = shared_scheduler.lock().await;
                    for (_, failure) in &failed {
                        if let Some((launch, error)) = failure {
                            scheduler.failed(launch, error);
                        }
                    }
                }
            } else {
                drop(scheduler);
                compute = started.elapsed();
            }
            drop(all_tasks);
            if compute > Duration::from_millis(1) {
                tokio::time::sleep(compute.min(Duration::from_millis(500))).await;
            }
            let wait = if retry { Duration::from_secs(1) } else { Duration::from_secs(30) };
            let _ = tokio::time::timeout(wait, changed.notified()).await;
        }
    }

    async fn set_suppressed(&self, suppressed: bool) {
        let frameworks: Api<FrameworkObject> = Api::all(self.client.clone());
        // REVIVE also clears the framework's filters: declines before revivedAt filter nothing.
        let patch = if suppressed {
            json!({"spec": {"suppressed": true}})
        } else {
            json!({"spec": {"suppressed": false, "revivedAt": Timestamp::now()}})
        };
        let params = PatchParams::default().manager(&self.manager());
        match frameworks.patch(&self.name, &params, &Patch::Merge(patch)).await {
            Ok(_) => {
                tracing::info!(framework = %self.name, suppressed, "offers {}", if suppressed { "suppressed" } else { "revived" })
            }
            Err(e) => tracing::warn!(framework = %self.name, error = %e, "suppress/revive failed; retrying"),
        }
    }

    /// Accepts the launches and declines the other offers; returns the tasks created (`namespace/name`) and the
    /// offers whose answer failed for a reason worth retrying (with the launch and the error, for an acceptance).
    async fn answer(&self, offers: &[Arc<Offer>], launches: Vec<Launch>) -> (Vec<String>, Vec<(String, Failure)>) {
        let api: Api<Offer> = Api::all(self.client.clone());
        let refuse = self.refuse.as_secs_f64();
        let mut by_offer: std::collections::HashMap<String, Vec<TaskTemplate>> = std::collections::HashMap::new();
        for launch in launches {
            by_offer.entry(launch.offer).or_default().extend(launch.tasks);
        }
        let mut answers: Vec<(String, OfferAcceptance)> = Vec::new();
        for offer in offers {
            let name = offer.metadata.name.clone().unwrap_or_default();
            let tasks = by_offer.remove(&name).unwrap_or_default();
            let refuse_seconds = tasks.is_empty().then_some(refuse);
            answers.push((name, OfferAcceptance { tasks, refuse_seconds, ..OfferAcceptance::default() }));
        }
        let templates: std::collections::HashMap<String, Vec<TaskTemplate>> =
            answers.iter().filter(|(_, a)| !a.tasks.is_empty()).map(|(n, a)| (n.clone(), a.tasks.clone())).collect();
        let results: Vec<(String, Vec<String>, agora_client::Result<Offer>)> = futures::stream::iter(answers)
            .map(|(name, acceptance)| {
                let api = api.clone();
                // The created tasks come back by name, in the order of the templates: their namespaces are these.
                let namespaces: Vec<String> = acceptance
                    .tasks
                    .iter()
                    .map(|t| t.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()))
                    .collect();
                async move {
                    let result = api.accept(&name, &acceptance).await;
                    (name, namespaces, result)
                }
            })
            .buffer_unordered(ANSWERS_IN_FLIGHT)
            .collect()
            .await;
        let mut created = Vec::new();
        let mut failed = Vec::new();
        for (name, namespaces, result) in results {
            match result {
                Ok(offer) => {
                    let names = offer.status.map(|s| s.tasks).unwrap_or_default();
                    created.extend(names.iter().zip(&namespaces).map(|(task, ns)| format!("{ns}/{task}")));
                }
                // Decided meanwhile (rescinded, expired): the watch will show it.
                Err(e) if e.is_not_found() || e.is_conflict() && !e.is_already_exists() => {
                    tracing::debug!(offer = %name, error = %e, "offer already decided");
                    let tasks = templates.get(&name).cloned();
                    if let Some(tasks) = tasks {
                        // Nothing to retry on this offer, but the scheduler should know its launch did not happen.
                        failed.push((String::new(), Some((Launch { offer: name, tasks }, e))));
                    }
                }
                Err(e) => {
                    if e.is_already_exists() {
                        // A task of this name was created before (by a predecessor, or a lost response): claimed.
                        tracing::info!(framework = %self.name, offer = %name, error = %e, "a task exists already");
                    } else {
                        tracing::warn!(framework = %self.name, offer = %name, error = %e, "answering the offer failed");
                    }
                    let launch =
                        templates.get(&name).map(|tasks| (Launch { offer: name.clone(), tasks: tasks.clone() }, e));
                    failed.push((name, launch));
                }
            }
        }
        (created, failed)
    }
}

/// An answer that failed: the launch it carried (none for a decline) and why.
type Failure = Option<(Launch, agora_client::Error)>;

/// A cache of the objects matching `fields`, waking `changed` on every change.
fn watch<K: agora_schemas::Resource + Clone + Send + Sync + 'static>(
    client: &Client,
    fields: &str,
    changed: &Arc<Notify>,
) -> (Cache<K>, AbortOnDrop) {
    let changed = changed.clone();
    let (cache, handle) = cache(Api::all(client.clone()), watcher::Config::default().fields(fields), move |_| {
        changed.notify_one();
    });
    (cache, AbortOnDrop(handle))
}

/// As [`watch`], for the framework's Tasks, also telling `changes` of each change.
fn watch_tasks(
    client: &Client,
    fields: &str,
    changed: &Arc<Notify>,
    changes: tokio::sync::mpsc::UnboundedSender<TaskChange>,
    trim: fn(&mut Task),
) -> (Cache<Task>, AbortOnDrop) {
    let changed = changed.clone();
    let config = watcher::Config::default().fields(fields);
    let (cache, handle) = cache_trimmed(Api::all(client.clone()), config, trim, move |seen: Seen<'_, Task>| {
        let change = match seen {
            Seen::Applied(task) => Some(TaskChange::Applied(task.clone())),
            Seen::Deleted(task) => Some(TaskChange::Deleted(Arc::new(task.clone()))),
            Seen::Listed => Some(TaskChange::Relisted),
            Seen::Listing(_) => None,
        };
        if let Some(change) = change {
            // The companion may have stopped (its leadership ended); nothing is owed to it then.
            let _ = changes.send(change);
        }
        changed.notify_one();
    });
    (cache, AbortOnDrop(handle))
}
