//! Hollow mode: one process that is N agents which run nothing, like Kubernetes' kubemark hollow nodes — so the
//! allocator, the frameworks and the apiserver can be tested and benchmarked at thousands of agents on one machine.
//!
//! Each hollow agent registers its Agent object and heartbeats its Lease exactly as a real agent does. Their Tasks
//! are run by the [`executor`](crate::executor) a real agent runs — its decisions, admission and status writes —
//! over one watch of all Tasks (not one per agent), on the [`Hollow`] runtime, whose processes are simulated: a task
//! starts at once; it ends after the seconds in its annotation [`RUN_SECONDS`] or env [`RUN_SECONDS_ENV`] (never,
//! without either) with the exit code in [`EXIT_CODE`] or [`EXIT_CODE_ENV`] (0 → Finished, else Failed); a signal
//! ends it at once (Killed); its health checks pass, unless its env says [`HEALTHY_ENV`]`=false`, or from
//! [`HEALTHY_AFTER_ENV`] seconds after its start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agora_client::Client;
use agora_schemas::{HealthCheck, Resources, Task, TaskState};
use futures::StreamExt;
use jiff::Timestamp;
use tokio::sync::watch;

use crate::container::Exit;
use crate::executor::{Agent, Executor, Failure, Starting, TaskRuntime, Usage};
use crate::lifecycle::End;
use crate::registration::{self, HeartbeatConfig, Registration};

pub use agora_schemas::names::{
    HOLLOW_EXIT_CODE_ANNOTATION as EXIT_CODE, HOLLOW_RUN_SECONDS_ANNOTATION as RUN_SECONDS,
};
/// The env variable that makes a hollow task's health checks fail (`HOLLOW_HEALTHY=false`); they pass otherwise.
pub const HEALTHY_ENV: &str = "HOLLOW_HEALTHY";
/// The env variable that delays a hollow task's first passing health check by this many seconds after it starts
/// (health unknown until then).
pub const HEALTHY_AFTER_ENV: &str = "HOLLOW_HEALTHY_AFTER";
/// The env variable that, like the [`RUN_SECONDS`] annotation, says how long a hollow task runs (so a framework
/// that copies its job's env, as chronos does, can make its hollow tasks finish).
pub const RUN_SECONDS_ENV: &str = "HOLLOW_RUN_SECONDS";
/// The env variable that, like the [`EXIT_CODE`] annotation, gives a hollow task's exit code.
pub const EXIT_CODE_ENV: &str = "HOLLOW_EXIT_CODE";
/// Registrations in flight at once at start-up.
const REGISTER_CONCURRENCY: usize = 32;
/// Heartbeat renewals in flight at once.
const HEARTBEATS_IN_FLIGHT: usize = 64;

/// The hollow agents of one process.
#[derive(Clone, Debug)]
pub struct HollowConfig {
    /// How many agents.
    pub count: usize,
    /// Agents are named `<prefix><i>` for `i` in `0..count`.
    pub name_prefix: String,
    /// What each offers.
    pub resources: Resources,
    /// Each one's attributes.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// Heartbeat timing.
    pub heartbeat: HeartbeatConfig,
}

/// Why hollow agents could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Registering an agent failed (after retries).
    #[error("registering hollow agent {name}: {source}")]
    Register {
        /// The agent.
        name: String,
        /// What the apiserver said.
        #[source]
        source: agora_client::Error,
    },
}

