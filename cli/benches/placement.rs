//! Two-level scheduling through the API, as processes: `agora apiserver` (embedded store), `agora agent --hollow`
//! with 10,000 agents, `agora controllers` (the allocator), and a benchmark framework on the SDK that accepts every
//! offer whole (as many one-core tasks as fit).
//!
//! - **idle allocator**: its CPU over 20 s with the agents heartbeating and no framework, then again once the
//!   cluster is full;
//! - **placement**: tasks placed per second, from the first offer to the last Task created, and the store writes
//!   (transactions and puts, from the apiserver's metrics) per placed task over the same window.
//!
//! `cargo bench -p agora-cli --bench placement`. Knobs: `AGORA_BENCH_AGENTS` (10000), `AGORA_BENCH_CPUS` (cores per
//! agent, 4), `AGORA_BENCH_IDLE_SECONDS` (20), `AGORA_BENCH_DIR` (/var/tmp).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agora_client::{Api, Client, Config, ListParams};
use agora_controllers::framework::{Framework, Launch, Scheduler};
use agora_controllers::runtime::watcher;
use agora_schemas::{Agent, ObjectMeta, Offer, Task, TaskSpec, TaskTemplate};
use common::{Proc, agora, knob, store_writes};
use futures::StreamExt;

mod common;

/// Accepts every offer whole with one-core tasks.
struct Greedy;

impl Scheduler for Greedy {
    fn offers(&mut self, offers: &[Arc<Offer>], _tasks: &[Arc<Task>]) -> Vec<Launch> {
        offers
            .iter()
            .map(|o| {
                let fit = (o.spec.resources.cpus + 1e-9).floor().min((o.spec.resources.mem / 1024.0).floor()) as usize;
                let task = || TaskTemplate {
                    metadata: ObjectMeta {
                        generate_name: Some("bench-".into()),
                        namespace: Some("default".into()),
                        ..ObjectMeta::default()
                    },
                    spec: TaskSpec { cmd: Some("true".into()), cpus: 1.0, mem: 1024.0, ..TaskSpec::default() },
                };
                Launch { offer: o.metadata.name.clone().unwrap_or_default(), tasks: (0..fit).map(|_| task()).collect() }
            })
            .collect()
    }

    fn wants_offers(&self, _tasks: &[Arc<Task>]) -> bool {
        true
    }
}

/// The allocator's CPU (% of a core) and the store's writes per second over `seconds`.
async fn idle(allocator: &Proc, port: u16, seconds: u64) -> (f64, f64) {
    let (cpu, writes) = (allocator.cpu_seconds(), store_writes(port));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let seconds = seconds as f64;
    ((allocator.cpu_seconds() - cpu) / seconds * 100.0, (store_writes(port) - writes) / seconds)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks what is here; nothing is a test.
    }
    let agents = knob("AGORA_BENCH_AGENTS", 10_000);
    let cpus = knob("AGORA_BENCH_CPUS", 4);
    let idle_seconds = knob("AGORA_BENCH_IDLE_SECONDS", 20) as u64;
    let settle = knob("AGORA_BENCH_SETTLE_SECONDS", 30) as u64;
    let parent = std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::tempdir_in(parent).expect("bench dir");
    let (apiserver, port) = common::apiserver(dir.path());
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(Config::new(&url)).expect("client");

    let started = Instant::now();
    let resources = format!("cpus:{cpus};mem:{};disk:1000", cpus * 1024);
    let count = agents.to_string();
    let hollow =
        agora(&["agent", "--server", &url, "--hollow", &count, "--name-prefix", "h-", "--resources", &resources]);
    let agent_api: Api<Agent> = Api::all(client.clone());
    loop {
        let list = agent_api.list(&ListParams::default()).await.map(|l| l.items.len()).unwrap_or(0);
        if list >= agents {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "placement: {agents} hollow agents of {cpus} cores registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let allocator = agora(&["controllers", "--server", &url, "--identity", "bench", "--only", "allocator"]);
    let start_cpu = allocator.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(settle)).await; // its caches sync and its first rounds run
    println!("  allocator start-up (sync, first rounds): {:.2} CPU s", allocator.cpu_seconds() - start_cpu);
    let (idle_cpu, heartbeat_writes) = idle(&allocator, port, idle_seconds).await;
    println!(
        "  idle allocator, {agents} agents heartbeating ({heartbeat_writes:.0} store writes/s), no framework: {idle_cpu:.1}% of a core"
    );

    // Count tasks created, from a watch; the first offer's time from another.
    let created = Arc::new(AtomicUsize::new(0));
    let first_offer: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let last_task: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let target = agents * cpus;
    let tasks_watch = tokio::spawn({
        let (api, created, last_task) = (Api::<Task>::all(client.clone()), created.clone(), last_task.clone());
        async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            let mut seen = std::collections::HashSet::new();
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(task)) = event
                    && seen.insert(task.metadata.name.clone().unwrap_or_default())
                {
                    created.fetch_add(1, Ordering::SeqCst);
                    *last_task.lock().unwrap() = Some(Instant::now());
                }
            }
        }
    });
    let offers_watch = tokio::spawn({
        let (api, first_offer) = (Api::<Offer>::all(client.clone()), first_offer.clone());
        async move {
            let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(_)) = event {
                    first_offer.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes_before = store_writes(port);
    let cpu_before = [allocator.cpu_seconds(), apiserver.cpu_seconds(), hollow.cpu_seconds()];
    let framework = tokio::spawn(Framework::new(client.clone(), "bench").run(Greedy, std::future::pending()));
    let deadline = Instant::now() + Duration::from_secs(600);
    while created.load(Ordering::SeqCst) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let placed = created.load(Ordering::SeqCst);
    let writes = store_writes(port) - writes_before;
    let cpu_after = [allocator.cpu_seconds(), apiserver.cpu_seconds(), hollow.cpu_seconds()];
    let (first, last) = (first_offer.lock().unwrap().expect("an offer"), last_task.lock().unwrap().expect("a task"));
    let seconds = last.duration_since(first).as_secs_f64();
    let per_task = |w: f64| w / placed.max(1) as f64;
    println!(
        "  placement: {placed} tasks in {seconds:.2} s from the first offer = {:.0} tasks/s; store writes per placed task: {:.2} ({:.2} without the agents' heartbeats)",
        placed as f64 / seconds,
        per_task(writes),
        per_task(writes - heartbeat_writes * seconds)
    );
    let cpu: Vec<String> = ["allocator", "apiserver", "hollow agents"]
        .iter()
        .zip(cpu_after.iter().zip(cpu_before))
        .map(|(name, (after, before))| format!("{name} {:.1}", after - before))
        .collect();
    println!("  CPU seconds during placement: {} (the framework runs in this process)", cpu.join(", "));
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let (full, _) = idle(&allocator, port, idle_seconds).await;
    println!("  idle allocator, cluster full: {full:.1}% of a core");
    framework.abort();
    tasks_watch.abort();
    offers_watch.abort();
}
