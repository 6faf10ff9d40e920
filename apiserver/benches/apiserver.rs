//! Apiserver benchmark, over HTTP against an apiserver running as its own process (this binary re-executed), on the
//! embedded store and on etcd, in one run:
//!
//! - create throughput: 64 concurrent clients POSTing small Apps; and raw etcd puts of the bytes the apiserver stores
//!   for such an App, with 64 concurrent writers, alternating with the etcd-backed apiserver so the ratio is like for
//!   like; and raw etcd creates (the apiserver's put-if-absent transaction) in the same rotation. For these, the CPU
//!   that etcd, the apiserver and this process used is read from `/proc`, per operation; and merge patches of 64
//!   Apps by 64 clients through the etcd-backed apiserver, in the same rotation;
//! - put → watch-event latency with 100 concurrent watchers (p50/p99 over every watcher × event);
//! - a list of 100,000 Apps (one request, the whole body read), and the apiserver's resident memory with them stored.
//!
//! Run: `cargo bench -p agora-apiserver --bench apiserver` (etcd is started on a free loopback port). Knobs:
//! `AGORA_BENCH_SECONDS` (per throughput measurement, default 3), `AGORA_BENCH_OBJECTS` (default 100000),
//! `AGORA_BENCH_BACKENDS` (default `embedded,etcd`), `AGORA_BENCH_DIR` (the embedded store's directory's parent,
//! default `/var/tmp`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use agora_e2e::EtcdProcess;
use bytes::Bytes;
use common::{Apiserver, SERVE_ENV, percentile, serve_child};
use futures::StreamExt;
use reqwest::Client;

/// The allocator of the `agora` binary, so the child apiserver is measured as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 64;
const WATCHERS: usize = 100;
const WATCH_EVENTS: usize = 300;
const ETCD_ROUNDS: u32 = 4;

/// A small App, as a user would write it (the server adds defaults).
fn app(namespace: &str, name: &str) -> String {
    format!(
        r#"{{"apiVersion":"agora/v1","kind":"App","metadata":{{"name":"{name}","namespace":"{namespace}","labels":{{"tier":"web"}}}},"spec":{{"cmd":"python3 -m http.server $PORT0","instances":2,"cpus":0.5,"mem":256}}}}"#
    )
}

/// CPU seconds process `pid` has used (user + system, from `/proc/<pid>/stat` in USER_HZ ticks: 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) — utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

/// Where the cores went during one measurement: CPU seconds of etcd, the apiserver and this (load-generating)
/// process, over the wall time and the operations done.
#[derive(Default, Clone, Copy)]
struct CpuSplit {
    etcd: f64,
    apiserver: f64,
    load: f64,
    wall: f64,
    ops: f64,
}

impl CpuSplit {
    /// Runs `work` (which returns its operations per second) and adds its CPU and operations to the split.
    async fn measure(&mut self, pids: (u32, u32), work: impl std::future::Future<Output = f64>) -> f64 {
        let sample = || (cpu_seconds(pids.0), cpu_seconds(pids.1), cpu_seconds(std::process::id()));
        let (e0, a0, l0) = sample();
        let started = Instant::now();
        let rate = work.await;
        let wall = started.elapsed().as_secs_f64();
        let (e1, a1, l1) = sample();
        self.etcd += e1 - e0;
        self.apiserver += a1 - a0;
        self.load += l1 - l0;
        self.wall += wall;
        self.ops += rate * wall;
        rate
    }

    /// `cores used (µs of CPU per operation)` for each process.
    fn row(&self, what: &str) -> String {
        let part = |seconds: f64| format!("{:.2} ({:.0} µs)", seconds / self.wall, seconds * 1e6 / self.ops.max(1.0));
        format!(
            "| {what} | {:.0} | {} | {} | {} | {:.2} |",
            self.ops / self.wall,
            part(self.etcd),
            part(self.apiserver),
            part(self.load),
            (self.etcd + self.apiserver + self.load) / self.wall
        )
    }
}

fn http() -> Client {
    Client::builder().pool_max_idle_per_host(CLIENTS * 2).build().expect("http client")
}

