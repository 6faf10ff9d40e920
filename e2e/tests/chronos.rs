//! Chronos through real processes: `agora apiserver`, `agora controllers` and a real agent running every run as a
//! process — a job every 2 s for a minute, `R3`, a chain A → B → C, a failing job retried then counted, a long job
//! under Forbid, a manual trigger of a disabled job, a cycle refused — and, on hollow agents, a 1-second job while
//! the controllers are SIGKILLed and restarted and then a leader of two replicas is killed. Everything is checked
//! from the Task objects, as a watch saw them created, not from chronos' own counters.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_client::{Api, ListParams, Patch, PatchParams, PostParams};
use agora_controllers::runtime::watcher;
use agora_e2e::{ApiserverProcess, Proc, agora_binary, eventually};
use agora_schemas::iso8601::Schedule;
use agora_schemas::{
    ATTEMPT_LABEL, COVERS_FROM_ANNOTATION, CRONJOB_LABEL, CronJob, CronJobStatus, Event, INSTANT_ANNOTATION, RunResult,
    Task, TaskState,
};
use common::{WorkDir, spawn, start_agent};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::{Value, json};

/// Applies a CronJob (server-side apply).
async fn apply(jobs: &Api<CronJob>, name: &str, spec: Value) -> CronJob {
    let intent = json!({"apiVersion": "agora/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": spec});
    jobs.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&intent)).await.unwrap()
}

fn status(job: &CronJob) -> CronJobStatus {
    job.status.clone().unwrap_or_default()
}

async fn job_until(jobs: &Api<CronJob>, name: &str, what: &str, secs: u64, done: impl Fn(&CronJobStatus) -> bool) {
    eventually(Duration::from_secs(secs), what, || async { jobs.get(name).await.ok().filter(|j| done(&status(j))) })
        .await;
}

/// Waits until a chronos leader holds its framework lease (jobs applied before would start late on a loaded machine).
async fn chronos_leads(client: &agora_client::Client) {
    let leases: Api<agora_schemas::Lease> = Api::namespaced(client.clone(), "agora-frameworks");
    eventually(Duration::from_secs(30), "chronos leads", || async {
        leases.get_opt("chronos").await.ok().flatten().filter(|l| l.spec.holder_identity.is_some())
    })
    .await;
}

/// A task as a watch first saw it, and when.
#[derive(Clone, Debug)]
struct Seen {
    job: String,
    instant: Option<Timestamp>,
    covers_from: Option<Timestamp>,
    attempt: u32,
    seen_at: Timestamp,
    last: Task,
}

/// Records every run Task of the namespace a watch shows (created, changed, deleted), by name: deleted history
/// stays recorded.
fn record(tasks: Api<Task>) -> (Arc<Mutex<BTreeMap<String, Seen>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
    let handle = tokio::spawn({
        let seen = seen.clone();
        async move {
            let config = watcher::Config::default().labels(CRONJOB_LABEL);
            let mut events = std::pin::pin!(watcher::watcher(tasks, config));
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::InitApply(t) | watcher::Event::Apply(t)) = event {
                    let name = t.metadata.name.clone().unwrap_or_default();
                    let annotation = |k: &str| t.metadata.annotations.get(k).and_then(|v| v.parse().ok());
                    let mut seen = seen.lock().unwrap();
                    let entry = seen.entry(name).or_insert_with(|| Seen {
                        job: t.metadata.labels.get(CRONJOB_LABEL).cloned().unwrap_or_default(),
                        instant: annotation(INSTANT_ANNOTATION),
                        covers_from: annotation(COVERS_FROM_ANNOTATION),
                        attempt: t.metadata.labels.get(ATTEMPT_LABEL).and_then(|a| a.parse().ok()).unwrap_or(0),
                        seen_at: Timestamp::now(),
                        last: t.clone(),
                    });
                    entry.last = t;
                }
            }
        }
    });
    (seen, handle)
}

fn runs_of(seen: &BTreeMap<String, Seen>, job: &str) -> Vec<Seen> {
    let mut runs: Vec<Seen> = seen.values().filter(|s| s.job == job).cloned().collect();
    runs.sort_by_key(|s| (s.instant, s.attempt));
    runs
}

fn state(task: &Task) -> Option<TaskState> {
    task.status.as_ref().map(|s| s.state)
}

async fn events_for(server: &ApiserverProcess, job: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(server.client(), "default");
    let all = events.list(&ListParams::default()).await.unwrap().items;
    all.into_iter().filter(|e| e.involved_object.name == job && e.involved_object.kind == "CronJob").collect()
}

