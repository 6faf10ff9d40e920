//! Marathon at scale, as processes: `agora apiserver` (embedded store), `agora agent --hollow` with 10,000 agents,
//! `agora controllers --only allocator` and `agora controllers --only marathon` (separate, so each one's CPU and
//! memory can be read).
//!
//! - **apply → Running**: 10,000 Apps of 10 instances (100,000 tasks) applied at once; the time from the first
//!   apply to the last task Running, and tasks/s;
//! - **memory**: marathon's resident memory growth per task;
//! - **idle**: marathon's CPU over 20 s with everything converged (the agents heartbeating);
//! - **rolling restart**: a 1,000-instance App's spec changed; the time until all 1,000 run the new version.
//!
//! `cargo bench -p agora-cli --bench marathon`. Knobs: `AGORA_BENCH_AGENTS` (10000), `AGORA_BENCH_APPS` (10000),
//! `AGORA_BENCH_INSTANCES` (10 per app), `AGORA_BENCH_BIG` (1000), `AGORA_BENCH_IDLE_SECONDS` (20),
//! `AGORA_BENCH_DIR` (/var/tmp).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agora_client::{Api, Client, Config};
use agora_controllers::runtime::watcher;
use agora_schemas::{App, Task, TaskState};
use common::{agora, apply_all, knob, store_writes};
use futures::StreamExt;
use serde_json::json;

mod common;

fn app(name: &str, instances: usize, env: &str) -> serde_json::Value {
    json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": name, "namespace": "default"},
           "spec": {"instances": instances, "cmd": "serve", "cpus": 0.1, "mem": 32, "portDefinitions": [],
                    "env": {"GENERATION": env}}})
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks what is here; nothing is a test.
    }
    let agents = knob("AGORA_BENCH_AGENTS", 10_000);
    let apps = knob("AGORA_BENCH_APPS", 10_000);
    let instances = knob("AGORA_BENCH_INSTANCES", 10);
    let big = knob("AGORA_BENCH_BIG", 1_000);
    let idle_seconds = knob("AGORA_BENCH_IDLE_SECONDS", 20) as u64;
    let parent = std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::tempdir_in(parent).expect("bench dir");
    let (apiserver, port) = common::apiserver(dir.path());
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(Config::new(&url)).expect("client");

    let hollow = common::hollow_agents(&client, &url, agents, "cpus:4;mem:4096;disk:1000").await;
    let allocator = agora(&["controllers", "--server", &url, "--identity", "bench", "--only", "allocator"]);
    let marathon = agora(&["controllers", "--server", &url, "--identity", "bench", "--only", "marathon"]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_before = marathon.rss_bytes();
    let total = apps * instances;
    println!("marathon: {agents} hollow agents, {apps} apps × {instances} instances = {total} tasks");

    // Running tasks, counted from a watch of every task.
    let running = Arc::new(AtomicUsize::new(0));
    let last_running: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let watch = tokio::spawn({
        let (api, running, last) = (Api::<Task>::all(client.clone()), running.clone(), last_running.clone());
        async move {
            let mut seen = HashSet::new();
            let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t)) = event
                    && t.status.as_ref().is_some_and(|s| s.state == TaskState::Running)
                    && seen.insert(t.metadata.name.clone().unwrap_or_default())
                {
                    running.fetch_add(1, Ordering::SeqCst);
                    *last.lock().unwrap() = Some(Instant::now());
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let api: Api<App> = Api::namespaced(client.clone(), "default");
    let cpu_before = [allocator.cpu_seconds(), marathon.cpu_seconds(), apiserver.cpu_seconds(), hollow.cpu_seconds()];
    let writes_before = store_writes(port);
    let started = Instant::now();
    apply_all(&api, (0..apps).map(|i| app(&format!("app-{i}"), instances, "1")).collect()).await;
    let applied = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut next_report = Instant::now() + Duration::from_secs(10);
    while running.load(Ordering::SeqCst) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_report {
            eprintln!("  … {} running after {:.0} s", running.load(Ordering::SeqCst), started.elapsed().as_secs_f64());
            next_report += Duration::from_secs(10);
        }
    }
    let done = running.load(Ordering::SeqCst);
    let seconds = last_running.lock().unwrap().map_or(f64::NAN, |t| t.duration_since(started).as_secs_f64());
    println!(
        "  apply → Running: {done} of {total} tasks Running {seconds:.1} s after the first apply ({applied:.1} s to apply) = {:.0} tasks/s",
        done as f64 / seconds
    );
    let writes = store_writes(port) - writes_before;
    println!(
        "  store writes until then: {writes:.0} = {:.2} per task (every write: applies, acceptances, task status, App status, versions, Events, offers, heartbeats)",
        writes / done.max(1) as f64
    );
    let cpu_after = [allocator.cpu_seconds(), marathon.cpu_seconds(), apiserver.cpu_seconds(), hollow.cpu_seconds()];
    let cpu: Vec<String> = ["allocator", "marathon", "apiserver", "hollow agents"]
        .iter()
        .zip(cpu_after.iter().zip(cpu_before))
        .map(|(name, (after, before))| format!("{name} {:.1}", after - before))
        .collect();
    println!("  CPU seconds until then: {}", cpu.join(", "));
    tokio::time::sleep(Duration::from_secs(20)).await; // statuses settle
    let rss_after = marathon.rss_bytes();
    println!(
        "  marathon memory: {:.0} MiB before, {:.0} MiB with {done} tasks = {:.2} KiB per task",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        (rss_after.saturating_sub(rss_before)) as f64 / done.max(1) as f64 / 1024.0
    );
    let cpu = marathon.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    println!(
        "  idle marathon, everything converged: {:.1}% of a core",
        (marathon.cpu_seconds() - cpu) / idle_seconds as f64 * 100.0
    );

    // A rolling restart of a big App.
    apply_all(&api, vec![app("big", big, "1")]).await;
    let wait_big = |what: &'static str, check: Box<dyn Fn(&App) -> bool + Send>| {
        let api = api.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                if let Ok(a) = api.get("big").await
                    && check(&a)
                {
                    return;
                }
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_big("big running", Box::new(move |a| a.status.as_ref().is_some_and(|s| s.tasks_running as usize == big)))
        .await;
    let v1 = api.get("big").await.unwrap().status.unwrap().version.unwrap();
    let started = Instant::now();
    apply_all(&api, vec![app("big", big, "2")]).await;
    wait_big(
        "big restarted",
        Box::new(move |a| {
            a.status.as_ref().is_some_and(|s| {
                s.version.as_deref() != Some(v1.as_str()) && s.deployment.is_none() && s.tasks_healthy as usize == big
            })
        }),
    )
    .await;
    println!("  rolling restart of a {big}-instance App: {:.1} s", started.elapsed().as_secs_f64());
    watch.abort();
}
