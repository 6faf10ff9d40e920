//! The scheduling decisions as pure functions: every case the issue names, each from objects and a time.

use std::sync::Arc;

use agora_schemas::{
    ATTEMPT_LABEL, CRONJOB_LABEL, ConditionStatus, CronJob, CronJobStatus, INSTANT_ANNOTATION, ObjectMeta, RUN_LABEL,
    RunResult, Task, TaskSpec, TaskState, TaskStatus,
};
use jiff::Timestamp;
use serde_json::json;

use super::graph::{dot, parents};
use super::plan::{KILL_REASON_ANNOTATION, KillReason, Parents, Plan, plan, run_key, task_name};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const CREATED: &str = "2026-01-01T00:00:00Z";

fn job(name: &str, spec: serde_json::Value) -> CronJob {
    let mut job: CronJob = serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": "default", "generation": 1, "creationTimestamp": CREATED},
        "spec": spec}))
    .unwrap();
    job.spec.apply_defaults();
    job
}

fn every_minute() -> serde_json::Value {
    json!({"schedule": "R/2026-01-01T00:00:00Z/PT1M", "command": "true"})
}

/// A run's task: `run` at `instant`, attempt `attempt`, in `state` (finished at `finished`).
fn task(job: &str, instant: &str, attempt: u32, state: TaskState, finished: Option<&str>) -> Arc<Task> {
    let run = run_key(ts(instant));
    let mut meta = ObjectMeta::named(Some("default"), &task_name(job, &run, attempt));
    meta.labels.insert(CRONJOB_LABEL.into(), job.into());
    meta.labels.insert(RUN_LABEL.into(), run);
    meta.labels.insert(ATTEMPT_LABEL.into(), attempt.to_string());
    meta.annotations.insert(INSTANT_ANNOTATION.into(), instant.into());
    meta.creation_timestamp = Some(ts(instant));
    meta.resource_version = Some("1".into());
    let mut status = TaskStatus::new(state);
    status.finished_at = finished.map(ts);
    status.started_at = Some(ts(instant));
    if state == TaskState::Failed {
        status.exit_code = Some(1);
    }
    let spec =
        TaskSpec { agent: "a1".into(), framework: "chronos".into(), cpus: 0.1, mem: 32.0, ..TaskSpec::default() };
    let mut task = Task::new(meta, spec);
    task.status = Some(status);
    Arc::new(task)
}

fn at(job: &CronJob, tasks: &[Arc<Task>], now: &str) -> Plan {
    plan(job, tasks, &Parents::default(), ts(now))
}

/// The job with its status the one decided (as the controller feeds it back).
fn decided(mut job: CronJob, plan: &Plan) -> CronJob {
    job.status = Some(plan.status.clone());
    job
}

fn launched(plan: &Plan) -> Vec<&str> {
    plan.launch.iter().map(|l| l.name.as_str()).collect()
}

/// The reasons of the plan's Events, then of its launches' (published when launched).
fn reasons(plan: &Plan) -> Vec<&str> {
    plan.events.iter().chain(plan.launch.iter().map(|l| &l.event)).map(|e| e.reason.as_str()).collect()
}

fn condition<'a>(plan: &'a Plan, type_: &str) -> &'a agora_schemas::Condition {
    plan.status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn run_keys_are_names_and_sort_with_time() {
    assert_eq!(run_key(ts("2026-12-01T02:00:00Z")), "20261201t020000z");
    assert_eq!(run_key(ts("2026-12-01T02:00:00.25Z")), "20261201t020000.25z");
    assert_eq!(task_name("backup", "20261201t020000z", 1), "backup-20261201t020000z-1");
}

