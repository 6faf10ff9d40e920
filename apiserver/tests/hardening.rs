//! What a hostile or careless client sends, each answered with a 4xx `Status` and nothing written: a JSON patch that
//! doubles the document at every operation, YAML nested a million levels deep (while other requests go on),
//! duplicate keys, numbers JSON cannot hold or no machine has, a body without its kind, a patch renaming the object,
//! query parameters that mean nothing, a watch from the future, oversized targets and headers, and clients that
//! send slowly or never finish. And the store: a data file emptied behind the apiserver's back is refused, and a
//! snapshot taken during writes restores every acknowledged write.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use agora_apiserver::server::ApiConfig;
use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore, RangeRequest, Store};
use common::{APPS, Server, app, status};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn rss_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 =
        text.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_patch_that_doubles_the_document_is_refused_before_it_grows() {
    let server = Server::embedded().await;
    server.post(APPS, app("base")).await;
    let mut patch = vec![json!({"op": "add", "path": "/spec/env", "value": {"a": "x".repeat(1000)}})];
    patch.extend((0..40).map(|i| json!({"op": "copy", "from": "/spec/env", "path": format!("/spec/env/k{i}")})));
    let before = rss_bytes();
    let answer = server.patch(&format!("{APPS}/base"), "application/json-patch+json", Value::Array(patch)).await;
    let message = status(&answer, 413, "RequestEntityTooLarge");
    assert!(message.contains("would make the object larger than 1500000 bytes (at operation 11)"), "{message}");
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 50 << 20, "the server grew by {} MiB", grown >> 20);
    let (_, stored) = server.get(&format!("{APPS}/base")).await;
    assert!(stored["spec"].get("env").is_none(), "nothing was written: {stored}");
    // Nor can a merge patch within the body limit make a stored object larger than it.
    let half = |c: &str| json!({"spec": {"env": {c: c.repeat(800 << 10)}}});
    let answer = server.patch(&format!("{APPS}/base"), "application/merge-patch+json", half("A")).await;
    assert_eq!(answer.0, StatusCode::OK);
    let answer = server.patch(&format!("{APPS}/base"), "application/merge-patch+json", half("B")).await;
    let message = status(&answer, 413, "RequestEntityTooLarge");
    assert!(message.contains("app base would be") && message.contains("the limit is 1500000"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_nested_a_million_levels_deep_is_refused_while_parsing() {
    let server = Arc::new(Server::embedded().await);
    server.post(APPS, app("probe")).await;
    // YAML nested as deep as the body limit allows: refused while parsing, each of four at once.
    let depth = 1_500_000;
    let nested = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth));
    let deep: Vec<_> = (0..4)
        .map(|i| {
            let (server, body) = (server.clone(), nested.clone().into_bytes());
            tokio::spawn(async move {
                server.apply(&format!("{APPS}/deep{i}"), "m", false, &String::from_utf8(body).unwrap()).await
            })
        })
        .collect();
    for answer in futures::future::join_all(deep).await {
        let message = status(&answer.unwrap(), 400, "BadRequest");
        assert!(message.contains("nested deeper than 100 levels"), "{message}");
    }
}

/// An HTTP/1.1 request over a new connection, read to its end: how long it took, and the status line.
fn exchange(address: &str, request: &[u8]) -> (Duration, String) {
    let started = std::time::Instant::now();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    (started.elapsed(), text.lines().next().unwrap_or_default().to_owned())
}

