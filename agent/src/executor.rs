//! One executor of Tasks for real and hollow agents, as kubemark runs the real kubelet over a fake runtime: the
//! [`lifecycle`] decisions and every status write live here, and what it takes to run a task lives behind
//! [`TaskRuntime`] — containers for a real agent ([`crate::runner`]), nothing at all for hollow ones
//! ([`crate::hollow`]). So every scale test and benchmark runs the decisions and the writes production runs.
//!
//! One executor serves any number of agents from one watch of their Tasks (a real agent is one; a hollow process is
//! thousands). For each task it takes on it:
//!
//! - launches it: `Starting` (guarded, for a runtime that [prepares](TaskRuntime::PREPARES)), admission against the
//!   agent's resources ([`crate::admission`]), the runtime's start, then `Running`;
//! - waits for its end ([`TaskRuntime::outcome`]) and writes the terminal status ([`lifecycle::ended`]), retrying
//!   until it is written;
//! - stops it on `killRequested` or deletion: SIGTERM, SIGKILL after its grace period;
//! - runs its health checks ([`crate::health`]'s verdicts over [`TaskRuntime::probe`]) and reads its usage;
//! - after a restart, takes over what an earlier run left ([`TaskRuntime::reattach`]);
//! - holds the agent's finalizer (which the apiserver puts on every bound Task), releasing it once nothing of the
//!   task runs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use agora_client::{Api, Client, Patch, PatchParams};
use agora_controllers::runtime::finalizer::{self, finalizer};
use agora_controllers::runtime::{Action, Controller, watcher};
use agora_schemas::names::AGENT_FINALIZER;
use agora_schemas::{HealthCheck, Resources, Task, TaskState};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::admission::Claim;
use crate::lifecycle::{self, End, Facts, Process, Step};
use crate::registration::FIELD_MANAGER;

/// How long a task gets between SIGTERM and SIGKILL unless it says otherwise.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// What it takes to run tasks: the executor's only way to touch them.
pub trait TaskRuntime: Send + Sync + Sized + 'static {
    /// Whether a start takes time and leaves things behind (a pull, a container): the executor then claims the task
    /// with a guarded `Starting` before it, and writes `Running` after. A runtime whose start is instant and leaves
    /// nothing (a hollow one) is claimed by a guarded `Running` alone.
    const PREPARES: bool;

    /// Starts `task` (admitted already), saying what it does through `starting`.
    ///
    /// # Errors
    /// Why it did not start.
    fn start(&self, task: &Task, starting: Starting<'_>) -> impl Future<Output = Result<(), Failure>> + Send;

    /// Signals the task's process: SIGTERM (once it can take it), or SIGKILL when `force`.
    fn kill(&self, task: &Task, force: bool) -> impl Future<Output = ()> + Send;

    /// Waits for the task's process to end, removes what ran it, and says how it ended (the executor adds what it
    /// knows itself: whether it was stopping it, and why).
    fn outcome(&self, task: &Task) -> impl Future<Output = End> + Send;

    /// What the task's process uses now; `None` when this runtime does not know (or the process is gone).
    fn usage(&self, task: &Task) -> impl Future<Output = Option<Usage>> + Send;

    /// Runs one of the task's health checks: whether it passed, and a line saying what was seen.
    fn probe(&self, task: &Task, check: &HealthCheck) -> impl Future<Output = (bool, String)> + Send;

    /// Takes over a task an earlier run left: `Some(alive)` when something of it is left (its process running, or
    /// how it ended recorded), `None` when nothing is.
    fn reattach(&self, task: &Task) -> Option<bool>;

    /// Removes what is left of a task that will not run here: one abandoned after a restart, or one whose launch
    /// lost a race with a change of the task.
    fn release(&self, task: &Task) -> impl Future<Output = ()> + Send;

    /// The task is deleted and ended: removes what the runtime keeps of it (a sandbox with logs may stay for its
    /// retention).
    fn delete(&self, task: &Task) -> impl Future<Output = ()> + Send;
}

/// Why a task did not start: the reason and message its `Failed` status shows (`KillRequested`: it was killed or
/// deleted while it was starting, and ends `Killed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// A CamelCase reason.
    pub reason: &'static str,
    /// What went wrong, in words.
    pub message: String,
}

