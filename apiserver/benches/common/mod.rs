//! What the benchmarks share: a closed-loop load of concurrent workers, and percentiles.

#![allow(dead_code, reason = "each benchmark uses its own subset")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a measurement counted: operations completed and their latencies, over some elapsed time.
#[derive(Default)]
pub struct Throughput {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Throughput {
    pub fn merge(&mut self, other: Throughput) {
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p99_ms(&mut self) -> f64 {
        self.latencies.sort_unstable();
        percentile(&self.latencies, 0.99)
    }
}

/// The `q` quantile of sorted durations, in milliseconds.
pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

/// `workers` tasks run `op(worker, i)` back to back for `duration`, after a half-second warm-up that is not counted.
pub async fn throughput<F, Fut>(workers: usize, duration: Duration, op: F) -> Throughput
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (op, measuring, stop) = (op.clone(), measuring.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    op(w, i).await;
                    if measuring.load(Ordering::Relaxed) {
                        latencies.push(started.elapsed());
                    }
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("worker"));
    }
    Throughput { elapsed, latencies }
}

/// Set in the child: the store to serve (a directory, or `etcd://...`) and the port.
pub const SERVE_ENV: &str = "AGORA_BENCH_SERVE";

/// The apiserver under test, as a child process (this benchmark binary re-executed with [`SERVE_ENV`]; its `main`
/// calls [`serve_child`] then).
pub struct Apiserver {
    pub child: std::process::Child,
    pub base: String,
    /// The embedded store's directory, when the benchmark made it.
    pub dir: Option<tempfile::TempDir>,
}

impl Apiserver {
    /// On etcd, or on the embedded store in a new directory under `AGORA_BENCH_DIR` (default `/var/tmp`).
    pub fn start(etcd: Option<&agora_e2e::EtcdProcess>) -> Self {
        match etcd {
            Some(etcd) => Self::serve(etcd.store_url(), None),
            None => {
                let parent = std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
                let dir = tempfile::tempdir_in(parent).expect("bench dir");
                Self::serve(dir.path().display().to_string(), Some(dir))
            }
        }
    }

    /// Serves `store` (a directory or an etcd URL), keeping `dir` alive as long as the server.
    pub fn serve(store: String, dir: Option<tempfile::TempDir>) -> Self {
        let port = agora_e2e::free_port();
        let child = std::process::Command::new(std::env::current_exe().expect("bench binary"))
            .env(SERVE_ENV, format!("{port} {store}"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the apiserver");
        let server = Self { child, base: format!("http://127.0.0.1:{port}"), dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !agora_e2e::http_ok(port, "/readyz") {
            assert!(Instant::now() < deadline, "the apiserver did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Resident memory of the apiserver process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Kills the server and hands back its directory (to serve it again).
    pub fn stop(mut self) -> Option<tempfile::TempDir> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take()
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child: serve the store named in [`SERVE_ENV`] until killed.
pub fn serve_child(spec: &str) {
    use agora_apiserver::server::{Security, ServerConfig, serve};
    use agora_apiserver::store::StoreConfig;
    let (port, store) = spec.split_once(' ').expect("port and store");
    let store = if store.starts_with("etcd://") {
        StoreConfig::parse_etcd(store).expect("etcd url")
    } else {
        StoreConfig::Embedded(store.into())
    };
    let listen = format!("127.0.0.1:{port}").parse().expect("address");
    let config = ServerConfig {
        listen,
        store,
        prefix: "/registry".into(),
        security: Security::InsecureUnauthenticated,
        audit: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(serve(config, std::future::pending())).expect("serve");
}
