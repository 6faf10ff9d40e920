//! Chronos at scale, as processes: `agora apiserver` (embedded store), `agora agent --hollow`, `agora controllers
//! --only allocator` and `agora controllers --only chronos` (separate, so chronos' CPU and memory can be read).
//!
//! - **launch precision**: jobs due every second (all at the same instants), until 1,000 runs are created; for each
//!   run, the time from its scheduled instant to its Task reaching a watch of the bench (an upper bound on "created")
//!   and to it Running, p50 / p99 / max; every instant run exactly once, none missed, none duplicated (from the Task
//!   objects);
//! - **scale**: 10,000 CronJobs due once a day at instants spread over the day; chronos' CPU between runs, and its
//!   resident memory per job.
//!
//! `cargo bench -p agora-cli --bench chronos`. Knobs: `AGORA_BENCH_AGENTS` (100), `AGORA_BENCH_JOBS` (50 jobs due
//! every second), `AGORA_BENCH_RUNS` (1000), `AGORA_BENCH_IDLE_JOBS` (10000), `AGORA_BENCH_IDLE_SECONDS` (30),
//! `AGORA_BENCH_DIR` (/var/tmp).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_client::{Api, Client, Config, ListParams};
use agora_controllers::runtime::watcher;
use agora_schemas::{CRONJOB_LABEL, CronJob, INSTANT_ANNOTATION, Task, TaskState};
use common::{agora, apply_all, knob};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::json;

mod common;

