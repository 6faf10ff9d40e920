//! Waiting for the cluster to do what was asked — an App's deployment, a CronJob's first run, an object's deletion,
//! an agent's drain — with a progress display on a terminal.
//!
//! What counts as done, still waiting or failed is decided by pure functions of the objects ([`app`], [`job`]); the
//! loops around them only read (a watch where there is one) and show.

use std::time::{Duration, Instant};

use agora_schemas::{App, ConditionStatus, CronJob};

/// Where a wait stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Done, and what was reached.
    Done(String),
    /// Not yet, and what it waits for.
    Waiting(String),
    /// It will not get there by itself, and why.
    Failed(String),
}

/// How many failures in a row of a version's tasks, with none healthy between, fail a wait for its deployment.
pub const FAILURES: u32 = 3;

/// Where the deployment of `app` at `generation` (what was applied) stands: done when marathon has seen that
/// generation, no deployment is under way and every wanted instance runs (and is healthy, for an app with health
/// checks); failed when the version's tasks failed [`FAILURES`] times in a row, or its deployment cannot proceed.
#[must_use]
pub fn app(app: &App, generation: i64) -> Progress {
    let Some(status) = &app.status else { return Progress::Waiting("waiting for marathon to see it".into()) };
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Waiting(format!("waiting for marathon to see generation {generation}"));
    }
    let version = status.version.as_deref().unwrap_or("?");
    let failure = status.last_task_failure.as_ref().map(|f| {
        let why = f.message.as_deref().unwrap_or("no reason given");
        format!("last failure: task {} {:?}: {why}", f.task, f.state)
    });
    if status.consecutive_failures >= FAILURES {
        let mut why = format!("version {version} failed {} times in a row", status.consecutive_failures);
        if let Some(failure) = &failure {
            why.push_str(&format!("; {failure}"));
        }
        if let Some(waiting) = status.deployment.as_ref().and_then(|d| d.waiting.as_deref()) {
            why.push_str(&format!("; the deployment waits: {waiting}"));
        }
        return Progress::Failed(why);
    }
    let wanted = status.instances;
    if let Some(deployment) = &status.deployment {
        let mut said = format!(
            "deploying {}: {} ({} new, {} healthy, {} old)",
            deployment.to, deployment.step, deployment.new, deployment.healthy, deployment.old
        );
        if let Some(waiting) = &deployment.waiting {
            said.push_str(&format!(": {waiting}"));
        }
        return Progress::Waiting(said);
    }
    if status.tasks_running == wanted && status.tasks_healthy >= wanted && status.tasks_staged == 0 {
        return Progress::Done(format!("{wanted} of {wanted} running and healthy, version {version}"));
    }
    let mut said = format!(
        "{} of {wanted} running, {} healthy, {} staged",
        status.tasks_running, status.tasks_healthy, status.tasks_staged
    );
    if let Some(why) = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Scheduled" && c.status == ConditionStatus::False)
        .and_then(|c| c.message.as_deref())
    {
        said.push_str(&format!(": {why}"));
    }
    Progress::Waiting(said)
}

/// Counters of a CronJob when a wait began, so only runs after it count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub successes: u64,
    pub errors: u64,
}

impl Counted {
    #[must_use]
    pub fn of(job: &CronJob) -> Self {
        job.status.as_ref().map_or_else(Self::default, |s| Self { successes: s.success_count, errors: s.error_count })
    }
}

/// Where a CronJob at `generation` stands: done once chronos scheduled it and its first run after `before` finished
/// well — or at once when that run is not due before `deadline` (a nightly job is not waited for all day) or the job
/// runs after parents; failed when that run failed, or the job cannot be scheduled (a bad schedule, a cycle).
#[must_use]
pub fn job(job: &CronJob, generation: i64, before: Counted, deadline: jiff::Timestamp) -> Progress {
    let Some(status) = &job.status else { return Progress::Waiting("waiting for chronos to see it".into()) };
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Waiting(format!("waiting for chronos to see generation {generation}"));
    }
    let scheduled = status.conditions.iter().find(|c| c.type_ == "Scheduled");
    let message = scheduled.and_then(|c| c.message.clone()).unwrap_or_default();
    if let Some(condition) = scheduled
        && condition.status == ConditionStatus::False
        && matches!(condition.reason.as_deref(), Some("InvalidSchedule" | "DependencyCycle"))
    {
        return Progress::Failed(format!("not scheduled: {message}"));
    }
    if status.error_count > before.errors {
        let run = status.runs.iter().find(|r| !r.result.succeeded());
        let why =
            run.map_or_else(String::new, |r| format!(": task {} {}", r.task, r.message.as_deref().unwrap_or("failed")));
        return Progress::Failed(format!("its run failed{why}"));
    }
    if status.success_count > before.successes {
        let task = status.runs.first().map_or(String::new(), |r| format!(" (task {})", r.task));
        return Progress::Done(format!("its run succeeded{task}"));
    }
    if !status.active.is_empty() {
        return Progress::Waiting(format!("running: {}", status.active.join(", ")));
    }
    match status.next_schedule_time {
        Some(next) if next <= deadline => Progress::Waiting(format!("first run due at {next}")),
        Some(next) => Progress::Done(format!("scheduled, next run at {next}")),
        None if job.spec.parents.is_empty() => Progress::Done(format!("not scheduled: {message}")),
        None => Progress::Done(format!("runs after {}", job.spec.parents.join(", "))),
    }
}