/// Registers the hollow agents, keeps their heartbeats and drives their Tasks until `shutdown` completes.
///
/// # Errors
/// When an agent cannot be registered.
pub async fn run(
    client: Client,
    config: HollowConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let names: Vec<String> = (0..config.count).map(|i| format!("{}{i}", config.name_prefix)).collect();
    let registered = futures::stream::iter(names.iter().cloned().map(|name| {
        // Each simulated machine has a hostname of its own (its name), as `hostname` constraints expect.
        let (client, hostname) = (client.clone(), name.clone());
        let registration = Registration {
            name,
            resources: config.resources.clone(),
            attributes: config.attributes.clone(),
            hostname,
            address: None,
            certificate_authority: None,
        };
        async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match registration::register(&client, &registration).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.is_transient() && attempt < 5 => {
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await
                    }
                    Err(source) => return Err(Error::Register { name: registration.name.clone(), source }),
                }
            }
        }
    }))
    .buffer_unordered(REGISTER_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    registered.into_iter().collect::<Result<Vec<()>, Error>>()?;
    tracing::info!(count = config.count, prefix = %config.name_prefix, "hollow agents registered");

    // Heartbeats spread over the interval, so N agents make N/interval renewals a second, not bursts of N.
    // At most HEARTBEATS_IN_FLIGHT renewals wait on the apiserver at once: when it is slow, renewals queue here
    // instead of each opening a connection of its own (thousands of agents would exhaust its connection limit).
    let mut heartbeats = tokio::task::JoinSet::new();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(HEARTBEATS_IN_FLIGHT));
    for (i, name) in names.iter().enumerate() {
        let offset = config.heartbeat.interval.mul_f64(i as f64 / config.count.max(1) as f64);
        let (client, name, heartbeat, in_flight) = (client.clone(), name.clone(), config.heartbeat, in_flight.clone());
        heartbeats.spawn(async move {
            tokio::time::sleep(offset).await;
            loop {
                let renewed = {
                    let _permit = in_flight.acquire().await;
                    registration::renew(&client, &name, heartbeat).await
                };
                let next = match renewed {
                    Ok(()) => heartbeat.interval,
                    Err(e) => {
                        tracing::warn!(agent = %name, error = %e, "heartbeat failed; retrying");
                        heartbeat.interval.min(Duration::from_secs(1))
                    }
                };
                tokio::time::sleep(next).await;
            }
        });
    }

    let agents = names
        .into_iter()
        .map(|name| (name.clone(), Agent { resources: config.resources.clone(), host: name }))
        .collect();
    Executor::new(client, Hollow::default(), agents, None).run(None, shutdown).await;
    heartbeats.abort_all();
    Ok(())
}

/// The runtime of hollow agents: processes that run nothing, which end after their run time or at a signal.
#[derive(Default)]
pub struct Hollow {
    processes: Mutex<HashMap<String, Simulated>>,
}

/// A hollow task's process: when it started, and the signal that ended it (once one has).
type Simulated = (Timestamp, watch::Sender<Option<i32>>);

fn uid(task: &Task) -> String {
    task.metadata.uid.clone().unwrap_or_default()
}

/// `seconds` as a duration: negative or NaN is none, beyond jiff's range its largest (the value is user input).
fn seconds_of(seconds: f64) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(jiff::SignedDuration::MAX)
}

/// A setting of `task`: its annotation, else its env variable.
fn setting<'a>(task: &'a Task, annotation: &str, var: &str) -> Option<&'a String> {
    task.metadata.annotations.get(annotation).or_else(|| task.spec.env.get(var))
}

/// How a hollow task started at `started` runs: when it ends by itself (never: `None`), and with which exit.
fn run_of(task: &Task, started: Timestamp) -> (Option<Timestamp>, Exit) {
    let seconds = setting(task, RUN_SECONDS, RUN_SECONDS_ENV).and_then(|s| s.parse::<f64>().ok());
    let ends = seconds.map(|s| started.checked_add(seconds_of(s)).unwrap_or(Timestamp::MAX));
    let code = setting(task, EXIT_CODE, EXIT_CODE_ENV).and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
    (ends, Exit::Code(code))
}

/// How a hollow task's health check answers at `now`, for a task started at `started`: the answer, or how long
/// until it has one.
fn health_of(task: &Task, started: Timestamp, now: Timestamp) -> Result<(bool, String), Duration> {
    if task.spec.env.get(HEALTHY_ENV).is_some_and(|v| v == "false") {
        return Ok((false, "hollow: HOLLOW_HEALTHY=false".into()));
    }
    if let Some(after) = task.spec.env.get(HEALTHY_AFTER_ENV).and_then(|s| s.parse::<f64>().ok()) {
        let healthy_at = started.checked_add(seconds_of(after)).unwrap_or(Timestamp::MAX);
        if healthy_at > now {
            return Err(now.duration_until(healthy_at).unsigned_abs());
        }
    }
    Ok((true, "hollow: passed".into()))
}

