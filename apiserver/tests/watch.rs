//! Watches over HTTP: the lifecycle on both stores (synthetic ADDED, resume, selectors, including objects that move
//! into or out of a selection), the edges (410 when too old, initial events, timeouts, SSE), and a client too slow to
//! keep up being cut off without holding back the others.

mod common;

use std::sync::Arc;

use agora_apiserver::server::ApiConfig;
use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore, EtcdStore, SharedStore};
use common::{APPS, Server, app, read_events, status};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["object"]["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn watch_lifecycle(server: &Server) {
    let (_, created) = server.post(APPS, app("one")).await;
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    // Without a revision: the current objects as ADDED, then changes.
    let fresh = server.http.get(format!("{}{APPS}?watch=true", server.base)).send().await.unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    let resumed =
        server.http.get(format!("{}{APPS}?watch=true&resourceVersion={rv}", server.base)).send().await.unwrap();
    let selected = server
        .http
        .get(format!("{}{APPS}?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dtwo", server.base))
        .send()
        .await
        .unwrap();
    server.post(APPS, app("two")).await;
    server.patch(&format!("{APPS}/one"), "application/merge-patch+json", json!({"spec": {"instances": 2}})).await;
    server.delete(&format!("{APPS}/one")).await;
    server.post("/apis/agora/v1/namespaces/elsewhere/apps", app("three")).await;
    server.delete(&format!("{APPS}/two")).await;

    let expected_after_rv = [("ADDED", "two"), ("MODIFIED", "one"), ("DELETED", "one"), ("DELETED", "two")]
        .map(|(t, n)| (t.to_owned(), n.to_owned()));
    let events = read_events(fresh, 5).await;
    assert_eq!(summary(&events[..1]), [("ADDED".to_owned(), "one".to_owned())], "synthetic ADDED first");
    assert_eq!(summary(&events[1..]), expected_after_rv, "then the changes, other namespaces filtered out");
    let events = read_events(resumed, 4).await;
    assert_eq!(summary(&events), expected_after_rv, "resumed from the create's resourceVersion");
    let revisions: Vec<i64> =
        events.iter().map(|e| e["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    assert_eq!(events[1]["object"]["spec"]["instances"], 2);
    let events = read_events(selected, 2).await;
    assert_eq!(summary(&events), [("ADDED".to_owned(), "two".to_owned()), ("DELETED".to_owned(), "two".to_owned())]);

    // An object modified into a label selection arrives as ADDED, out of it as DELETED (with its new state).
    let (_, four) = server.post(APPS, app("four")).await;
    let rv = four["metadata"]["resourceVersion"].as_str().unwrap();
    let canaries = server
        .http
        .get(format!("{}{APPS}?watch=true&resourceVersion={rv}&labelSelector=tier%3Dcanary", server.base))
        .send()
        .await
        .unwrap();
    let label = |tier: &str| json!({"metadata": {"labels": {"tier": tier}}});
    let four_path = format!("{APPS}/four");
    server.patch(&four_path, "application/merge-patch+json", json!({"spec": {"instances": 2}})).await;
    server.patch(&four_path, "application/merge-patch+json", label("canary")).await;
    server.patch(&four_path, "application/merge-patch+json", json!({"spec": {"instances": 3}})).await;
    server.patch(&four_path, "application/merge-patch+json", label("web")).await;
    server.patch(&four_path, "application/merge-patch+json", json!({"spec": {"instances": 4}})).await;
    server.delete(&four_path).await;
    let events = read_events(canaries, 3).await;
    let expected =
        [("ADDED", "four"), ("MODIFIED", "four"), ("DELETED", "four")].map(|(t, n)| (t.to_owned(), n.to_owned()));
    assert_eq!(summary(&events), expected);
    assert_eq!(events[1]["object"]["spec"]["instances"], 3);
    assert_eq!(events[2]["object"]["metadata"]["labels"]["tier"], "web", "the DELETED event carries the new state");
}

#[tokio::test]
async fn watch_lifecycle_on_the_embedded_store() {
    watch_lifecycle(&Server::embedded().await).await;
}

#[tokio::test]
async fn watch_lifecycle_on_etcd() {
    watch_lifecycle(&Server::etcd().await).await;
}

/// A watch from a revision older than the cache (here: written before this apiserver started) is served from the
/// store's history, then follows the cache, missing nothing and repeating nothing; a compacted one is a 410.
async fn resume_from_before_the_cache(store: SharedStore, keep: Box<dyn std::any::Any + Send + Sync>) {
    let earlier = Server::on(store.clone(), Box::new(()), ApiConfig::default()).await;
    let (_, a) = earlier.post(APPS, app("a")).await;
    let rv_a = a["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    earlier.post(APPS, app("b")).await;
    let mut canary = app("c");
    canary["metadata"]["labels"]["tier"] = json!("canary");
    earlier.post(APPS, canary).await;
    // Another apiserver on the same store: its caches start after those writes.
    let server = Server::on(store.clone(), keep, ApiConfig::default()).await;
    let watch = |selector: &str| {
        let url = format!("{}{APPS}?watch=true&resourceVersion={rv_a}{selector}", server.base);
        server.http.get(url).send()
    };
    let all = watch("").await.unwrap();
    let canaries = watch("&labelSelector=tier%3Dcanary").await.unwrap();
    // Changes after the watches opened, through both servers, quickly (the join races them).
    for name in ["d", "e", "f"] {
        server.post(APPS, app(name)).await;
    }
    earlier
        .patch(&format!("{APPS}/c"), "application/merge-patch+json", json!({"metadata": {"labels": {"tier": "web"}}}))
        .await;
    server.delete(&format!("{APPS}/a")).await;
    let events = read_events(all, 7).await;
    let expected = [
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("ADDED", "d"),
        ("ADDED", "e"),
        ("ADDED", "f"),
        ("MODIFIED", "c"),
        ("DELETED", "a"),
    ];
    assert_eq!(summary(&events), expected.map(|(t, n)| (t.to_owned(), n.to_owned())));
    let revisions: Vec<i64> =
        events.iter().map(|e| e["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "in order, once each: {revisions:?}");
    let events = read_events(canaries, 2).await;
    assert_eq!(summary(&events), [("ADDED", "c"), ("DELETED", "c")].map(|(t, n)| (t.to_owned(), n.to_owned())));
    // A later change still arrives (the watch now follows the cache).
    let after = watch("").await.unwrap();
    server.post(APPS, app("g")).await;
    let events = read_events(after, 8).await;
    assert_eq!(summary(&events[7..]), [("ADDED".to_owned(), "g".to_owned())]);

    // What the store has compacted is gone: 410.
    let current = *revisions.last().unwrap();
    store.compact(current).await.unwrap();
    let old = watch("").await.unwrap();
    let events = read_events(old, 1).await;
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410)),
        "{events:?}"
    );
    assert_eq!(events[0]["object"]["reason"], "Expired");
}

const OFFERS: &str = "/apis/agora/v1/offers";
const TASKS: &str = "/apis/agora/v1/namespaces/default/tasks";

/// Accepts a fresh offer with tasks of these names: one store transaction creating them all at one revision.
async fn accept(server: &Server, offer: &str, tasks: &[&str]) {
    let spec = json!({"framework": "f", "agent": "n1", "resources": {"cpus": 8.0, "mem": 4096.0}});
    let (code, body) = server
        .post(OFFERS, json!({"apiVersion": "agora/v1", "kind": "Offer", "metadata": {"name": offer}, "spec": spec}))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|name| json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"cmd": "true", "cpus": 0.1, "mem": 8}}))
        .collect();
    let (code, body) = server.post(&format!("{OFFERS}/{offer}/accept"), json!({ "tasks": tasks })).await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

