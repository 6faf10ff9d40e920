//! Hollow mode: one process that is N agents which run nothing, like Kubernetes' kubemark hollow nodes — so the
//! allocator, the frameworks and the apiserver can be tested and benchmarked at thousands of agents on one machine.
//!
//! Each hollow agent registers its Agent object and heartbeats its Lease exactly as a real agent does. Their Tasks
//! are driven by one controller over one watch of all Tasks (not one watch per agent): a Staging task is Running at
//! once; it finishes after the seconds in its annotation [`RUN_SECONDS`] or env [`RUN_SECONDS_ENV`] (never, without
//! either) with the exit code in [`EXIT_CODE`] or [`EXIT_CODE_ENV`] (0 → Finished, else Failed); a task with
//! `spec.killRequested` is Killed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use agora_client::{Api, Client, Patch, PatchParams};
use agora_controllers::runtime::{Action, Controller, watcher};
use agora_schemas::{Resources, Task, TaskState};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::json;

use crate::container::Exit;
use crate::lifecycle::{self, End, Facts, Process, Step};
use crate::registration::{self, FIELD_MANAGER, HeartbeatConfig, Registration};

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

    let ours: Arc<HashSet<String>> = Arc::new(names.into_iter().collect());
    let tasks: Api<Task> = Api::all(client.clone());
    let context = Arc::new(Context { client, agents: ours });
    Controller::new(tasks, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |task, error, _| {
                tracing::warn!(task = %task.metadata.display_name(), %error, "hollow task update failed");
                Action::requeue(Duration::from_secs(1))
            },
            context,
        )
        .for_each(|_| async {})
        .await;
    heartbeats.abort_all();
    Ok(())
}

struct Context {
    client: Client,
    agents: Arc<HashSet<String>>,
}

/// What a hollow agent does next with a task: a pure decision.
#[derive(Debug, PartialEq)]
enum Next {
    /// Nothing to do now.
    Wait,
    /// Check again after this long.
    After(Duration),
    /// Write this status (guarded by the version decided on, or not).
    Write(serde_json::Value, bool),
}

/// `seconds` as a duration: negative or NaN is none, beyond jiff's range its largest (the value is user input).
fn seconds_of(seconds: f64) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(jiff::SignedDuration::MAX)
}

/// What a hollow agent knows of a task: it keeps no process, and runs every task it has launched — so the Task says
/// it all (a task past `Staging` was taken on; one being killed has had its stop sent).
fn facts(task: &Task) -> Facts {
    match task.status.as_ref().map_or(TaskState::Staging, |s| s.state) {
        TaskState::Staging => Facts { handled: false, process: Process::Unknown },
        TaskState::Killing => Facts { handled: true, process: Process::Running { killing: true } },
        _ => Facts { handled: true, process: Process::Running { killing: false } },
    }
}

/// The agent's decision ([`lifecycle::decide`], as a real agent makes it) carried out by a runtime that runs
/// nothing: a launch starts at once (`Running`, with its health as the env says); a stop ends the task at once
/// (`Killing`, then `Killed`); a running task ends after its run time with its exit code ([`lifecycle::ended`]).
fn next(task: &Task, now: Timestamp) -> Next {
    match lifecycle::decide(task, facts(task), now) {
        Step::Launch => Next::Write(started(task, now), true),
        Step::Stop { announce: true } => Next::Write(json!({ "state": "Killing" }), false),
        Step::Stop { announce: false } => {
            let end = End { outcome: Some(Ok(Exit::Signal(15))), killing: true, mem: task.spec.mem, ..End::default() };
            Next::Write(lifecycle::ended(&end, now), false)
        }
        Step::Write { status, guarded } => Next::Write(status, guarded),
        // A hollow agent takes every task past Staging for its own: none is abandoned.
        Step::Abandon { .. } => Next::Wait,
        Step::Wait if task.status.as_ref().is_some_and(|s| s.state == TaskState::Running) => running(task, now),
        Step::Wait => Next::Wait,
    }
}