/// Time until `at` from now (none when it has passed).
fn until(at: Timestamp) -> Duration {
    let now = Timestamp::now();
    if at > now { now.duration_until(at).unsigned_abs() } else { Duration::ZERO }
}

impl Hollow {
    fn processes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Simulated>> {
        self.processes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the task's process started (now, for one this runtime does not know).
    fn started(&self, task: &Task) -> Timestamp {
        self.processes().get(&uid(task)).map_or_else(Timestamp::now, |(started, _)| *started)
    }
}

impl TaskRuntime for Hollow {
    const PREPARES: bool = false;

    async fn start(&self, task: &Task, _: Starting<'_>) -> Result<(), Failure> {
        self.processes().insert(uid(task), (Timestamp::now(), watch::Sender::new(None)));
        Ok(())
    }

    async fn kill(&self, task: &Task, force: bool) {
        if let Some((_, signal)) = self.processes().get(&uid(task)) {
            signal.send_if_modified(|s| s.is_none() && s.replace(if force { 9 } else { 15 }).is_none());
        }
    }

    async fn outcome(&self, task: &Task) -> End {
        let id = uid(task);
        let Some((started, mut signalled)) = self.processes().get(&id).map(|(at, s)| (*at, s.subscribe())) else {
            return End::default();
        };
        let (ends, exit) = run_of(task, started);
        let exit = tokio::select! {
            () = tokio::time::sleep(ends.map_or(Duration::MAX, until)) => exit,
            signal = signalled.wait_for(Option::is_some) => Exit::Signal(signal.ok().and_then(|s| *s).unwrap_or(9)),
        };
        self.processes().remove(&id);
        End { outcome: Some(Ok(exit)), ..End::default() }
    }

    async fn usage(&self, _: &Task) -> Option<Usage> {
        None
    }