/// Several objects written in one transaction share a revision: every watcher gets every one of them — resumed from
/// the cache, live, and served from the store's history before joining the cache.
async fn one_transaction_of_many(store: SharedStore, keep: Box<dyn std::any::Any + Send + Sync>) {
    let earlier = Server::on(store.clone(), Box::new(()), ApiConfig::default()).await;
    let (_, list) = earlier.get(TASKS).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    accept(&earlier, "o1", &["x1", "x2", "x3"]).await;
    let watch = |server: &Server, from: &str| {
        server.http.get(format!("{}{TASKS}?watch=true&resourceVersion={from}", server.base)).send()
    };
    let resumed = watch(&earlier, &rv).await.unwrap();
    let (_, now) = earlier.get(TASKS).await;
    let live = watch(&earlier, now["metadata"]["resourceVersion"].as_str().unwrap()).await.unwrap();
    let server = Server::on(store, keep, ApiConfig::default()).await;
    let from_store = watch(&server, &rv).await.unwrap();
    accept(&earlier, "o2", &["y1", "y2"]).await;
    accept(&server, "o3", &["z1", "z2"]).await;
    let names = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{} {}", e["type"].as_str().unwrap(), e["object"]["metadata"]["name"].as_str().unwrap()))
            .collect()
    };
    let all = ["x1", "x2", "x3", "y1", "y2", "z1", "z2"].map(|n| format!("ADDED {n}"));
    assert_eq!(names(read_events(resumed, 7).await), all, "resumed from the cache");
    assert_eq!(names(read_events(live, 4).await), all[3..], "live");
    assert_eq!(names(read_events(from_store, 7).await), all, "from the store, then the cache");
}