#[test]
fn an_instant_runs_once_and_then_the_next_is_awaited() {
    let j = job("tick", every_minute());
    let p = at(&j, &[], "2026-01-01T00:00:00.010Z");
    assert_eq!(launched(&p), ["tick-20260101t000000z-0"]);
    assert_eq!(p.launch[0].instant, Some(ts("2026-01-01T00:00:00Z")));
    assert_eq!(p.status.last_schedule_time, None, "the position moves once the run's Task exists");
    assert_eq!(p.status.next_schedule_time, Some(ts("2026-01-01T00:01:00Z")));
    assert_eq!(p.wake, Some(ts("2026-01-01T00:01:00Z")));
    assert_eq!(p.status.active, ["tick-20260101t000000z-0"]);
    // Not launched yet (no offer): still due, as long as it is within epsilon.
    let again = at(&decided(j.clone(), &p), &[], "2026-01-01T00:00:30Z");
    assert_eq!(launched(&again), ["tick-20260101t000000z-0"]);
    // Once its Task exists (or is being created) it is never due again, even to a new leader whose status is old.
    let running = task("tick", "2026-01-01T00:00:00Z", 0, TaskState::Running, None);
    let seen = at(&decided(j.clone(), &again), std::slice::from_ref(&running), "2026-01-01T00:00:30.5Z");
    assert!(seen.launch.is_empty(), "{:?}", seen.launch);
    assert_eq!(seen.status.last_schedule_time, Some(ts("2026-01-01T00:00:00Z")));
    assert!(at(&j, std::slice::from_ref(&running), "2026-01-01T00:00:30Z").launch.is_empty());
    let p = seen;
    // The next instant, while the first still runs: Forbid skips it, and says so.
    let p = at(&decided(j.clone(), &p), &[running], "2026-01-01T00:01:00.005Z");
    assert!(p.launch.is_empty());
    assert_eq!(p.status.skipped_runs, 1);
    assert_eq!(reasons(&p), ["Skipped"]);
    assert!(p.events[0].message.contains("tick-20260101t000000z-0 still active"), "{}", p.events[0].message);
}

#[test]
fn allow_runs_side_by_side_and_replace_kills_first() {
    let running = task("j", "2026-01-01T00:00:00Z", 0, TaskState::Running, None);
    let mut allow = every_minute();
    allow["concurrencyPolicy"] = json!("Allow");
    let p = at(&job("j", allow), std::slice::from_ref(&running), "2026-01-01T00:01:00Z");
    assert_eq!(launched(&p), ["j-20260101t000100z-0"]);
    let mut replace = every_minute();
    replace["concurrencyPolicy"] = json!("Replace");
    let j = job("j", replace);
    let p = at(&j, &[running], "2026-01-01T00:01:00Z");
    assert!(p.launch.is_empty(), "the new run waits for the old to be gone");
    assert_eq!(p.kills.len(), 1);
    assert_eq!((p.kills[0].task.as_str(), p.kills[0].reason), ("j-20260101t000000z-0", KillReason::Replaced));
    assert_eq!(p.status.last_schedule_time, Some(ts("2026-01-01T00:00:00Z")), "00:01 stays due until it runs");
    // Killed: the replaced run is recorded (not an error) and the new one starts.
    let mut killed = (*task("j", "2026-01-01T00:00:00Z", 0, TaskState::Killed, Some("2026-01-01T00:01:01Z"))).clone();
    killed.metadata.annotations.insert(KILL_REASON_ANNOTATION.into(), "Replaced".into());
    let p = at(&j, &[Arc::new(killed)], "2026-01-01T00:01:01Z");
    assert_eq!(launched(&p), ["j-20260101t000100z-0"]);
    assert_eq!(p.status.runs[0].result, RunResult::Replaced);
    assert_eq!((p.status.error_count, p.status.success_count), (0, 0));
}

