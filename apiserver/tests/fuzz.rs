//! Property test over the request path: arbitrary bodies (raw bytes, arbitrary JSON, and valid objects with fields
//! replaced by arbitrary values), arbitrary query strings and every write verb (create, replace, merge / JSON /
//! apply / strategic patch, `/status`, `/scale`, `accept`, delete) never make the server panic or answer 5xx; every
//! failure is a `Status` whose code is the HTTP code.
//!
//! Bodies include amplifiers: JSON patches that copy a large value over and over, YAML nested thousands of levels
//! deep, and YAML alias bombs. Whatever they do, the stored object stays within the object limit.
//!
//! The router is called in process (no sockets), over one embedded store per run. `PROPTEST_CASES` sets the number
//! of cases (default 256).

use std::sync::Arc;
use std::time::Duration;

use agora_apiserver::server::{ApiConfig, router};
use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore};
use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// Field names the server looks at, so arbitrary objects reach past the first check.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "generateName",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "resourceVersion",
    "uid",
    "managedFields",
    "manager",
    "operation",
    "fieldsV1",
    "fieldsType",
    "spec",
    "status",
    "instances",
    "cmd",
    "args",
    "cpus",
    "mem",
    "disk",
    "ports",
    "portDefinitions",
    "replicas",
    "healthChecks",
    "constraints",
    "tasks",
    "refuseSeconds",
    "op",
    "path",
    "value",
    "from",
    "propagationPolicy",
];

/// JSON pointers into an App that admission and patching care about.
const POINTERS: &[&str] = &[
    "",
    "/apiVersion",
    "/kind",
    "/metadata",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/labels",
    "/metadata/resourceVersion",
    "/metadata/managedFields",
    "/metadata/finalizers",
    "/metadata/ownerReferences",
    "/metadata/deletionTimestamp",
    "/spec",
    "/spec/instances",
    "/spec/cmd",
    "/spec/args",
    "/spec/cpus",
    "/spec/mem",
    "/spec/portDefinitions",
    "/spec/healthChecks",
    "/spec/constraints",
    "/spec/upgradeStrategy",
    "/status",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => proptest::sample::select(KEYS).prop_map(str::to_owned), 1 => "[a-zA-Z:/.~0-9-]{0,12}"]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        proptest::sample::select(
            &["agora/v1", "App", "x", "", "Apply", "Update", "/spec/cmd", "replace", "test", "-1"][..]
        )
        .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn valid_app() -> Value {
    json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {"cmd": "sleep 1", "instances": 2, "portDefinitions": [{"port": 0}]}})
}

/// A valid App with a few fields replaced (or added) by arbitrary values.
fn mutated_app() -> impl Strategy<Value = Value> {
    proptest::collection::vec((proptest::sample::select(POINTERS), json_value()), 1..4).prop_map(|changes| {
        let mut app = valid_app();
        for (pointer, value) in changes {
            if pointer.is_empty() {
                app = value;
                continue;
            }
            let (parent, last) = pointer.rsplit_once('/').unwrap_or_default();
            if let Some(Value::Object(map)) = app.pointer_mut(parent) {
                map.insert(last.to_owned(), value);
            }
        }
        app
    })
}

/// A JSON patch that adds a large value and copies it around: each copy can double the document.
fn amplifying_patch() -> impl Strategy<Value = Vec<u8>> {
    let op = prop_oneof![
        4 => (0..40usize).prop_map(|i| json!({"op": "copy", "from": "/spec/env", "path": format!("/spec/env/k{i}")})),
        1 => (0..40usize).prop_map(|i| json!({"op": "copy", "from": "/spec", "path": format!("/metadata/labels/l{i}")})),
        1 => (0..40usize).prop_map(|i| json!({"op": "move", "from": format!("/spec/env/k{i}"), "path": "/spec/env/m"})),
        1 => Just(json!({"op": "test", "path": "/spec/env", "value": {}})),
        1 => Just(json!({"op": "remove", "path": "/spec/env"})),
    ];
    (100..200_000usize, proptest::collection::vec(op, 0..40)).prop_map(|(size, ops)| {
        let mut patch = vec![json!({"op": "add", "path": "/spec/env", "value": {"a": "x".repeat(size)}})];
        patch.extend(ops);
        serde_json::to_vec(&patch).unwrap()
    })
}

/// YAML nested deep in flow or block style, or an alias bomb.
fn amplifying_yaml() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0..200_000usize).prop_map(|n| format!("a: {}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        (0..3000usize).prop_map(|n| (0..n).map(|i| format!("{}a:\n", " ".repeat(i))).collect::<String>().into_bytes()),
        (1..40usize).prop_map(|levels| {
            let mut yaml = String::from("apiVersion: agora/v1\nkind: App\nmetadata: {name: x}\nspec:\n  cmd: x\n  env:\n    a0: &a0 \"xxxxxxxxxx\"\n");
            for i in 1..levels {
                yaml.push_str(&format!("    a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}]\n", p = i - 1));
            }
            yaml.into_bytes()
        }),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => amplifying_patch(),
        1 => amplifying_yaml(),
        3 => mutated_app().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => Just(b"apiVersion: agora/v1\nkind: App\nmetadata: {name: x}\nspec: {cmd: [unclosed\n".to_vec()),
    ]
}