#[tokio::test]
async fn one_transaction_of_many_objects_reaches_every_watcher_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap());
    one_transaction_of_many(store, Box::new(dir)).await;
}

#[tokio::test]
async fn one_transaction_of_many_objects_reaches_every_watcher_on_etcd() {
    let etcd = tokio::task::spawn_blocking(agora_e2e::EtcdProcess::start).await.unwrap();
    let store: SharedStore = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
    one_transaction_of_many(store, Box::new(etcd)).await;
}

#[tokio::test]
async fn a_watch_resumes_from_before_the_cache_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap());
    resume_from_before_the_cache(store, Box::new(dir)).await;
}

#[tokio::test]
async fn a_watch_resumes_from_before_the_cache_on_etcd() {
    let etcd = tokio::task::spawn_blocking(agora_e2e::EtcdProcess::start).await.unwrap();
    let store: SharedStore = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
    resume_from_before_the_cache(store, Box::new(etcd)).await;
}

#[tokio::test]
async fn watch_edges_initial_events_timeout_and_sse() {
    let server = Server::embedded().await;
    server.post(APPS, app("a")).await;
    server.post(APPS, app("b")).await;
    let first = server.http.get(format!("{}{APPS}?watch=true&timeoutSeconds=1", server.base)).send().await.unwrap();
    let events = read_events(first, 10).await;
    assert_eq!(events.len(), 2, "two synthetic ADDED, then the stream ends at the timeout: {events:?}");

    let initial = server
        .http
        .get(format!(
            "{}{APPS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
            server.base
        ))
        .send()
        .await
        .unwrap();
    let events = read_events(initial, 3).await;
    assert_eq!(summary(&events[..2]), [("ADDED".to_owned(), "a".to_owned()), ("ADDED".to_owned(), "b".to_owned())]);
    assert_eq!(events[2]["type"], "BOOKMARK");
    assert_eq!(events[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert!(events[2]["object"]["metadata"]["resourceVersion"].as_str().is_some());

    let sse = server
        .http
        .get(format!("{}{APPS}?watch=true&timeoutSeconds=1", server.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let text = sse.text().await.unwrap();
    assert!(text.starts_with("event: ADDED\ndata: {"), "{text}");
    assert_eq!(text.matches("\n\n").count(), 2, "{text}");
    status(&server.get(&format!("{APPS}?watch=true&timeoutSeconds=soon")).await, 400, "BadRequest");
}

#[tokio::test]
async fn a_slow_client_is_cut_off_without_holding_back_the_others() {
    // A backlog of 8 events. Between the server and a client that reads nothing sit a channel of 64 events and the
    // socket buffers (~3 MiB here): 600 objects of 16 KiB overflow them twice over.
    let server = Server::embedded_with(agora_apiserver::server::ApiConfig::default().watch_backlog(8)).await;
    let (_, first) = server.post(APPS, app("seed")).await;
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let url = format!("{}{APPS}?watch=true&resourceVersion={rv}", server.base);
    let slow = server.http.get(&url).send().await.unwrap();
    let fast = server.http.get(&url).send().await.unwrap();
    assert_eq!((slow.status(), fast.status()), (StatusCode::OK, StatusCode::OK));
    let writes = 600;
    let fast_reader = tokio::spawn(read_events(fast, writes));
    let padding = "x".repeat(16 * 1024);
    for i in 0..writes {
        let mut big = app(&format!("big-{i}"));
        big["metadata"]["annotations"] = json!({ "padding": padding });
        let (code, body) = server.post(APPS, big).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
    }
    // The fast client saw every write, in order.
    let events = fast_reader.await.unwrap();
    assert_eq!(events.len(), writes);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e["type"] == "ADDED" && e["object"]["metadata"]["name"] == format!("big-{i}"))
    );
    // The slow one, reading now, gets what was buffered for it and then an ERROR event: 410, list again.
    let events = read_events(slow, writes + 1).await;
    let last = events.last().unwrap();
    assert!(events.len() < writes, "the slow client was cut off before the end: {} events", events.len());
    assert_eq!((last["type"].clone(), last["object"]["code"].clone()), (json!("ERROR"), json!(410)), "{last}");
    let message = last["object"]["message"].as_str().unwrap();
    assert!(message.contains("fell") && message.contains("behind"), "{message}");
}