#[test]
fn rn_counts_down_through_failures_and_retries_and_never_runs_after_the_last() {
    let mut spec = json!({"schedule": "R2/2026-01-01T00:00:00Z/PT1H", "command": "false",
        "retries": 1, "retryDelaySeconds": 30});
    let j = job("r2", spec.clone());
    // Instant 0 failed: a retry in 30 s, and the job counts as active meanwhile.
    let failed = task("r2", "2026-01-01T00:00:00Z", 0, TaskState::Failed, Some("2026-01-01T00:00:05Z"));
    let p = at(&j, std::slice::from_ref(&failed), "2026-01-01T00:00:10Z");
    assert!(p.launch.is_empty());
    assert_eq!(p.wake, Some(ts("2026-01-01T00:00:35Z")));
    assert_eq!(p.status.error_count, 0, "not an error while a retry is left");
    let p = at(&j, std::slice::from_ref(&failed), "2026-01-01T00:00:35Z");
    assert_eq!(launched(&p), ["r2-20260101t000000z-1"]);
    assert_eq!(p.launch[0].attempt, 1);
    assert_eq!(reasons(&p), ["Retrying"], "announced when launched");
    // The retry failed too: one error, counted once.
    let retry = task("r2", "2026-01-01T00:00:00Z", 1, TaskState::Failed, Some("2026-01-01T00:00:40Z"));
    let tasks = [failed, retry];
    let p = at(&j, &tasks, "2026-01-01T00:00:41Z");
    assert!(p.launch.is_empty());
    assert_eq!((p.status.error_count, p.status.errors_since_last_success), (1, 1));
    assert_eq!(p.status.runs[0].attempt, 1);
    assert_eq!(condition(&p, "Failing").status, ConditionStatus::True);
    let j = decided(j, &p);
    let p2 = at(&j, &tasks, "2026-01-01T00:00:50Z");
    assert_eq!(p2.status.error_count, 1, "counted once");
    // Instant 1 succeeds; then R2 is complete: nothing more, ever.
    let p = at(&j, &tasks, "2026-01-01T01:00:00Z");
    assert_eq!(launched(&p), ["r2-20260101t010000z-0"]);
    let j = decided(j, &p);
    let ok = task("r2", "2026-01-01T01:00:00Z", 0, TaskState::Finished, Some("2026-01-01T01:00:02Z"));
    let all = [tasks[0].clone(), tasks[1].clone(), ok];
    let p = at(&j, &all, "2026-01-01T01:00:03Z");
    assert_eq!((p.status.success_count, p.status.errors_since_last_success), (1, 0));
    assert_eq!(p.status.next_schedule_time, None);
    let j = decided(j, &p);
    let p = at(&j, &all, "2026-01-01T05:00:00Z");
    assert!(p.launch.is_empty());
    assert_eq!(p.status.missed_runs, 0);
    assert_eq!(condition(&p, "Scheduled").reason.as_deref(), Some("Complete"));
    // The spec is never rewritten: R2 stays R2.
    spec["schedule"] = json!("R2/2026-01-01T00:00:00Z/PT1H");
    assert_eq!(j.spec.schedule, spec["schedule"].as_str().map(str::to_owned));
}

#[test]
fn zones_hold_the_wall_clock_across_dst() {
    // 02:30 Berlin daily: 01:30Z in winter; on the spring-forward day 02:30 does not exist and it runs at 03:30
    // CEST (01:30Z); then 00:30Z in summer.
    let j = job(
        "berlin",
        json!({"schedule": "R/2026-03-28T02:30:00/P1D", "scheduleTimeZone": "Europe/Berlin",
        "command": "true"}),
    );
    let mut state = j;
    let mut names = Vec::new();
    for now in ["2026-03-28T01:30:00Z", "2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"] {
        let p = at(&state, &[], now);
        names.extend(p.launch.iter().map(|l| l.name.clone()));
        state = decided(state, &p);
    }
    assert_eq!(names, ["berlin-20260328t013000z-0", "berlin-20260329t013000z-0", "berlin-20260330t003000z-0"]);
}

#[test]
fn missed_instants_are_counted_and_those_within_epsilon_collapse() {
    let mut spec = every_minute();
    spec["epsilon"] = json!("PT3M");
    let j = job("m", spec);
    let p = at(&j, &[], "2026-01-01T00:00:00Z");
    let j = decided(j, &p);
    let first = [task("m", "2026-01-01T00:00:00Z", 0, TaskState::Finished, Some("2026-01-01T00:00:01Z"))];
    // Down from 00:00:30 to 00:10:30: instants 00:01..00:07 are more than 3 minutes late; 00:08..00:10 are not.
    let p = at(&j, &first, "2026-01-01T00:10:30Z");
    assert_eq!(p.status.missed_runs, 7);
    assert_eq!(launched(&p), ["m-20260101t001000z-0"]);
    assert_eq!(p.launch[0].covers_from, Some(ts("2026-01-01T00:08:00Z")), "one run for three instants");
    assert_eq!(reasons(&p), ["Missed", "Succeeded", "Started"]);
    assert!(
        p.events[0].message.contains("7 instants from 2026-01-01T00:01:00Z were missed"),
        "{}",
        p.events[0].message
    );
    assert!(p.launch[0].event.message.contains("3 instants from 2026-01-01T00:08:00Z to 2026-01-01T00:10:00Z"));
    // Counted once.
    let mut ten = (*task("m", "2026-01-01T00:10:00Z", 0, TaskState::Running, None)).clone();
    ten.metadata.annotations.insert(agora_schemas::COVERS_FROM_ANNOTATION.into(), "2026-01-01T00:08:00Z".into());
    let ten = Arc::new(ten);
    let p = at(&decided(j, &p), &[first[0].clone(), ten], "2026-01-01T00:10:31Z");
    assert_eq!(p.status.missed_runs, 7);
    assert!(p.launch.is_empty());
}