/// A hollow task's start: Running at once. Health checks pass at once, unless the task's env says
/// HOLLOW_HEALTHY=false: then they have failed as often as the strictest check tolerates.
fn started(task: &Task, now: Timestamp) -> serde_json::Value {
    let mut status = json!({
        "state": "Running", "startedAt": now, "host": task.spec.agent,
        "message": "hollow agent: nothing runs",
    });
    if !task.spec.health_checks.is_empty() && !task.spec.env.contains_key(HEALTHY_AFTER_ENV) {
        let healthy = task.spec.env.get(HEALTHY_ENV).is_none_or(|v| v != "false");
        let limit = task.spec.health_checks.iter().map(|c| c.max_consecutive_failures()).min().unwrap_or(3);
        status["healthy"] = json!(healthy);
        status["healthCheckFailures"] = json!(if healthy { 0 } else { limit });
        status["lastHealthCheck"] = json!({"time": now, "passed": healthy,
            "output": if healthy { "hollow: passed" } else { "hollow: HOLLOW_HEALTHY=false" }});
    }
    status
}

/// A running hollow task: healthy after HOLLOW_HEALTHY_AFTER seconds, ended after its run time.
fn running(task: &Task, now: Timestamp) -> Next {
    let status = task.status.as_ref();
    if let Some(after) = task.spec.env.get(HEALTHY_AFTER_ENV).and_then(|s| s.parse::<f64>().ok())
        && !task.spec.health_checks.is_empty()
        && status.and_then(|s| s.healthy).is_none()
    {
        let started = status.and_then(|s| s.started_at).unwrap_or(now);
        let healthy_at = started.checked_add(seconds_of(after)).unwrap_or(Timestamp::MAX);
        if healthy_at > now {
            return Next::After(now.duration_until(healthy_at).unsigned_abs());
        }
        return Next::Write(
            json!({"healthy": true, "healthCheckFailures": 0,
                "lastHealthCheck": {"time": now, "passed": true, "output": "hollow: passed"}}),
            true,
        );
    }
    let annotations = &task.metadata.annotations;
    let env = &task.spec.env;
    let setting = |annotation: &str, var: &str| annotations.get(annotation).or_else(|| env.get(var));
    let Some(seconds) = setting(RUN_SECONDS, RUN_SECONDS_ENV).and_then(|s| s.parse::<f64>().ok()) else {
        return Next::Wait;
    };
    let started = status.and_then(|s| s.started_at).unwrap_or(now);
    let ends = started.checked_add(seconds_of(seconds)).unwrap_or(Timestamp::MAX);
    if ends > now {
        return Next::After(now.duration_until(ends).unsigned_abs());
    }
    let code = setting(EXIT_CODE, EXIT_CODE_ENV).and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
    let end = End { outcome: Some(Ok(Exit::Code(code))), mem: task.spec.mem, ..End::default() };
    Next::Write(lifecycle::ended(&end, now), true)
}

