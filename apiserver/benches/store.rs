//! Store benchmark: put throughput with 1, 16 and 64 concurrent writers (1 KiB values) and watch latency
//! (put → event, p50/p99), on the embedded store, the etcd backend, and raw etcd through the same client in the same
//! run — so the etcd backend's overhead is a ratio, not a guess. etcd's watch latency is measured with previous
//! values (etcd reads each back), without them (as the apiserver's watch cache watches etcd), and raw.
//!
//! Run: `cargo bench -p agora-apiserver --bench store` (etcd is started on a free loopback port). Knobs:
//! `AGORA_BENCH_SECONDS` (time per throughput measurement, default 3), `AGORA_BENCH_WRITERS` (default `1,16,64`),
//! `AGORA_BENCH_BACKENDS` (default `embedded,etcd`; `etcd` measures the backend and raw etcd side by side),
//! `AGORA_BENCH_DIR` (where the embedded store's file goes, default `/var/tmp`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore, EtcdStore, Store, WatchEvent};
use agora_e2e::EtcdProcess;
use bytes::Bytes;
use futures::StreamExt;

const WATCH_SAMPLES: usize = 2_000;

mod common;

use common::{Throughput, percentile};

/// `writers` tasks put 1 KiB values (each to its own 1,000 keys) as fast as they can for `duration`.
async fn throughput<F, Fut>(writers: usize, duration: Duration, put: F) -> Throughput
where
    F: Fn(String, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let value = Bytes::from(vec![b'v'; 1024]);
    common::throughput(writers, duration, move |w, i| put(format!("/bench/w{w}/{}", i % 1000), value.clone())).await
}

/// [`throughput`] of puts through a store.
async fn throughput_of(store: Arc<dyn Store>, writers: usize, duration: Duration) -> Throughput {
    throughput(writers, duration, move |key, value| {
        let store = store.clone();
        async move {
            store.put(&key, value).await.expect("put");
        }
    })
    .await
}

/// Rounds in which the etcd backend and raw etcd alternate (B R, R B, ...), so etcd's own drift over time falls on
/// both equally.
const ETCD_ROUNDS: u32 = 4;

/// Sequential put → watch event latency.
async fn watch_latency(store: &dyn Store, previous: bool) -> (f64, f64) {
    let mut watch =
        if previous { store.watch("/latency/", 0).await } else { store.watch_changes("/latency/", 0).await }
            .expect("watch");
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

/// The same through the etcd client directly, without previous values.
async fn raw_watch_latency(client: &etcd_client::Client) -> (f64, f64) {
    let mut client = client.clone();
    let options = etcd_client::WatchOptions::new().with_prefix();
    let mut stream = client.watch("/raw-latency/", Some(options)).await.expect("raw watch");
    let _created = stream.message().await.expect("raw watch created");
    let mut samples = Vec::with_capacity(WATCH_SAMPLES);
    for i in 0..WATCH_SAMPLES + 100 {
        let started = Instant::now();
        let key = format!("/raw-latency/k{}", i % 10);
        client.put(key.as_str(), "x", None).await.expect("raw put");
        'event: loop {
            let message = stream.message().await.expect("raw watch open").expect("raw watch event");
            if message.events().iter().any(|e| e.kv().is_some_and(|kv| kv.key() == key.as_bytes())) {
                break 'event;
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

        let backends = std::env::var("AGORA_BENCH_BACKENDS").unwrap_or_else(|_| "embedded,etcd".into());
        let (with_embedded, with_etcd) = (backends.contains("embedded"), backends.contains("etcd"));
        // Latency first, while the machine is quiet: after the throughput phases etcd is still busy on disk.
        println!("| watch latency, put → event | p50 ms | p99 ms |");
        println!("|---|---|---|");
        if with_embedded {
            let (p50, p99) = watch_latency(embedded.as_ref(), true).await;
            println!("| embedded | {p50:.3} | {p99:.3} |");
        }
        if with_etcd {
            let (p50, p99) = watch_latency(backend.as_ref(), true).await;
            println!("| etcd backend, with previous values | {p50:.3} | {p99:.3} |");
            let (p50, p99) = watch_latency(backend.as_ref(), false).await;
            println!("| etcd backend, without (the watch cache's) | {p50:.3} | {p99:.3} |");
            let (p50, p99) = raw_watch_latency(&raw).await;
            println!("| raw etcd, without | {p50:.3} | {p99:.3} |");
        }
        println!();
        let writers: Vec<usize> = std::env::var("AGORA_BENCH_WRITERS")
            .unwrap_or_else(|_| "1,16,64".into())
            .split(',')
            .filter_map(|w| w.trim().parse().ok())
            .collect();
        let cell = |t: &mut Option<Throughput>| t.as_mut().map_or("—".to_owned(), |t| format!("{:.0} ({:.2})", t.per_second(), t.p99_ms()));
        println!("| writers | embedded puts/s (p99 ms) | etcd backend puts/s (p99 ms) | raw etcd puts/s (p99 ms) | etcd backend / raw |");
        println!("|---|---|---|---|---|");
        // The embedded store first, on its own: etcd's background disk work must not land in its figures. The etcd
        // backend and raw etcd are then measured back to back at each concurrency, so their ratio is like for like.
        let mut embedded_results = Vec::new();
        for &writers in &writers {
            embedded_results.push(if with_embedded {
                Some(throughput_of(embedded.clone(), writers, duration).await)
            } else {
                None
            });
        }
        for (&writers, mut e) in writers.iter().zip(embedded_results) {
            let (mut b, mut r) = (None, None);
            if with_etcd {
                let (mut backend_total, mut raw_total) = (Throughput::default(), Throughput::default());
                let slice = duration / ETCD_ROUNDS * 2;
                for round in 0..ETCD_ROUNDS {
                    for backend_turn in if round % 2 == 0 { [true, false] } else { [false, true] } {
                        if backend_turn {
                            backend_total.merge(throughput_of(backend.clone(), writers, slice).await);
                        } else {
                            let client = raw.clone();
                            raw_total.merge(
                                throughput(writers, slice, move |k, v| {
                                    let mut client = client.clone();
                                    async move {
                                        client.put(k, v.to_vec(), None).await.expect("raw etcd put");
                                    }
                                })
                                .await,
                            );
                        }
                    }
                }
                (b, r) = (Some(backend_total), Some(raw_total));
            }
            let ratio = match (&b, &r) {
                (Some(b), Some(r)) => format!("{:.0}%", 100.0 * b.per_second() / r.per_second()),
                _ => "—".to_owned(),
            };
            println!("| {writers} | {} | {} | {} | {ratio} |", cell(&mut e), cell(&mut b), cell(&mut r));
        }
    });
    drop(etcd);
}