#[test]
fn large_bodies_are_parsed_without_stalling_other_requests() {
    // The server on a runtime of one worker thread: heavy work done on it would hold every other request.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async {
            let server = Server::embedded().await;
            server.post(APPS, app("probe")).await;
            tx.send(server.base.trim_start_matches("http://").to_owned()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let address = rx.recv().unwrap();
    let env: serde_json::Map<String, Value> =
        (0..9_000).map(|i| (format!("VARIABLE_{i:06}"), json!(format!("value-{i:0100}")))).collect();
    let config = |i: usize| {
        serde_yaml_ng::to_string(&json!({"apiVersion": "agora/v1", "kind": "App",
            "metadata": {"name": format!("big{i}")}, "spec": {"cmd": "x", "env": env}}))
        .unwrap()
    };
    // Over a MiB of YAML, and stored (with its managedFields) within the 1.5 MB object limit.
    assert!(config(0).len() > 1 << 20 && config(0).len() < 1_400_000, "{}", config(0).len());
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let heavy: Vec<_> = (0..4)
        .map(|i| {
            let (address, done, body) = (address.clone(), done.clone(), config(i));
            let request = format!(
                "PATCH {APPS}/big{i}?fieldManager=m HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: \
                 application/apply-patch+yaml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            std::thread::spawn(move || {
                let answer = exchange(&address, request.as_bytes());
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                answer
            })
        })
        .collect();
    // Small requests while the four are uploaded, decoded, admitted and stored.
    let get = format!("GET {APPS}/probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut slowest = Duration::ZERO;
    while done.load(std::sync::atomic::Ordering::SeqCst) < 4 {
        let (took, line) = exchange(&address, get.as_bytes());
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        slowest = slowest.max(took);
    }
    let mut quickest = Duration::MAX;
    for handle in heavy {
        let (took, line) = handle.join().unwrap();
        assert!(line.starts_with("HTTP/1.1 201"), "{line}");
        quickest = quickest.min(took);
    }
    // A ratio measured in the same run, not a number of milliseconds: a GET that waited behind a heavy request's
    // decoding or admission would take about as long as that request.
    assert!(slowest * 3 < quickest, "the slowest GET took {slowest:?}; the quickest heavy apply {quickest:?}");
}

#[tokio::test]
async fn bad_input_is_named_and_refused() {
    let server = Server::embedded().await;
    server.post(APPS, app("web")).await;
    let raw = |method: Method, path: String, content_type: &'static str, body: &'static str| {
        let server = &server;
        async move { server.call_raw(method, &path, content_type, Some(body.as_bytes().to_vec())).await }
    };
    // Duplicate keys: refused when strict, a warning otherwise.
    let duplicated = r#"{"apiVersion":"agora/v1","kind":"App","metadata":{"name":"a","name":"b"},"spec":{"cmd":"x"}}"#;
    let message = status(&raw(Method::POST, APPS.into(), "application/json", duplicated).await, 400, "BadRequest");
    assert!(message.contains("duplicate field \"metadata.name\""), "{message}");
    let warned = server
        .http
        .post(format!("{}{APPS}?fieldValidation=Warn", server.base))
        .header("content-type", "application/json")
        .body(duplicated)
        .send()
        .await
        .unwrap();
    assert_eq!(warned.status(), StatusCode::CREATED);
    assert_eq!(warned.headers()["warning"], r#"299 - "duplicate field \"metadata.name\"""#);
    let yaml = "apiVersion: agora/v1\nkind: App\nmetadata: {name: y}\nspec:\n  cmd: x\n  cmd: y\n";
    let message = status(&server.apply(&format!("{APPS}/y"), "m", false, yaml).await, 400, "BadRequest");
    assert!(message.contains("duplicate field \"spec.cmd\""), "{message}");
    // Numbers: .nan and .inf are not numbers; magnitudes beyond any machine; integers beyond their type.
    let nan = "apiVersion: agora/v1\nkind: App\nmetadata: {name: n}\nspec: {cmd: x, mem: .nan}\n";
    let message = status(&server.apply(&format!("{APPS}/n"), "m", false, nan).await, 400, "BadRequest");
    assert!(message.contains("spec.mem: NaN is not a number JSON can hold"), "{message}");
    let huge = json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "h"},
                      "spec": {"cmd": "x", "mem": 1e30, "cpus": 1e-300}});
    let answer = server.post(APPS, huge).await;
    status(&answer, 422, "Invalid");
    let causes: Vec<&str> =
        answer.1["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(causes, ["spec.cpus", "spec.mem"], "{}", answer.1);
    let many = json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "m"},
                      "spec": {"cmd": "x", "instances": 1_000_000_000_000_i64}});
    let message = status(&server.post(APPS, many).await, 422, "Invalid");
    assert!(message.contains("out of range (at most 2147483647)"), "{message}");
    // A body must say what it is.
    let message =
        status(&server.post(APPS, json!({"metadata": {"name": "k"}, "spec": {"cmd": "x"}})).await, 400, "BadRequest");
    assert!(message.contains("apiVersion is missing"), "{message}");
    // Names and uids are not changed by patches and applies.
    let rename = json!([{"op": "replace", "path": "/metadata/name", "value": "other"}]);
    let answer = server.patch(&format!("{APPS}/web"), "application/json-patch+json", rename).await;
    status(&answer, 422, "Invalid");
    assert_eq!(answer.1["details"]["causes"][0]["field"], "metadata.name");
    let foreign = "apiVersion: agora/v1\nkind: App\nmetadata: {name: web, uid: 00000000-0000-0000-0000-000000000000}\n";
    status(&server.apply(&format!("{APPS}/web"), "m", false, foreign).await, 409, "Conflict");
    // Query parameters that mean nothing.
    for query in ["force=maybe", "resourceVersion=abc", "resourceVersion=-5", "resourceVersionMatch=bogus", "watch=yes"]
    {
        let path = if query.starts_with("force") {
            format!("{APPS}/web?fieldManager=m&{query}")
        } else {
            format!("{APPS}?{query}")
        };
        let answer = if query.starts_with("force") {
            raw(Method::PATCH, path, "application/apply-patch+yaml", "apiVersion: agora/v1\nkind: App\n").await
        } else {
            server.get(&path).await
        };
        status(&answer, 400, "BadRequest");
    }
    // Paths: an empty segment names nothing; HEAD works where GET does.
    status(&server.get("/apis/agora/v1/namespaces/default/apps//web").await, 404, "NotFound");
    let head = server.http.head(format!("{}{APPS}/web", server.base)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.bytes().await.unwrap().is_empty());
    // Oversized targets and headers get a Status too.
    let long = format!("{APPS}?labelSelector={}", "a".repeat(20_000));
    let answer = server.get(&long).await;
    assert_eq!((answer.0.as_u16(), answer.1["kind"].as_str()), (414, Some("Status")), "{}", answer.1);
    let mut request = server.http.get(format!("{}{APPS}", server.base));
    for i in 0..20 {
        request = request.header(format!("x-filler-{i}"), "v".repeat(4000));
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 431);
    assert_eq!(answer.json::<Value>().await.unwrap()["kind"], "Status");
    // Beyond what hyper itself reads (a 64 KiB target, a 400 KiB head), its refusals carry a Status as well.
    // (Over a raw connection: HTTP clients refuse to send such targets at all.)
    let address = server.base.trim_start_matches("http://").to_owned();
    for (size, code) in [(100_000, 414_u64), (1_000_000, 431)] {
        let request = format!("GET {APPS}?labelSelector=a%3D{} HTTP/1.1\r\nHost: x\r\n\r\n", "x".repeat(size));
        let address = address.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            // The server answers and closes before it has read everything: send while reading the answer.
            let mut sender = stream.try_clone().unwrap();
            let sending = std::thread::spawn(move || drop(sender.write_all(request.as_bytes())));
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            sending.join().unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        })
        .await
        .unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with(&format!("HTTP/1.1 {code} ")), "a {size}-byte selector: {head}");
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {head}"));
        assert_eq!((body["kind"].as_str(), body["code"].as_u64()), (Some("Status"), Some(code)), "{body}");
        assert!(body["message"].as_str().unwrap().contains("this server reads"), "{body}");
    }
    // Nothing of the refused requests was stored.
    let (_, list) = server.get(APPS).await;
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b", "web"], "only the warned create landed");
}