/// Creates Apps in `namespace` with 64 clients for `duration`; creates per second.
async fn creates(base: &str, namespace: &str, duration: Duration) -> f64 {
    let client = http();
    let url = format!("{base}/apis/agora/v1/namespaces/{namespace}/apps");
    // Names unique to this call: every round of the same run creates new objects.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let run = format!("{}", CALLS.fetch_add(1, Ordering::Relaxed));
    let namespace = namespace.to_owned();
    let done = common::throughput(CLIENTS, duration, move |w, i| {
        let (client, url) = (client.clone(), url.clone());
        let body = app(&namespace, &format!("c{run}-{w}-{i}"));
        async move {
            let response = client.post(&url).header("content-type", "application/json").body(body).send().await;
            let response = response.expect("create");
            assert_eq!(
                response.status(),
                reqwest::StatusCode::CREATED,
                "{}",
                response.text().await.unwrap_or_default()
            );
            let _ = response.bytes().await;
        }
    })
    .await;
    done.per_second()
}

/// Merge patches of `spec.instances` by 64 clients, each of its own App in `namespace` (made first), for `duration`;
/// patches per second. Each is a read of the stored object and a compare-and-swap.
async fn patches(base: &str, namespace: &str, duration: Duration) -> f64 {
    let client = http();
    let url = format!("{base}/apis/agora/v1/namespaces/{namespace}/apps");
    for w in 0..CLIENTS {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(app(namespace, &format!("p-{w}")))
            .send()
            .await
            .expect("create");
        assert!(response.status().is_success() || response.status() == reqwest::StatusCode::CONFLICT);
    }
    let done = common::throughput(CLIENTS, duration, move |w, i| {
        let (client, url) = (client.clone(), format!("{url}/p-{w}"));
        async move {
            let body = format!("{{\"spec\":{{\"instances\":{}}}}}", i % 1000);
            let response = client
                .patch(&url)
                .header("content-type", "application/merge-patch+json")
                .body(body)
                .send()
                .await
                .expect("patch");
            assert_eq!(response.status(), reqwest::StatusCode::OK, "{}", response.text().await.unwrap_or_default());
            let _ = response.bytes().await;
        }
    })
    .await;
    done.per_second()
}

/// Raw etcd puts of `value` (an App as the apiserver stores it) with 64 writers for `duration`; puts per second.
async fn raw_etcd_puts(client: &etcd_client::Client, value: Bytes, duration: Duration) -> f64 {
    let client = client.clone();
    let done = common::throughput(CLIENTS, duration, move |w, i| {
        let (mut client, value) = (client.clone(), value.clone());
        async move {
            client.put(format!("/raw/apps/raw/r-{w}-{i}"), value.to_vec(), None).await.expect("raw etcd put");
        }
    })
    .await;
    done.per_second()
}

/// Raw etcd creates as the apiserver makes them — a transaction that puts `value` only if the key does not exist —
/// with 64 writers for `duration`; transactions per second.
async fn raw_etcd_creates(client: &etcd_client::Client, value: Bytes, duration: Duration) -> f64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let run = CALLS.fetch_add(1, Ordering::Relaxed);
    let client = client.clone();
    let done = common::throughput(CLIENTS, duration, move |w, i| {
        let (mut client, value) = (client.clone(), value.clone());
        async move {
            let key = format!("/raw/apps/txn/t{run}-{w}-{i}");
            let txn = etcd_client::Txn::new()
                .when([etcd_client::Compare::version(key.as_str(), etcd_client::CompareOp::Equal, 0)])
                .and_then([etcd_client::TxnOp::put(key.as_str(), value.to_vec(), None)])
                .or_else([etcd_client::TxnOp::get(key.as_str(), None)]);
            let response = client.txn(txn).await.expect("raw etcd create");
            assert!(response.succeeded(), "{key} was new");
        }
    })
    .await;
    done.per_second()
}

