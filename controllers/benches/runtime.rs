//! The controller runtime at scale, against a real apiserver (embedded store, a child process of this benchmark):
//!
//! - **reflector memory**: live heap bytes the reflector's cache holds for 100,000 Apps (counted by an instrumented
//!   allocator, so allocator slack and freed list pages do not count), against the objects' JSON size;
//! - **initial sync**: how fast the watcher lists the 100,000 objects into the cache (objects per second);
//! - **watch event throughput**: 20,000 changes written by 64 clients, and how fast the reflector applies their
//!   events (and how far behind the writers it ends);
//! - **controller pass**: a Controller over 10,000 Apps with a no-op reconciler, from start (list included) until
//!   every object was reconciled once.
//!
//! `cargo bench -p agora-controllers --bench runtime`. Knobs: `AGORA_BENCH_OBJECTS` (100000),
//! `AGORA_BENCH_CONTROLLER_OBJECTS` (10000), `AGORA_BENCH_CHANGES` (20000), `AGORA_BENCH_DIR` (/var/tmp).

use std::alloc::System;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agora_apiserver::server::{Security, ServerConfig, serve};
use agora_apiserver::store::StoreConfig;
use agora_client::{Api, Client, Config, ListParams, Patch, PatchParams, PostParams};
use agora_controllers::runtime::controller::Config as ControllerConfig;
use agora_controllers::runtime::watcher::{self, Event};
use agora_controllers::runtime::{Action, Controller, reflector};
use agora_schemas::App;
use futures::StreamExt;
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Counts every allocation, so the cache's memory is measured exactly.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SERVE_ENV: &str = "AGORA_BENCH_SERVE";
const CLIENTS: usize = 64;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// An App as users write them (the server adds defaults and managedFields, as in production).
fn app(name: &str) -> App {
    serde_json::from_value(json!({
        "apiVersion": "agora/v1", "kind": "App",
        "metadata": {"name": name, "labels": {"tier": "web", "team": "payments"}},
        "spec": {"cmd": "python3 -m http.server $PORT0", "instances": 2, "cpus": 0.5, "mem": 256,
                 "portDefinitions": [{"port": 0, "name": "http"}],
                 "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0}]},
    }))
    .expect("a valid App")
}

struct Apiserver {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Apiserver {
    fn start() -> Self {
        let parent = std::env::var("AGORA_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
        let dir = tempfile::tempdir_in(parent).expect("bench dir");
        let port = agora_e2e::free_port();
        let child = Command::new(std::env::current_exe().expect("bench binary"))
            .env(SERVE_ENV, format!("{port} {}", dir.path().display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("start the apiserver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agora_e2e::http_ok(port, "/readyz") {
            assert!(Instant::now() < deadline, "the apiserver did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_child(spec: &str) {
    let (port, dir) = spec.split_once(' ').expect("port and directory");
    let listen = format!("127.0.0.1:{port}").parse().expect("address");
    let config = ServerConfig {
        listen,
        store: StoreConfig::Embedded(dir.into()),
        prefix: "/registry".into(),
        security: Security::InsecureUnauthenticated,
        audit: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(serve(config, std::future::pending())).expect("serve");
}

/// Runs `op(i)` for `i in 0..count` on 64 concurrent workers.
async fn concurrently<F, Fut>(count: usize, op: F)
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    op(i).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
}

async fn load(apps: &Api<App>, count: usize) {
    let apps = apps.clone();
    concurrently(count, move |i| {
        let apps = apps.clone();
        async move {
            apps.create(&PostParams::default(), &app(&format!("app-{i:06}"))).await.expect("create");
        }
    })
    .await;
}

fn live_bytes(region: &Region<'_, System>) -> i64 {
    let change = region.change();
    // Reallocations are already counted in both (growth as allocated, shrinking as deallocated).
    i64::try_from(change.bytes_allocated).unwrap_or(i64::MAX) - i64::try_from(change.bytes_deallocated).unwrap_or(0)
}

fn main() {
    if let Ok(spec) = std::env::var(SERVE_ENV) {
        serve_child(&spec);
        return;
    }
    let objects = knob("AGORA_BENCH_OBJECTS", 100_000);
    let controller_objects = knob("AGORA_BENCH_CONTROLLER_OBJECTS", 10_000);
    let changes = knob("AGORA_BENCH_CHANGES", 20_000).min(objects);
    let server = Apiserver::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = Client::new(Config::new(&server.url)).expect("client");
        let apps: Api<App> = Api::namespaced(client.clone(), "reflector");
        let started = Instant::now();
        load(&apps, objects).await;
        eprintln!("loaded {objects} Apps in {:.1} s", started.elapsed().as_secs_f64());

        // Reflector: initial sync and memory.
        let region = Region::new(GLOBAL);
        let (store, writer) = reflector::store::<App>();
        let applied = Arc::new(AtomicUsize::new(0));
        let counter = applied.clone();
        let started = Instant::now();
        let watching = tokio::spawn(reflector::reflector(writer, watcher::watcher(apps.clone(), watcher::Config::default())).for_each(
            move |event| {
                if let Ok(Event::Apply(_)) = event {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                async {}
            },
        ));
        store.wait_until_ready().await;
        let sync = started.elapsed();
        assert_eq!(store.len(), objects);
        // Let the list pages' buffers be freed, then count what the cache holds.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cache_bytes = live_bytes(&region);
        let json_bytes: usize = store.state().iter().map(|a| serde_json::to_vec(&**a).map_or(0, |v| v.len())).sum();
        let ratio = cache_bytes as f64 / json_bytes as f64;
        // For comparison: the same objects kept decoded, as a typed map would.
        let typed_region = Region::new(GLOBAL);
        let typed: std::collections::HashMap<_, _> =
            store.state().into_iter().map(|a| (agora_controllers::runtime::ObjectRef::from_object(&*a), a)).collect();
        let typed_bytes = live_bytes(&typed_region);
        drop(typed);

        // Watch event throughput: 64 clients change `changes` objects.
        let started = Instant::now();
        let writer_apps = apps.clone();
        concurrently(changes, move |i| {
            let apps = writer_apps.clone();
            async move {
                let patch = Patch::Merge(json!({"spec": {"instances": 3}}));
                apps.patch(&format!("app-{i:06}"), &PatchParams::default(), &patch).await.expect("patch");
            }
        })
        .await;
        let written = started.elapsed();
        while applied.load(Ordering::Relaxed) < changes {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let seen = started.elapsed();
        watching.abort();
        drop(store);

        // A controller over `controller_objects` Apps with a no-op reconciler.
        let pass_apps: Api<App> = Api::namespaced(client.clone(), "controller");
        load(&pass_apps, controller_objects).await;
        let reconciled = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let controller = Controller::new(pass_apps.clone(), watcher::Config::default())
            .with_config(ControllerConfig::default().concurrency(64));
        let ready_store = controller.store();
        let ready_at = tokio::spawn(async move {
            ready_store.wait_until_ready().await;
            Instant::now()
        });
        let results = controller.run(
            |_app, count: Arc<AtomicUsize>| async move {
                count.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(Action::await_change())
            },
            |_, _, _| Action::await_change(),
            reconciled.clone(),
        );
        let running = tokio::spawn(results.for_each(|_| async {}));
        while reconciled.load(Ordering::Relaxed) < controller_objects {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let pass = started.elapsed();
        let listed = ready_at.await.expect("ready").duration_since(started);
        running.abort();
        let check = pass_apps.list(&ListParams::default().limit(1)).await.expect("list");
        assert!(!check.items.is_empty());

        println!("| measurement | result | target |");
        println!("|---|---|---|");
        println!(
            "| reflector memory, {objects} Apps | {:.1} MiB for {:.1} MiB of JSON: **{ratio:.2}×** ({} B per object) | ≤ 1.5× |",
            cache_bytes as f64 / 1048576.0,
            json_bytes as f64 / 1048576.0,
            cache_bytes / objects as i64
        );
        println!(
            "| the same objects kept typed (for comparison) | {:.1} MiB: {:.2}× | |",
            typed_bytes as f64 / 1048576.0,
            typed_bytes as f64 / json_bytes as f64
        );
        println!(
            "| initial sync (list into the cache), {objects} Apps | {:.2} s, {:.0} objects/s | |",
            sync.as_secs_f64(),
            objects as f64 / sync.as_secs_f64()
        );
        println!(
            "| watch events, {changes} changes from 64 clients | {:.0} events/s applied; the last applied {:.0} ms after the last write | |",
            changes as f64 / seen.as_secs_f64(),
            (seen - written).as_secs_f64() * 1000.0
        );
        println!(
            "| controller no-op pass, {controller_objects} Apps | **{:.0} ms** from start ({:.0} ms listing, {:.0} ms reconciling) | ≤ 1 s |",
            pass.as_secs_f64() * 1000.0,
            listed.as_secs_f64() * 1000.0,
            (pass - listed).as_secs_f64() * 1000.0
        );
    });
}
