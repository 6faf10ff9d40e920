//! The dashboard in a real headless Chromium at scale: 10,000 hollow agents and 10,000 Apps on one apiserver.
//!
//! - the overview's time to interactive (from navigation to every agent listed and the page drawn), and the time
//!   one scroll of the agent grid takes to redraw;
//! - the apps list's time to interactive with every App;
//! - event → DOM: an App's `spec.instances` written through the API, until the apps list shows the new count
//!   (a MutationObserver in the page stamps the moment; both clocks are this machine's), p50/p99/max.
//!
//! `cargo bench -p agora-cli --bench dashboard`; knobs `AGORA_BENCH_AGENTS`, `AGORA_BENCH_APPS`,
//! `AGORA_BENCH_EVENTS`.

#[path = "../../e2e/tests/common/browser.rs"]
mod browser;
#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agora_client::{Api, Client, Config, Patch, PatchParams};
use agora_schemas::App;
use browser::{Chromium, eval, wait_for};
use common::knob;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(300);

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks what is here; nothing is a test.
    }
    let agents = knob("AGORA_BENCH_AGENTS", 10_000);
    let apps = knob("AGORA_BENCH_APPS", 10_000);
    let events = knob("AGORA_BENCH_EVENTS", 200);
    // 10,000 simulated machines heartbeating every 5 s are 2,000 writes a second on the same two cores as the
    // apiserver and the browser; a real cluster's apiserver has machines of its own. The default spreads them over
    // 30 s; AGORA_BENCH_HEARTBEAT_SECONDS=5 measures the page under the full load.
    let heartbeat = knob("AGORA_BENCH_HEARTBEAT_SECONDS", 30);
    let parent = std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::tempdir_in(parent).expect("bench dir");
    // The secure default, as users run it: HTTPS with HTTP/2, which carries all of a page's watches on one
    // connection (a browser opens at most six HTTP/1.1 connections to a server).
    let port = agora_e2e::free_port();
    let data = dir.path().join("data");
    let _apiserver = common::agora(&[
        "apiserver",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
    ]);
    let kubeconfig = data.join("kubeconfig");
    while !kubeconfig.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Client::new(Config::from_kubeconfig(&kubeconfig, None).expect("kubeconfig")).expect("client");
    let token = std::fs::read_to_string(data.join("token")).expect("the token").trim().to_owned();
    let url = format!("https://127.0.0.1:{port}");
    let count = agents.to_string();
    let kubeconfig_arg = kubeconfig.to_str().expect("a UTF-8 path");
    let _hollow = common::agora(&[
        "agent",
        "--kubeconfig",
        kubeconfig_arg,
        "--hollow",
        &count,
        "--name-prefix",
        "h-",
        "--resources",
        "cpus:4;mem:4096;disk:1000",
    ]);
    let registered: Api<agora_schemas::Agent> = Api::all(client.clone());
    while registered.list(&agora_client::ListParams::default()).await.map(|l| l.items.len()).unwrap_or(0) < agents {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let api: Api<App> = Api::namespaced(client.clone(), "default");
    let intents: Vec<serde_json::Value> = (0..apps)
        .map(|i| {
            json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": format!("app-{i:05}")},
                   "spec": {"cmd": "sleep 3600", "instances": 1, "cpus": 0.1, "mem": 32}})
        })
        .collect();
    common::apply_all(&api, intents).await;
    println!(
        "dashboard: {agents} hollow agents (heartbeats every {heartbeat} s), {apps} apps (no controllers: the objects as stored)"
    );

    let chromium = Chromium::launch().await;
    // The token goes where the prompt puts it (this tab's sessionStorage); then the overview loads afresh, timed
    // from that navigation.
    let page = chromium.open(&format!("{url}/ui/#/")).await;
    wait_for(&page, "the token prompt", "document.getElementById('token-dialog').open", WITHIN).await;
    eval(&page, &format!("sessionStorage.setItem('agora.token', {}); location.reload(); true", json!(token))).await;
    let agent_count = format!("Number(document.querySelector('[data-testid=agent-count]')?.textContent) === {agents}");
    wait_for(&page, "every agent on the overview", &agent_count, WITHIN).await;
    let overview = eval(&page, "window.__agoraRendered").await.as_f64().unwrap_or(f64::NAN);
    let scroll = eval(
        &page,
        "(() => { const v = document.querySelector('.virtual'); const t = performance.now(); \
         v.scrollTop = v.scrollHeight / 2; v.dispatchEvent(new Event('scroll')); return performance.now() - t; })()",
    )
    .await
    .as_f64()
    .unwrap_or(f64::NAN);
    let tiles = eval(&page, "document.querySelectorAll('.tile').length").await;
    // Of which: the agents' list requests, from the page's own resource timing.
    let listing = eval(
        &page,
        "(() => { const r = performance.getEntriesByType('resource').filter(e => e.name.includes('/agents?limit')); \
         return r.length ? [Math.min(...r.map(e => e.startTime)), Math.max(...r.map(e => e.responseEnd)), \
         r.reduce((s, e) => s + e.encodedBodySize, 0)] : null; })()",
    )
    .await;
    if let Some([start, end, bytes]) =
        listing.as_array().map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect::<Vec<_>>()).as_deref()
    {
        println!(
            "overview: the agents' list from {start:.0} to {end:.0} ms ({:.1} MB); drawn {:.0} ms after it arrived",
            bytes / 1e6,
            overview - end
        );
    }
    println!(
        "overview: interactive {overview:.0} ms after navigation; a scroll redraws in {scroll:.1} ms ({tiles} tiles drawn of {agents})"
    );

    // The apps list, loaded afresh in the same tab (the token is this tab's).
    eval(&page, "location.hash = '#/apps'; location.reload(); true").await;
    wait_for(
        &page,
        "the apps list",
        "document.body.dataset.ready === 'true' && document.querySelectorAll('.list-row').length > 2",
        WITHIN,
    )
    .await;
    let list = eval(&page, "window.__agoraRendered").await.as_f64().unwrap_or(f64::NAN);
    println!("apps list: interactive {list:.0} ms after navigation with {apps} apps");

    // Event → DOM: the first row is app-00000; each write of its instances is stamped when the row shows it.
    eval(
        &page,
        "window.__marks = []; new MutationObserver(() => { const c = document.querySelector('[data-testid=instances]'); \
         if (c) window.__marks.push([Date.now(), c.textContent]); }).observe(document.getElementById('main'), \
         {subtree: true, childList: true, characterData: true}); true",
    )
    .await;
    let mut latencies = Vec::with_capacity(events);
    for i in 0..events {
        let instances = 2 + i;
        let patch = Patch::Merge(json!({"spec": {"instances": instances}}));
        let sent = now_ms();
        api.patch("app-00000", &PatchParams::default(), &patch).await.expect("patch");
        let expected = format!("0/{instances} running");
        let shown = wait_for(
            &page,
            "the new count on the apps list",
            &format!("(window.__marks.find(m => m[1] === '{expected}') || [0])[0]"),
            WITHIN,
        )
        .await
        .as_f64()
        .unwrap_or(f64::NAN);
        latencies.push(shown - sent);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "event → DOM ({events} writes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
}