/// 100 watchers on one namespace; a writer patches an App every few milliseconds; the latency from sending the patch
/// to each watcher reading its event. Returns (p50, p99) in ms.
async fn watch_latency(base: &str) -> (f64, f64) {
    let client = http();
    let apps = format!("{base}/apis/agora/v1/namespaces/latency/apps");
    let created = client
        .post(&apps)
        .header("content-type", "application/json")
        .body(app("latency", "target"))
        .send()
        .await
        .expect("create");
    assert!(created.status().is_success());
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..=WATCH_EVENTS).map(|_| AtomicU64::new(0)).collect());
    let epoch = Instant::now();
    let mut watchers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(WATCHERS);
    for _ in 0..WATCHERS {
        let response = client.get(format!("{apps}?watch=true&resourceVersion=0")).send().await.expect("watch");
        let (sent, ready) = (sent.clone(), ready_tx.clone());
        watchers.push(tokio::spawn(async move {
            let mut stream = response.bytes_stream();
            let mut samples = Vec::with_capacity(WATCH_EVENTS);
            let mut buffer = Vec::new();
            while samples.len() < WATCH_EVENTS {
                let Some(Ok(chunk)) = stream.next().await else { break };
                let now = epoch.elapsed().as_nanos() as u64;
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    // The synthetic ADDED of the target says the watch is live; each patch sets spec.instances to
                    // the sequence number of the write.
                    let text = String::from_utf8_lossy(&line);
                    if text.contains(r#""type":"ADDED""#) {
                        let _ = ready.send(()).await;
                        continue;
                    }
                    let Some(seq) = text
                        .split(r#""instances":"#)
                        .nth(1)
                        .and_then(|rest| rest.split([',', '}']).next())
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    if seq >= 1000 {
                        let at = sent[seq - 1000].load(Ordering::Acquire);
                        samples.push(Duration::from_nanos(now.saturating_sub(at)));
                    }
                }
            }
            samples
        }));
    }
    for _ in 0..WATCHERS {
        ready_rx.recv().await.expect("watch ready");
    }
    for seq in 0..WATCH_EVENTS {
        sent[seq].store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
        let body = format!(r#"{{"spec":{{"instances":{}}}}}"#, seq + 1000);
        let response = client
            .patch(format!("{apps}/target"))
            .header("content-type", "application/merge-patch+json")
            .body(body)
            .send()
            .await
            .expect("patch");
        assert!(response.status().is_success());
        let _ = response.bytes().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut samples = Vec::new();
    for watcher in watchers {
        samples.extend(
            tokio::time::timeout(Duration::from_secs(30), watcher).await.expect("watcher finished").expect("watcher"),
        );
    }
    assert_eq!(samples.len(), WATCHERS * WATCH_EVENTS, "every watcher saw every write");
    samples.sort_unstable();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Stores `count` Apps in namespace `bulk` with 64 clients; returns their total JSON size as stored.
async fn load(base: &str, count: usize) -> u64 {
    let client = http();
    let url = format!("{base}/apis/agora/v1/namespaces/bulk/apps");
    let next = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url, next, bytes) = (client.clone(), url.clone(), next.clone(), bytes.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count as u64 {
                        break;
                    }
                    let body = app("bulk", &format!("app-{i:06}"));
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("create");
                    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
                    bytes.fetch_add(response.bytes().await.expect("body").len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("loader");
    }
    bytes.load(Ordering::Relaxed)
}

/// The time to list every App in `bulk` in one request (best of three) and how many came back.
async fn list(base: &str) -> (Duration, usize) {
    let client = http();
    let mut best = Duration::MAX;
    let mut items = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let response = client.get(format!("{base}/apis/agora/v1/namespaces/bulk/apps")).send().await.expect("list");
        let code = response.status();
        assert!(code.is_success(), "list: {code} {}", response.text().await.unwrap_or_default());
        let body = response.bytes().await.expect("list body");
        best = best.min(started.elapsed());
        // Count items without decoding the whole list (the client's cost is not the server's).
        items = body.windows(b"\"kind\":\"App\"".len()).filter(|w| *w == b"\"kind\":\"App\"").count();
    }
    (best, items)
}

fn main() {
    if let Ok(spec) = std::env::var(SERVE_ENV) {
        serve_child(&spec);
        return;
    }
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let seconds = std::env::var("AGORA_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let duration = Duration::from_secs(seconds);
    let objects: usize = std::env::var("AGORA_BENCH_OBJECTS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let backends = std::env::var("AGORA_BENCH_BACKENDS").unwrap_or_else(|_| "embedded,etcd".into());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let etcd = EtcdProcess::start();
    let mut rows = Vec::new();
    let (mut split_served, mut split_puts, mut split_txns, mut split_patches) =
        (CpuSplit::default(), CpuSplit::default(), CpuSplit::default(), CpuSplit::default());
    runtime.block_on(async {
        for backend in ["embedded", "etcd"].into_iter().filter(|b| backends.contains(b)) {
            let server = Apiserver::start((backend == "etcd").then_some(&etcd));
            let (p50, p99) = watch_latency(&server.base).await;
            let rate = if backend == "etcd" {
                // The etcd-backed apiserver and raw etcd alternate, so etcd's drift falls on both.
                let raw = etcd_client::Client::connect([etcd.endpoint()], None).await.expect("etcd client");
                // Raw etcd writes the same bytes the apiserver stores for such an App (defaults, managedFields).
                let created = http()
                    .post(format!("{}/apis/agora/v1/namespaces/raw/apps", server.base))
                    .header("content-type", "application/json")
                    .body(app("raw", "c0123456789abcdef-63-12345"))
                    .send()
                    .await
                    .expect("create");
                let stored = created.bytes().await.expect("created App");
                let (mut served, mut direct) = (0.0, 0.0);
                let pids = (etcd.pid().expect("etcd runs"), server.child.id());
                let slice = duration / ETCD_ROUNDS * 2;
                for round in 0..ETCD_ROUNDS {
                    // The four take turns, in a rotating order.
                    for turn in (0..4).map(|t| (t + round) % 4) {
                        match turn {
                            0 => {
                                let rate = split_served.measure(pids, creates(&server.base, "load", slice)).await;
                                served += rate / f64::from(ETCD_ROUNDS);
                            }
                            1 => {
                                let rate = split_puts.measure(pids, raw_etcd_puts(&raw, stored.clone(), slice)).await;
                                direct += rate / f64::from(ETCD_ROUNDS);
                            }
                            2 => {
                                split_txns.measure(pids, raw_etcd_creates(&raw, stored.clone(), slice)).await;
                            }
                            _ => {
                                split_patches.measure(pids, patches(&server.base, "patch", slice)).await;
                            }
                        }
                    }
                }
                format!("{served:.0} | {direct:.0} ({:.0}%)", 100.0 * served / direct)
            } else {
                format!("{:.0} | —", creates(&server.base, "load", duration).await)
            };
            let before = server.rss();
            let json = load(&server.base, objects).await;
            let after = server.rss();
            let (listed, items) = list(&server.base).await;
            assert_eq!(items, objects, "the list holds every object");
            let per_object = (after.saturating_sub(before)) as f64 / objects as f64;
            let json_per_object = json as f64 / objects as f64;
            rows.push(format!(
                "| {backend} | {rate} | {p50:.2} / {p99:.2} | {:.0} ms | {:.0} MiB → {:.0} MiB: {per_object:.0} B/object ({json_per_object:.0} B JSON, {:+.0} B) |",
                listed.as_secs_f64() * 1000.0,
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                per_object - json_per_object,
            ));
        }
    });
    println!(
        "| store | creates/s, 64 clients | raw etcd puts/s, 64 writers (apiserver / raw) | watch p50 / p99 ms, {WATCHERS} watchers | list {objects} | apiserver RSS, empty → {objects} objects |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    if backends.contains("etcd") {
        println!();
        println!(
            "| etcd writes, 64 concurrent | ops/s | etcd cores (CPU per op) | apiserver cores (CPU per op) | load generator cores (CPU per op) | cores in all |"
        );
        println!("|---|---|---|---|---|---|");
        println!("{}", split_served.row("creates through the apiserver"));
        println!("{}", split_puts.row("raw etcd puts"));
        println!("{}", split_txns.row("raw etcd creates (put if absent, the apiserver's transaction)"));
        println!("{}", split_patches.row("merge patches through the apiserver (64 Apps)"));
        println!();
        println!(
            "creates through the apiserver / raw etcd creates: {:.0}%",
            100.0 * (split_served.ops / split_served.wall) / (split_txns.ops / split_txns.wall).max(1.0)
        );
    }
    drop(etcd);
}
