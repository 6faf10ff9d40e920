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
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::{Api, Client, Patch, PatchParams};
use agora_schemas::{
    ATTEMPT_LABEL, COVERS_FROM_ANNOTATION, CRONJOB_LABEL, CronJob, CronJobStatus, INSTANT_ANNOTATION, ObjectMeta,
    Offer, OwnerReference, RUN_LABEL, TRIGGER_ANNOTATION_PREFIX, Task, TaskSpec, TaskState, TaskStatus, TaskTemplate,
};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::graph;
use super::plan::{self, KILL_REASON_ANNOTATION, NewRun};
use crate::framework::companion::{self, Kit, Parts, Plans, Turn, watch_owners};
use crate::framework::placement::{Demand, Spread, place_spread};
use crate::framework::writes::{self, Backlog, InFlight, Written};
use crate::framework::{Framework, Launch, Leading, Registration, Scheduler, TaskChange};
use crate::runtime::AbortOnDrop;
use crate::runtime::cache::{Cache, key};
use crate::runtime::events::Record;

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

/// How chronos runs: identity, roles (jobs name one of them in `spec.role`) and lease.
pub type Config = Registration;

/// Why chronos stopped.
pub type Error = crate::framework::Error;

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
struct SharedState {
    /// The companion's caches are listed: decisions may be made.
    ready: bool,
    /// Runs to launch now, per job (`namespace/name`), with the job (its spec defaulted).
    due: BTreeMap<String, (Arc<CronJob>, Vec<NewRun>)>,
    /// Launched runs not yet seen, by task key.
    launched: HashMap<String, Launched>,
    /// The earliest next instant of any job: offers are held from [`LEAD`] before it.
    next_instant: Option<Instant>,
    /// What the runs due within [`LEAD`] need (cpus, mem, runs): offers are held up to that much, and enough of them
    /// for [`PER_ACCEPTANCE`] runs each.
    upcoming: (f64, f64, usize),
    /// What the offers held since the last decision hold (cpus, mem, offers).
    held: (f64, f64, usize),
}