#[test]
fn a_new_job_does_not_owe_the_instants_before_it() {
    // The schedule started a year before the job was created: nothing is missed, the latest instant within epsilon
    // of creation runs.
    let j = job("late", json!({"schedule": "R/2025-01-01T00:00:00Z/PT1M", "command": "true"}));
    let p = at(&j, &[], "2026-01-01T00:00:20Z");
    assert_eq!(p.status.missed_runs, 0);
    assert_eq!(launched(&p), ["late-20260101t000000z-0"]);
    // An empty start is when the job was created.
    let now = job("now", json!({"schedule": "R/PT1H", "command": "true"}));
    assert_eq!(launched(&at(&now, &[], "2026-01-01T00:00:00.1Z")), ["now-20260101t000000z-0"]);
}

#[test]
fn disabled_jobs_run_only_when_triggered_and_owe_nothing_when_enabled() {
    let mut spec = every_minute();
    spec["disabled"] = json!(true);
    let mut j = job("d", spec);
    let p = at(&j, &[], "2026-01-01T00:05:00Z");
    assert!(p.launch.is_empty());
    assert_eq!(condition(&p, "Scheduled").reason.as_deref(), Some("Disabled"));
    assert_eq!(p.status.next_schedule_time, None);
    // A trigger runs anyway, once.
    j.metadata.annotations.insert("trigger.agora.dev/abc12".into(), "2026-01-01T00:05:00Z".into());
    let p = at(&j, &[], "2026-01-01T00:05:01Z");
    assert_eq!(launched(&p), ["d-manual-abc12-0"]);
    assert_eq!(reasons(&p), ["Triggered"]);
    let mut t = (*task("d", "2026-01-01T00:05:01Z", 0, TaskState::Running, None)).clone();
    t.metadata.name = Some("d-manual-abc12-0".into());
    t.metadata.labels.insert(RUN_LABEL.into(), "manual-abc12".into());
    t.metadata.annotations.clear();
    let p = at(&decided(j.clone(), &p), &[Arc::new(t)], "2026-01-01T00:05:02Z");
    assert!(p.launch.is_empty());
    assert_eq!(p.triggers_claimed, ["abc12"]);
    // Enabled at 00:20: the instants while disabled are neither run nor missed.
    let mut enabled = decided(j, &p);
    enabled.spec.disabled = Some(false);
    enabled.metadata.generation = Some(2);
    enabled.metadata.annotations.clear();
    let p = at(&enabled, &[], "2026-01-01T00:20:30Z");
    assert_eq!(p.status.missed_runs, 0);
    assert!(p.launch.is_empty());
    assert_eq!(p.status.next_schedule_time, Some(ts("2026-01-01T00:21:00Z")));
}

#[test]
fn a_run_past_its_deadline_is_killed_and_fails_without_retry() {
    let mut spec = every_minute();
    spec["activeDeadlineSeconds"] = json!(20);
    let j = job("slow", spec);
    let running = task("slow", "2026-01-01T00:00:00Z", 0, TaskState::Running, None);
    let p = at(&j, std::slice::from_ref(&running), "2026-01-01T00:00:10Z");
    assert!(p.kills.is_empty());
    assert_eq!(p.wake, Some(ts("2026-01-01T00:00:20Z")));
    let p = at(&j, &[running], "2026-01-01T00:00:20Z");
    assert_eq!(p.kills[0].reason, KillReason::DeadlineExceeded);
    assert_eq!(reasons(&p), ["DeadlineExceeded"]);
    let mut killed =
        (*task("slow", "2026-01-01T00:00:00Z", 0, TaskState::Killed, Some("2026-01-01T00:00:21Z"))).clone();
    killed.metadata.annotations.insert(KILL_REASON_ANNOTATION.into(), "DeadlineExceeded".into());
    let p = at(&j, &[Arc::new(killed)], "2026-01-01T00:00:22Z");
    assert!(p.launch.is_empty(), "retries: 2, but a deadline is not retried");
    assert_eq!(p.status.runs[0].result, RunResult::DeadlineExceeded);
    assert_eq!(p.status.error_count, 1);
}