fn job(name: &str, schedule: &str) -> serde_json::Value {
    json!({"apiVersion": "agora/v1", "kind": "CronJob", "metadata": {"name": name, "namespace": "default"},
           "spec": {"schedule": schedule, "command": "true", "cpus": 0.01, "mem": 16, "disk": 0,
                    "env": {"HOLLOW_RUN_SECONDS": "0.2"}}})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// What a watch of the run Tasks saw of each: its job and instant, when it first arrived, when it was first Running.
#[derive(Clone, Debug)]
struct Seen {
    job: String,
    instant: Option<Timestamp>,
    arrived: Timestamp,
    running: Option<Timestamp>,
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks what is here; nothing is a test.
    }
    let agents = knob("AGORA_BENCH_AGENTS", 100);
    let jobs = knob("AGORA_BENCH_JOBS", 50);
    let runs = knob("AGORA_BENCH_RUNS", 1000);
    let idle_jobs = knob("AGORA_BENCH_IDLE_JOBS", 10_000);
    let idle_seconds = knob("AGORA_BENCH_IDLE_SECONDS", 30) as u64;
    let parent = std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::tempdir_in(parent).expect("bench dir");
    let (_apiserver, port) = common::apiserver(dir.path());
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(Config::new(&url)).expect("client");
    let _hollow = common::hollow_agents(&client, &url, agents, "cpus:8;mem:8192").await;
    let _allocator = agora(&["controllers", "--server", &url, "--identity", "bench", "--only", "allocator"]);
    let chronos = agora(&["controllers", "--server", &url, "--identity", "bench", "--only", "chronos"]);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every run Task, as a watch sees it.
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let watch = tokio::spawn({
        let (api, seen) = (Api::<Task>::all(client.clone()), seen.clone());
        async move {
            let config = watcher::Config::default().labels(CRONJOB_LABEL);
            let mut stream = std::pin::pin!(watcher::watcher(api, config));
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t)) = event {
                    let now = Timestamp::now();
                    let mut seen = seen.lock().unwrap();
                    let entry = seen.entry(t.metadata.name.clone().unwrap_or_default()).or_insert_with(|| Seen {
                        job: t.metadata.labels.get(CRONJOB_LABEL).cloned().unwrap_or_default(),
                        instant: t.metadata.annotations.get(INSTANT_ANNOTATION).and_then(|i| i.parse().ok()),
                        arrived: now,
                        running: None,
                    });
                    if entry.running.is_none() && t.status.as_ref().is_some_and(|s| s.state == TaskState::Running) {
                        entry.running = Some(now);
                    }
                }
            }
        }
    });

    // Launch precision: every job due each second, from one whole second a few seconds ahead.
    let api: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let start = Timestamp::now().checked_add(jiff::SignedDuration::from_secs(8)).unwrap();
    let start = Timestamp::from_second(start.as_second()).unwrap();
    let seconds = runs.div_ceil(jobs);
    let schedule = format!("R{seconds}/{start}/PT1S");
    println!("chronos: {agents} hollow agents; {jobs} jobs due every second ({schedule}) = {} runs", jobs * seconds);
    apply_all(&api, (0..jobs).map(|i| job(&format!("tick-{i}"), &schedule)).collect()).await;
    let end = start.checked_add(jiff::SignedDuration::from_secs(seconds as i64 + 5)).unwrap();
    while Timestamp::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: Vec<Seen> = seen.lock().unwrap().values().filter(|s| s.job.starts_with("tick-")).cloned().collect();
    let mut per_instant: BTreeMap<(String, Timestamp), usize> = BTreeMap::new();
    for s in &all {
        if let Some(instant) = s.instant {
            *per_instant.entry((s.job.clone(), instant)).or_default() += 1;
        }
    }
    let duplicated = per_instant.values().filter(|n| **n > 1).count();
    let expected: HashSet<(String, Timestamp)> = (0..jobs)
        .flat_map(|i| {
            (0..seconds).map(move |k| {
                (format!("tick-{i}"), start.checked_add(jiff::SignedDuration::from_secs(k as i64)).unwrap())
            })
        })
        .collect();
    let missing = expected.iter().filter(|k| !per_instant.contains_key(*k)).count();
    let statuses = api.list(&ListParams::default()).await.expect("jobs").items;
    let (missed, skipped): (u64, u64) = statuses
        .iter()
        .filter_map(|j| j.status.as_ref())
        .fold((0, 0), |(m, s), st| (m + st.missed_runs, s + st.skipped_runs));
    let mut created: Vec<f64> =
        all.iter().filter_map(|s| Some(s.arrived.duration_since(s.instant?).as_secs_f64() * 1000.0)).collect();
    let mut running: Vec<f64> =
        all.iter().filter_map(|s| Some(s.running?.duration_since(s.instant?).as_secs_f64() * 1000.0)).collect();
    created.sort_by(f64::total_cmp);
    running.sort_by(f64::total_cmp);
    println!(
        "  {} runs: {missing} instants without a run, {duplicated} with two; status: {missed} missed, {skipped} skipped",
        all.len()
    );
    println!(
        "  instant → Task created (seen by a watch): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&created, 0.5),
        percentile(&created, 0.99),
        created.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  instant → Running: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&running, 0.5),
        percentile(&running, 0.99),
        running.last().copied().unwrap_or(f64::NAN)
    );
    watch.abort();

    // Scale: many jobs, each due once a day, at instants spread over the day.
    let rss_before = chronos.rss_bytes();
    let day = 86_400.0;
    let base = Timestamp::now().checked_add(jiff::SignedDuration::from_mins(10)).unwrap();
    let spread: Vec<serde_json::Value> = (0..idle_jobs)
        .map(|i| {
            let offset = jiff::SignedDuration::from_secs_f64(day * i as f64 / idle_jobs as f64);
            let at = Timestamp::from_second(base.checked_add(offset).unwrap().as_second()).unwrap();
            job(&format!("daily-{i}"), &format!("R/{at}/P1D"))
        })
        .collect();
    let applying = Instant::now();
    apply_all(&api, spread).await;
    // Wait until chronos has decided every job once (each has its next run in status).
    loop {
        let listed = api.list(&ListParams::default()).await.expect("jobs").items;
        let decided = listed
            .iter()
            .filter(|j| j.metadata.name.as_deref().is_some_and(|n| n.starts_with("daily-")))
            .filter(|j| j.status.as_ref().is_some_and(|s| s.next_schedule_time.is_some()))
            .count();
        if decided >= idle_jobs {
            break;
        }
        assert!(applying.elapsed() < Duration::from_secs(600), "chronos decided {decided} of {idle_jobs} jobs");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("  {idle_jobs} daily jobs applied and decided in {:.1} s", applying.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = chronos.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let idle = (chronos.cpu_seconds() - cpu) / idle_seconds as f64 * 100.0;
    println!("  idle chronos between runs, {idle_jobs} jobs: {idle:.1}% of a core over {idle_seconds} s");
    // Resident memory after the idle spell: the statuses written, the watch caught up.
    let rss_after = chronos.rss_bytes();
    println!(
        "  chronos memory: {:.0} MiB before, {:.0} MiB with {idle_jobs} more jobs = {:.2} KiB per job",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        rss_after.saturating_sub(rss_before) as f64 / idle_jobs as f64 / 1024.0
    );
}