impl Failure {
    /// A failure for `reason`.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

impl From<(&'static str, String)> for Failure {
    fn from((reason, message): (&'static str, String)) -> Self {
        Self { reason, message }
    }
}

/// What a task's process uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// CPU and memory, from its cgroup.
    pub cgroup: crate::cgroups::Usage,
    /// The disk it has written, bytes (read only when it has a disk limit).
    pub disk_bytes: Option<u64>,
}

/// A task being started: what a runtime may say about it meanwhile.
pub struct Starting<'a> {
    task: &'a Task,
    tasks: &'a Api<Task>,
}

impl<'a> Starting<'a> {
    /// `task`, being started, written through `tasks`.
    #[must_use]
    pub fn new(task: &'a Task, tasks: &'a Api<Task>) -> Self {
        Self { task, tasks }
    }

    /// Shows `message` in the task's `Starting` status (a pull's progress).
    pub async fn say(&self, message: String) {
        let _ = write_status(self.tasks, self.task, json!({ "state": "Starting", "message": message }), false).await;
    }

    /// Whether the task has been asked to stop since it was read (killed, deleted or gone), and which.
    pub async fn stop_asked(&self) -> Option<&'static str> {
        let name = self.task.metadata.name.as_deref().unwrap_or_default();
        match self.tasks.get(name).await {
            Ok(now) if now.metadata.uid != self.task.metadata.uid => Some("the task was deleted"),
            Ok(now) if now.metadata.deletion_timestamp.is_some() => Some("the task was deleted"),
            Ok(now) if now.spec.kill_requested == Some(true) => Some("the task was killed"),
            Err(e) if e.is_not_found() => Some("the task was deleted"),
            _ => None,
        }
    }
}

/// One agent an executor serves.
#[derive(Clone, Debug)]
pub struct Agent {
    /// What it offers: its tasks together never hold more.
    pub resources: Resources,
    /// The host name its tasks' statuses show.
    pub host: String,
}

/// A task the executor started: from its start until its terminal state is written.
#[derive(Default)]
struct Live {
    killing: bool,
    exited: bool,
    /// Why the executor stopped it for its disk use, when it did.
    disk_exceeded: Option<String>,
}

/// The executor of the Tasks of some agents.
pub struct Executor<R> {
    client: Client,
    runtime: R,
    agents: HashMap<String, Agent>,
    live: Mutex<HashMap<String, Live>>,
    /// Per agent, what each admitted task holds, from its admission until its end is recorded.
    claims: Mutex<HashMap<String, HashMap<String, Claim>>>,
    /// Tasks this process has taken on (so a stale cached state is never taken for one left by an earlier run); a
    /// task leaves it when its deletion is cleaned up.
    handled: Mutex<HashSet<String>>,
    metrics: crate::metrics::Metrics,
    /// How often a running task's usage is read; never when `None`.
    usage_every: Option<Duration>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn uid(task: &Task) -> String {
    task.metadata.uid.clone().unwrap_or_default()
}

fn failed(reason: &str, message: impl Into<String>) -> Value {
    json!({ "state": "Failed", "reason": reason, "message": message.into(), "finishedAt": Timestamp::now() })
}

/// Writes `status` (merged into the task's status), guarded by the version decided on when `guarded`: `false` when
/// the task changed meanwhile (or is gone).
async fn write_status(tasks: &Api<Task>, task: &Task, status: Value, guarded: bool) -> agora_client::Result<bool> {
    let name = task.metadata.name.as_deref().unwrap_or_default();
    let mut patch = json!({ "status": status });
    if guarded {
        patch["metadata"] = json!({ "resourceVersion": task.metadata.resource_version });
    }
    match tasks.patch_status(name, &PatchParams::default().manager(FIELD_MANAGER), &Patch::Merge(patch)).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_conflict() || e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

fn grace(task: &Task) -> Duration {
    task.spec.kill_grace_period_seconds.map_or(DEFAULT_KILL_GRACE, |s| Duration::from_secs(u64::from(s)))
}

impl<R: TaskRuntime> Executor<R> {
    /// An executor of the Tasks of `agents`, running them on `runtime`.
    pub fn new(client: Client, runtime: R, agents: HashMap<String, Agent>, usage_every: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            client,
            runtime,
            agents,
            live: Mutex::default(),
            claims: Mutex::default(),
            handled: Mutex::default(),
            metrics: crate::metrics::Metrics::default(),
            usage_every,
        })
    }

    /// The runtime it runs tasks on.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Its running tasks' usage, for `/metrics`.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Whether the task with this uid still runs (started by this process, its exit not yet seen).
    pub fn running(&self, uid: &str) -> bool {
        lock(&self.live).get(uid).is_some_and(|l| !l.exited)
    }