#[test]
fn history_keeps_the_newest_runs_and_deletes_older_ones_once_counted() {
    let j = job("h", every_minute());
    let tasks: Vec<Arc<Task>> = (0..5)
        .map(|i| {
            let instant = format!("2026-01-01T00:0{i}:00Z");
            let finished = format!("2026-01-01T00:0{i}:01Z");
            task("h", &instant, 0, TaskState::Finished, Some(&finished))
        })
        .collect();
    let p = at(&j, &tasks, "2026-01-01T00:04:30Z");
    assert_eq!(p.status.success_count, 5);
    assert!(p.delete.is_empty(), "not before the status that counts them is stored");
    let p = at(&decided(j.clone(), &p), &tasks, "2026-01-01T00:04:31Z");
    assert_eq!(p.status.success_count, 5);
    assert_eq!(p.delete, ["h-20260101t000100z-0", "h-20260101t000000z-0"]);
    // Once the tasks are gone and the grace has passed, their records go too.
    let j = decided(j, &p);
    let p = at(&j, &tasks[2..], "2026-01-01T00:06:30Z");
    let kept: Vec<&str> = p.status.runs.iter().map(|r| r.task.as_str()).collect();
    assert_eq!(kept, ["h-20260101t000400z-0", "h-20260101t000300z-0", "h-20260101t000200z-0"]);
    assert_eq!(p.status.success_count, 5);
}

#[test]
fn parents_run_a_child_once_per_completion_set() {
    let mut a = job("a", every_minute());
    let mut b = job("b", every_minute());
    let child = job("c", json!({"parents": ["a", "b"], "command": "true"}));
    let lookup = |a: &CronJob, b: &CronJob, name: &str| -> Option<CronJob> {
        match name {
            "a" => Some(a.clone()),
            "b" => Some(b.clone()),
            _ => None,
        }
    };
    let parents_now = |a: &CronJob, b: &CronJob| {
        let (ja, jb) = (lookup(a, b, "a"), lookup(a, b, "b"));
        parents(&child, |n| match n {
            "a" => ja.as_ref(),
            "b" => jb.as_ref(),
            _ => None,
        })
    };
    let p = plan(&child, &[], &parents_now(&a, &b), ts("2026-01-01T00:00:10Z"));
    assert!(p.launch.is_empty());
    assert!(condition(&p, "Scheduled").message.as_deref().unwrap().contains("a: it has not completed yet"));
    a.status = Some(CronJobStatus { last_success: Some(ts("2026-01-01T00:00:05Z")), ..CronJobStatus::default() });
    let p = plan(&child, &[], &parents_now(&a, &b), ts("2026-01-01T00:00:10Z"));
    assert!(p.launch.is_empty(), "b has not completed");
    // b failed without softError: the child waits; with softError it runs.
    b.status = Some(CronJobStatus { last_error: Some(ts("2026-01-01T00:00:07Z")), ..CronJobStatus::default() });
    let p = plan(&child, &[], &parents_now(&a, &b), ts("2026-01-01T00:00:10Z"));
    assert!(p.launch.is_empty());
    assert!(condition(&p, "Scheduled").message.as_deref().unwrap().contains("b: its last run failed"));
    b.spec.soft_error = Some(true);
    let p = plan(&child, &[], &parents_now(&a, &b), ts("2026-01-01T00:00:10Z"));
    assert_eq!(launched(&p), ["c-20260101t000007z-0"], "named after the completion of the set");
    // Once: the same completions do not run it again; a new completion of only one parent does not either.
    let c = decided(child.clone(), &p);
    let run = [task("c", "2026-01-01T00:00:07Z", 0, TaskState::Finished, Some("2026-01-01T00:00:09Z"))];
    assert!(plan(&c, &run, &parents_now(&a, &b), ts("2026-01-01T00:00:11Z")).launch.is_empty());
    a.status = Some(CronJobStatus { last_success: Some(ts("2026-01-01T00:01:05Z")), ..CronJobStatus::default() });
    let p = plan(&c, &run, &parents_now(&a, &b), ts("2026-01-01T00:01:10Z"));
    assert!(p.launch.is_empty());
    assert!(condition(&p, "Scheduled").message.as_deref().unwrap().contains("b has not completed since the last run"));
    b.status = Some(CronJobStatus { last_success: Some(ts("2026-01-01T00:01:06Z")), ..CronJobStatus::default() });
    let p = plan(&c, &run, &parents_now(&a, &b), ts("2026-01-01T00:01:10Z"));
    assert_eq!(launched(&p), ["c-20260101t000106z-0"]);
}

