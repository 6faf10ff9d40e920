//! How fast an agent starts a task: from the Task's creation to `Running` in its status (the agent sees it through its
//! watch, writes Starting, prepares the root file system, starts the shim, which starts the container through
//! libcontainer, and writes Running), p50/p99 over 100 tasks running `true`, one after another. Run as root:
//!
//! `cargo bench -p agora-agent --bench agent` (knob: `AGORA_BENCH_TASKS`, default 100).
//!
//! The apiserver (embedded store) and the agent run in this process; the bench binary is also the tasks' shim.
//! `crun run` on an equivalent bundle is measured in the same run, alternating with the agent's tasks, when `crun` is installed (Debian's `crun`; on a
//! hybrid cgroup host it runs with the workaround of host-facts.md), for the ratio the issue asks for.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_agent::registration::HeartbeatConfig;
use agora_agent::runner::{AgentConfig, run};
use agora_apiserver::server::{ApiConfig, router};
use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore};
use agora_client::{Api, Client, Config, PostParams, WatchEvent, WatchParams};
use agora_schemas::{Resources, Task, TaskState};
use futures::StreamExt;
use serde_json::json;

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).expect("rootfs");
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static is installed (make deps)");
    for tool in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).expect("symlink");
    }
    for empty in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(empty)).expect("rootfs dir");
    }
}

/// `crun run` of `true` on a bundle like the agent's; None when crun is not installed.
struct Crun {
    binary: &'static str,
    bundle: std::path::PathBuf,
    empty: std::path::PathBuf,
    runs: usize,
}