    /// Whether the task with this uid is started and its end not yet recorded.
    pub fn live(&self, uid: &str) -> bool {
        lock(&self.live).contains_key(uid)
    }

    /// Runs the agents' Tasks — those `fields` selects (all, without), of the executor's agents — until `shutdown`.
    pub async fn run(self: Arc<Self>, fields: Option<String>, shutdown: impl Future<Output = ()> + Send + 'static) {
        let mut config = watcher::Config::default();
        if let Some(fields) = &fields {
            config = config.fields(fields);
        }
        Controller::new(Api::<Task>::all(self.client.clone()), config)
            .graceful_shutdown_on(shutdown)
            .run(
                |task, executor: Arc<Self>| async move { executor.reconcile(task).await },
                |task, error, _| {
                    tracing::warn!(task = %task.metadata.display_name(), %error, "task update failed; retrying");
                    Action::requeue(Duration::from_secs(1))
                },
                self,
            )
            .for_each(|_| async {})
            .await;
    }

    async fn reconcile(self: Arc<Self>, task: Arc<Task>) -> Result<Action, finalizer::Error<agora_client::Error>> {
        if !self.agents.contains_key(&task.spec.agent) {
            return Ok(Action::await_change());
        }
        let namespace = task.metadata.namespace.as_deref().unwrap_or("default");
        let tasks: Api<Task> = Api::namespaced(self.client.clone(), namespace);
        let events = tasks.clone();
        finalizer(&tasks, AGENT_FINALIZER, task, |event| async move {
            match event {
                finalizer::Event::Apply(task) => self.apply(task, &events).await,
                finalizer::Event::Cleanup(task) => self.cleanup(task, &events).await,
            }
        })
        .await
    }

    async fn apply(self: &Arc<Self>, task: Arc<Task>, tasks: &Api<Task>) -> agora_client::Result<Action> {
        match lifecycle::decide(&task, self.facts(&task, tasks), Timestamp::now()) {
            Step::Wait => {}
            Step::Launch => self.launch(task, tasks).await?,
            Step::Stop { announce } => {
                if announce {
                    write_status(tasks, &task, json!({ "state": "Killing" }), false).await?;
                }
                self.stop(&task);
            }
            Step::Write { status, guarded } => {
                write_status(tasks, &task, status, guarded).await?;
            }
            Step::Abandon { status } => {
                self.runtime.release(&task).await;
                write_status(tasks, &task, status, true).await?;
            }
        }
        Ok(Action::await_change())
    }

    /// What the executor knows of `task`: whether this process has taken it on, and its process — taking over one an
    /// earlier run left when this process has not handled the task yet and it is past `Staging`.
    fn facts(self: &Arc<Self>, task: &Arc<Task>, tasks: &Api<Task>) -> Facts {
        let id = uid(task);
        let state = task.status.as_ref().map_or(TaskState::Staging, |s| s.state);
        let handled = lock(&self.handled).contains(&id);
        let known = || {
            lock(&self.live)
                .get(&id)
                .map(|l| if l.exited { Process::Exited } else { Process::Running { killing: l.killing } })
        };
        let mut process = known();
        if process.is_none()
            && !handled
            && !state.is_terminal()
            && state != TaskState::Staging
            && self.reattach(task, tasks)
        {
            process = known();
        }
        Facts { handled, process: process.unwrap_or(Process::Unknown) }
    }

    /// Admits `task` if it fits beside the tasks its agent holds, and records its claim — one decision under one lock.
    fn admit(&self, task: &Task) -> Result<(), String> {
        let agent = &task.spec.agent;
        let total = self.agents.get(agent).map(|a| &a.resources).ok_or_else(|| format!("no agent {agent} here"))?;
        let mut claims = lock(&self.claims);
        let held = claims.entry(agent.clone()).or_default();
        let asked = Claim::of(&task.spec);
        crate::admission::admit(agent, total, held.values(), &asked)?;
        held.insert(uid(task), asked);
        Ok(())
    }

    /// Records a task its agent holds whatever fits (one it reattached to).
    fn hold(&self, task: &Task) {
        lock(&self.claims).entry(task.spec.agent.clone()).or_default().insert(uid(task), Claim::of(&task.spec));
    }

    /// The task no longer holds anything on its agent.
    fn release(&self, task: &Task) {
        if let Some(held) = lock(&self.claims).get_mut(&task.spec.agent) {
            held.remove(&uid(task));
        }
    }

