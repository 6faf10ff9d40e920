//! What authorization costs on the create path: 64 clients creating Apps through an apiserver that requires tokens
//! (embedded store, plain HTTP on loopback, in this process), alternately as the admin (in `system:masters`, never
//! checked against RBAC) and as a principal whose every create is checked against a policy of 200 RoleBindings naming
//! it (in other namespaces, scanned before the one that allows it) and 200 naming others.
//!
//! Run: `cargo bench -p agora-apiserver --bench rbac`. Knobs: `AGORA_BENCH_SECONDS` (per measurement, default 3),
//! `AGORA_BENCH_ROUNDS` (default 3), `AGORA_BENCH_DIR` (default `/var/tmp`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod common;

use agora_apiserver::server::{ApiConfig, router};
use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore, SharedStore};
use reqwest::Client;
use serde_json::{Value, json};

const CLIENTS: usize = 64;
const BINDINGS: usize = 200;
const ADMIN: &str = "bench-admin-token";
const USER: &str = "bench-user-token";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn post(client: &Client, base: &str, token: &str, path: &str, body: &Value) -> reqwest::StatusCode {
    let response = client.post(format!("{base}{path}")).bearer_auth(token).json(body).send().await.expect("post");
    response.status()
}

/// Creates Apps in namespace `bench` presenting `token` with 64 clients for `duration`; creates per second.
async fn creates(base: &str, token: &'static str, duration: Duration) -> f64 {
    let client = Client::builder().pool_max_idle_per_host(CLIENTS * 2).build().expect("http client");
    let url = format!("{base}/apis/agora/v1/namespaces/bench/apps");
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let run = CALLS.fetch_add(1, Ordering::Relaxed);
    let done = common::throughput(CLIENTS, duration, move |w, i| {
        let (client, url) = (client.clone(), url.clone());
        let body = format!(
            r#"{{"apiVersion":"agora/v1","kind":"App","metadata":{{"name":"c{run}-{w}-{i}","namespace":"bench"}},"spec":{{"cmd":"sleep 1","instances":0}}}}"#
        );
        async move {
            let response = client
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("create");
            assert_eq!(response.status(), reqwest::StatusCode::CREATED, "{}", response.text().await.unwrap_or_default());
        }
    })
    .await;
    done.per_second()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks what is here; nothing is a test.
    }
    let seconds = Duration::from_secs(knob("AGORA_BENCH_SECONDS", 3));
    let rounds = knob("AGORA_BENCH_ROUNDS", 3);
    let parent = std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = tempfile::tempdir_in(parent).expect("bench dir");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store: SharedStore = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let app = router(store, ApiConfig::default().token(Some(ADMIN.to_owned())));
        tokio::spawn(agora_tls::serve(listener, app, None, agora_tls::Limits::default(), std::future::pending()));
        let client = Client::new();

        // The principal, and 2 × 200 bindings: 200 naming it elsewhere, 200 naming others; then the one that allows.
        let token = json!({"apiVersion": "agora/v1", "kind": "Token", "metadata": {"name": "bench"},
            "spec": {"principal": "bench", "sha256": agora_apiserver::auth::digest_hex(USER)}});
        assert!(post(&client, &base, ADMIN, "/apis/agora/v1/tokens", &token).await.is_success());
        let binding = |namespace: &str, name: &str, user: &str, role: &str| {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": name, "namespace": namespace}, "subjects": [{"kind": "User", "name": user}],
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}})
        };
        for i in 0..BINDINGS {
            for (user, name) in [("bench", format!("bench-{i}")), (&*format!("user-{i}"), format!("other-{i}"))] {
                let namespace = format!("ns-{i}");
                let path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings");
                assert!(post(&client, &base, ADMIN, &path, &binding(&namespace, &name, user, "view")).await.is_success());
            }
        }
        let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings";
        assert!(post(&client, &base, ADMIN, path, &binding("bench", "bench-edits", "bench", "edit")).await.is_success());
        // The policy follows the store: wait until the principal may create.
        let probe = json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "probe", "namespace": "bench"}, "spec": {"cmd": "x", "instances": 0}});
        while !post(&client, &base, USER, "/apis/agora/v1/namespaces/bench/apps", &probe).await.is_success() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        println!("rbac: {CLIENTS} clients creating Apps, {} RoleBindings, {} s per measurement", 2 * BINDINGS + 1, seconds.as_secs());
        let (mut admin, mut user) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            admin.push(creates(&base, ADMIN, seconds).await);
            user.push(creates(&base, USER, seconds).await);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let show = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" / ");
        println!();
        println!("| creates/s, 64 clients | rounds | mean |");
        println!("|---|---|---|");
        println!("| admin (system:masters: no RBAC check) | {} | {:.0} |", show(&admin), mean(&admin));
        println!("| a principal checked against {} bindings | {} | {:.0} |", 2 * BINDINGS + 1, show(&user), mean(&user));
        println!();
        println!("checked / admin: {:.1}% (target ≥ 95%)", 100.0 * mean(&user) / mean(&admin));
    });
}