#[tokio::test]
async fn a_watch_from_a_revision_the_store_has_not_reached_is_refused_after_a_short_wait() {
    let server = Server::embedded().await;
    let (_, created) = server.post(APPS, app("web")).await;
    let current: u64 = created["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let started = std::time::Instant::now();
    let answer = server.get(&format!("{APPS}?watch=true&resourceVersion={}", current + 1000)).await;
    let message = status(&answer, 504, "Timeout");
    assert!(
        message.contains(&format!("Too large resource version: {}, current: {current}", current + 1000)),
        "{message}"
    );
    assert_eq!(answer.1["details"]["causes"][0]["reason"], "ResourceVersionTooLarge");
    assert!(started.elapsed() >= Duration::from_secs(3), "it waited for the store to catch up first");
    // A revision the store has reached is served as usual.
    let (code, _) = server.get(&format!("{APPS}?resourceVersion={current}&resourceVersionMatch=NotOlderThan")).await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap());
    let config = ApiConfig::default().body_read_timeout(Duration::from_millis(500));
    let limits = agora_tls::Limits::default().header_read_timeout(Duration::from_millis(500));
    let server = Server::on_with(store, Box::new(dir), config, limits).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        // A body announced and never finished: 408, with a Status.
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST {APPS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        // Headers that never end, and a connection left idle: both closed by the server.
        let mut slow = std::net::TcpStream::connect(&address).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut rest = Vec::new();
        let closed = slow.read_to_end(&mut rest).is_ok();
        let mut idle = std::net::TcpStream::connect(&address).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut nothing = Vec::new();
        let idle_closed = idle.read_to_end(&mut nothing).is_ok();
        // Kept alive after a request, then idle: closed too.
        let mut kept = std::net::TcpStream::connect(&address).unwrap();
        kept.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut all = Vec::new();
        let kept_closed = kept.read_to_end(&mut all).is_ok();
        assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&all));
        (answer, closed, idle_closed && kept_closed)
    })
    .await
    .unwrap();
    let (answer, closed, idle_closed) = answer;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"kind\":\"Status\"") && answer.contains("did not arrive within 0.5 s"), "{answer}");
    assert!(closed, "a request whose headers never end is closed, not kept");
    assert!(idle_closed, "an idle connection is closed");
}