impl Crun {
    fn new(dir: &Path) -> Option<Self> {
        let binary = ["/usr/bin/crun", "/usr/sbin/crun"].into_iter().find(|p| Path::new(p).exists())?;
        let bundle = dir.join("crun-bundle");
        busybox_rootfs(&bundle.join("rootfs"));
        let status = std::process::Command::new(binary).arg("spec").current_dir(&bundle).status().ok()?;
        if !status.success() {
            return None;
        }
        let config = bundle.join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).ok()?).ok()?;
        spec["process"]["args"] = json!(["true"]);
        spec["process"]["terminal"] = json!(false);
        std::fs::write(&config, spec.to_string()).ok()?;
        let empty = dir.join("empty");
        std::fs::write(&empty, "").ok()?;
        Some(Self { binary, bundle, empty, runs: 0 })
    }

    /// One whole `crun run` (in a private mount namespace, for the hybrid-cgroup workaround); None if it failed.
    fn run(&mut self) -> Option<Duration> {
        self.runs += 1;
        let script = format!(
            "mount --bind {} /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; exec {} run --bundle {} bench-{}",
            self.empty.display(),
            self.binary,
            self.bundle.display(),
            self.runs
        );
        let started = Instant::now();
        let status = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .status()
            .ok()?;
        status.success().then(|| started.elapsed())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("container-shim") {
        let (task_dir, state_dir) = (args.next().expect("task dir"), args.next().expect("state dir"));
        std::process::exit(agora_agent::shim::run(Path::new(&task_dir), Path::new(&state_dir)));
    }
    let samples: usize = std::env::var("AGORA_BENCH_TASKS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let dir =
        tempfile::tempdir_in(std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).expect("dir");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let latencies = runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path().join("store"))).await.expect("store"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router(store, ApiConfig::default())).await });
        let work = dir.path().join("agent");
        busybox_rootfs(&dir.path().join("rootfs"));
        agora_agent::images::ImageStore::open(&work)
            .expect("images")
            .build(&dir.path().join("rootfs"), "busybox")
            .expect("image");
        let client = Client::new(Config::new(&url)).expect("client");
        let config = AgentConfig {
            name: "bench".into(),
            work_dir: work.clone(),
            resources: Resources { cpus: 4.0, mem: 4096.0, disk: 1000.0, ports: vec![] },
            attributes: Default::default(),
            heartbeat: HeartbeatConfig::default(),
            listen: "127.0.0.1:0".parse().expect("address"),
            usage_every: Duration::from_secs(10),
            sandbox_retention: Duration::from_secs(3600),
            token: None,
            shim: std::env::current_exe().expect("bench binary"),
            allow_root_tasks: false,
            hidden_paths: Vec::new(),
            init: agora_agent::runner::default_init(),
            registries: Default::default(),
            image_gc: Default::default(),
        };
        let agent = tokio::spawn(run(client.clone(), config, std::future::pending()));
        let tasks: Api<Task> = Api::namespaced(client, "default");
        let mut latencies = Vec::new();
        let mut crun = Crun::new(dir.path());
        let mut crun_times = Vec::new();
        let mut uids = Vec::new();
        // One watch, open before the first task is created, so events are read as they happen.
        let now = tasks.list(&agora_client::ListParams::default().limit(1)).await.expect("list");
        let from = now.metadata.resource_version.unwrap_or_default();
        let mut events = tasks.watch(&WatchParams::default().timeout(3600), &from).await.expect("watch").boxed();
        for i in 0..samples + 5 {
            let task: Task = serde_json::from_value(json!({
                "apiVersion": "agora/v1", "kind": "Task", "metadata": {"name": format!("t{i}")},
                "spec": {"agent": "bench", "framework": "bench", "cmd": "true", "cpus": 0.1, "mem": 32,
                         "container": {"image": "busybox"}},
            }))
            .expect("task");
            let started = Instant::now();
            let created = tasks.create(&PostParams::default(), &task).await.expect("create");
            uids.extend(created.metadata.uid);
            let mut seen = None;
            loop {
                let event = match events.next().await {
                    Some(Ok(event)) => event,
                    other => panic!("the bench's watch of tasks ended: {other:?}"),
                };
                if let WatchEvent::Error(status) = &event {
                    panic!("the bench's watch of tasks failed: {status:?}");
                }
                if let WatchEvent::Modified(t) = event {
                    if t.metadata.name.as_deref() != Some(&format!("t{i}")) {
                        continue;
                    }
                    // The agent's first write (Starting: the finalizer came with the creation) is the moment it has
                    // seen the task.
                    seen.get_or_insert_with(Instant::now);
                    let state = t.status.map(|s| s.state);
                    if matches!(state, Some(TaskState::Running | TaskState::Finished)) {
                        break;
                    }
                    assert!(!state.is_some_and(TaskState::is_terminal), "task t{i} failed: {state:?}");
                }
            }
            // The first few warm the caches (image layers, cgroup hierarchy); they are not counted.
            if i >= 5 {
                let running = Instant::now();
                latencies.push((running - started, running - seen.unwrap_or(started)));
                // crun's run alternates with the agent's, so the machine's drift falls on both.
                if let Some(c) = crun.as_mut() {
                    match tokio::task::block_in_place(|| c.run()) {
                        Some(time) => crun_times.push(time),
                        None => crun = None,
                    }
                }
            }
        }
        agent.abort();
        // The last tasks may still hold their (empty) cgroups: the agent was stopped before it removed them.
        for uid in &uids {
            agora_agent::cgroups::remove(uid);
        }
        (latencies, crun.map(|_| crun_times))
    });
    let (latencies, crun_times) = latencies;
    let mut created: Vec<Duration> = latencies.iter().map(|l| l.0).collect();
    let mut seen: Vec<Duration> = latencies.iter().map(|l| l.1).collect();
    created.sort_unstable();
    seen.sort_unstable();
    let (p50, p99) = (percentile(&seen, 0.5), percentile(&seen, 0.99));
    println!("| measurement | p50 ms | p99 ms |");
    println!("|---|---|---|");
    println!(
        "| agent: Task seen (Starting written) → Running written ({samples} tasks running `true`) | {p50:.1} | {p99:.1} |"
    );
    println!(
        "| the same from the Task's creation (apiserver and watch delivery included) | {:.1} | {:.1} |",
        percentile(&created, 0.5),
        percentile(&created, 0.99)
    );
    match crun_times {
        Some(mut times) => {
            times.sort_unstable();
            let (c50, c99) = (percentile(&times, 0.5), percentile(&times, 0.99));
            println!(
                "| crun run of the same command, whole run (alternating with the agent's) | {c50:.1} | {c99:.1} |"
            );
            println!("| ratio agent / crun (p50) | {:.2}× | |", p50 / c50);
        }
        None => println!("| crun | not installed on this machine, or it failed: no comparison in this run | |"),
    }
    let _ = agora_agent::container::remove_task_dir(&dir.path().join("agent"));
}