    async fn launch(self: &Arc<Self>, task: Arc<Task>, tasks: &Api<Task>) -> agora_client::Result<()> {
        let host = self.agents.get(&task.spec.agent).map(|a| a.host.clone()).unwrap_or_default();
        if R::PREPARES && !write_status(tasks, &task, json!({ "state": "Starting", "host": host }), true).await? {
            return Ok(()); // changed meanwhile: the change brings another reconcile
        }
        let id = uid(&task);
        lock(&self.handled).insert(id.clone());
        // Whatever created it, a task runs only in the room the tasks already there leave.
        if let Err(message) = self.admit(&task) {
            write_status(tasks, &task, failed("InsufficientResources", message), false).await?;
            return Ok(());
        }
        if let Err(failure) = self.runtime.start(&task, Starting { task: &task, tasks }).await {
            self.release(&task);
            let status = if failure.reason == "KillRequested" {
                json!({ "state": "Killed", "reason": failure.reason, "message": failure.message,
                        "finishedAt": Timestamp::now() })
            } else {
                failed(failure.reason, failure.message)
            };
            write_status(tasks, &task, status, false).await?;
            return Ok(());
        }
        lock(&self.live).insert(id.clone(), Live::default());
        tracing::info!(task = %task.metadata.display_name(), "started");
        // Running is written before the exit is looked for, so a quick exit's terminal state always comes after it.
        let status = json!({ "state": "Running", "startedAt": Timestamp::now(), "host": host });
        let running = write_status(tasks, &task, status, !R::PREPARES).await;
        if matches!(running, Ok(false)) && !R::PREPARES {
            // The task changed before its start was recorded: nothing of it runs, and the change decides anew.
            lock(&self.live).remove(&id);
            lock(&self.handled).remove(&id);
            self.release(&task);
            self.runtime.release(&task).await;
            return Ok(());
        }
        self.watch(&task, tasks, true);
        running.map(drop)
    }

    /// Watches a started task: for its end, and (when `alive`) its health and usage.
    fn watch(self: &Arc<Self>, task: &Arc<Task>, tasks: &Api<Task>, alive: bool) {
        tokio::spawn(self.clone().watch_exit(task.clone(), tasks.clone()));
        if alive && !task.spec.health_checks.is_empty() {
            tokio::spawn(self.clone().monitor_health(task.clone(), tasks.clone()));
        }
        if alive && let Some(every) = self.usage_every {
            tokio::spawn(self.clone().monitor_usage(task.clone(), tasks.clone(), every));
        }
    }