#[tokio::test]
async fn an_emptied_or_damaged_data_file_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    store.put("/registry/x", bytes::Bytes::from_static(b"{}")).await.unwrap();
    store.close().await.unwrap();
    let file = dir.path().join("agora.redb");
    let open = || async { EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.err().map(|e| e.to_string()) };

    std::fs::File::create(&file).unwrap().set_len(0).unwrap();
    let error = open().await.expect("an empty data file is refused");
    assert!(error.contains("is empty (0 bytes): the store's data is gone"), "{error}");
    assert!(error.contains("agora store restore") && error.contains("--data-dir"), "{error}");
    std::fs::write(&file, b"garbage that is no store").unwrap();
    let error = open().await.expect("a file that is not a store is refused");
    assert!(error.contains("does not begin with a store's header"), "{error}");
    std::fs::remove_file(&file).unwrap();
    let error = open().await.expect("a missing data file where a store was is refused");
    assert!(error.contains("is missing, but") && error.contains("held an Agora store"), "{error}");
    // A fresh directory is a new cluster.
    let fresh = tempfile::tempdir().unwrap();
    EmbeddedStore::open(EmbeddedConfig::new(fresh.path())).await.unwrap().close().await.unwrap();
    assert!(fresh.path().join("agora-store.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_during_writes_restores_every_acknowledged_write() {
    let server = Arc::new(Server::embedded().await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (server, stop) = (server.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let name = format!("w{w}-{i}");
                    let (code, body) = server.post(APPS, app(&name)).await;
                    assert_eq!(code, StatusCode::CREATED, "{body}");
                    let revision: i64 = body["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
                    acknowledged.push((name, revision, std::time::Instant::now()));
                    i += 1;
                }
                acknowledged
            })
        })
        .collect();
    // Let some writes land, then snapshot while they go on.
    while server.get(APPS).await.1["items"].as_array().unwrap().len() < 50 {
        tokio::task::yield_now().await;
    }
    let asked = std::time::Instant::now();
    let response = server.http.get(format!("{}/store/snapshot", server.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let revision: i64 = response.headers()["x-agora-snapshot-revision"].to_str().unwrap().parse().unwrap();
    let bytes = response.bytes().await.unwrap();
    for _ in 0..20 {
        server.post(APPS, app(&format!("after-{}", uuid_like()))).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let work = tempfile::tempdir().unwrap();
    let snapshot = work.path().join("snapshot");
    std::fs::write(&snapshot, &bytes).unwrap();
    let restored_dir = work.path().join("restored");
    assert_eq!(agora_apiserver::store::restore(&snapshot, &restored_dir).await.unwrap(), revision);
    let restored = EmbeddedStore::open(EmbeddedConfig::new(&restored_dir)).await.unwrap();
    let prefix = agora_apiserver::store::KeyLayout::default().namespace_prefix("apps", "default");
    let listed = restored.range(RangeRequest { prefix, start_after: None, limit: None, revision: None }).await.unwrap();
    let names: std::collections::HashSet<String> =
        listed.kvs.iter().map(|kv| kv.key.rsplit('/').next().unwrap().to_owned()).collect();
    let mut before = 0;
    for (name, at, when) in &acknowledged {
        if *when < asked {
            before += 1;
            assert!(names.contains(name), "{name} was acknowledged before the snapshot and is missing");
        }
        assert_eq!(
            names.contains(name),
            *at <= revision,
            "{name} at {at}: in the snapshot exactly when at or below {revision}"
        );
    }
    assert!(before >= 50, "{before}");
    assert!(!names.iter().any(|n| n.starts_with("after-")));
    // Restoring over a store is refused; a file that is not a snapshot is refused and leaves nothing behind.
    assert!(agora_apiserver::store::restore(&snapshot, &restored_dir).await.is_err());
    std::fs::write(work.path().join("junk"), b"not a snapshot").unwrap();
    let junk = agora_apiserver::store::restore(&work.path().join("junk"), &work.path().join("j")).await;
    assert!(junk.unwrap_err().to_string().contains("is not an Agora store snapshot"));
    assert!(!work.path().join("j/agora.redb").exists());
}

fn uuid_like() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

#[tokio::test]
async fn the_bearer_scheme_is_read_in_any_case() {
    let server = Server::embedded_with(ApiConfig::default().token(Some("s3cret".into()))).await;
    for (header, code) in
        [("Bearer s3cret", 200), ("bearer s3cret", 200), ("BEARER s3cret", 200), ("Basic s3cret", 401)]
    {
        let answer =
            server.http.get(format!("{}{APPS}", server.base)).header("authorization", header).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), code, "{header}");
    }
}