/// (method, path under the group, content type)
const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "namespaces/default/apps", "application/json"),
    ("PUT", "namespaces/default/apps/x", "application/json"),
    ("PATCH", "namespaces/default/apps/x", "application/merge-patch+json"),
    ("PATCH", "namespaces/default/apps/x", "application/json-patch+json"),
    ("PATCH", "namespaces/default/apps/x", "application/apply-patch+yaml"),
    ("PATCH", "namespaces/default/apps/x", "application/strategic-merge-patch+json"),
    ("PUT", "namespaces/default/apps/x/status", "application/json"),
    ("PATCH", "namespaces/default/apps/x/status", "application/merge-patch+json"),
    ("PATCH", "namespaces/default/apps/x/status", "application/apply-patch+yaml"),
    ("PATCH", "namespaces/default/apps/x/scale", "application/merge-patch+json"),
    ("PUT", "namespaces/default/apps/x/scale", "application/json"),
    ("POST", "offers/o/accept", "application/json"),
    ("DELETE", "namespaces/default/apps/x", "application/json"),
    ("GET", "namespaces/default/apps", ""),
    ("POST", "frameworks", "application/json"),
];

fn query() -> impl Strategy<Value = String> {
    let parameter = prop_oneof![
        Just("fieldManager"),
        Just("force"),
        Just("fieldValidation"),
        Just("labelSelector"),
        Just("fieldSelector"),
        Just("limit"),
        Just("continue"),
        Just("resourceVersion"),
        Just("propagationPolicy"),
        Just("dryRun"),
        Just("resourceVersionMatch"),
        Just("watch"),
    ];
    let value = prop_oneof![
        Just("true".to_owned()),
        Just("Strict".to_owned()),
        Just("Warn".to_owned()),
        Just("Ignore".to_owned()),
        Just("a%3Db".to_owned()),
        Just("tier+in+%28a%2Cb%29".to_owned()),
        Just("metadata.name%3Dx".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        "[a-zA-Z0-9%=,!()]{0,10}",
    ];
    proptest::collection::vec((parameter, value), 0..3)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"))
}

#[test]
fn no_request_makes_the_server_fail() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap());
        router(store, ApiConfig::default())
    });
    let call = |method: &str, path: &str, content_type: &str, body: Vec<u8>| {
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("/apis/agora/v1/{path}"))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        let app = app.clone();
        let watching = path.contains("watch=");
        runtime.block_on(async move {
            let response = app.oneshot(request).await.unwrap();
            let code = response.status();
            // A watch that was granted streams until its timeout: read what it sent in a moment. Any other body
            // must end.
            let body = axum::body::to_bytes(response.into_body(), usize::MAX);
            match tokio::time::timeout(Duration::from_secs(if watching { 1 } else { 30 }), body).await {
                Ok(bytes) => (code, bytes.unwrap()),
                Err(_) if watching && code.is_success() => (code, axum::body::Bytes::new()),
                Err(_) => panic!("{path}: the response body did not end within 30 s"),
            }
        })
    };
    let offer = json!({"apiVersion": "agora/v1", "kind": "Offer", "metadata": {"name": "o"}, "spec": {"framework": "f", "agent": "a", "resources": {"cpus": 4, "mem": 4096, "ports": [[31000, 31010]]}}});
    let config = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(route in proptest::sample::select(ROUTES), query in query(), body in body())| {
        // Objects to update: recreated when an earlier case deleted them (a conflict when they exist).
        call("POST", "namespaces/default/apps", "application/json", serde_json::to_vec(&valid_app()).unwrap());
        call("POST", "offers", "application/json", serde_json::to_vec(&offer).unwrap());
        let (method, path, content_type) = route;
        let path = if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") };
        let (code, answer) = call(method, &path, content_type, body.clone());
        prop_assert!(code.as_u16() < 500, "{method} {path} answered {code}: {}\nbody: {}", String::from_utf8_lossy(&answer), String::from_utf8_lossy(&body));
        if code.is_client_error() {
            let status: Value = serde_json::from_slice(&answer).map_err(|e| TestCaseError::fail(format!("{code} without JSON: {e}")))?;
            prop_assert_eq!(&status["kind"], "Status", "{}", status);
            prop_assert_eq!(status["code"].as_u64(), Some(u64::from(code.as_u16())), "{}", status);
        }
        let (_, stored) = call("GET", "namespaces/default/apps/x", "", Vec::new());
        prop_assert!(stored.len() <= agora_apiserver::api::MAX_OBJECT_BYTES + 64, "the app grew to {} bytes", stored.len());
    });
}