#[test]
fn cycles_block_the_jobs_in_them_and_the_graph_shows_them() {
    let a = job("a", json!({"parents": ["b"], "command": "true"}));
    let b = job("b", json!({"parents": ["a"], "command": "true"}));
    let p = plan(&a, &[], &parents(&a, |n| (n == "b").then_some(&b)), ts("2026-01-01T00:00:00Z"));
    assert!(p.launch.is_empty());
    let scheduled = condition(&p, "Scheduled");
    assert_eq!((scheduled.status, scheduled.reason.as_deref()), (ConditionStatus::False, Some("DependencyCycle")));
    assert_eq!(scheduled.message.as_deref(), Some("its parents form a cycle: a → b → a"));
    let mut root = job("root", every_minute());
    root.status = Some(CronJobStatus { success_count: 1, ..CronJobStatus::default() });
    let child = job("child", json!({"parents": ["root"], "command": "true"}));
    let graph = dot("default", &[&child, &root]);
    assert!(graph.starts_with("digraph \"default\" {"), "{graph}");
    assert!(graph.contains("\"root\" -> \"child\";"), "{graph}");
    assert!(graph.contains("\"root\" [label=\"root\\nR/2026-01-01T00:00:00Z/PT1M\\nsucceeded\", fillcolor=palegreen"));
    assert!(graph.contains("\"child\" [label=\"child\\nafter its parents\\nnot run yet\", fillcolor=white"));
}

#[test]
fn a_success_resets_the_failures_and_conditions_explain() {
    let j = job("s", json!({"schedule": "R/2026-01-01T00:00:00Z/PT1M", "command": "true", "retries": 0}));
    let failed = task("s", "2026-01-01T00:00:00Z", 0, TaskState::Failed, Some("2026-01-01T00:00:02Z"));
    let p = at(&j, std::slice::from_ref(&failed), "2026-01-01T00:00:03Z");
    assert_eq!(p.status.errors_since_last_success, 1);
    assert!(p.status.runs[0].message.as_deref().unwrap().contains("exit code 1"));
    let j = decided(j, &p);
    let ok = task("s", "2026-01-01T00:01:00Z", 0, TaskState::Finished, Some("2026-01-01T00:01:02Z"));
    let p = at(&j, &[failed, ok], "2026-01-01T00:01:03Z");
    assert_eq!((p.status.success_count, p.status.error_count, p.status.errors_since_last_success), (1, 1, 0));
    assert_eq!(p.status.last_success, Some(ts("2026-01-01T00:01:02Z")));
    assert_eq!(condition(&p, "Failing").status, ConditionStatus::False);
    assert_eq!(condition(&p, "Running").status, ConditionStatus::False);
}

#[test]
fn instants_a_lost_leader_decided_without_a_record_are_counted_on_failover() {
    let mut spec = every_minute();
    spec["epsilon"] = json!("PT3M");
    let mut j = job("f", spec);
    // Stored: decided up to 00:01. The leader then missed 00:02-00:03 and ran 00:05 covering 00:04, but died
    // before its status was written.
    j.status = Some(CronJobStatus { last_schedule_time: Some(ts("2026-01-01T00:01:00Z")), ..CronJobStatus::default() });
    let mut run = (*task("f", "2026-01-01T00:05:00Z", 0, TaskState::Running, None)).clone();
    run.metadata.annotations.insert(agora_schemas::COVERS_FROM_ANNOTATION.into(), "2026-01-01T00:04:00Z".into());
    let p = at(&j, &[Arc::new(run.clone())], "2026-01-01T00:05:10Z");
    assert_eq!(p.status.missed_runs, 2, "00:02 and 00:03 have no run");
    assert_eq!(p.status.last_schedule_time, Some(ts("2026-01-01T00:05:00Z")));
    assert!(p.launch.is_empty());
    // Counted once.
    let p = at(&decided(j, &p), &[Arc::new(run)], "2026-01-01T00:05:20Z");
    assert_eq!(p.status.missed_runs, 2);
}

#[test]
fn a_run_being_launched_is_not_due_again_but_does_not_move_the_position() {
    let j = job("p", every_minute());
    let mut stand_in = (*task("p", "2026-01-01T00:00:00Z", 0, TaskState::Staging, None)).clone();
    stand_in.metadata.resource_version = None;
    let p = at(&j, &[Arc::new(stand_in)], "2026-01-01T00:00:00.5Z");
    assert!(p.launch.is_empty(), "being launched");
    assert_eq!(p.status.last_schedule_time, None, "not recorded before its Task is stored");
    // Its acceptance failed: the instant is still owed.
    let p = at(&decided(j, &p), &[], "2026-01-01T00:00:01Z");
    assert_eq!(launched(&p), ["p-20260101t000000z-0"]);
}
