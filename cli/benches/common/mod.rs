//! What the benchmarks that run Agora as processes share: knobs, child processes and their CPU and memory, the
//! apiserver's store metrics.

#![allow(dead_code)] // each benchmark uses part of it

use std::time::{Duration, Instant};

pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub use agora_e2e::Proc;

/// `agora args`, as the benchmark's build made it.
pub fn agora(args: &[&str]) -> Proc {
    Proc::quiet(std::path::Path::new(env!("CARGO_BIN_EXE_agora")), args)
}

/// The store's writes so far (transactions and puts), from the apiserver's metrics.
pub fn store_writes(port: u16) -> f64 {
    let metrics = agora_e2e::http_get(port, "/metrics").unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_store_request_duration_seconds_count"))
        .filter(|l| l.contains("operation=\"txn\"") || l.contains("operation=\"put\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `agora apiserver` on the embedded store in `dir`, plain HTTP without authentication (a benchmark on loopback),
/// ready; returns it and its port.
pub fn apiserver(dir: &std::path::Path) -> (Proc, u16) {
    let port = agora_e2e::free_port();
    let data = dir.join("data");
    let listen = format!("127.0.0.1:{port}");
    let apiserver = agora(&[
        "apiserver",
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
        "--insecure-allow-unauthenticated",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agora_e2e::http_ok(port, "/readyz") {
        assert!(Instant::now() < deadline, "the apiserver did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    (apiserver, port)
}

/// `agora agent --hollow count` against `url`, each agent offering `resources`; returns once all have registered.
pub async fn hollow_agents(client: &agora_client::Client, url: &str, count: usize, resources: &str) -> Proc {
    let number = count.to_string();
    let hollow =
        agora(&["agent", "--server", url, "--hollow", &number, "--name-prefix", "h-", "--resources", resources]);
    let agents: agora_client::Api<agora_schemas::Agent> = agora_client::Api::all(client.clone());
    let params = agora_client::ListParams::default();
    while agents.list(&params).await.map(|l| l.items.len()).unwrap_or(0) < count {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    hollow
}

/// Server-side applies `intents` (objects of kind `K`, as JSON) 64 at a time, each retried a few times; returns when
/// all are stored.
pub async fn apply_all<K>(api: &agora_client::Api<K>, intents: Vec<serde_json::Value>)
where
    K: agora_client::Resource,
{
    use futures::StreamExt as _;
    let params = agora_client::PatchParams::apply("bench").force();
    futures::stream::iter(intents)
        .for_each_concurrent(64, |intent| {
            let (api, params) = (api.clone(), params.clone());
            async move {
                let name = intent["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                for attempt in 0..5 {
                    match api.patch(&name, &params, &agora_client::Patch::Apply(&intent)).await {
                        Ok(_) => return,
                        Err(e) if attempt < 4 => {
                            eprintln!("apply {name}: {e}; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => panic!("apply {name}: {e}"),
                    }
                }
            }
        })
        .await;
}