/// Polls `check` (each call one read of the cluster) until it is not [`Progress::Waiting`] or `timeout` passes,
/// showing `what` and the latest word on a spinner. On timeout, the last word is the failure.
///
/// # Errors
/// `check`'s own error (a request that failed).
pub async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<Progress>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Progress>>,
{
    let spinner = crate::style::spinner(what);
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(200);
    loop {
        let progress = check().await?;
        match progress {
            Progress::Waiting(said) if Instant::now() < deadline => {
                spinner.set_message(format!("{what}: {said}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 3 / 2).min(Duration::from_secs(2));
            }
            Progress::Waiting(said) => {
                spinner.finish_and_clear();
                return Ok(Progress::Failed(format!("not done within {} s: {said}", timeout.as_secs())));
            }
            done => {
                spinner.finish_and_clear();
                return Ok(done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_schemas::{AppStatus, CronJobStatus, Deployment, RunRecord, RunResult, TaskFailure, TaskState};

    use super::*;

    fn app_with(status: AppStatus) -> App {
        let mut app: App = serde_json::from_value(serde_json::json!({
            "apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "web", "generation": 2},
            "spec": {"cmd": "x"}}))
        .unwrap();
        app.status = Some(status);
        app
    }

    #[test]
    fn an_app_is_done_when_its_generation_runs_healthy() {
        let mut status = AppStatus { observed_generation: Some(1), instances: 2, ..Default::default() };
        assert!(matches!(app(&app_with(status.clone()), 2), Progress::Waiting(w) if w.contains("generation 2")));
        status.observed_generation = Some(2);
        status.deployment = Some(Deployment {
            to: "abc".into(),
            step: "WaitingForHealth".into(),
            new: 2,
            healthy: 1,
            waiting: Some("waiting for 1 of 2 new tasks to pass HTTP /".into()),
            ..Default::default()
        });
        let Progress::Waiting(said) = app(&app_with(status.clone()), 2) else { panic!() };
        assert!(said.contains("WaitingForHealth") && said.contains("to pass HTTP /"), "{said}");
        status.deployment = None;
        status.tasks_running = 2;
        status.tasks_healthy = 1;
        assert!(matches!(app(&app_with(status.clone()), 2), Progress::Waiting(_)));
        status.tasks_healthy = 2;
        status.version = Some("abc".into());
        assert_eq!(app(&app_with(status), 2), Progress::Done("2 of 2 running and healthy, version abc".into()));
    }

    #[test]
    fn a_version_that_keeps_failing_fails_the_wait_with_the_reason() {
        let status = AppStatus {
            observed_generation: Some(2),
            instances: 1,
            version: Some("bad".into()),
            consecutive_failures: FAILURES,
            last_task_failure: Some(TaskFailure {
                task: "web-bad-1".into(),
                state: TaskState::Failed,
                agent: None,
                message: Some("exited with code 3".into()),
                timestamp: None,
            }),
            deployment: Some(Deployment { to: "bad".into(), step: "StartingNewTasks".into(), ..Default::default() }),
            ..Default::default()
        };
        let Progress::Failed(why) = app(&app_with(status), 2) else { panic!() };
        assert!(why.contains("version bad failed 3 times") && why.contains("exited with code 3"), "{why}");
    }

    fn job_with(status: CronJobStatus, parents: &[&str]) -> CronJob {
        let mut job: CronJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "agora/v1", "kind": "CronJob", "metadata": {"name": "j", "generation": 1},
            "spec": {"command": "x", "parents": parents}}))
        .unwrap();
        job.status = Some(status);
        job
    }

    #[test]
    fn a_job_is_waited_for_until_its_first_due_run_ends() {
        let now: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let deadline = now + jiff::SignedDuration::from_secs(300);
        let mut status = CronJobStatus {
            observed_generation: Some(1),
            next_schedule_time: Some(now + jiff::SignedDuration::from_secs(60)),
            ..Default::default()
        };
        let before = Counted::default();
        assert!(matches!(job(&job_with(status.clone(), &[]), 1, before, deadline), Progress::Waiting(_)));
        status.next_schedule_time = Some(now + jiff::SignedDuration::from_secs(3600));
        assert!(
            matches!(job(&job_with(status.clone(), &[]), 1, before, deadline), Progress::Done(d) if d.contains("next run"))
        );
        status.next_schedule_time = None;
        assert_eq!(job(&job_with(status.clone(), &["a"]), 1, before, deadline), Progress::Done("runs after a".into()));
        status.active = vec!["j-1-0".into()];
        assert!(matches!(job(&job_with(status.clone(), &[]), 1, before, deadline), Progress::Waiting(_)));
        status.active.clear();
        status.error_count = 1;
        status.runs = vec![RunRecord {
            task: "j-1-2".into(),
            result: RunResult::Failed,
            message: Some("exited with code 1".into()),
            ..Default::default()
        }];
        let Progress::Failed(why) = job(&job_with(status.clone(), &[]), 1, before, deadline) else { panic!() };
        assert!(why.contains("j-1-2") && why.contains("code 1"), "{why}");
        // A failure from before the wait does not count.
        let earlier = Counted { successes: 0, errors: 1 };
        assert!(!matches!(job(&job_with(status, &[]), 1, earlier, deadline), Progress::Failed(_)));
    }
}