async fn reconcile(task: Arc<Task>, ctx: Arc<Context>) -> Result<Action, agora_client::Error> {
    if !ctx.agents.contains(&task.spec.agent) {
        return Ok(Action::await_change());
    }
    match next(&task, Timestamp::now()) {
        Next::Wait => Ok(Action::await_change()),
        Next::After(left) => Ok(Action::requeue(left)),
        Next::Write(status, guarded) => {
            let name = task.metadata.name.as_deref().unwrap_or_default();
            let tasks: Api<Task> =
                Api::namespaced(ctx.client.clone(), task.metadata.namespace.as_deref().unwrap_or("default"));
            // Guarded: a concurrent change (the allocator marking it lost) wins and brings another reconcile.
            let mut patch = json!({ "status": status });
            if guarded {
                patch["metadata"] = json!({ "resourceVersion": task.metadata.resource_version });
            }
            match tasks.patch_status(name, &PatchParams::default().manager(FIELD_MANAGER), &Patch::Merge(patch)).await {
                Ok(_) => Ok(Action::await_change()),
                Err(e) if e.is_conflict() || e.is_not_found() => Ok(Action::await_change()),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_schemas::{ObjectMeta, TaskSpec, TaskStatus};

    use super::*;

    fn task(state: Option<TaskState>, run_seconds: Option<&str>, exit: Option<&str>) -> Task {
        let mut meta = ObjectMeta::named(Some("default"), "t");
        if let Some(seconds) = run_seconds {
            meta.annotations.insert(RUN_SECONDS.into(), seconds.into());
        }
        if let Some(code) = exit {
            meta.annotations.insert(EXIT_CODE.into(), code.into());
        }
        let mut task = Task::new(meta, TaskSpec { agent: "sim-1".into(), ..TaskSpec::default() });
        task.status = state.map(TaskStatus::new);
        task
    }

    fn state_written(step: &Next) -> Option<&str> {
        match step {
            Next::Write(status, _) => status["state"].as_str(),
            _ => None,
        }
    }

    #[test]
    fn tasks_run_at_once_finish_after_their_annotation_and_are_killed_on_request() {
        let now = Timestamp::now();
        assert_eq!(state_written(&next(&task(None, None, None), now)), Some("Running"));
        assert_eq!(state_written(&next(&task(Some(TaskState::Staging), None, None), now)), Some("Running"));
        assert_eq!(next(&task(Some(TaskState::Running), None, None), now), Next::Wait, "runs forever");

        let mut running = task(Some(TaskState::Running), Some("10"), Some("3"));
        running.status.as_mut().unwrap().started_at = Some(now - jiff::SignedDuration::from_secs(4));
        assert_eq!(next(&running, now), Next::After(Duration::from_secs(6)));
        let later = now + jiff::SignedDuration::from_secs(7);
        match next(&running, later) {
            Next::Write(status, _) => {
                assert_eq!((status["state"].as_str(), status["exitCode"].as_i64()), (Some("Failed"), Some(3)))
            }
            other => panic!("{other:?}"),
        }
        let mut ok = task(Some(TaskState::Running), Some("0"), None);
        ok.status.as_mut().unwrap().started_at = Some(now);
        assert_eq!(state_written(&next(&ok, now)), Some("Finished"));
        // The same from the task's env, as a framework that copies its job's env sets it.
        let mut by_env = task(Some(TaskState::Running), None, None);
        by_env.spec.env.insert(RUN_SECONDS_ENV.into(), "1".into());
        by_env.spec.env.insert(EXIT_CODE_ENV.into(), "2".into());
        let mut forever = by_env.clone();
        forever.spec.env.insert(RUN_SECONDS_ENV.into(), "1e300".into());
        assert!(matches!(next(&forever, now), Next::After(_)), "an absurd run time runs long, without a panic");
        by_env.status.as_mut().unwrap().started_at = Some(now);
        assert_eq!(next(&by_env, now), Next::After(Duration::from_secs(1)));
        match next(&by_env, later) {
            Next::Write(status, _) => assert_eq!(status["exitCode"].as_i64(), Some(2)),
            other => panic!("{other:?}"),
        }

        // A kill, as a real agent carries it out: Killing, then (its process gone at once) Killed.
        let mut kill = task(Some(TaskState::Running), None, None);
        kill.spec.kill_requested = Some(true);
        assert_eq!(state_written(&next(&kill, now)), Some("Killing"));
        kill.status.as_mut().unwrap().state = TaskState::Killing;
        assert_eq!(state_written(&next(&kill, now)), Some("Killed"));
        let mut unstarted = task(Some(TaskState::Staging), None, None);
        unstarted.spec.kill_requested = Some(true);
        assert_eq!(state_written(&next(&unstarted, now)), Some("Killed"), "killed before it started");
        assert_eq!(next(&task(Some(TaskState::Finished), None, None), now), Next::Wait);
        assert_eq!(state_written(&next(&task(Some(TaskState::Unreachable), None, None), now)), Some("Running"));
    }

    #[test]
    fn health_checks_pass_unless_the_env_says_otherwise_or_later() {
        let now = Timestamp::now();
        let mut checked = task(Some(TaskState::Staging), None, None);
        checked.spec.health_checks = vec![agora_schemas::HealthCheck::default()];
        let healthy = |step: Next| match step {
            Next::Write(status, _) => (status["healthy"].as_bool(), status["healthCheckFailures"].as_u64()),
            other => panic!("{other:?}"),
        };
        assert_eq!(healthy(next(&checked, now)), (Some(true), Some(0)));
        checked.spec.env.insert(HEALTHY_ENV.into(), "false".into());
        assert_eq!(healthy(next(&checked, now)), (Some(false), Some(3)), "failed as often as tolerated");
        checked.spec.env.clear();
        checked.spec.env.insert(HEALTHY_AFTER_ENV.into(), "5".into());
        assert_eq!(healthy(next(&checked, now)), (None, None), "unknown at first");
        let mut running = checked.clone();
        let status = running.status.insert(TaskStatus::new(TaskState::Running));
        status.started_at = Some(now - jiff::SignedDuration::from_secs(2));
        assert_eq!(next(&running, now), Next::After(Duration::from_secs(3)));
        assert_eq!(healthy(next(&running, now + jiff::SignedDuration::from_secs(3))), (Some(true), Some(0)));
    }
}
