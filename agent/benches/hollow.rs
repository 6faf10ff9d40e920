//! Hollow mode at scale: one process simulating 10,000 agents (registration, a heartbeat every 5 s each, one Task
//! watch for all), against an apiserver (embedded store) in another process. Measures the hollow process's CPU
//! (cores, from `/proc/<pid>/stat`) and resident memory over 30 s of steady heartbeats, and how many leases were
//! fresh (renewed within their 15 s) at the end.
//!
//! `cargo bench -p agora-agent --bench hollow`. Knobs: `AGORA_BENCH_AGENTS` (10000), `AGORA_BENCH_SECONDS` (30).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_agent::hollow::{HollowConfig, run};
use agora_agent::registration::HeartbeatConfig;
use agora_apiserver::server::{Security, ServerConfig, serve};
use agora_apiserver::store::StoreConfig;
use agora_client::{Api, Client, Config, ListParams};
use agora_schemas::{Lease, Resources};

const SERVE_ENV: &str = "AGORA_BENCH_SERVE";
const HOLLOW_ENV: &str = "AGORA_BENCH_HOLLOW";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) and resident bytes of `pid`.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // After "pid (comm)": state is field 0, utime 11, stime 12, rss (pages) 21.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let clock = rustix::param::clock_ticks_per_second() as f64;
    let page = rustix::param::page_size() as u64;
    ((ticks(11) + ticks(12)) as f64 / clock, ticks(21) * page)
}

fn main() {
    if let Ok(spec) = std::env::var(SERVE_ENV) {
        let (port, dir) = spec.split_once(' ').expect("port and dir");
        let config = ServerConfig {
            listen: format!("127.0.0.1:{port}").parse().expect("address"),
            store: StoreConfig::Embedded(dir.into()),
            prefix: "/registry".into(),
            security: Security::InsecureUnauthenticated,
            audit: None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        runtime.block_on(serve(config, std::future::pending())).expect("serve");
        return;
    }
    if let Ok(spec) = std::env::var(HOLLOW_ENV) {
        let (url, count) = spec.split_once(' ').expect("url and count");
        let config = HollowConfig {
            count: count.parse().expect("count"),
            name_prefix: "sim-".into(),
            resources: Resources { cpus: 8.0, mem: 16384.0, disk: 100_000.0, ports: vec![] },
            attributes: Default::default(),
            heartbeat: HeartbeatConfig::default(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let client = Client::new(Config::new(url)).expect("client");
        runtime.block_on(run(client, config, std::future::pending())).expect("hollow agents");
        return;
    }
    let agents = knob("AGORA_BENCH_AGENTS", 10_000);
    let seconds = knob("AGORA_BENCH_SECONDS", 30);
    let dir =
        tempfile::tempdir_in(std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).expect("dir");
    let port = agora_e2e::free_port();
    let exe = std::env::current_exe().expect("bench binary");
    let _server = Killed(
        Command::new(&exe)
            .env(SERVE_ENV, format!("{port} {}", dir.path().display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("apiserver"),
    );
    while !agora_e2e::http_ok(port, "/readyz") {
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let hollow = Killed(
        Command::new(&exe)
            .env(HOLLOW_ENV, format!("{url} {agents}"))
            .env("AGORA_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("hollow agents"),
    );
    let pid = hollow.0.id();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let leases: Api<Lease> = Api::namespaced(Client::new(Config::new(&url)).expect("client"), "agora-agents");
    let count =
        || runtime.block_on(async { leases.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() });
    while (count().len() as u64) < agents {
        assert!(started.elapsed() < Duration::from_secs(600), "the agents did not all register in 10 minutes");
        std::thread::sleep(Duration::from_secs(2));
    }
    let registered = started.elapsed();
    let (cpu_before, _) = cpu_and_rss(pid);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu_after, rss) = cpu_and_rss(pid);
    let cores = (cpu_after - cpu_before) / window.elapsed().as_secs_f64();
    let now = jiff::Timestamp::now();
    let items = count();
    let fresh = items
        .iter()
        .filter(|l| l.spec.renew_time.is_some_and(|t| now.duration_since(t) < jiff::SignedDuration::from_secs(15)))
        .count();
    println!("| measurement | result | target |");
    println!("|---|---|---|");
    println!("| {agents} hollow agents registered and heartbeating | {:.1} s | |", registered.as_secs_f64());
    println!("| hollow process CPU over {seconds} s of heartbeats | **{cores:.2} cores** | ≤ 1 core |");
    println!("| hollow process resident memory | **{:.0} MiB** | ≤ 1 GiB |", rss as f64 / 1_048_576.0);
    println!("| leases fresh (renewed within 15 s) at the end | {fresh} of {} | all |", items.len());
}
