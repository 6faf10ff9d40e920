//! Churn benchmark: one large object rewritten again and again, as a controller rewrites a big object's status.
//!
//! A CronJob whose command is 500 KiB gets 10,000 status writes (merge patches of `status.successCount`, one client,
//! back to back) through an apiserver on the embedded store, with a watcher reading every event. Every 1,000 writes
//! it prints the data file's size and the apiserver's resident memory; then the size once the store has been
//! reopened (which gives the free pages back). What the bounds promise: the file stops growing (the history kept
//! is at most 256 MiB of written values), and memory stays flat (the watch caches hold at most 64 MiB of recent
//! events in the store and 32 MiB per kind in the apiserver).
//!
//! Run: `cargo bench -p agora-apiserver --bench churn`. Knobs: `AGORA_BENCH_WRITES` (default 10000),
//! `AGORA_BENCH_OBJECT_KIB` (default 500), `AGORA_BENCH_DIR` (the store's directory's parent, default `/var/tmp`).

use std::time::{Duration, Instant};

mod common;

use common::{Apiserver, SERVE_ENV, serve_child};
use futures::StreamExt;

/// The allocator of the `agora` binary, so the child apiserver is measured as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn file_bytes(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join(agora_apiserver::store::DATA_FILE)).map_or(0, |m| m.len())
}

fn main() {
    if let Ok(spec) = std::env::var(SERVE_ENV) {
        serve_child(&spec);
        return;
    }
    let writes = env_or("AGORA_BENCH_WRITES", 10_000);
    let kib = env_or("AGORA_BENCH_OBJECT_KIB", 500);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let server = Apiserver::start(None);
    let dir = server.dir.as_ref().expect("embedded").path().to_path_buf();
    let base = server.base.clone();
    let server_ref = &server;
    let rows = runtime.block_on(async move {
        let client = reqwest::Client::new();
        let jobs = format!("{base}/apis/agora/v1/namespaces/default/cronjobs");
        let command = format!("echo {}", "x".repeat(kib * 1024));
        let job = serde_json::json!({
            "apiVersion": "agora/v1", "kind": "CronJob",
            "metadata": {"name": "big", "namespace": "default"},
            "spec": {"schedule": "R/2026-01-01T00:00:00Z/PT1H", "disabled": true, "command": command},
        });
        let created = client.post(&jobs).json(&job).send().await.expect("create");
        assert!(created.status().is_success(), "create: {}", created.text().await.unwrap_or_default());
        let body: serde_json::Value = created.json().await.expect("created");
        let rv = body["metadata"]["resourceVersion"].as_str().expect("resourceVersion").to_owned();
        // A watcher, as a controller would keep: it must see every write.
        let watch = client.get(format!("{jobs}?watch=true&resourceVersion={rv}")).send().await.expect("watch");
        let watcher = tokio::spawn(async move {
            let mut stream = watch.bytes_stream();
            let (mut events, mut tail) = (0usize, Vec::new());
            while let Some(Ok(chunk)) = stream.next().await {
                tail.extend_from_slice(&chunk);
                while let Some(end) = tail.iter().position(|b| *b == b'\n') {
                    tail.drain(..=end);
                    events += 1;
                }
                if events >= writes {
                    break;
                }
            }
            events
        });
        let mut rows = vec![(0, file_bytes(&dir), server_ref.rss(), 0.0)];
        let status = format!("{jobs}/big/status");
        let started = Instant::now();
        let mut batch = Instant::now();
        for i in 1..=writes {
            let patch = serde_json::json!({"status": {"successCount": i}});
            let response = client
                .patch(&status)
                .header("content-type", "application/merge-patch+json")
                .body(patch.to_string())
                .send()
                .await
                .expect("status write");
            assert!(response.status().is_success(), "write {i}: {}", response.text().await.unwrap_or_default());
            let _ = response.bytes().await;
            if i % 1000 == 0 || i == writes {
                rows.push((i, file_bytes(&dir), server_ref.rss(), batch.elapsed().as_secs_f64()));
                batch = Instant::now();
            }
        }
        let elapsed = started.elapsed();
        let events = tokio::time::timeout(Duration::from_secs(60), watcher).await.expect("watcher").expect("watch");
        (rows, elapsed, events)
    });
    let (rows, elapsed, events) = rows;
    let rss_after = server.rss();
    println!(
        "{writes} status writes of a {kib} KiB CronJob in {:.1} s ({:.1} ms each); the watcher saw {events} events",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / writes as f64
    );
    println!("| writes | data file (MiB) | apiserver memory (MiB) | ms per write (last 1,000) |");
    println!("|---:|---:|---:|---:|");
    for (i, bytes, rss, seconds) in &rows {
        println!("| {i} | {:.1} | {:.0} | {:.2} |", mib(*bytes), mib(*rss), seconds);
    }
    println!("apiserver resident memory after the writes: {:.0} MiB", mib(rss_after));
    let dir = server.stop().expect("dir");
    let before = file_bytes(dir.path());
    let reopened = Apiserver::serve(dir.path().display().to_string(), Some(dir));
    let path = reopened.dir.as_ref().expect("dir").path().to_path_buf();
    println!(
        "data file when the apiserver stopped: {:.1} MiB; after it started again: {:.1} MiB (resident memory {:.0} MiB)",
        mib(before),
        mib(file_bytes(&path)),
        mib(reopened.rss())
    );
}