/// Every instant of `job`'s schedule in `[from, until]` is run exactly once (its own run, or collapsed into a later
/// run within epsilon) or counted as missed or skipped in its status; no instant has two runs.
fn assert_exactly_once(runs: &[Seen], schedule: &Schedule, from: Timestamp, until: Timestamp, status: &CronJobStatus) {
    let mut covered: HashMap<Timestamp, Vec<String>> = HashMap::new();
    for run in runs.iter().filter(|r| r.attempt == 0) {
        let instant = run.instant.expect("a scheduled run names its instant");
        let first = run.covers_from.unwrap_or(instant);
        let before_first = first - jiff::SignedDuration::from_nanos(1);
        for t in schedule.between(before_first, instant) {
            covered.entry(t).or_default().push(run.last.metadata.name.clone().unwrap_or_default());
        }
    }
    let twice: Vec<(&Timestamp, &Vec<String>)> = covered.iter().filter(|(_, r)| r.len() > 1).collect();
    assert!(twice.is_empty(), "instants with two runs: {twice:?}");
    let before = from - jiff::SignedDuration::from_nanos(1);
    let uncovered: Vec<Timestamp> = schedule.between(before, until).filter(|t| !covered.contains_key(t)).collect();
    assert_eq!(
        uncovered.len() as u64,
        status.missed_runs + status.skipped_runs,
        "every instant not run is counted as missed or skipped (uncovered: {uncovered:?}; status: {status:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjobs_run_on_time_count_down_chain_retry_skip_and_trigger_on_a_real_agent() {
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, _dir, client) = start_agent(&server, &work).await;
    let _controllers = spawn(&server, &["controllers", "--identity", "c1", "--lease-seconds", "3"]);
    chronos_leads(&client).await;
    let jobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let (recorded, _recorder) = record(tasks.clone());
    let small = json!({"cpus": 0.05, "mem": 32});
    let with = |mut spec: Value| {
        spec.as_object_mut().unwrap().extend(small.as_object().unwrap().clone());
        spec
    };
    let begun = Timestamp::now();

    // A cycle is refused at admission, naming it.
    apply(&jobs, "loop-a", with(json!({"parents": ["loop-b"], "command": "true"}))).await;
    let cycle: CronJob = serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "CronJob",
        "metadata": {"name": "loop-b"}, "spec": with(json!({"parents": ["loop-a"], "command": "true"}))}))
    .unwrap();
    let refused = jobs.create(&PostParams::default(), &cycle).await.unwrap_err();
    assert!(refused.is_invalid(), "{refused}");
    assert!(refused.to_string().contains("the parents form a dependency cycle: loop-b → loop-a → loop-b"), "{refused}");

    // Allow: a run slowed down by a loaded machine must not turn the next instant into a skip (Forbid's skips are
    // tested with "long" below).
    let allow = |schedule: &str, command: &str, kept: u32| {
        with(json!({"schedule": schedule, "command": command, "concurrencyPolicy": "Allow",
            "successfulRunsHistoryLimit": kept}))
    };
    apply(&jobs, "every2s", allow("R/PT2S", "echo tick", 50)).await;
    // From a moment just ahead, so no instant is late (late ones within epsilon would collapse into one run).
    let ahead = Timestamp::from_second(Timestamp::now().as_second() + 3).unwrap();
    apply(&jobs, "three", allow(&format!("R3/{ahead}/PT3S"), "true", 5)).await;
    apply(
        &jobs,
        "extract",
        with(json!({"schedule": "R/PT10S", "command": "sleep 1", "successfulRunsHistoryLimit": 50})),
    )
    .await;
    apply(
        &jobs,
        "transform",
        with(json!({"parents": ["extract"], "command": "sleep 1", "successfulRunsHistoryLimit": 50})),
    )
    .await;
    apply(&jobs, "load", with(json!({"parents": ["transform"], "command": "true", "successfulRunsHistoryLimit": 50})))
        .await;
    apply(
        &jobs,
        "flaky",
        with(json!({"schedule": "R1/PT1H", "command": "exit 3", "retries": 2, "retryDelaySeconds": 1})),
    )
    .await;
    apply(&jobs, "long", with(json!({"schedule": "R/PT2S", "command": "sleep 5", "successfulRunsHistoryLimit": 50})))
        .await;
    apply(
        &jobs,
        "manual",
        with(json!({"schedule": "R/2030-01-01T00:00:00Z/P1D", "disabled": true, "command": "true"})),
    )
    .await;
    // Someone else writes a Task under the name chronos will give the run of a future instant, labelled as its run
    // (labels prove nothing): chronos does not take it for its own, says so, and leaves it alone.
    let squat_at = Timestamp::from_second(ahead.as_second() + 8).unwrap();
    let squat_run = agora_controllers::chronos::plan::run_key(squat_at);
    let squat_name = format!("squatted-{squat_run}-0");
    let forged: Task = serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "Task",
        "metadata": {"name": squat_name, "labels": {CRONJOB_LABEL: "squatted", agora_schemas::RUN_LABEL: squat_run,
            ATTEMPT_LABEL: "0"}, "annotations": {INSTANT_ANNOTATION: squat_at.to_string()}},
        "spec": {"agent": "elsewhere", "framework": "chronos", "cmd": "sleep 600", "cpus": 0.05, "mem": 32}}))
    .unwrap();
    let forged = tasks.create(&PostParams::default(), &forged).await.unwrap();
    apply(&jobs, "squatted", with(json!({"schedule": format!("R1/{squat_at}/PT1H"), "command": "true", "retries": 0})))
        .await;

    // A manual trigger runs the disabled job once.
    let trigger = |id: &str| {
        let mut command = std::process::Command::new(agora_binary());
        command.args(["trigger", "cronjob", "manual", "--id", id]).args(server.cluster_args());
        command.output().unwrap()
    };
    let first = tokio::task::block_in_place(|| trigger("now"));
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).contains("task manual-manual-now-0"));
    // The same id again, at once (the run pending or already started): the same single run.
    let retried = tokio::task::block_in_place(|| trigger("now"));
    assert!(retried.status.success(), "{}", String::from_utf8_lossy(&retried.stderr));
    assert!(String::from_utf8_lossy(&retried.stdout).contains("task manual-manual-now-0"));

    // The failing job: three attempts, then one error — and never a fourth.
    job_until(&jobs, "flaky", "flaky fails for good", 60, |s| s.error_count == 1).await;
    let flaky = status(&jobs.get("flaky").await.unwrap());
    assert_eq!((flaky.success_count, flaky.errors_since_last_success), (0, 1));
    assert_eq!((flaky.runs[0].result, flaky.runs[0].attempt), (RunResult::Failed, 2));
    assert!(flaky.runs[0].message.as_deref().unwrap().contains("exit code 3"), "{:?}", flaky.runs[0]);

    // A minute of the 2-second job.
    tokio::time::sleep(
        Duration::from_secs(60)
            .saturating_sub(Duration::from_secs_f64(Timestamp::now().duration_since(begun).as_secs_f64())),
    )
    .await;
    let ended = Timestamp::now();
    let seen = recorded.lock().unwrap().clone();

    let every = jobs.get("every2s").await.unwrap();
    let runs = runs_of(&seen, "every2s");
    assert!(runs.len() >= 25, "a run every 2 s for a minute: {}", runs.len());
    let schedule = Schedule::parse("R/PT2S", None, every.metadata.creation_timestamp.unwrap()).unwrap();
    let first_instant = runs[0].instant.unwrap();
    let last_instant = runs.last().unwrap().instant.unwrap();
    assert_exactly_once(&runs, &schedule, first_instant, last_instant, &status(&every));
    assert_eq!(status(&every).missed_runs + status(&every).skipped_runs, 0, "on time: {:?}", status(&every));
    for run in &runs {
        let late = run.seen_at.duration_since(run.instant.unwrap());
        assert!(
            late < jiff::SignedDuration::from_secs(3),
            "{} seen {late:?} after its instant",
            run.last.metadata.name.as_deref().unwrap()
        );
    }
    assert!(ended.duration_since(last_instant) < jiff::SignedDuration::from_secs(5), "still running at the end");

    // R3: exactly three runs, then complete.
    let three = runs_of(&seen, "three");
    let told: Vec<String> = events_for(&server, "three")
        .await
        .into_iter()
        .map(|e| format!("{} {}", e.reason, e.message.unwrap_or_default()))
        .collect();
    assert_eq!(
        three.len(),
        3,
        "{:?}; {:?}; {told:#?}",
        three.iter().map(|r| r.last.metadata.name.clone()).collect::<Vec<_>>(),
        jobs.get("three").await.unwrap().status
    );
    let three_job = status(&jobs.get("three").await.unwrap());
    assert_eq!(three_job.success_count, 3);
    assert!(three_job.conditions.iter().any(|c| c.reason.as_deref() == Some("Complete")), "{three_job:?}");

    // The chain: each transform after an extract finished, each load after a transform finished, once each.
    let extract = runs_of(&seen, "extract");
    let transform = runs_of(&seen, "transform");
    let load = runs_of(&seen, "load");
    assert!(extract.len() >= 5, "extract every 10 s: {}", extract.len());
    let finished = |r: &Seen| r.last.status.as_ref().and_then(|s| s.finished_at);
    for (child, parents) in [(&transform, &extract), (&load, &transform)] {
        for run in child {
            let instant = run.instant.unwrap();
            let parent = parents.iter().find(|p| finished(p) == Some(instant));
            assert!(
                parent.is_some(),
                "{} runs for a completion of its parent",
                run.last.metadata.name.as_deref().unwrap()
            );
            assert!(run.seen_at >= instant, "created after its parent finished");
        }
        let done_parents = parents.iter().filter(|p| state(&p.last) == Some(TaskState::Finished)).count();
        assert!(
            child.len() + 1 >= done_parents && child.len() <= done_parents,
            "{} children for {done_parents} completions",
            child.len()
        );
    }

    // Forbid: the long job's runs never overlap, and the instants they cover are skipped, each counted.
    let long = runs_of(&seen, "long");
    let long_job = status(&jobs.get("long").await.unwrap());
    assert!(long_job.skipped_runs >= 10, "{long_job:?}");
    for pair in long.windows(2) {
        let end = finished(&pair[0]).expect("the earlier run finished before the next began");
        assert!(pair[1].seen_at >= end, "{:?} began before {:?} ended", pair[1].instant, pair[0].instant);
    }
    let skipped = events_for(&server, "long").await;
    assert!(
        skipped.iter().any(
            |e| e.reason == "Skipped" && e.message.as_deref().unwrap_or("").contains("concurrencyPolicy is Forbid")
        )
    );

    // The trigger ran once, though the job is disabled. Its id after the run is still the same run: answered, and
    // nothing more starts (the job is decided again and still counts one).
    job_until(&jobs, "manual", "the manual run is counted", 30, |s| s.success_count == 1).await;
    let again = tokio::task::block_in_place(|| trigger("now"));
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("task manual-manual-now-0"));
    let other = tokio::task::block_in_place(|| trigger("other"));
    assert!(other.status.success(), "{}", String::from_utf8_lossy(&other.stderr));
    job_until(&jobs, "manual", "the second id runs", 30, |s| s.success_count == 2).await;
    let manual_runs: Vec<String> =
        runs_of(&recorded.lock().unwrap(), "manual").iter().filter_map(|r| r.last.metadata.name.clone()).collect();
    assert_eq!(manual_runs, ["manual-manual-now-0", "manual-manual-other-0"]);
    let manual = status(&jobs.get("manual").await.unwrap());
    assert_eq!((manual.success_count, manual.next_schedule_time), (2, None));
    let malformed = tokio::task::block_in_place(|| trigger("Bad_Id"));
    assert_eq!(malformed.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&malformed.stderr).contains("422"),
        "{}",
        String::from_utf8_lossy(&malformed.stderr)
    );

    // The squatted instant: decided as a failed run naming what holds its name, announced as such and never as
    // started; the other's Task untouched (not killed, not deleted, not counted as a run of the job).
    job_until(&jobs, "squatted", "the squatted instant is decided", 30, |s| s.error_count == 1).await;
    let squatted = status(&jobs.get("squatted").await.unwrap());
    assert_eq!((squatted.success_count, squatted.missed_runs, squatted.last_schedule_time), (0, 0, Some(squat_at)));
    let record = &squatted.runs[0];
    assert_eq!(
        (record.result, record.task.as_str(), record.instant),
        (RunResult::Failed, squat_name.as_str(), Some(squat_at))
    );
    let why = record.message.as_deref().unwrap_or_default();
    assert!(why.contains("NameTaken") && why.contains("a Task written directly"), "{why}");
    let told = events_for(&server, "squatted").await;
    let taken = told.iter().find(|e| e.reason == "NameTaken").expect("a NameTaken Event");
    assert!(taken.message.as_deref().unwrap_or("").contains(&squat_name), "{taken:?}");
    assert!(!told.iter().any(|e| e.reason == "Started"), "never announced as started: {told:?}");
    let still = tasks.get(&squat_name).await.unwrap();
    assert_eq!(still.metadata.uid, forged.metadata.uid, "the same Task");
    assert!(still.spec.kill_requested != Some(true) && still.spec.offer.is_none(), "untouched: {:?}", still.spec);

    // The graph.
    let graph = std::process::Command::new(agora_binary())
        .args(["graph", "cronjobs"])
        .args(server.cluster_args())
        .output()
        .unwrap();
    let dot = String::from_utf8_lossy(&graph.stdout);
    assert!(dot.contains("\"extract\" -> \"transform\";") && dot.contains("\"transform\" -> \"load\";"), "{dot}");
}

