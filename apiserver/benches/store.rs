//! Store benchmark: put throughput with 1, 16 and 64 concurrent writers (1 KiB values) and watch latency
//! (put → event, p50/p99), on the embedded store, the etcd backend, and raw etcd through the same client in the same
//! run — so the etcd backend's overhead is a ratio, not a guess.
//!
//! Run: `cargo bench -p agora-apiserver --bench store` (etcd is started on a free loopback port). Set
//! `AGORA_BENCH_SECONDS` to change the time per throughput measurement (default 3).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore, EtcdStore, Store, WatchEvent};
use agora_e2e::EtcdProcess;
use bytes::Bytes;
use futures::StreamExt;

const WRITERS: [usize; 3] = [1, 16, 64];
const WATCH_SAMPLES: usize = 2_000;

struct Throughput {
    per_second: f64,
    p99_ms: f64,
}

/// `writers` tasks put 1 KiB values as fast as they can for `duration` (after a short warm-up).
async fn throughput<F, Fut>(writers: usize, duration: Duration, put: F) -> Throughput
where
    F: Fn(String, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let value = Bytes::from(vec![b'v'; 1024]);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (put, value, measuring, stop) = (put.clone(), value.clone(), measuring.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    put(format!("/bench/w{w}/{}", i % 1000), value.clone()).await;
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
        latencies.extend(task.await.expect("writer"));
    }
    latencies.sort_unstable();
    Throughput { per_second: latencies.len() as f64 / elapsed.as_secs_f64(), p99_ms: percentile(&latencies, 0.99) }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Sequential put → watch event latency.
async fn watch_latency(store: &dyn Store) -> (f64, f64) {
    let mut watch = store.watch("/latency/", 0).await.expect("watch");
    let mut samples = Vec::with_capacity(WATCH_SAMPLES);
    for i in 0..WATCH_SAMPLES + 100 {
        let started = Instant::now();
        let key = format!("/latency/k{}", i % 10);
        store.put(&key, Bytes::from_static(b"x")).await.expect("put");
        loop {
            match watch.next().await.expect("watch open").expect("watch event") {
                WatchEvent::Put { kv, .. } if kv.key == key => break,
                _ => {}
            }
        }
        if i >= 100 {
            samples.push(started.elapsed());
        }
    }
    samples.sort_unstable();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn main() {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let seconds = std::env::var("AGORA_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let etcd = EtcdProcess::start();
    runtime.block_on(async {
        let dir = tempfile::tempdir_in(std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into())).expect("bench dir");
        let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("embedded store"));
        let backend: Arc<dyn Store> = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.expect("etcd backend"));
        let raw = etcd_client::Client::connect([etcd.endpoint()], None).await.expect("etcd client");

        println!("| writers | embedded puts/s (p99 ms) | etcd backend puts/s (p99 ms) | raw etcd puts/s (p99 ms) | etcd backend / raw |");
        println!("|---|---|---|---|---|");
        for writers in WRITERS {
            let store = embedded.clone();
            let e = throughput(writers, duration, move |k, v| {
                let store = store.clone();
                async move {
                    store.put(&k, v).await.expect("embedded put");
                }
            })
            .await;
            let store = backend.clone();
            let b = throughput(writers, duration, move |k, v| {
                let store = store.clone();
                async move {
                    store.put(&k, v).await.expect("etcd backend put");
                }
            })
            .await;
            let client = raw.clone();
            let r = throughput(writers, duration, move |k, v| {
                let mut client = client.clone();
                async move {
                    client.put(k, v.to_vec(), None).await.expect("raw etcd put");
                }
            })
            .await;
            println!(
                "| {writers} | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.0}% |",
                e.per_second,
                e.p99_ms,
                b.per_second,
                b.p99_ms,
                r.per_second,
                r.p99_ms,
                100.0 * b.per_second / r.per_second
            );
        }
        println!();
        println!("| watch latency, put → event | p50 ms | p99 ms |");
        println!("|---|---|---|");
        let (p50, p99) = watch_latency(embedded.as_ref()).await;
        println!("| embedded | {p50:.3} | {p99:.3} |");
        let (p50, p99) = watch_latency(backend.as_ref()).await;
        println!("| etcd backend | {p50:.3} | {p99:.3} |");
    });
    drop(etcd);
}