impl SharedState {
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
    meta.labels.insert(CRONJOB_LABEL.to_owned(), name);
    meta.labels.insert(RUN_LABEL.to_owned(), run.run.clone());
    meta.labels.insert(ATTEMPT_LABEL.to_owned(), run.attempt.to_string());
    if let Some(instant) = run.instant {
        meta.annotations.insert(INSTANT_ANNOTATION.to_owned(), instant.to_string());
    }
    if let Some(from) = run.covers_from {
        meta.annotations.insert(COVERS_FROM_ANNOTATION.to_owned(), from.to_string());
    }
    meta.owner_references = vec![OwnerReference::controller(job, true)];
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
    writes::trim_to_state(task, &[KILL_REASON_ANNOTATION, INSTANT_ANNOTATION, COVERS_FROM_ANNOTATION]);
    task.spec.health_checks.clear();
    if let Some(status) = &mut task.status {
        status.last_health_check = None;
        if let Some(message) = &mut status.message {
            // A message is the task's to write: cut on a character boundary.
            let mut end = message.len().min(200);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
    }
}

/// The scheduler half.
struct Chronos {
    parts: Parts<SharedState>,
}

impl Scheduler for Chronos {
    fn offers(&mut self, offers: &[Arc<Offer>], _tasks: &[Arc<Task>]) -> Vec<Launch> {
        let mut shared = self.parts.shared.lock();
        shared.held = (0.0, 0.0, 0);
        if !shared.ready || shared.due.is_empty() {
            return Vec::new();
        }
        // Every due run, in job order; each one a demand.
        let mut runs: Vec<(String, Arc<CronJob>, NewRun)> = Vec::new();
        for (job_key, (job, due)) in &shared.due {
            let namespace = job.metadata.namespace.as_deref().unwrap_or("default");
            for run in due {
                if !shared.launched.contains_key(&format!("{namespace}/{}", run.name)) {
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
            Launch::add(&mut launches, &p.offer, task_template(job, run));
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
            shared.launched.insert(task_key, launched);
            placed_runs.insert((job_key.clone(), run.name.clone()));
            self.parts.marks.touch(job_key.clone());
        }
        // What was placed is no longer due; the rest waits for the next offers.
        for (job_key, (_, due)) in &mut shared.due {
            due.retain(|r| !placed_runs.contains(&(job_key.clone(), r.name.clone())));
        }
        shared.due.retain(|_, (_, due)| !due.is_empty());
        launches
    }

    fn wants_offers(&self, _tasks: &[Arc<Task>]) -> bool {
        self.parts.shared.lock().wants()
    }

    fn hold(&mut self, offer: &Offer) -> bool {
        let mut shared = self.parts.shared.lock();
        // Enough offers for the runs due soon are kept at hand; the rest go back to other frameworks.
        let (cpus, mem, runs) = shared.upcoming;
        let needed = shared.held.0 < cpus || shared.held.1 < mem || shared.held.2 < runs.div_ceil(PER_ACCEPTANCE);
        if shared.wants() && needed {
            let resources = &offer.spec.resources;
            shared.held.0 += resources.cpus;
            shared.held.1 += resources.mem;
            shared.held.2 += 1;
            return true;
        }
        false
    }

    fn failed(&mut self, launch: &Launch, error: &agora_client::Error) {
        let mut shared = self.parts.shared.lock();
        for task in &launch.tasks {
            let namespace = task.metadata.namespace.as_deref().unwrap_or("default");
            let task_key = format!("{namespace}/{}", task.metadata.name.as_deref().unwrap_or_default());
            // A name that exists is a run claimed before (the watch will show it) — or a Task someone else wrote
            // under that name: the companion looks. Anything else is tried again.
            if error.is_already_exists() {
                if let Some(launched) = shared.launched.get_mut(&task_key) {
                    launched.taken = true;
                    self.parts.marks.touch(launched.job.clone());
                }
            } else if let Some(launched) = shared.launched.remove(&task_key) {
                self.parts.marks.touch(launched.job);
            }
        }
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
    // A short refuse filter: a declined agent is offered again before the next instant's lead begins.
    Framework::registered(client, FRAMEWORK, &config)
        .refuse(Duration::from_secs(1))
        .trim_tasks(trim)
        .run_on_kit(|parts| Chronos { parts }, Companion::lead, shutdown)
        .await
}

/// The leader's companion: plans and acts on the kit until the leadership ends (the SDK then drops it).
struct Companion {
    parts: Parts<SharedState>,
    /// Wakes the SDK's loop (the scheduler half).
    sdk: Arc<Notify>,
    jobs: Cache<CronJob>,
    _watch: AbortOnDrop,
    /// Each job with its spec defaulted and its status the one last decided.
    decided: HashMap<String, Arc<CronJob>>,
    /// The status last written per job, while the watch has not shown it yet.
    stored: HashMap<String, CronJobStatus>,
    /// Jobs whose decided status is not stored yet, and when to try again.
    unwritten: Backlog,
    /// Children per parent job.
    children: HashMap<String, BTreeSet<String>>,
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
    /// Kills and deletes requested the watch has not shown yet.
    kills: InFlight,
    deletes: InFlight,
    /// Runs whose names are held by Tasks chronos did not launch, by task key.
    taken: HashMap<String, Taken>,
}

impl Plans for Companion {
    fn owner_of(task: &Task) -> Option<String> {
        job_of(task)
    }

    fn seen(&mut self, change: &TaskChange) {
        match change {
            TaskChange::Applied(task) => {
                let task_key = key(&**task);
                let launched = self.parts.shared.lock().launched.remove(&task_key);
                if let Some(launched) = launched.filter(|_| launched_by_chronos(task)) {
                    self.announce(&launched, task);
                }
                if task.spec.kill_requested == Some(true) {
                    self.kills.remove(&task_key);
                }
            }
            TaskChange::Deleted(task) => self.deletes.remove(&key(&**task)),
            TaskChange::Relisted => {}
        }
    }

    async fn turn(&mut self, kit: &mut Kit, turn: Turn) -> Option<Instant> {
        let mut jobs = self.load(kit, if turn.all { None } else { Some(&turn.changed) });
        jobs.extend(turn.owners);
        if turn.all {
            jobs.extend(self.decided.keys().cloned());
        }
        self.expire_in_flight();
        jobs.extend(self.resolve_taken().await);
        if !jobs.is_empty() {
            self.reconcile(kit, jobs).await;
        }
        self.flush(kit).await;
        let lead = self.update_lead();
        self.unwritten.next().into_iter().chain(lead).min()
    }
}

impl Companion {
    /// Lists the CronJobs, then plans and acts until the leadership ends.
    async fn lead(parts: Parts<SharedState>, leading: Leading) {
        let (jobs, watch) = watch_owners::<CronJob>(&parts.client, &parts.marks);
        if !jobs.wait_until_ready().await {
            return;
        }
        let this = Companion {
            sdk: leading.wake.clone(),
            jobs,
            _watch: watch,
            decided: HashMap::new(),
            stored: HashMap::new(),
            unwritten: Backlog::default(),
            children: HashMap::new(),
            wanted: false,
            instants: BTreeSet::new(),
            next_of: HashMap::new(),
            kills: InFlight::new(IN_FLIGHT),
            deletes: InFlight::new(IN_FLIGHT),
            taken: HashMap::new(),
            clock: Clock::new(),
            quiet_until: Instant::now(),
            deferred_since: HashMap::new(),
            parts,
        };
        {
            let mut shared = this.parts.shared.lock();
            *shared = SharedState::default();
            shared.ready = true;
        }
        tracing::info!(jobs = this.jobs.len(), tasks = leading.tasks.len(), "chronos leading");
        let marks = this.parts.marks.clone();
        companion::lead(this, leading, marks).await;
    }
}

impl Companion {
    /// Copies jobs from the cache (`only` these keys, or all); returns the keys to re-plan (the jobs, and the
    /// children of those whose parents changed).
    fn load(&mut self, kit: &mut Kit, only: Option<&BTreeSet<String>>) -> BTreeSet<String> {
        let fresh: Vec<(String, Option<Arc<CronJob>>)> = match only {
            None => self.jobs.state().into_iter().map(|j| (key(&*j), Some(j))).collect(),
            Some(keys) => keys.iter().map(|k| (k.clone(), self.jobs.get(k))).collect(),
        };
        let mut keys = BTreeSet::new();
        if only.is_none() {
            let present: HashSet<&String> = fresh.iter().map(|(k, _)| k).collect();
            let gone: Vec<String> = self.decided.keys().filter(|k| !present.contains(k)).cloned().collect();
            for k in gone {
                self.forget(kit, &k);
            }
        }
        let mut graph_changed = false;
        for (k, job) in fresh {
            keys.insert(k.clone());
            let Some(job) = job else {
                self.forget(kit, &k);
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

    fn forget(&mut self, kit: &mut Kit, k: &str) {
        kit.timers.set(k, None);
        self.taken.retain(|_, t| t.job != k);
        self.deferred_since.remove(k);
        self.decided.remove(k);
        self.stored.remove(k);
        self.unwritten.remove(k);
        if let Some(t) = self.next_of.remove(k) {
            self.instants.remove(&(t, k.to_owned()));
        }
        let mut shared = self.parts.shared.lock();
        shared.due.remove(k);
    }

    /// Publishes the Event of a run whose Task the watch now shows.
    fn announce(&self, launched: &Launched, task: &Task) {
        let Some(job) = self.decided.get(&launched.job) else { return };
        let mut record = launched.run.event.clone();
        let agent = if task.spec.agent.is_empty() { &launched.agent } else { &task.spec.agent };
        record.message = format!("{} on agent {agent} (task {})", record.message, launched.run.name);
        self.parts.events.send(&**job, record);
    }

    /// Looks up the Tasks that held the names of runs whose acceptance found them taken: chronos' own (an earlier
    /// acceptance whose answer was lost) is left for the watch; another's makes the run a [`Taken`] stand-in, with
    /// a Warning; a name free again is launched again. Returns the jobs to re-plan.
    async fn resolve_taken(&mut self) -> BTreeSet<String> {
        let pending: Vec<(String, Launched)> = self
            .parts
            .shared
            .lock()
            .launched
            .iter()
            .filter(|(_, l)| l.taken)
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        let mut replan = BTreeSet::new();
        for (task_key, launched) in pending {
            let (namespace, name) = task_key.split_once('/').unwrap_or(("default", task_key.as_str()));
            let found = Api::<Task>::namespaced(self.parts.client.clone(), namespace).get_opt(name).await;
            let mut shared = self.parts.shared.lock();
            match found {
                Ok(Some(task)) if launched_by_chronos(&task) => {
                    if let Some(l) = shared.launched.get_mut(&task_key) {
                        l.taken = false; // ours: the watch will show it
                    }
                }
                Ok(Some(task)) => {
                    shared.launched.remove(&task_key);
                    drop(shared);
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
                        self.parts.events.send(&**job, record);
                    }
                    tracing::warn!(task = %task_key, %holder, "a run's task name is taken");
                    replan.insert(launched.job.clone());
                    let taken = Taken { job: launched.job, run: launched.run, at: Timestamp::now(), holder };
                    self.taken.insert(task_key, taken);
                }
                Ok(None) => {
                    // Deleted meanwhile: the run is due again.
                    shared.launched.remove(&task_key);
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
        self.kills.expire();
        self.deletes.expire();
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
        let mut shared = self.parts.shared.lock();
        let stale: Vec<String> =
            shared.launched.iter().filter(|(_, l)| l.at.elapsed() >= IN_FLIGHT).map(|(k, _)| k.clone()).collect();
        for k in stale {
            if let Some(l) = shared.launched.remove(&k) {
                self.parts.marks.touch(l.job);
            }
        }
    }

    /// The run tasks of `job` as the plan should see them: kills requested are assumed, launches not yet seen are
    /// staging.
    fn job_tasks(&self, kit: &Kit, job_key: &str, job: &CronJob, shared: &SharedState) -> Vec<Arc<Task>> {
        let mut tasks = self.kills.assume_killed(kit.tasks_of(job_key));
        for launched in shared.launched.values().filter(|l| l.job == job_key) {
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

    async fn reconcile(&mut self, kit: &mut Kit, keys: BTreeSet<String>) {
        let now = Timestamp::now();
        let mut work: Vec<(Arc<CronJob>, plan::Plan)> = Vec::new();
        let mut completions_changed = Vec::new();
        {
            let mut shared = self.parts.shared.lock();
            for k in &keys {
                let Some(job) = self.decided.get(k).cloned() else { continue };
                if job.metadata.deletion_timestamp.is_some() {
                    shared.due.remove(k);
                    continue;
                }
                let namespace = job.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
                let parents =
                    graph::parents(&job, |name| self.decided.get(&format!("{namespace}/{name}")).map(|j| &**j));
                let tasks = self.job_tasks(kit, k, &job, &shared);
                let planned = plan::plan(&job, &tasks, &parents, now);
                let before = job.status.clone().unwrap_or_default();
                if (before.last_success, before.last_error) != (planned.status.last_success, planned.status.last_error)
                {
                    completions_changed.push(k.clone());
                }
                if planned.launch.is_empty() {
                    shared.due.remove(k);
                } else {
                    shared.due.insert(k.clone(), (job.clone(), planned.launch.clone()));
                }
                for kill in &planned.kills {
                    self.kills.insert(format!("{namespace}/{}", kill.task));
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
            kit.timers.add_all(children, Instant::now());
        }
        if work.iter().any(|(_, p)| !p.launch.is_empty()) {
            self.sdk.notify_one();
            self.quiet_until = Instant::now() + QUIET;
        }
        let mut ops = Vec::with_capacity(work.len());
        for (job, planned) in work {
            let k = key(&*job);
            for record in &planned.events {
                self.parts.events.send(&*job, record.clone());
            }
            let wake = planned.wake.map(|at| self.clock.instant_of(at));
            kit.timers.set(&k, wake);
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
                    self.unwritten.push(&k, Instant::now() + Duration::from_secs(1));
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
            self.unwritten.push(&k, at);
        }
        // Never a Task chronos did not launch, whatever the plan's history says of its name.
        let deletes: Vec<String> = planned
            .delete
            .iter()
            .filter(|t| !self.deletes.contains(&format!("{namespace}/{t}")))
            .filter(|t| !self.taken.contains_key(&format!("{namespace}/{t}")))
            .cloned()
            .collect();
        for t in &deletes {
            self.deletes.insert(format!("{namespace}/{t}"));
        }
        let client = self.parts.client.clone();
        async move {
            let jobs: Api<CronJob> = Api::namespaced(client.clone(), &namespace);
            let tasks = writes::tasks_in(&client, &namespace);
            for kill in &planned.kills {
                writes::request_kill(&tasks, &kill.task, kill.reason.as_str(), MANAGER).await;
            }
            let mut now_stored = stored.clone().unwrap_or_default();
            if write {
                match writes::patch_status(&jobs, &name, status_patch(&planned.status), MANAGER).await {
                    Written::Stored => now_stored = planned.status.clone(),
                    Written::Gone => return (k, Some(planned.status)),
                    Written::Failed => return (k, None),
                }
            }
            // Old runs go only once the status that counted them is stored.
            for task in deletes {
                if now_stored.runs.iter().any(|r| r.task == task) {
                    writes::delete_task(&tasks, &task).await;
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

    /// Retries status writes that failed or waited (by planning their jobs again).
    async fn flush(&mut self, kit: &mut Kit) {
        let ready = self.unwritten.ready(Instant::now());
        if ready.is_empty() {
            return;
        }
        for k in &ready {
            self.unwritten.remove(k);
        }
        self.reconcile(kit, ready.into_iter().collect()).await;
    }

    /// Tells the scheduler half what is due soon, and wakes the SDK when that changes whether offers are wanted
    /// (it revives then, and holds offers; it suppresses when nothing is due). Returns when the next lead begins.
    fn update_lead(&mut self) -> Option<Instant> {
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
        let mut shared = self.parts.shared.lock();
        shared.next_instant = earliest;
        for (job, due) in shared.due.values() {
            upcoming.0 += job.spec.cpus() * due.len() as f64;
            upcoming.1 += job.spec.mem() * due.len() as f64;
            upcoming.2 += due.len();
        }
        shared.upcoming = upcoming;
        let wants = shared.wants();
        drop(shared);
        if wants != self.wanted {
            self.wanted = wants;
            self.sdk.notify_one();
        }
        // The loop wakes when the lead begins, and updates it then.
        earliest.map(|t| t.checked_sub(LEAD).unwrap_or(t)).filter(|lead| *lead > Instant::now())
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
    let nulls = ["observedGeneration", "lastScheduleTime", "nextScheduleTime", "lastSuccess", "lastError"];
    writes::merge_patch(status, &nulls, &["active", "runs", "conditions"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_cuts_a_long_message_on_a_character_boundary() {
        let mut task = Task::new(ObjectMeta::named(Some("ns"), "t"), TaskSpec::default());
        let mut status = TaskStatus::new(TaskState::Failed);
        status.message = Some(format!("a{}", "é".repeat(150)));
        task.status = Some(status);
        trim(&mut task);
        let message = task.status.and_then(|s| s.message).unwrap_or_default();
        assert_eq!(message.len(), 199, "byte 200 is inside a character: the cut is before it");
    }

    #[test]
    fn a_status_patch_clears_what_is_no_longer_set() {
        let patch = status_patch(&CronJobStatus::default());
        assert_eq!(patch["nextScheduleTime"], Value::Null);
        assert_eq!(patch["active"], json!([]));
        assert_eq!(patch["successCount"], json!(0));
    }
}