    /// Waits for the task's end, then records it.
    async fn watch_exit(self: Arc<Self>, task: Arc<Task>, tasks: Api<Task>) {
        let mut end = self.runtime.outcome(&task).await;
        let id = uid(&task);
        if let Some(live) = lock(&self.live).get_mut(&id) {
            live.exited = true;
            end.killing = live.killing;
            end.disk_exceeded = live.disk_exceeded.take();
        }
        end.mem = task.spec.mem;
        let status = lifecycle::ended(&end, Timestamp::now());
        tracing::info!(task = %task.metadata.display_name(), status = %status["state"], "ended");
        // The terminal state must not be lost: retry until it is written (or the task is gone).
        let mut delay = Duration::from_millis(100);
        while let Err(e) = write_status(&tasks, &task, status.clone(), false).await {
            tracing::warn!(task = %task.metadata.display_name(), error = %e, "reporting the exit failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        // Released first: whoever sees the task no longer live (a deletion's cleanup) sees its room free.
        self.release(&task);
        lock(&self.live).remove(&id);
    }

    /// SIGTERM now and SIGKILL after the grace period if it is still there; once.
    fn stop(self: &Arc<Self>, task: &Arc<Task>) {
        {
            let mut live = lock(&self.live);
            let Some(entry) = live.get_mut(&uid(task)) else { return };
            if entry.killing || entry.exited {
                return;
            }
            entry.killing = true;
        }
        let (executor, task) = (self.clone(), task.clone());
        tokio::spawn(async move {
            executor.runtime.kill(&task, false).await;
            tokio::time::sleep(grace(&task)).await;
            if executor.running(&uid(&task)) {
                executor.runtime.kill(&task, true).await;
            }
        });
    }

    /// The task is being deleted: stop it (with its grace period), wait until it is gone, then let the runtime
    /// remove what it keeps of it.
    async fn cleanup(self: &Arc<Self>, task: Arc<Task>, tasks: &Api<Task>) -> agora_client::Result<Action> {
        let id = uid(&task);
        if !self.live(&id) {
            // Deleted while the agent was down: take the process over first, to stop it.
            self.reattach(&task, tasks);
        }
        self.stop(&task);
        while self.live(&id) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.runtime.delete(&task).await;
        // A deleting task only ever comes back here, never to a launch: the executor can forget it.
        lock(&self.handled).remove(&id);
        Ok(Action::await_change())
    }

    /// Takes over a task an earlier run started, if the runtime has something of it.
    fn reattach(self: &Arc<Self>, task: &Arc<Task>, tasks: &Api<Task>) -> bool {
        let Some(alive) = self.runtime.reattach(task) else { return false };
        let id = uid(task);
        lock(&self.handled).insert(id.clone());
        lock(&self.live).insert(id, Live::default());
        self.hold(task);
        tracing::info!(task = %task.metadata.display_name(), running = alive, "reattached to a task started before a restart");
        self.watch(task, tasks, alive);
        true
    }

    /// Runs the task's health checks while it runs, writing each result into its status.
    async fn monitor_health(self: Arc<Self>, task: Arc<Task>, tasks: Api<Task>) {
        use crate::health::{Verdicts, in_grace};
        let id = uid(&task);
        let started = tokio::time::Instant::now();
        let verdicts = Arc::new(Mutex::new(Verdicts::new(task.spec.health_checks.len())));
        let mut checks = tokio::task::JoinSet::new();
        for (index, mut check) in task.spec.health_checks.clone().into_iter().enumerate() {
            check.apply_defaults();
            let (executor, task, tasks, verdicts, id) =
                (self.clone(), task.clone(), tasks.clone(), verdicts.clone(), id.clone());
            checks.spawn(async move {
                let interval = Duration::from_secs(u64::from(check.interval_seconds().max(1)));
                while executor.running(&id) {
                    let (passed, output) = executor.runtime.probe(&task, &check).await;
                    let now = tokio::time::Instant::now();
                    let (healthy, failures) = {
                        let mut v = lock(&verdicts);
                        v.record(index, passed, in_grace(&check, started, now));
                        (v.healthy(), v.failures())
                    };
                    let mut status = json!({
                        "healthCheckFailures": failures,
                        "lastHealthCheck": { "time": Timestamp::now(), "passed": passed, "output": output },
                    });
                    if let Some(healthy) = healthy {
                        status["healthy"] = json!(healthy);
                    }
                    if executor.running(&id)
                        && let Err(e) = write_status(&tasks, &task, status, false).await
                    {
                        tracing::debug!(task = %task.metadata.display_name(), error = %e, "health status not written");
                    }
                    tokio::time::sleep(interval).await;
                }
            });
        }
        while checks.join_next().await.is_some() {}
    }

    /// Reads the task's usage every `every` while it runs: into its status and `/metrics`; stops it when it has
    /// written more than its disk limit.
    async fn monitor_usage(self: Arc<Self>, task: Arc<Task>, tasks: Api<Task>, every: Duration) {
        let id = uid(&task);
        let labels = crate::metrics::TaskLabels { task: task.metadata.display_name(), uid: id.clone() };
        loop {
            tokio::time::sleep(every).await;
            if !self.running(&id) {
                break;
            }
            let Some(usage) = self.runtime.usage(&task).await else { continue };
            self.metrics.record(&labels, &usage.cgroup);
            self.count_running();
            if let Some(why) = usage.disk_bytes.and_then(|used| crate::disk::over_limit(used, task.spec.disk)) {
                tracing::info!(task = %task.metadata.display_name(), "over its disk limit: stopping it");
                if let Some(live) = lock(&self.live).get_mut(&id) {
                    live.disk_exceeded = Some(why);
                }
                self.stop(&task);
                break;
            }
            let usage = usage.cgroup;
            let status = json!({ "usage": {
                "cpuSeconds": usage.cpu_seconds, "memoryBytes": usage.memory_bytes,
                "memoryPeakBytes": usage.memory_peak_bytes,
            }});
            if self.running(&id)
                && let Err(e) = write_status(&tasks, &task, status, false).await
            {
                tracing::debug!(task = %task.metadata.display_name(), error = %e, "usage not written");
            }
        }
        self.metrics.forget(&labels);
        self.count_running();
    }

    fn count_running(&self) {
        let running = lock(&self.live).values().filter(|l| !l.exited).count();
        self.metrics.set_running(running);
    }
}
