//! Chronos' I/O: a framework on the SDK.
//!
//! The companion runs while leading, after its CronJob cache is listed (and the SDK's Task cache before it): it
//! keeps one timer per job in a heap (a `BTreeMap` from instant to jobs) and re-plans a job only when the job, one
//! of its runs or one of its parents changed, or its timer fired — 10,000 jobs cost nothing between their instants.
//! It carries out each [`plan`](super::plan::plan): runs due are handed to the scheduler half, kills requested
//! (with the reason on the task), the status written on change, old runs deleted once the status that counted them
//! is stored, claimed triggers' annotations removed, Events published.
//!
//! The scheduler half answers offers: it places the runs due (their Tasks named for the claim) and, from
//! [`LEAD`] before the next instant until it has launched, holds the offers it gets instead of declining them, so
//! an offer is at hand at the instant; the framework is revived then and suppressed when nothing is due.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use agora_client::{Api, Client, DeleteParams, Patch, PatchParams};
use agora_schemas::{
    ATTEMPT_LABEL, COVERS_FROM_ANNOTATION, CRONJOB_LABEL, CronJob, CronJobStatus, INSTANT_ANNOTATION, ObjectMeta,
    ObjectReference, Offer, OwnerReference, RUN_LABEL, Resource, TRIGGER_ANNOTATION_PREFIX, Task, TaskSpec, TaskState,
    TaskStatus, TaskTemplate,
};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::graph;
use super::plan::{self, KILL_REASON_ANNOTATION, NewRun};
use crate::framework::placement::{Demand, Spread, place_spread};
use crate::framework::{Framework, Launch, Leading, Scheduler, TaskChange};
use crate::runtime::AbortOnDrop;
use crate::runtime::cache::{Cache, Seen, cache, key};
use crate::runtime::events::{Record, Recorder, Reporter, publish_all, reference};
use crate::runtime::leader::LeaseConfig;
use crate::runtime::watcher;

/// The framework's name (and its Lease's).
pub const FRAMEWORK: &str = "chronos";
/// The field manager of everything chronos writes.
const MANAGER: &str = "chronos";
/// How long before an instant the framework is revived and offers are held, so one is at hand when it comes.
pub const LEAD: Duration = Duration::from_secs(5);
/// At most this many runs are launched through one offer at a time: a burst of runs due at one instant becomes
/// several small acceptances the apiserver admits side by side.
const PER_ACCEPTANCE: usize = 8;
/// How long after launching runs status writes wait (their acceptances go first).
const QUIET: Duration = Duration::from_millis(300);
/// Writes in flight at once.
const WRITES_IN_FLIGHT: usize = 32;
/// A launch, kill or delete not yet seen in the watch is assumed in progress for this long.
const IN_FLIGHT: Duration = Duration::from_secs(30);

/// How chronos runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's name in the leader election.
    pub identity: String,
    /// The roles it takes offers in (jobs name one of them in `spec.role`).
    pub roles: Vec<String>,
    /// The lease timing.
    pub lease: LeaseConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            identity: format!("chronos-{}", std::process::id()),
            roles: vec!["*".to_owned()],
            lease: LeaseConfig::default(),
        }
    }
}

/// Why chronos stopped.
pub type Error = crate::framework::Error;

type Events = tokio::sync::mpsc::UnboundedSender<(ObjectReference, Record)>;

/// A run launched (or being launched) that the watch has not shown yet.
#[derive(Clone)]
struct Launched {
    at: Instant,
    job: String,
    run: NewRun,
    /// The agent it was placed on.
    agent: String,
    /// Its acceptance found the name taken: whose Task holds it is looked up before anything else is decided.
    taken: bool,
}

/// A run whose Task name is held by a Task chronos did not launch: it stands in the plan as a failed attempt (the
/// instant is decided, a retry gets the next attempt's name), and that Task is never touched.
struct Taken {
    job: String,
    run: NewRun,
    /// When chronos found out.
    at: Timestamp,
    /// What holds the name, in words.
    holder: String,
}

/// What the scheduler half and the companion share.
#[derive(Default)]
struct World {
    /// The companion's caches are listed: decisions may be made.
    ready: bool,
    /// Runs to launch now, per job (`namespace/name`), with the job (its spec defaulted).
    due: BTreeMap<String, (Arc<CronJob>, Vec<NewRun>)>,
    /// Launched runs not yet seen, by task key.
    launched: HashMap<String, Launched>,
    /// The earliest next instant of any job: offers are held from [`LEAD`] before it.
    next_instant: Option<Instant>,
    /// Jobs the scheduler half launched for, whose status should follow.
    touched: BTreeSet<String>,
    /// What the runs due within [`LEAD`] need (cpus, mem, runs): offers are held up to that much, and enough of them
    /// for [`PER_ACCEPTANCE`] runs each.
    upcoming: (f64, f64, usize),
    /// What the offers held since the last decision hold (cpus, mem, offers).
    held: (f64, f64, usize),
}

type Shared = Arc<Mutex<World>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, World> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl World {
    /// Whether offers are worth having now: a run is due, or an instant comes within [`LEAD`].
    fn wants(&self) -> bool {
        self.ready && (!self.due.is_empty() || self.next_instant.is_some_and(|t| t <= Instant::now() + LEAD))
    }
}