/// `agora controllers` logging at info into `<dir>/<identity>.log` (for a failing run's story).
fn controllers(server: &ApiserverProcess, identity: &str, dir: &std::path::Path) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{identity}.log"))).unwrap();
    let child = std::process::Command::new(agora_binary())
        .arg("controllers")
        .args(server.cluster_args())
        .args(["--identity", identity, "--lease-seconds", "3"])
        .env("AGORA_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_job_survives_sigkill_and_a_leader_change_exactly_once() {
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let _agents = common::hollow(&server, 3, "h", "cpus:8;mem:8192", "");
    let client = server.client();
    let jobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let (seen, _recorder) = record(tasks.clone());
    let logs = tempfile::Builder::new().prefix("chronos-failover-").tempdir().unwrap().keep();
    let mut first = controllers(&server, "c1", &logs);
    let job = apply(
        &jobs,
        "second",
        json!({"schedule": "R/PT1S", "epsilon": "PT2S", "command": "true", "cpus": 0.05,
        "mem": 32, "env": {"HOLLOW_RUN_SECONDS": "0.2"}}),
    )
    .await;
    let created = job.metadata.creation_timestamp.unwrap();
    job_until(&jobs, "second", "the job runs", 30, |s| s.success_count >= 5).await;
    let start = Timestamp::now();

    // SIGKILL, and the same process started again: it takes over once the dead one's lease lapses.
    first.signal("-KILL");
    let _ = first.0.wait();
    let _restarted = controllers(&server, "c1-again", &logs);
    tokio::time::sleep(Duration::from_secs(15)).await;
    drop(_restarted);
    // Two replicas; the leader (the one that wins) is killed.
    let a = controllers(&server, "r1", &logs);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let b = controllers(&server, "r2", &logs);
    tokio::time::sleep(Duration::from_secs(10)).await;
    a.signal("-KILL");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let until = Timestamp::now() - jiff::SignedDuration::from_secs(3);
    drop(b);
    let status = status(&jobs.get("second").await.unwrap());
    let seen = seen.lock().unwrap().clone();
    let runs = runs_of(&seen, "second");
    let schedule = Schedule::parse("R/PT1S", None, created).unwrap();
    // The window: from before the first kill to shortly before the end (the last instants may be in flight).
    let window: Vec<Seen> = runs.iter().filter(|r| r.instant.is_some_and(|t| t <= until)).cloned().collect();
    let instants: Vec<String> = window.iter().map(|r| r.instant.unwrap().to_string()).collect();
    assert!(
        window.len() >= 30,
        "runs went on through the failovers: {} ({instants:?}, {status:?}; logs in {})",
        window.len(),
        logs.display()
    );
    let from = window[0].instant.unwrap();
    assert!(from < start);
    let told: Vec<String> = events_for(&server, "second")
        .await
        .into_iter()
        .filter(|e| {
            !matches!(e.reason.as_str(), "Succeeded" | "Started")
                || e.message.as_deref().unwrap_or("").contains("collapsed")
        })
        .map(|e| format!("{} {}", e.reason, e.message.unwrap_or_default()))
        .collect();
    let covering: Vec<String> = window
        .iter()
        .filter(|r| r.covers_from.is_some())
        .map(|r| format!("{:?}..{:?}", r.covers_from, r.instant))
        .collect();
    eprintln!("events: {told:#?}\ncollapsed runs: {covering:?}\nlogs: {}", logs.display());
    assert_exactly_once(&window, &schedule, from, window.last().unwrap().instant.unwrap(), &status);
    assert!(
        status.missed_runs > 0 || window.iter().any(|r| r.covers_from.is_some()),
        "the outages left a trace: {status:?}"
    );
    let missed = events_for(&server, "second").await;
    if status.missed_runs > 0 {
        assert!(missed.iter().any(|e| e.reason == "Missed"), "missed instants are reported");
    }
}