    async fn probe(&self, task: &Task, _: &HealthCheck) -> (bool, String) {
        let started = self.started(task);
        loop {
            match health_of(task, started, Timestamp::now()) {
                Ok(answer) => return answer,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// A hollow process outlives its agent's restarts: any task past Staging runs on, from its recorded start.
    fn reattach(&self, task: &Task) -> Option<bool> {
        let status = task.status.as_ref()?;
        if status.state == TaskState::Staging || status.state.is_terminal() {
            return None;
        }
        let started = status.started_at.unwrap_or_else(Timestamp::now);
        self.processes().entry(uid(task)).or_insert_with(|| (started, watch::Sender::new(None)));
        Some(true)
    }

    async fn release(&self, task: &Task) {
        self.processes().remove(&uid(task));
    }

    async fn delete(&self, task: &Task) {
        self.processes().remove(&uid(task));
    }
}

#[cfg(test)]
mod tests {
    use agora_schemas::{ObjectMeta, TaskSpec, TaskStatus};
    use jiff::SignedDuration;

    use super::*;

    fn task(run_seconds: Option<&str>, exit: Option<&str>) -> Task {
        let mut meta = ObjectMeta::named(Some("default"), "t");
        meta.uid = Some("u1".into());
        if let Some(seconds) = run_seconds {
            meta.annotations.insert(RUN_SECONDS.into(), seconds.into());
        }
        if let Some(code) = exit {
            meta.annotations.insert(EXIT_CODE.into(), code.into());
        }
        Task::new(meta, TaskSpec { agent: "sim-1".into(), ..TaskSpec::default() })
    }

    #[test]
    fn a_task_runs_as_its_annotation_or_env_says() {
        let now = Timestamp::now();
        assert_eq!(run_of(&task(None, None), now), (None, Exit::Code(0)), "runs forever");
        assert_eq!(
            run_of(&task(Some("10"), Some("3")), now),
            (Some(now + SignedDuration::from_secs(10)), Exit::Code(3))
        );
        let mut by_env = task(None, None);
        by_env.spec.env.insert(RUN_SECONDS_ENV.into(), "1.5".into());
        by_env.spec.env.insert(EXIT_CODE_ENV.into(), "2".into());
        assert_eq!(run_of(&by_env, now), (Some(now + SignedDuration::from_millis(1500)), Exit::Code(2)));
        by_env.spec.env.insert(RUN_SECONDS_ENV.into(), "1e300".into());
        assert_eq!(run_of(&by_env, now).0, Some(Timestamp::MAX), "an absurd run time runs long, without a panic");
        by_env.spec.env.insert(RUN_SECONDS_ENV.into(), "-4".into());
        assert_eq!(run_of(&by_env, now).0, Some(now), "a negative one is none");
    }

    #[test]
    fn health_checks_pass_unless_the_env_says_otherwise_or_later() {
        let now = Timestamp::now();
        let mut checked = task(None, None);
        assert_eq!(health_of(&checked, now, now), Ok((true, "hollow: passed".into())));
        checked.spec.env.insert(HEALTHY_ENV.into(), "false".into());
        assert!(matches!(health_of(&checked, now, now), Ok((false, _))));
        checked.spec.env.clear();
        checked.spec.env.insert(HEALTHY_AFTER_ENV.into(), "5".into());
        let started = now - SignedDuration::from_secs(2);
        assert_eq!(health_of(&checked, started, now), Err(Duration::from_secs(3)), "no answer for 3 s more");
        assert!(matches!(health_of(&checked, started, now + SignedDuration::from_secs(3)), Ok((true, _))));
    }

    /// Tasks handed to the runtime as the executor hands them: a start, then its outcome awaited.
    async fn started(hollow: &Arc<Hollow>, task: &Task) -> tokio::task::JoinHandle<End> {
        let client = Client::new(agora_client::Config::new("http://127.0.0.1:9")).unwrap();
        let tasks = agora_client::Api::namespaced(client, "default");
        hollow.start(task, Starting::new(task, &tasks)).await.unwrap();
        let (hollow, task) = (hollow.clone(), task.clone());
        tokio::spawn(async move { hollow.outcome(&task).await })
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_ends_after_its_run_time_or_at_a_signal() {
        let hollow = Arc::new(Hollow::default());
        let finishing = task(Some("10"), Some("3"));
        let end = started(&hollow, &finishing).await;
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!end.is_finished(), "runs for its 10 s");
        let end = end.await.unwrap();
        assert_eq!(end.outcome, Some(Ok(Exit::Code(3))));
        assert!(hollow.processes().is_empty(), "forgotten once ended");

        let forever = task(None, None);
        let end = started(&hollow, &forever).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!end.is_finished(), "runs until stopped");
        hollow.kill(&forever, false).await;
        hollow.kill(&forever, true).await;
        assert_eq!(end.await.unwrap().outcome, Some(Ok(Exit::Signal(15))), "the first signal ends it");
        hollow.kill(&forever, true).await; // gone: nothing to signal, no panic
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_hollow_agent_runs_its_tasks_on_from_their_recorded_start() {
        let hollow = Hollow::default();
        let mut running = task(Some("10"), None);
        assert_eq!(hollow.reattach(&running), None, "Staging: never started");
        let status = running.status.insert(TaskStatus::new(TaskState::Running));
        status.started_at = Some(Timestamp::now() - SignedDuration::from_secs(4));
        assert_eq!(hollow.reattach(&running), Some(true));
        let end = tokio::time::timeout(Duration::from_secs(7), hollow.outcome(&running)).await;
        assert_eq!(end.expect("ends 6 s later").outcome, Some(Ok(Exit::Code(0))));
        running.status.as_mut().unwrap().state = TaskState::Finished;
        assert_eq!(hollow.reattach(&running), None, "ended: nothing to take over");
    }
}