/// Whether chronos launched `task`: it was created by accepting an offer made to chronos (only an acceptance sets
/// `spec.offer`; the apiserver refuses it on any other write). Labels alone prove nothing: anyone may write them.
fn launched_by_chronos(task: &Task) -> bool {
    task.spec.offer.is_some() && task.spec.framework == FRAMEWORK
}

/// The key of the job a task of chronos' runs for (`namespace/job`); `None` for a task chronos did not launch.
fn job_of(task: &Task) -> Option<String> {
    if !launched_by_chronos(task) {
        return None;
    }
    let job = task.metadata.labels.get(CRONJOB_LABEL)?;
    Some(format!("{}/{job}", task.metadata.namespace.as_deref().unwrap_or("default")))
}

/// What a job's run needs of an offer.
fn demand(job: &CronJob) -> Demand {
    let spec = &job.spec;
    Demand {
        cpus: spec.cpus(),
        mem: spec.mem(),
        disk: spec.disk(),
        ports: Vec::new(),
        role: Some(spec.role()),
        constraints: spec.constraints.clone(),
    }
}

/// The labels and annotations of a run's Task.
fn run_meta(job: &CronJob, run: &NewRun) -> ObjectMeta {
    let mut meta = ObjectMeta::named(job.metadata.namespace.as_deref(), &run.name);
    let name = job.metadata.name.clone().unwrap_or_default();
    meta.labels.insert(CRONJOB_LABEL.to_owned(), name.clone());
    meta.labels.insert(RUN_LABEL.to_owned(), run.run.clone());
    meta.labels.insert(ATTEMPT_LABEL.to_owned(), run.attempt.to_string());
    if let Some(instant) = run.instant {
        meta.annotations.insert(INSTANT_ANNOTATION.to_owned(), instant.to_string());
    }
    if let Some(from) = run.covers_from {
        meta.annotations.insert(COVERS_FROM_ANNOTATION.to_owned(), from.to_string());
    }
    meta.owner_references = vec![OwnerReference {
        api_version: agora_schemas::API_VERSION.to_owned(),
        kind: CronJob::KIND.to_owned(),
        name,
        uid: job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    meta
}

/// The Task of `run`: the job's command, container, resources, env, role, user and limits; named for the claim,
/// labelled with job, run and attempt, owned by the job (deleting the CronJob deletes its runs).
#[must_use]
fn task_template(job: &CronJob, run: &NewRun) -> TaskTemplate {
    let spec = &job.spec;
    let task = TaskSpec {
        cmd: spec.command.clone(),
        args: spec.args.clone(),
        container: spec.container.clone(),
        cpus: spec.cpus(),
        mem: spec.mem(),
        disk: spec.disk(),
        env: spec.env.clone(),
        role: Some(spec.role()),
        user: spec.user.clone(),
        limits: spec.limits.clone(),
        ..TaskSpec::default()
    };
    TaskTemplate { metadata: run_meta(job, run), spec: task }
}

/// A launched run as the plan should see it until the watch shows its Task: staging.
fn phantom(job: &CronJob, run: &NewRun) -> Arc<Task> {
    let mut meta = run_meta(job, run);
    meta.creation_timestamp = Some(Timestamp::now());
    let mut task = Task::new(meta, TaskSpec::default());
    task.status = Some(TaskStatus::new(TaskState::Staging));
    Arc::new(task)
}

/// A run whose name another's Task holds, as the plan should see it: an attempt that failed when it was found out
/// (stored, so its instant counts as decided).
fn name_taken(job: &CronJob, taken: &Taken) -> Arc<Task> {
    let mut meta = run_meta(job, &taken.run);
    meta.creation_timestamp = Some(taken.at);
    meta.resource_version = Some("0".to_owned());
    let mut task = Task::new(meta, TaskSpec::default());
    let mut status = TaskStatus::new(TaskState::Failed);
    status.reason = Some("NameTaken".to_owned());
    status.message = Some(format!("the task name is held by {}; chronos did not start this run", taken.holder));
    status.finished_at = Some(taken.at);
    task.status = Some(status);
    Arc::new(task)
}

/// Drops what chronos never reads of a Task before it is cached (the job has what to run).
fn trim(task: &mut Task) {
    let meta = &mut task.metadata;
    meta.owner_references.clear();
    meta.finalizers.clear();
    meta.uid = None;
    meta.annotations
        .retain(|k, _| k == KILL_REASON_ANNOTATION || k == INSTANT_ANNOTATION || k == COVERS_FROM_ANNOTATION);
    let spec = &mut task.spec;
    spec.cmd = None;
    spec.args = None;
    spec.container = None;
    spec.env.clear();
    spec.ports.clear();
    spec.health_checks.clear();
    spec.limits = None;
    spec.user = None;
    if let Some(status) = &mut task.status {
        status.usage = None;
        status.conditions.clear();
        status.host = None;
        status.last_health_check = None;
        if let Some(message) = &mut status.message {
            message.truncate(200);
        }
    }
}

/// The scheduler half.
struct Chronos {
    shared: Shared,
    wake: Arc<Notify>,
}

impl Scheduler for Chronos {
    fn offers(&mut self, offers: &[Arc<Offer>], _tasks: &[Arc<Task>]) -> Vec<Launch> {
        let mut world = lock(&self.shared);
        world.held = (0.0, 0.0, 0);
        if !world.ready || world.due.is_empty() {
            return Vec::new();
        }
        // Every due run, in job order; each one a demand.
        let mut runs: Vec<(String, Arc<CronJob>, NewRun)> = Vec::new();
        for (job_key, (job, due)) in &world.due {
            let namespace = job.metadata.namespace.as_deref().unwrap_or("default");
            for run in due {
                if !world.launched.contains_key(&format!("{namespace}/{}", run.name)) {
                    runs.push((job_key.clone(), job.clone(), run.clone()));
                }
            }
        }
        let demands: Vec<Demand> = runs.iter().map(|(_, job, _)| demand(job)).collect();
        let placed = place_spread(offers.iter().map(|o| &**o), &demands, &Spread::new(), PER_ACCEPTANCE);
        tracing::debug!(due = runs.len(), offers = offers.len(), placed = placed.len(), "placing due runs");
        let mut launches: Vec<Launch> = Vec::new();
        let mut placed_runs = HashSet::new();
        for p in placed {
            let (job_key, job, run) = &runs[p.demand];
            let template = task_template(job, run);
            match launches.iter_mut().find(|l| l.offer == p.offer) {
                Some(launch) => launch.tasks.push(template),
                None => launches.push(Launch { offer: p.offer.clone(), tasks: vec![template] }),
            }
            let namespace = job.metadata.namespace.as_deref().unwrap_or("default");
            let task_key = format!("{namespace}/{}", run.name);
            // Its Event waits until the watch shows the Task: a run is announced once it exists.
            let launched = Launched {
                at: Instant::now(),
                job: job_key.clone(),
                run: run.clone(),
                agent: p.agent.clone(),
                taken: false,
            };
            world.launched.insert(task_key, launched);
            placed_runs.insert((job_key.clone(), run.name.clone()));
            world.touched.insert(job_key.clone());
        }
        // What was placed is no longer due; the rest waits for the next offers.
        for (job_key, (_, due)) in &mut world.due {
            due.retain(|r| !placed_runs.contains(&(job_key.clone(), r.name.clone())));
        }
        world.due.retain(|_, (_, due)| !due.is_empty());
        drop(world);
        self.wake.notify_one();
        launches
    }

    fn wants_offers(&self, _tasks: &[Arc<Task>]) -> bool {
        lock(&self.shared).wants()
    }

    fn hold(&mut self, offer: &Offer) -> bool {
        let mut world = lock(&self.shared);
        // Enough offers for the runs due soon are kept at hand; the rest go back to other frameworks.
        let (cpus, mem, runs) = world.upcoming;
        let needed = world.held.0 < cpus || world.held.1 < mem || world.held.2 < runs.div_ceil(PER_ACCEPTANCE);
        if world.wants() && needed {
            let resources = &offer.spec.resources;
            world.held.0 += resources.cpus;
            world.held.1 += resources.mem;
            world.held.2 += 1;
            return true;
        }
        false
    }

    fn failed(&mut self, launch: &Launch, error: &agora_client::Error) {
        let mut world = lock(&self.shared);
        for task in &launch.tasks {
            let namespace = task.metadata.namespace.as_deref().unwrap_or("default");
            let task_key = format!("{namespace}/{}", task.metadata.name.as_deref().unwrap_or_default());
            // A name that exists is a run claimed before (the watch will show it) — or a Task someone else wrote
            // under that name: the companion looks. Anything else is tried again.
            if error.is_already_exists() {
                if let Some(launched) = world.launched.get_mut(&task_key) {
                    launched.taken = true;
                    let job = launched.job.clone();
                    world.touched.insert(job);
                }
            } else if let Some(launched) = world.launched.remove(&task_key) {
                world.touched.insert(launched.job);
            }
        }
        drop(world);
        self.wake.notify_one();
    }
}

/// Runs chronos until `shutdown`: registers the framework, competes for its lease, and while leading runs every
/// CronJob on its schedule.
///
/// # Errors
/// When the framework cannot register or the lease timing is invalid.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let shared: Shared = Arc::default();
    let (events, published) = tokio::sync::mpsc::unbounded_channel();
    let recorder = Recorder::new(client.clone(), Reporter::new(FRAMEWORK, Some(&config.identity)));
    let publisher = AbortOnDrop(tokio::spawn(publish_all(recorder, published)).abort_handle());
    let wake = Arc::new(Notify::new());
    let scheduler = Chronos { shared: shared.clone(), wake: wake.clone() };
    let roles: Vec<&str> = config.roles.iter().map(String::as_str).collect();
    // A short refuse filter: a declined agent is offered again before the next instant's lead begins.
    let framework = Framework::new(client.clone(), FRAMEWORK)
        .roles(&roles)
        .identity(&config.identity)
        .lease(config.lease)
        .refuse(Duration::from_secs(1))
        .trim_tasks(trim);
    let result = framework
        .run_with(
            scheduler,
            move |leading| Companion::run(client.clone(), shared.clone(), events.clone(), wake.clone(), leading),
            shutdown,
        )
        .await;
    drop(publisher);
    result.map(|_| ())
}

/// The companion's state besides the shared world.
struct Companion {
    client: Client,
    shared: Shared,
    events: Events,
    /// Wakes the SDK's loop (the scheduler half).
    sdk: Arc<Notify>,
    tasks: Cache<Task>,
    jobs: Cache<CronJob>,
    /// Task keys per job.
    index: HashMap<String, HashSet<String>>,
    /// Each job with its spec defaulted and its status the one last decided.
    decided: HashMap<String, Arc<CronJob>>,
    /// The status last written per job, while the watch has not shown it yet.
    stored: HashMap<String, CronJobStatus>,
    /// Jobs whose decided status is not stored yet, and when to try again.
    unwritten: BTreeMap<String, Instant>,
    /// Children per parent job.
    children: HashMap<String, BTreeSet<String>>,
    /// The timer heap: when to look at which jobs again (one timer per job, in `timer_of`).
    timers: BTreeMap<Instant, BTreeSet<String>>,
    timer_of: HashMap<String, Instant>,
    /// Jobs to look at on the next turn (children of a job whose completions changed).
    soon: BTreeSet<String>,
    /// Whether the scheduler half wanted offers when last told.
    wanted: bool,
    /// Each job's next instant (for holding offers ahead of it).
    instants: BTreeSet<(Instant, String)>,
    next_of: HashMap<String, Instant>,
    /// Wall-clock moments as timer instants.
    clock: Clock,
    /// Status writes wait until then (runs were just launched), each at most a second (since when, per job).
    quiet_until: Instant,
    deferred_since: HashMap<String, Instant>,
    /// Kills and deletes requested (task key → when) the watch has not shown yet.
    kills: HashMap<String, Instant>,
    deletes: HashMap<String, Instant>,
    /// Runs whose names are held by Tasks chronos did not launch, by task key.
    taken: HashMap<String, Taken>,
}

/// What the watches mark for another look.
#[derive(Default)]
struct Dirty {
    jobs: BTreeSet<String>,
    all: bool,
}

impl Companion {
    /// Plans and acts until the leadership ends (the SDK then drops this future). `changed` wakes it (the scheduler
    /// half rings it after launching); `leading.wake` wakes the SDK's loop.
    async fn run(client: Client, shared: Shared, events: Events, changed: Arc<Notify>, mut leading: Leading) {
        let sdk = leading.wake.clone();
        let dirty: Arc<Mutex<Dirty>> = Arc::default();
        let (mark, notify) = (dirty.clone(), changed.clone());
        let (jobs, jobs_watch) = cache(Api::<CronJob>::all(client.clone()), watcher::Config::default(), move |seen| {
            let mut d = mark.lock().unwrap_or_else(PoisonError::into_inner);
            match seen {
                Seen::Applied(job) => {
                    d.jobs.insert(key(&**job));
                }
                Seen::Deleted(job) => {
                    d.jobs.insert(key(job));
                }
                Seen::Listed => d.all = true,
                Seen::Listing(_) => {}
            }
            drop(d);
            notify.notify_one();
        });
        let _watch = AbortOnDrop(jobs_watch);
        if !jobs.wait_until_ready().await {
            return;
        }
        let mut this = Companion {
            client,
            shared,
            events,
            sdk,
            tasks: leading.tasks.clone(),
            jobs,
            index: HashMap::new(),
            decided: HashMap::new(),
            stored: HashMap::new(),
            unwritten: BTreeMap::new(),
            children: HashMap::new(),
            timers: BTreeMap::new(),
            timer_of: HashMap::new(),
            soon: BTreeSet::new(),
            wanted: false,
            instants: BTreeSet::new(),
            next_of: HashMap::new(),
            kills: HashMap::new(),
            deletes: HashMap::new(),
            taken: HashMap::new(),
            clock: Clock::new(),
            quiet_until: Instant::now(),
            deferred_since: HashMap::new(),
        };
        *lock(&this.shared) = World::default();
        this.reindex();
        lock(&this.shared).ready = true;
        tracing::info!(jobs = this.jobs.len(), tasks = this.tasks.len(), "chronos leading");
        let mut all = true;
        let mut first: Option<TaskChange> = None;
        loop {
            let mut keys = BTreeSet::new();
            while let Some(change) = first.take().or_else(|| leading.changes.try_recv().ok()) {
                match change {
                    TaskChange::Applied(task) => {
                        let task_key = key(&*task);
                        let launched = lock(&this.shared).launched.remove(&task_key);
                        if let Some(launched) = launched.filter(|_| launched_by_chronos(&task)) {
                            this.announce(&launched, &task);
                        }
                        if task.spec.kill_requested == Some(true) {
                            this.kills.remove(&task_key);
                        }
                        if let Some(job) = job_of(&task) {
                            this.index.entry(job.clone()).or_default().insert(task_key);
                            keys.insert(job);
                        }
                    }
                    TaskChange::Deleted(task) => {
                        let task_key = key(&*task);
                        this.deletes.remove(&task_key);
                        if let Some(job) = job_of(&task) {
                            if let Some(tasks) = this.index.get_mut(&job) {
                                tasks.remove(&task_key);
                            }
                            keys.insert(job);
                        }
                    }
                    TaskChange::Relisted => {
                        this.reindex();
                        all = true;
                    }
                }
            }
            let marked = std::mem::take(&mut *dirty.lock().unwrap_or_else(PoisonError::into_inner));
            all |= marked.all;
            keys.extend(this.load(if all { None } else { Some(&marked.jobs) }));
            keys.extend(std::mem::take(&mut lock(&this.shared).touched));
            let now = Instant::now();
            let fired: Vec<Instant> = this.timers.range(..=now).map(|(t, _)| *t).collect();
            for t in fired {
                for k in this.timers.remove(&t).unwrap_or_default() {
                    this.timer_of.remove(&k);
                    keys.insert(k);
                }
            }
            keys.extend(std::mem::take(&mut this.soon));
            if all {
                keys.extend(this.decided.keys().cloned());
                all = false;
            }
            keys.remove("");
            this.expire_in_flight();
            keys.extend(this.resolve_taken().await);
            if !keys.is_empty() {
                this.reconcile(keys).await;
            }
            this.flush().await;
            this.update_lead();
            let next =
                this.timers.keys().next().copied().into_iter().chain(this.unwritten.values().min().copied()).min();
            let mut wait = next.map_or(Duration::from_secs(60), |t| t.saturating_duration_since(Instant::now()));
            if !this.soon.is_empty() {
                wait = Duration::ZERO;
            }
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(wait) => {}
                change = leading.changes.recv() => match change {
                    Some(change) => first = Some(change),
                    None => return,
                },
            }
        }
    }

    fn reindex(&mut self) {
        self.index.clear();
        for task in self.tasks.state() {
            if let Some(job) = job_of(&task) {
                self.index.entry(job).or_default().insert(key(&*task));
            }
        }
    }

    /// Copies jobs from the cache (`only` these keys, or all); returns the keys to re-plan (the jobs, and the
    /// children of those whose parents changed).
    fn load(&mut self, only: Option<&BTreeSet<String>>) -> BTreeSet<String> {
        let fresh: Vec<(String, Option<Arc<CronJob>>)> = match only {
            None => self.jobs.state().into_iter().map(|j| (key(&*j), Some(j))).collect(),
            Some(keys) => keys.iter().map(|k| (k.clone(), self.jobs.get(k))).collect(),
        };
        let mut keys = BTreeSet::new();
        if only.is_none() {
            let present: HashSet<&String> = fresh.iter().map(|(k, _)| k).collect();
            let gone: Vec<String> = self.decided.keys().filter(|k| !present.contains(k)).cloned().collect();
            for k in gone {
                self.forget(&k);
            }
        }
        let mut graph_changed = false;
        for (k, job) in fresh {
            keys.insert(k.clone());
            let Some(job) = job else {
                self.forget(&k);
                graph_changed = true;
                continue;
            };
            // Only this leader writes status: what it decided supersedes what the watch shows — until the watch shows
            // the same, and the cached object itself is kept (no copy per job). Specs are read through their
            // defaulting accessors, so the cached object serves as it is.
            let old = self.decided.get(&k).cloned();
            if old.as_ref().is_none_or(|o| o.spec.parents != job.spec.parents) {
                graph_changed = true;
            }
            if self.stored.get(&k).is_some_and(|s| Some(s) == job.status.as_ref()) {
                self.stored.remove(&k);
            }
            match old.and_then(|o| o.status.clone()) {
                Some(status) if job.status.as_ref() != Some(&status) => {
                    let mut copy = (*job).clone();
                    copy.status = Some(status);
                    self.decided.insert(k, Arc::new(copy));
                }
                _ => {
                    self.decided.insert(k, job);
                }
            }
        }
        if graph_changed {
            self.children.clear();
            for (k, job) in &self.decided {
                let namespace = job.metadata.namespace.as_deref().unwrap_or("default");
                for parent in &job.spec.parents {
                    self.children.entry(format!("{namespace}/{parent}")).or_default().insert(k.clone());
                }
            }
            // A new or changed edge may close or open a cycle anywhere in the namespace: re-plan the dependents.
            keys.extend(self.decided.iter().filter(|(_, j)| !j.spec.parents.is_empty()).map(|(k, _)| k.clone()));
        }
        keys
    }

    /// The status the store holds of job `k`, as far as this leader knows: what it wrote last, until the watch shows
    /// that; else the cached one.
    fn stored_status(&self, k: &str) -> Option<CronJobStatus> {
        self.stored.get(k).cloned().or_else(|| self.jobs.get(k).and_then(|j| j.status.clone()))
    }

    /// Sets (or clears) the one timer of job `k`.
    fn set_timer(&mut self, k: &str, at: Option<Instant>) {
        if let Some(old) = self.timer_of.remove(k)
            && let Some(jobs) = self.timers.get_mut(&old)
        {
            jobs.remove(k);
            if jobs.is_empty() {
                self.timers.remove(&old);
            }
        }
        if let Some(at) = at {
            self.timers.entry(at).or_default().insert(k.to_owned());
            self.timer_of.insert(k.to_owned(), at);
        }
    }

    fn forget(&mut self, k: &str) {
        self.set_timer(k, None);
        self.taken.retain(|_, t| t.job != k);
        self.deferred_since.remove(k);
        self.decided.remove(k);
        self.stored.remove(k);
        self.unwritten.remove(k);
        if let Some(t) = self.next_of.remove(k) {
            self.instants.remove(&(t, k.to_owned()));
        }
        let mut world = lock(&self.shared);
        world.due.remove(k);
    }

    /// Publishes the Event of a run whose Task the watch now shows.
    fn announce(&self, launched: &Launched, task: &Task) {
        let Some(job) = self.decided.get(&launched.job) else { return };
        let mut record = launched.run.event.clone();
        let agent = if task.spec.agent.is_empty() { &launched.agent } else { &task.spec.agent };
        record.message = format!("{} on agent {agent} (task {})", record.message, launched.run.name);
        let _ = self.events.send((reference(&**job), record));
    }

    /// Looks up the Tasks that held the names of runs whose acceptance found them taken: chronos' own (an earlier
    /// acceptance whose answer was lost) is left for the watch; another's makes the run a [`Taken`] stand-in, with
    /// a Warning; a name free again is launched again. Returns the jobs to re-plan.
    async fn resolve_taken(&mut self) -> BTreeSet<String> {
        let pending: Vec<(String, Launched)> =
            lock(&self.shared).launched.iter().filter(|(_, l)| l.taken).map(|(k, l)| (k.clone(), l.clone())).collect();
        let mut replan = BTreeSet::new();
        for (task_key, launched) in pending {
            let (namespace, name) = task_key.split_once('/').unwrap_or(("default", task_key.as_str()));
            let found = Api::<Task>::namespaced(self.client.clone(), namespace).get_opt(name).await;
            let mut world = lock(&self.shared);
            match found {
                Ok(Some(task)) if launched_by_chronos(&task) => {
                    if let Some(l) = world.launched.get_mut(&task_key) {
                        l.taken = false; // ours: the watch will show it
                    }
                }
                Ok(Some(task)) => {
                    world.launched.remove(&task_key);
                    drop(world);
                    let holder = match task.spec.offer {
                        None => "a Task written directly (not launched from an offer)".to_owned(),
                        Some(offer) => {
                            format!("a Task framework {:?} launched from offer {offer}", task.spec.framework)
                        }
                    };
                    if let Some(job) = self.decided.get(&launched.job) {
                        let what = launched
                            .run
                            .instant
                            .map_or_else(|| format!("run {}", launched.run.run), |t| format!("the run of {t}"));
                        let record = Record::warning(
                            "NameTaken",
                            format!(
                                "{what} cannot start: its task name {name} is held by {holder}, which chronos leaves \
                                 alone; delete that Task, or let the run's retry (next attempt's name) run it"
                            ),
                        );
                        let _ = self.events.send((reference(&**job), record));
                    }
                    tracing::warn!(task = %task_key, %holder, "a run's task name is taken");
                    replan.insert(launched.job.clone());
                    let taken = Taken { job: launched.job, run: launched.run, at: Timestamp::now(), holder };
                    self.taken.insert(task_key, taken);
                }
                Ok(None) => {
                    // Deleted meanwhile: the run is due again.
                    world.launched.remove(&task_key);
                    replan.insert(launched.job);
                }
                Err(e) => {
                    tracing::debug!(task = %task_key, error = %e, "looking up a taken task name failed; trying again");
                }
            }
        }
        replan
    }

    fn expire_in_flight(&mut self) {
        self.kills.retain(|_, at| at.elapsed() < IN_FLIGHT);
        self.deletes.retain(|_, at| at.elapsed() < IN_FLIGHT);
        // A stand-in goes once the stored status has decided its run (and its record has had its grace).
        let now = Timestamp::now();
        let settled: Vec<String> = self
            .taken
            .iter()
            .filter(|(_, t)| now.duration_since(t.at) > plan::RECORD_GRACE * 2)
            .filter(|(_, t)| {
                self.stored_status(&t.job).is_some_and(|s| {
                    s.runs.iter().any(|r| r.task == t.run.name)
                        || t.run.instant.is_some_and(|i| s.last_schedule_time.is_some_and(|last| last >= i))
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in settled {
            self.taken.remove(&k);
        }
        let mut world = lock(&self.shared);
        let stale: Vec<String> =
            world.launched.iter().filter(|(_, l)| l.at.elapsed() >= IN_FLIGHT).map(|(k, _)| k.clone()).collect();
        for k in stale {
            if let Some(l) = world.launched.remove(&k) {
                world.touched.insert(l.job);
            }
        }
    }

    /// The run tasks of `job` as the plan should see them: kills requested are assumed, launches not yet seen are
    /// staging.
    fn job_tasks(&self, job_key: &str, job: &CronJob, world: &World) -> Vec<Arc<Task>> {
        let mut tasks: Vec<Arc<Task>> = self
            .index
            .get(job_key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.tasks.get(k))
            .map(|t| {
                if t.spec.kill_requested != Some(true) && self.kills.contains_key(&key(&*t)) {
                    let mut t = (*t).clone();
                    t.spec.kill_requested = Some(true);
                    Arc::new(t)
                } else {
                    t
                }
            })
            .collect();
        for launched in world.launched.values().filter(|l| l.job == job_key) {
            if !tasks.iter().any(|t| t.metadata.name.as_deref() == Some(launched.run.name.as_str())) {
                tasks.push(phantom(job, &launched.run));
            }
        }
        for taken in self.taken.values().filter(|t| t.job == job_key) {
            if !tasks.iter().any(|t| t.metadata.name.as_deref() == Some(taken.run.name.as_str())) {
                tasks.push(name_taken(job, taken));
            }
        }
        tasks
    }

    async fn reconcile(&mut self, keys: BTreeSet<String>) {
        let now = Timestamp::now();
        let mut work: Vec<(Arc<CronJob>, plan::Plan)> = Vec::new();
        let mut completions_changed = Vec::new();
        {
            let mut world = lock(&self.shared);
            for k in &keys {
                let Some(job) = self.decided.get(k).cloned() else { continue };
                if job.metadata.deletion_timestamp.is_some() {
                    world.due.remove(k);
                    continue;
                }
                let namespace = job.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
                let parents =
                    graph::parents(&job, |name| self.decided.get(&format!("{namespace}/{name}")).map(|j| &**j));
                let tasks = self.job_tasks(k, &job, &world);
                let planned = plan::plan(&job, &tasks, &parents, now);
                let before = job.status.clone().unwrap_or_default();
                if (before.last_success, before.last_error) != (planned.status.last_success, planned.status.last_error)
                {
                    completions_changed.push(k.clone());
                }
                if planned.launch.is_empty() {
                    world.due.remove(k);
                } else {
                    world.due.insert(k.clone(), (job.clone(), planned.launch.clone()));
                }
                for kill in &planned.kills {
                    self.kills.insert(format!("{namespace}/{}", kill.task), Instant::now());
                }
                if job.status.as_ref() != Some(&planned.status) {
                    let mut decided = (*job).clone();
                    decided.status = Some(planned.status.clone());
                    self.decided.insert(k.clone(), Arc::new(decided));
                }
                work.push((job, planned));
            }
        }
        // Children re-plan when a parent's completions changed.
        for parent in completions_changed {
            let children = self.children.get(&parent).cloned().unwrap_or_default();
            self.soon.extend(children);
        }
        if work.iter().any(|(_, p)| !p.launch.is_empty()) {
            self.sdk.notify_one();
            self.quiet_until = Instant::now() + QUIET;
        }
        let mut ops = Vec::with_capacity(work.len());
        for (job, planned) in work {
            let k = key(&*job);
            for record in &planned.events {
                let _ = self.events.send((reference(&*job), record.clone()));
            }
            let wake = planned.wake.map(|at| self.clock.instant_of(at));
            self.set_timer(&k, wake);
            if let Some(t) = self.next_of.remove(&k) {
                self.instants.remove(&(t, k.clone()));
            }
            if let Some(next) = planned.status.next_schedule_time {
                let t = self.clock.instant_of(next);
                self.next_of.insert(k.clone(), t);
                self.instants.insert((t, k.clone()));
            }
            ops.push(self.act(&job, planned));
        }
        let results: Vec<(String, Option<CronJobStatus>)> =
            futures::stream::iter(ops).buffer_unordered(WRITES_IN_FLIGHT).collect().await;
        for (k, written) in results {
            match written {
                Some(status) => {
                    let settled = self.decided.get(&k).and_then(|j| j.status.as_ref()) == Some(&status);
                    if self.jobs.get(&k).and_then(|j| j.status.clone()).as_ref() == Some(&status) {
                        self.stored.remove(&k);
                    } else {
                        self.stored.insert(k.clone(), status);
                    }
                    if settled {
                        self.unwritten.remove(&k);
                    }
                }
                None => {
                    self.unwritten.entry(k).or_insert_with(|| Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }

    /// Carries out one job's plan; resolves to the job and the status now stored (`None`: the write failed).
    fn act(
        &mut self,
        job: &CronJob,
        planned: plan::Plan,
    ) -> impl Future<Output = (String, Option<CronJobStatus>)> + use<> {
        let k = key(job);
        let namespace = job.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let name = job.metadata.name.clone().unwrap_or_default();
        let stored = self.stored_status(&k);
        // Status writes wait while runs are being launched (a plan that launches changes again once its Task is
        // seen): the acceptances of an instant do not queue behind a burst of status writes at the apiserver.
        let changed = stored.as_ref() != Some(&planned.status);
        // ... but never longer than a second (launches that never stop must not starve the status).
        let waited = self.deferred_since.get(&k).is_some_and(|t| t.elapsed() >= Duration::from_secs(1));
        let quiet = (!planned.launch.is_empty() || Instant::now() < self.quiet_until) && !waited;
        let write = changed && !quiet;
        if write {
            self.deferred_since.remove(&k);
        }
        if changed && quiet {
            self.deferred_since.entry(k.clone()).or_insert_with(Instant::now);
            let at = self.quiet_until.max(Instant::now() + QUIET);
            self.unwritten.entry(k.clone()).and_modify(|t| *t = (*t).min(at)).or_insert(at);
        }
        // Never a Task chronos did not launch, whatever the plan's history says of its name.
        let deletes: Vec<String> = planned
            .delete
            .iter()
            .filter(|t| !self.deletes.contains_key(&format!("{namespace}/{t}")))
            .filter(|t| !self.taken.contains_key(&format!("{namespace}/{t}")))
            .cloned()
            .collect();
        for t in &deletes {
            self.deletes.insert(format!("{namespace}/{t}"), Instant::now());
        }
        let client = self.client.clone();
        async move {
            let jobs: Api<CronJob> = Api::namespaced(client.clone(), &namespace);
            let tasks: Api<Task> = Api::namespaced(client.clone(), &namespace);
            for kill in &planned.kills {
                let patch = json!({
                    "metadata": {"annotations": {KILL_REASON_ANNOTATION: kill.reason.as_str()}},
                    "spec": {"killRequested": true},
                });
                match tasks.patch(&kill.task, &PatchParams::default().manager(MANAGER), &Patch::Merge(patch)).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => tracing::warn!(task = %kill.task, error = %e, "kill request failed"),
                }
            }
            let mut now_stored = stored.clone().unwrap_or_default();
            if write {
                let patch = json!({ "status": status_patch(&planned.status) });
                match jobs.patch_status(&name, &PatchParams::default().manager(MANAGER), &Patch::Merge(patch)).await {
                    Ok(_) => now_stored = planned.status.clone(),
                    Err(e) if e.is_not_found() => return (k, Some(planned.status)),
                    Err(e) => {
                        tracing::warn!(job = %k, error = %e, "status not written; retrying");
                        return (k, None);
                    }
                }
            }
            // Old runs go only once the status that counted them is stored.
            for task in deletes {
                if now_stored.runs.iter().any(|r| r.task == task)
                    && let Err(e) = tasks.delete(&task, &DeleteParams::default()).await
                    && !e.is_not_found()
                {
                    tracing::debug!(task = %task, error = %e, "deleting an old run failed");
                }
            }
            if !planned.triggers_claimed.is_empty() {
                let annotations: serde_json::Map<String, Value> = planned
                    .triggers_claimed
                    .iter()
                    .map(|id| (format!("{TRIGGER_ANNOTATION_PREFIX}{id}"), Value::Null))
                    .collect();
                let patch = json!({"metadata": {"annotations": annotations}});
                if let Err(e) = jobs.patch(&name, &PatchParams::default().manager(MANAGER), &Patch::Merge(patch)).await
                    && !e.is_not_found()
                {
                    tracing::warn!(job = %k, error = %e, "removing claimed triggers failed");
                }
            }
            (k, Some(now_stored))
        }
    }

    /// Retries status writes that failed.
    async fn flush(&mut self) {
        let now = Instant::now();
        let ready: BTreeSet<String> =
            self.unwritten.iter().filter(|(_, t)| **t <= now).map(|(k, _)| k.clone()).collect();
        if ready.is_empty() {
            return;
        }
        for k in &ready {
            self.unwritten.remove(k);
        }
        self.reconcile(ready).await;
    }

    /// Tells the scheduler half what is due soon, and wakes the SDK when that changes whether offers are wanted
    /// (it revives then, and holds offers; it suppresses when nothing is due).
    fn update_lead(&mut self) {
        let earliest = self.instants.iter().next().map(|(t, _)| *t);
        let horizon = Instant::now() + LEAD;
        let mut upcoming = (0.0, 0.0, 0);
        for (_, k) in self.instants.range(..(horizon, String::new())) {
            if let Some(job) = self.decided.get(k) {
                upcoming.0 += job.spec.cpus();
                upcoming.1 += job.spec.mem();
                upcoming.2 += 1;
            }
        }
        let mut world = lock(&self.shared);
        world.next_instant = earliest;
        for (job, due) in world.due.values() {
            upcoming.0 += job.spec.cpus() * due.len() as f64;
            upcoming.1 += job.spec.mem() * due.len() as f64;
            upcoming.2 += due.len();
        }
        world.upcoming = upcoming;
        let wants = world.wants();
        drop(world);
        if wants != self.wanted {
            self.wanted = wants;
            self.sdk.notify_one();
        }
        if let Some(t) = earliest {
            let lead = t.checked_sub(LEAD).unwrap_or(t);
            if lead > Instant::now() {
                // The lead's own timer, under no job: it only wakes the loop, which then updates the lead.
                self.set_timer("", Some(lead));
            }
        }
    }
}

/// Wall-clock moments as monotonic instants, from one reference pair: every job due at the same moment gets the
/// very same timer (so they are decided, and launched, as one batch), a millisecond late so the plan sees it come.
struct Clock {
    wall: Timestamp,
    mono: Instant,
}

impl Clock {
    fn new() -> Self {
        Self { wall: Timestamp::now(), mono: Instant::now() }
    }

    fn instant_of(&mut self, at: Timestamp) -> Instant {
        // The wall clock may be stepped: re-anchor when the pair has drifted apart by more than a millisecond.
        let (wall, mono) = (Timestamp::now(), Instant::now());
        let expected = self.wall + jiff::SignedDuration::try_from(mono - self.mono).unwrap_or_default();
        if wall.duration_since(expected).abs() > jiff::SignedDuration::from_millis(1) {
            *self = Self { wall, mono };
        }
        let ahead = self.wall.duration_until(at);
        let ahead = if ahead.is_negative() { Duration::ZERO } else { ahead.unsigned_abs() };
        self.mono + ahead + Duration::from_millis(1)
    }
}

/// The status as a merge patch: every field present, those now unset as null (a merge patch keeps what it omits).
fn status_patch(status: &CronJobStatus) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for field in ["observedGeneration", "lastScheduleTime", "nextScheduleTime", "lastSuccess", "lastError"] {
            map.entry(field).or_insert(Value::Null);
        }
        for field in ["active", "runs", "conditions"] {
            map.entry(field).or_insert(json!([]));
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_patch_clears_what_is_no_longer_set() {
        let patch = status_patch(&CronJobStatus::default());
        assert_eq!(patch["nextScheduleTime"], Value::Null);
        assert_eq!(patch["active"], json!([]));
        assert_eq!(patch["successCount"], json!(0));
    }
}
