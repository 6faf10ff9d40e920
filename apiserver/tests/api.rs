//! The REST API over HTTP, against a server on a loopback port: every verb, the error paths (each answers with a
//! `Status`), selectors, pagination, finalizers, the status subresource, discovery and authentication — on the
//! embedded store, and the core paths again on etcd.

mod common;

use std::sync::Arc;

use agora_apiserver::server::{ApiConfig, Security, ServerConfig, ServerError, serve};
use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore, SharedStore, StoreConfig};
use common::{APPS, Server, app, status};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn crud_lifecycle(server: &Server) {
    let (code, created) = server.post(APPS, app("web")).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["generation"], 1);
    assert!(meta["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(meta["creationTimestamp"].as_str().is_some());
    let rv = meta["resourceVersion"].as_str().unwrap().to_owned();
    assert_eq!(created["spec"]["mem"], 128.0, "defaults are applied by the server");

    let (code, got) = server.get(&format!("{APPS}/web")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(got, created);

    let message = status(&server.post(APPS, app("web")).await, 409, "AlreadyExists");
    assert_eq!(message, "apps.agora \"web\" already exists");

    // Replace: the spec change bumps generation; a stale resourceVersion is a conflict.
    let mut changed = got.clone();
    changed["spec"]["instances"] = json!(3);
    let (code, replaced) = server.put(&format!("{APPS}/web"), changed.clone()).await;
    assert_eq!(code, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["metadata"]["generation"], 2);
    assert_ne!(replaced["metadata"]["resourceVersion"], rv);
    let message = status(&server.put(&format!("{APPS}/web"), changed).await, 409, "Conflict");
    assert!(message.contains("the object has been modified"), "{message}");

    // Status is not written through the main resource, and only status through /status.
    let mut with_status = replaced.clone();
    with_status["status"] = json!({ "instances": 3, "tasksRunning": 3 });
    with_status["spec"]["instances"] = json!(4);
    let (code, after) = server.put(&format!("{APPS}/web"), with_status.clone()).await;
    assert_eq!(code, StatusCode::OK, "{after}");
    assert!(after.get("status").is_none(), "status ignored on the main resource: {after}");
    with_status["metadata"]["resourceVersion"] = after["metadata"]["resourceVersion"].clone();
    let (code, after_status) = server.put(&format!("{APPS}/web/status"), with_status).await;
    assert_eq!(code, StatusCode::OK, "{after_status}");
    assert_eq!(after_status["status"]["tasksRunning"], 3);
    assert_eq!(after_status["spec"]["instances"], 4, "spec untouched by /status");
    assert_eq!(
        after_status["metadata"]["generation"], after["metadata"]["generation"],
        "status does not bump generation"
    );

    // Merge patch, JSON patch with a passing and a failing test.
    let (code, patched) =
        server.patch(&format!("{APPS}/web"), "application/merge-patch+json", json!({"spec": {"instances": 5}})).await;
    assert_eq!((code, patched["spec"]["instances"].clone()), (StatusCode::OK, json!(5)), "{patched}");
    assert_eq!(patched["status"]["tasksRunning"], 3, "patching the object keeps status");
    let ops = json!([{"op": "test", "path": "/spec/instances", "value": 5}, {"op": "replace", "path": "/spec/instances", "value": 6}]);
    let (code, patched) = server.patch(&format!("{APPS}/web"), "application/json-patch+json", ops).await;
    assert_eq!((code, patched["spec"]["instances"].clone()), (StatusCode::OK, json!(6)), "{patched}");
    let failing = json!([{"op": "test", "path": "/spec/instances", "value": 99}, {"op": "replace", "path": "/spec/instances", "value": 7}]);
    let message =
        status(&server.patch(&format!("{APPS}/web"), "application/json-patch+json", failing).await, 422, "Invalid");
    assert!(message.contains("the JSON patch cannot be applied"), "{message}");
    let (_, unchanged) = server.get(&format!("{APPS}/web")).await;
    assert_eq!(unchanged["spec"]["instances"], 6, "a failed test applies nothing");
    let stale = json!({"metadata": {"resourceVersion": rv}, "spec": {"instances": 1}});
    status(&server.patch(&format!("{APPS}/web"), "application/merge-patch+json", stale).await, 409, "Conflict");
    let message = status(
        &server.patch(&format!("{APPS}/web"), "application/strategic-merge-patch+json", json!({})).await,
        415,
        "UnsupportedMediaType",
    );
    assert!(message.contains("application/merge-patch+json"), "{message}");
    let message = status(
        &server.patch(&format!("{APPS}/web"), "application/merge-patch+json", json!({"spec": {"cpus": -1}})).await,
        422,
        "Invalid",
    );
    assert!(message.contains("spec.cpus: must be between 0.001 and 100000 (got -1)"), "{message}");
    let (_, status_patch) = server
        .patch(&format!("{APPS}/web/status"), "application/merge-patch+json", json!({"status": {"tasksHealthy": 2}}))
        .await;
    assert_eq!(status_patch["status"]["tasksHealthy"], 2);

    // Delete returns the last state; then it is gone.
    let (code, deleted) = server.delete(&format!("{APPS}/web")).await;
    assert_eq!((code, deleted["metadata"]["name"].clone()), (StatusCode::OK, json!("web")));
    let message = status(&server.get(&format!("{APPS}/web")).await, 404, "NotFound");
    assert_eq!(message, "apps.agora \"web\" not found");
    status(&server.delete(&format!("{APPS}/web")).await, 404, "NotFound");
}

#[tokio::test]
async fn crud_lifecycle_on_the_embedded_store() {
    crud_lifecycle(&Server::embedded().await).await;
}

#[tokio::test]
async fn crud_lifecycle_on_etcd() {
    crud_lifecycle(&Server::etcd().await).await;
}

#[tokio::test]
async fn admission_errors_name_every_field() {
    let server = Server::embedded().await;
    let mut bad = app("web");
    bad["spec"]["cpu"] = json!(1);
    let answer = server.post(APPS, bad).await;
    let message = status(&answer, 422, "Invalid");
    assert!(message.contains("spec.cpu: unknown field \"cpu\" (did you mean \"cpus\"?)"), "{message}");
    assert_eq!(answer.1["details"]["causes"][0]["field"], "spec.cpu");

    let invalid = json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "Bad_Name"}, "spec": {"instances": -1, "mem": 0}});
    let answer = server.post(APPS, invalid).await;
    status(&answer, 422, "Invalid");
    let fields: Vec<&str> =
        answer.1["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["metadata.name", "spec.instances", "spec.cmd", "spec.mem"]);

    let message = status(
        &server.post(APPS, json!({"apiVersion": "agora/v1", "kind": "CronJob", "metadata": {"name": "x"}})).await,
        400,
        "BadRequest",
    );
    assert!(message.contains("this path serves App"), "{message}");
    let mut other_ns = app("web");
    other_ns["metadata"]["namespace"] = json!("prod");
    let message = status(&server.post(APPS, other_ns).await, 400, "BadRequest");
    assert!(message.contains("does not match the namespace on the request"), "{message}");
    let message =
        status(&server.call(Method::POST, APPS, "application/json", Some(json!([1, 2]))).await, 400, "BadRequest");
    assert!(message.contains("must be a JSON object"), "{message}");
    let not_json = server.http.post(format!("{}{APPS}", server.base)).body("{nope").send().await.unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let huge = vec![b' '; 3 * 1024 * 1024 + 10];
    let too_big = server.http.post(format!("{}{APPS}", server.base)).body(huge).send().await.unwrap();
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = too_big.json().await.unwrap();
    assert_eq!(body["reason"], "RequestEntityTooLarge");
    assert_eq!(server.get(APPS).await.1["items"], json!([]), "nothing half-written");
}

#[tokio::test]
async fn unknown_paths_and_verbs_answer_with_status() {
    let server = Server::embedded().await;
    status(&server.get("/apis/agora/v1/namespaces/default/deployments").await, 404, "NotFound");
    status(&server.get("/apis/agora/v1/namespaces/default/agents/x").await, 404, "NotFound");
    status(&server.get("/apis/agora/v1/namespaces/default/apps/web/logs").await, 404, "NotFound");
    status(&server.get("/apis/agora/v1/namespaces/default/leases/l/status").await, 404, "NotFound");
    status(&server.get("/nowhere").await, 404, "NotFound");
    status(&server.call(Method::PUT, APPS, "application/json", Some(app("web"))).await, 405, "MethodNotAllowed");
    status(
        &server.call(Method::POST, &format!("{APPS}/web"), "application/json", Some(app("web"))).await,
        405,
        "MethodNotAllowed",
    );
    let message = status(&server.post("/apis/agora/v1/apps", app("web")).await, 400, "BadRequest");
    assert!(message.contains("namespaced"), "{message}");
}

#[tokio::test]
async fn generate_name_cluster_scope_and_finalizers() {
    let server = Server::embedded().await;
    let generated = json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"generateName": "batch-"}, "spec": {"cmd": "true"}});
    let (code, one) = server.post(APPS, generated.clone()).await;
    assert_eq!(code, StatusCode::CREATED, "{one}");
    let (_, two) = server.post(APPS, generated).await;
    let (a, b) = (one["metadata"]["name"].as_str().unwrap(), two["metadata"]["name"].as_str().unwrap());
    assert!(a.starts_with("batch-") && a.len() == 11 && a != b, "{a} {b}");

    let framework = json!({"apiVersion": "agora/v1", "kind": "Framework", "metadata": {"name": "fw", "finalizers": ["agora.dev/cleanup"]}, "spec": {}});
    let (code, created) = server.post("/apis/agora/v1/frameworks", framework).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["weight"], 1.0);
    // With a finalizer, delete only marks the object.
    let (code, marked) = server.delete("/apis/agora/v1/frameworks/fw").await;
    assert_eq!(code, StatusCode::OK);
    assert!(marked["metadata"]["deletionTimestamp"].as_str().is_some(), "{marked}");
    let (code, still) = server.get("/apis/agora/v1/frameworks/fw").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(still["metadata"]["deletionTimestamp"], marked["metadata"]["deletionTimestamp"]);
    // Removing the last finalizer deletes it.
    let (code, last) = server
        .patch(
            "/apis/agora/v1/frameworks/fw",
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{last}");
    status(&server.get("/apis/agora/v1/frameworks/fw").await, 404, "NotFound");
}

#[tokio::test]
async fn lists_filter_and_page_consistently() {
    let server = Server::embedded().await;
    for i in 0..25 {
        let mut object = app(&format!("a{i:02}"));
        object["metadata"]["labels"] = json!({ "tier": if i % 2 == 0 { "web" } else { "db" }, "n": i.to_string() });
        assert_eq!(server.post(APPS, object).await.0, StatusCode::CREATED);
    }
    server.post("/apis/agora/v1/namespaces/other/apps", app("elsewhere")).await;

    let (_, all) = server.get("/apis/agora/v1/apps").await;
    assert_eq!(all["kind"], "AppList");
    assert_eq!(all["items"].as_array().unwrap().len(), 26, "all namespaces");
    assert!(all["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()));

    let (_, web) = server.get(&format!("{APPS}?labelSelector=tier%3Dweb")).await;
    assert_eq!(web["items"].as_array().unwrap().len(), 13);
    let (_, some) = server.get(&format!("{APPS}?labelSelector=tier+in+%28db%29%2C%21missing%2Cn%21%3D1")).await;
    assert_eq!(some["items"].as_array().unwrap().len(), 11);
    let (_, named) = server.get(&format!("{APPS}?fieldSelector=metadata.name%3Da03")).await;
    assert_eq!(named["items"][0]["metadata"]["name"], "a03");
    let message = status(&server.get(&format!("{APPS}?fieldSelector=spec.cmd%3Dx")).await, 400, "BadRequest");
    assert!(message.contains("field label not supported: \"spec.cmd\""), "{message}");
    status(&server.get(&format!("{APPS}?labelSelector=tier+in+web")).await, 400, "BadRequest");
    status(&server.get(&format!("{APPS}?continue=garbage")).await, 400, "BadRequest");
    status(&server.get(&format!("{APPS}?limit=x")).await, 400, "BadRequest");

    // Pages of 10 web-or-db apps, at one revision, while apps are added and deleted in between.
    let (_, first) = server.get(&format!("{APPS}?limit=10")).await;
    let pinned = first["metadata"]["resourceVersion"].clone();
    let mut names: Vec<String> =
        first["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()).collect();
    let mut token = first["metadata"]["continue"].as_str().unwrap().to_owned();
    server.delete(&format!("{APPS}/a24")).await;
    server.post(APPS, app("a99")).await;
    loop {
        let (_, page) = server.get(&format!("{APPS}?limit=10&continue={token}")).await;
        assert_eq!(page["metadata"]["resourceVersion"], pinned, "every page at the first page's revision");
        names.extend(
            page["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("a{i:02}")).collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn discovery_version_and_openapi() {
    let server = Server::embedded().await;
    let (_, version) = server.get("/version").await;
    assert_eq!((version["major"].clone(), version["minor"].clone()), (json!("1"), json!("32")));
    let (_, groups) = server.get("/apis").await;
    assert_eq!(groups["groups"][0]["name"], "agora");
    let aggregated = server
        .http
        .get(format!("{}/apis", server.base))
        .header("accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")
        .send()
        .await
        .unwrap();
    assert!(aggregated.headers()["content-type"].to_str().unwrap().contains("as=APIGroupDiscoveryList"));
    let aggregated: Value = aggregated.json().await.unwrap();
    let resources = aggregated["items"][0]["versions"][0]["resources"].as_array().unwrap();
    assert!(resources.iter().any(|r| r["resource"] == "apps" && r["scope"] == "Namespaced"));
    assert!(resources.iter().any(|r| r["resource"] == "agents" && r["scope"] == "Cluster"));
    let (_, group) = server.get("/apis/agora/v1").await;
    let names: Vec<&str> = group["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"apps") && names.contains(&"apps/status") && names.contains(&"cronjobs"));
    let (_, index) = server.get("/openapi/v3").await;
    let url = index["paths"]["apis/agora/v1"]["serverRelativeURL"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/openapi/v3/apis/agora/v1?hash="));
    let (_, document) = server.get(&url).await;
    assert_eq!(document["components"]["schemas"]["App"]["x-kubernetes-group-version-kind"][0]["kind"], "App");
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(server.get("/readyz").await.0, StatusCode::OK);
}

/// A request presenting `token`.
async fn call_as(server: &Server, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = server.http.request(method, format!("{}{path}", server.base)).bearer_auth(token);
    if let Some(body) = body {
        let content_type = if body.is_array() { "application/json-patch+json" } else { "application/json" };
        request = request.header("content-type", content_type).body(serde_json::to_vec(&body).unwrap());
    }
    let response = request.send().await.unwrap();
    let code = response.status();
    (code, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn principals_tokens_are_checked_before_they_are_stored_expire_on_time_and_never_change() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap());
    let log = dir.path().join("audit.log");
    let audit = agora_apiserver::audit::AuditLog::open(agora_apiserver::audit::AuditConfig::new(&log)).unwrap();
    let config = ApiConfig::default().token(Some("s3cret".to_owned())).audit(Some(audit));
    let server = Server::on(store, Box::new(dir), config).await;
    const TOKENS: &str = "/apis/agora/v1/tokens";
    let token = |name: &str, digest: &str, expires: Option<jiff::Timestamp>| {
        json!({"apiVersion": "agora/v1", "kind": "Token", "metadata": {"name": name},
               "spec": {"principal": name, "sha256": digest, "expiresAt": expires}})
    };

    let (code, answer) =
        call_as(&server, "s3cret", Method::POST, TOKENS, Some(token("bob", "not-a-digest", None))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["details"]["causes"][0]["field"], "spec.sha256", "{answer}");

    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let digest = agora_apiserver::auth::digest_hex("brief-secret");
    let (code, answer) =
        call_as(&server, "s3cret", Method::POST, TOKENS, Some(token("brief", &digest, Some(expires)))).await;
    assert_eq!(code, StatusCode::CREATED, "{answer}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let (code, _) = call_as(&server, "brief-secret", Method::GET, "/version", None).await;
        if seen.last() != Some(&code) {
            seen.push(code);
        }
        if code == StatusCode::UNAUTHORIZED && seen.contains(&StatusCode::OK) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the token worked, then expired: {seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, [StatusCode::OK, StatusCode::UNAUTHORIZED], "it works at once, until it expires");

    let repoint = json!([{"op": "replace", "path": "/spec/principal", "value": "admin"}]);
    let (code, answer) = call_as(&server, "s3cret", Method::PATCH, &format!("{TOKENS}/brief"), Some(repoint)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("immutable"), "{answer}");

    // The audit log has the refused create (whose principal is known) and the expired token's refusal (whose is not).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let refused_create = lines.iter().any(|l| {
            l["principal"] == "admin" && l["verb"] == "create" && l["resource"] == "tokens" && l["code"] == 422
        });
        let unknown = lines.iter().any(|l| l["principal"].is_null() && l["path"] == "/version" && l["code"] == 401);
        let patched = lines.iter().any(|l| l["verb"] == "patch" && l["name"] == "brief" && l["code"] == 422);
        if refused_create && unknown && patched {
            assert!(!text.contains("brief-secret"), "no token is ever written down");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the audit log has every write and refusal:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap());
    let server = Server::on(store, Box::new(dir), ApiConfig::default().token(Some("s3cret".to_owned()))).await;
    let message = status(&server.get(APPS).await, 401, "Unauthorized");
    assert!(message.contains("bearer token"), "{message}");
    let wrong = server.http.get(format!("{}{APPS}", server.base)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = server.http.get(format!("{}{APPS}", server.base)).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK, "health checks stay open");

    let refused = serve(
        ServerConfig {
            listen: "0.0.0.0:0".parse().unwrap(),
            store: StoreConfig::Embedded(tempfile::tempdir().unwrap().keep()),
            prefix: "registry".into(),
            security: Security::InsecureUnauthenticated,
            audit: None,
        },
        async {},
    )
    .await;
    assert!(matches!(refused, Err(ServerError::Unauthenticated(_))), "{refused:?}");
}

#[tokio::test]
async fn scale_subresource() {
    let server = Server::embedded().await;
    server.post(APPS, app("web")).await;
    let (code, scale) = server.get(&format!("{APPS}/web/scale")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!((scale["kind"].clone(), scale["apiVersion"].clone()), (json!("Scale"), json!("autoscaling/v1")));
    assert_eq!(scale["spec"]["replicas"], 1);
    let (code, scaled) = server
        .patch(&format!("{APPS}/web/scale"), "application/merge-patch+json", json!({"spec": {"replicas": 3}}))
        .await;
    assert_eq!((code, scaled["spec"]["replicas"].clone()), (StatusCode::OK, json!(3)), "{scaled}");
    let (_, object) = server.get(&format!("{APPS}/web")).await;
    assert_eq!((object["spec"]["instances"].clone(), object["metadata"]["generation"].clone()), (json!(3), json!(2)));
    let mut put = scaled.clone();
    put["spec"]["replicas"] = json!(0);
    let (code, zero) = server.put(&format!("{APPS}/web/scale"), put.clone()).await;
    assert_eq!((code, zero["spec"]["replicas"].clone()), (StatusCode::OK, json!(0)));
    status(&server.put(&format!("{APPS}/web/scale"), put).await, 409, "Conflict");
    let message = status(
        &server
            .patch(&format!("{APPS}/web/scale"), "application/merge-patch+json", json!({"spec": {"replicas": -2}}))
            .await,
        422,
        "Invalid",
    );
    assert!(message.contains("spec.replicas: must be a non-negative integer"), "{message}");
    status(
        &server.patch(&format!("{APPS}/web/scale"), "application/json-patch+json", json!({})).await,
        415,
        "UnsupportedMediaType",
    );
    status(&server.get("/apis/agora/v1/namespaces/default/cronjobs/x/scale").await, 404, "NotFound");
    status(&server.get(&format!("{APPS}/missing/scale")).await, 404, "NotFound");
}

#[tokio::test]
async fn field_validation_strict_warn_ignore() {
    let server = Server::embedded().await;
    let mut with_unknown = app("warned");
    with_unknown["spec"]["cpu"] = json!(2);
    with_unknown["metadata"]["nope"] = json!(true);
    status(&server.post(&format!("{APPS}?fieldValidation=Strict"), with_unknown.clone()).await, 422, "Invalid");
    let warned = server
        .http
        .post(format!("{}{APPS}?fieldValidation=Warn", server.base))
        .json(&with_unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(warned.status(), StatusCode::CREATED);
    let warnings: Vec<String> =
        warned.headers().get_all("warning").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(warnings, [r#"299 - "unknown field \"metadata.nope\"""#, r#"299 - "unknown field \"spec.cpu\"""#]);
    let body: Value = warned.json().await.unwrap();
    assert!(body["spec"].get("cpu").is_none(), "the unknown field is not stored");
    with_unknown["metadata"]["name"] = json!("ignored");
    let ignored = server
        .http
        .post(format!("{}{APPS}?fieldValidation=Ignore", server.base))
        .json(&with_unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(ignored.status(), StatusCode::CREATED);
    assert!(ignored.headers().get("warning").is_none());
    // Wrong types are still errors, whatever the mode.
    let mut mistyped = app("typed");
    mistyped["spec"]["cpus"] = json!("lots");
    status(&server.post(&format!("{APPS}?fieldValidation=Ignore"), mistyped).await, 422, "Invalid");
    let patched = server
        .http
        .patch(format!("{}{APPS}/warned?fieldValidation=Warn", server.base))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"spec": {"instance": 3}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(patched.headers()["warning"], r#"299 - "unknown field \"spec.instance\"""#);
    status(&server.post(&format!("{APPS}?fieldValidation=Lenient"), app("x")).await, 400, "BadRequest");
}

const OFFERS: &str = "/apis/agora/v1/offers";
const TASKS: &str = "/apis/agora/v1/namespaces/default/tasks";

async fn offer(server: &Server, name: &str, expires: Option<&str>) {
    let mut spec = json!({"framework": "marathon", "agent": "n1", "hostname": "n1.example",
        "resources": {"cpus": 2.0, "mem": 1024.0, "disk": 100.0, "ports": [[31000, 31010]]}});
    if let Some(expires) = expires {
        spec["expiresAt"] = json!(expires);
    }
    let (code, body) = server
        .post(OFFERS, json!({"apiVersion": "agora/v1", "kind": "Offer", "metadata": {"name": name}, "spec": spec}))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
}

fn task(name: &str, cpus: f64, port: u16) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"},
           "spec": {"cmd": "sleep 100", "cpus": cpus, "mem": 64, "ports": [{"port": port, "name": "http"}]}})
}

async fn accept_lifecycle(server: &Server) {
    offer(server, "o1", None).await;
    // The tasks belong to a real App (the garbage collector removes tasks whose owner does not exist).
    let (_, owner) = server.post(APPS, app("web")).await;
    let mut t1 = task("t1", 0.5, 31000);
    t1["metadata"]["ownerReferences"] = json!([{"apiVersion": "agora/v1", "kind": "App", "name": "web", "uid": owner["metadata"]["uid"], "controller": true}]);
    // Tasks without a user of their own run as their framework's (Mesos' semantics).
    let framework = json!({"apiVersion": "agora/v1", "kind": "Framework", "metadata": {"name": "marathon"},
                           "spec": {"user": "www-data"}});
    assert_eq!(server.post("/apis/agora/v1/frameworks", framework).await.0, StatusCode::CREATED);
    let mut t2 = task("t2", 1.5, 31001);
    t2["spec"]["user"] = json!("1000:1000");
    let (code, accepted) = server.post(&format!("{OFFERS}/o1/accept"), json!({"tasks": [t1, t2]})).await;
    assert_eq!(code, StatusCode::OK, "{accepted}");
    let (_, t2) = server.get(&format!("{TASKS}/t2")).await;
    assert_eq!(t2["spec"]["user"], "1000:1000", "a task's own user wins");
    assert_eq!(accepted["status"]["phase"], "Accepted");
    assert_eq!(accepted["status"]["tasks"], json!(["t1", "t2"]));
    let (_, t1) = server.get(&format!("{TASKS}/t1")).await;
    assert_eq!(
        (t1["spec"]["agent"].clone(), t1["spec"]["framework"].clone(), t1["spec"]["offer"].clone()),
        (json!("n1"), json!("marathon"), json!("o1"))
    );
    assert_eq!(t1["status"]["state"], "Staging");
    assert_eq!(t1["spec"]["user"], "www-data", "the framework's user");
    assert_eq!(t1["metadata"]["ownerReferences"][0]["name"], "web");
    assert_eq!(t1["metadata"]["resourceVersion"], accepted["metadata"]["resourceVersion"], "one transaction");
    assert_eq!(t1["metadata"]["finalizers"], json!(["agora.dev/agent"]), "bound: its agent holds its deletion");
    let (_, on_agent) = server.get(&format!("{TASKS}?fieldSelector=spec.agent%3Dn1%2Cstatus.state%3DStaging")).await;
    assert_eq!(on_agent["items"].as_array().unwrap().len(), 2);

    let message = status(
        &server.post(&format!("{OFFERS}/o1/accept"), json!({"tasks": [task("t3", 0.1, 31002)]})).await,
        409,
        "Conflict",
    );
    assert!(message.contains("the offer is Accepted; an offer is used once"), "{message}");
    status(&server.get(&format!("{TASKS}/t3")).await, 404, "NotFound");

    // Only an acceptance stamps `spec.offer`: a Task written directly cannot pass for a framework's own.
    let mut forged = task("forged", 0.1, 31005);
    forged["apiVersion"] = json!("agora/v1");
    forged["kind"] = json!("Task");
    forged["spec"]["agent"] = json!("n1");
    forged["spec"]["framework"] = json!("marathon");
    forged["spec"]["offer"] = json!("o1");
    let answer = server.post(TASKS, forged.clone()).await;
    let message = status(&answer, 422, "Invalid");
    assert!(message.contains("spec.offer") && message.contains("accepts an offer"), "{message}");
    assert_eq!(answer.1["details"]["causes"][0]["field"], "spec.offer", "{}", answer.1);
    status(&server.get(&format!("{TASKS}/forged")).await, 404, "NotFound");
    forged["spec"]["offer"] = Value::Null;
    assert_eq!(server.post(TASKS, forged).await.0, StatusCode::CREATED, "without it, a direct Task is fine");
    // Bound to an agent, it waits for that agent to release it when deleted — even one the agent never saw.
    let (_, direct) = server.get(&format!("{TASKS}/forged")).await;
    assert_eq!(direct["metadata"]["finalizers"], json!(["agora.dev/agent"]), "{direct}");
    let (code, marked) = server.call(Method::DELETE, &format!("{TASKS}/forged"), "application/json", None).await;
    assert!(code == StatusCode::OK && marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    let released = json!([{"op": "remove", "path": "/metadata/finalizers/0"}]);
    assert_eq!(
        server.patch(&format!("{TASKS}/forged"), "application/json-patch+json", released).await.0,
        StatusCode::OK
    );
    status(&server.get(&format!("{TASKS}/forged")).await, 404, "NotFound");
    let mut forged = task("forged", 0.1, 31005);
    forged["apiVersion"] = json!("agora/v1");
    forged["kind"] = json!("Task");
    forged["spec"]["agent"] = json!("n1");
    forged["spec"]["framework"] = json!("marathon");
    assert_eq!(server.post(TASKS, forged).await.0, StatusCode::CREATED);
    for (target, offer) in [("forged", json!("o1")), ("t1", json!("o2")), ("t1", Value::Null)] {
        let answer = server
            .patch(&format!("{TASKS}/{target}"), "application/merge-patch+json", json!({"spec": {"offer": offer}}))
            .await;
        let message = status(&answer, 422, "Invalid");
        assert!(message.contains("spec.offer"), "{target} ← {offer}: {message}");
    }
    let (_, t1) = server.get(&format!("{TASKS}/t1")).await;
    assert_eq!(t1["spec"]["offer"], "o1", "unchanged");
    let killed = server
        .patch(&format!("{TASKS}/t1"), "application/merge-patch+json", json!({"spec": {"killRequested": true}}))
        .await;
    assert_eq!(killed.0, StatusCode::OK, "other changes to a launched task still go through: {}", killed.1);
}

#[tokio::test]
async fn accept_on_the_embedded_store() {
    accept_lifecycle(&Server::embedded().await).await;
}

#[tokio::test]
async fn accept_on_etcd() {
    accept_lifecycle(&Server::etcd().await).await;
}

#[tokio::test]
async fn accept_refuses_what_the_offer_does_not_cover_and_creates_nothing() {
    let server = Server::embedded().await;
    offer(&server, "o2", None).await;
    let o2 = format!("{OFFERS}/o2/accept");
    let accept = |body: Value| server.post(&o2, body);
    let message =
        status(&accept(json!({"tasks": [task("a", 1.5, 31000), task("b", 1.0, 31001)]})).await, 409, "Conflict");
    assert!(message.contains("the offer has 2 cpus; the tasks need 2.5"), "{message}");
    let message = status(&accept(json!({"tasks": [task("a", 0.5, 32000)]})).await, 409, "Conflict");
    assert!(message.contains("port 32000 is not among the offered ports"), "{message}");
    let answer = accept(json!({"tasks": [task("a", 0.5, 31000), task("b", 0.5, 31000)]})).await;
    status(&answer, 422, "Invalid");
    assert_eq!(answer.1["details"]["causes"][0]["field"], "tasks[1].spec.ports[0].port");
    let mut foreign = task("a", 0.5, 31000);
    foreign["spec"]["agent"] = json!("n2");
    let answer = accept(json!({"tasks": [foreign]})).await;
    assert_eq!(answer.1["details"]["causes"][0]["field"], "tasks[0].spec.agent", "{}", answer.1);
    let mut homeless = task("a", 0.5, 31000);
    homeless["metadata"].as_object_mut().unwrap().remove("namespace");
    let answer = accept(json!({"tasks": [homeless]})).await;
    assert_eq!(answer.1["details"]["causes"][0]["field"], "tasks[0].metadata.namespace");
    let mut broken = task("a", 0.5, 31000);
    broken["spec"]["cmd"] = Value::Null;
    let answer = accept(json!({"tasks": [broken]})).await;
    assert_eq!(answer.1["details"]["causes"][0]["field"], "tasks[0].spec.cmd", "{}", answer.1);
    status(&accept(json!({"tasks": [], "bogus": 1})).await, 422, "Invalid");
    // A task name that exists: 409, and the offer stays usable.
    server.post(OFFERS, json!({"apiVersion": "agora/v1", "kind": "Offer", "metadata": {"name": "o3"}, "spec": {"framework": "marathon", "agent": "n1", "resources": {"cpus": 1, "mem": 128}}})).await;
    let (code, _) = server.post(&format!("{OFFERS}/o3/accept"), json!({"tasks": [{"metadata": {"name": "taken", "namespace": "default"}, "spec": {"cmd": "x", "cpus": 0.1, "mem": 8}}]})).await;
    assert_eq!(code, StatusCode::OK);
    let message = status(&accept(json!({"tasks": [{"metadata": {"name": "taken", "namespace": "default"}, "spec": {"cmd": "x", "cpus": 0.1, "mem": 8}}]})).await, 409, "AlreadyExists");
    assert!(message.contains("tasks.agora \"taken\" already exists"), "{message}");
    let (_, all) = server.get("/apis/agora/v1/tasks").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "nothing half-created: {all}");
    let (_, still) = server.get(&format!("{OFFERS}/o2")).await;
    assert!(still.get("status").is_none(), "still Outstanding");
    // Declining sets a refuse filter.
    let (code, declined) = accept(json!({"tasks": [], "refuseSeconds": 30})).await;
    assert_eq!((code, declined["status"]["phase"].clone()), (StatusCode::OK, json!("Declined")), "{declined}");
    let until: jiff::Timestamp = declined["status"]["refuseUntil"].as_str().unwrap().parse().unwrap();
    let decided: jiff::Timestamp = declined["status"]["decidedAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(until.duration_since(decided).as_secs(), 30);
    // An expired offer is refused.
    offer(&server, "old", Some("2000-01-01T00:00:00Z")).await;
    let message = status(
        &server.post(&format!("{OFFERS}/old/accept"), json!({"tasks": [task("z", 0.1, 31000)]})).await,
        409,
        "Conflict",
    );
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_of_one_offer_succeed_exactly_once() {
    let server = Arc::new(Server::embedded().await);
    offer(&server, "contested", None).await;
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .post(
                        &format!("{OFFERS}/contested/accept"),
                        json!({"tasks": [task(&format!("racer-{i}"), 1.0, 31000)]}),
                    )
                    .await
                    .0
            })
        })
        .collect();
    let mut codes = Vec::new();
    for racer in racers {
        codes.push(racer.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == StatusCode::OK).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == StatusCode::OK || *c == StatusCode::CONFLICT), "{codes:?}");
    let (_, tasks) = server.get("/apis/agora/v1/tasks").await;
    assert_eq!(tasks["items"].as_array().unwrap().len(), 1, "exactly one task per acceptance");
}

/// Polls `path` until `done` holds for its answer, or fails after 10 s.
async fn eventually(
    server: &Server,
    path: &str,
    what: &str,
    done: impl Fn(&(StatusCode, Value)) -> bool,
) -> (StatusCode, Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = server.get(path).await;
        if done(&answer) {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {:?}", answer.1);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An owner App with two dependent Tasks, released by their agent (which this test plays) so that only the collector
/// decides when they go; returns the owner's uid.
async fn family(server: &Server, owner: &str) -> String {
    let (_, created) = server.post(APPS, app(owner)).await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
    for child in ["a", "b"] {
        let body = json!({"apiVersion": "agora/v1", "kind": "Task",
            "metadata": {"name": format!("{owner}-{child}"), "ownerReferences": [{"apiVersion": "agora/v1", "kind": "App", "name": owner, "uid": uid, "controller": true}]},
            "spec": {"agent": "n1", "framework": "marathon", "cmd": "x", "cpus": 0.1, "mem": 8}});
        assert_eq!(server.post(TASKS, body).await.0, StatusCode::CREATED);
        let released = json!({"metadata": {"finalizers": null}});
        let path = format!("{TASKS}/{owner}-{child}");
        assert_eq!(server.patch(&path, "application/merge-patch+json", released).await.0, StatusCode::OK);
    }
    uid
}

fn count(answer: &(StatusCode, Value)) -> usize {
    answer.1["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn garbage_collection_follows_the_propagation_policy() {
    let server = Server::embedded().await;
    // Background (kubectl's default): the owner goes now, its dependents right after.
    family(&server, "bg").await;
    let (code, _) = server
        .call(
            Method::DELETE,
            &format!("{APPS}/bg"),
            "application/json",
            Some(json!({"propagationPolicy": "Background"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    status(&server.get(&format!("{APPS}/bg")).await, 404, "NotFound");
    eventually(&server, &format!("{TASKS}?fieldSelector=metadata.name%3Dbg-a"), "bg's tasks to be collected", |a| {
        count(a) == 0
    })
    .await;
    eventually(&server, &format!("{TASKS}?fieldSelector=metadata.name%3Dbg-b"), "bg's tasks to be collected", |a| {
        count(a) == 0
    })
    .await;

    // Foreground: the owner waits, marked, until its dependents are gone.
    family(&server, "fg").await;
    let (code, marked) = server
        .call(
            Method::DELETE,
            &format!("{APPS}/fg"),
            "application/json",
            Some(json!({"propagationPolicy": "Foreground"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    assert_eq!(marked["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    eventually(&server, &format!("{APPS}/fg"), "fg to be deleted after its tasks", |a| a.0 == StatusCode::NOT_FOUND)
        .await;
    let (_, left) = server.get(TASKS).await;
    assert!(
        !left["items"].as_array().unwrap().iter().any(|t| t["metadata"]["name"].as_str().unwrap().starts_with("fg-")),
        "{left}"
    );

    // Orphan: the dependents stay, without the reference.
    let uid = family(&server, "or").await;
    let (code, _) = server
        .call(Method::DELETE, &format!("{APPS}/or"), "application/json", Some(json!({"propagationPolicy": "Orphan"})))
        .await;
    assert_eq!(code, StatusCode::OK);
    eventually(&server, &format!("{APPS}/or"), "or to be deleted", |a| a.0 == StatusCode::NOT_FOUND).await;
    for child in ["or-a", "or-b"] {
        let (code, task) = server.get(&format!("{TASKS}/{child}")).await;
        assert_eq!(code, StatusCode::OK, "orphans are kept");
        assert!(task["metadata"].get("ownerReferences").is_none(), "no reference to {uid} left: {task}");
    }

    // A dependent whose owner never existed (or is long gone) is collected too.
    let dangling = json!({"apiVersion": "agora/v1", "kind": "Task",
        "metadata": {"name": "dangling", "ownerReferences": [{"apiVersion": "agora/v1", "kind": "App", "name": "ghost", "uid": "no-such-uid"}]},
        "spec": {"agent": "n1", "framework": "marathon", "cmd": "x", "cpus": 0.1, "mem": 8}});
    assert_eq!(server.post(TASKS, dangling).await.0, StatusCode::CREATED);
    // The collector deletes it; its agent (played here) has the last word.
    eventually(&server, &format!("{TASKS}/dangling"), "the dangling task to be marked", |a| {
        a.1["metadata"]["deletionTimestamp"].is_string()
    })
    .await;
    let released = json!({"metadata": {"finalizers": null}});
    server.patch(&format!("{TASKS}/dangling"), "application/merge-patch+json", released).await;
    eventually(&server, &format!("{TASKS}/dangling"), "the dangling task to be collected", |a| {
        a.0 == StatusCode::NOT_FOUND
    })
    .await;

    server.post(APPS, app("policy")).await;
    let message = status(
        &server
            .call(
                Method::DELETE,
                &format!("{APPS}/policy"),
                "application/json",
                Some(json!({"propagationPolicy": "Sometimes"})),
            )
            .await,
        400,
        "BadRequest",
    );
    assert!(message.contains("propagationPolicy must be Background, Foreground or Orphan"), "{message}");
}

/// The value of the sample `name{labels}` in a metrics page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_time_them_and_track_open_watches() {
    let server = Server::embedded().await;
    server.post(APPS, app("web")).await;
    server.get(&format!("{APPS}/web")).await;
    server.get(&format!("{APPS}/nope")).await;
    server.get(APPS).await;
    server.get("/apis/agora/v1/namespaces/default/widgets/made-up").await;
    let watch = server.http.get(format!("{}{APPS}?watch=true", server.base)).send().await.unwrap();
    assert_eq!(watch.status(), StatusCode::OK);

    let metrics = || async {
        let response = server.http.get(format!("{}/metrics", server.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"].to_str().unwrap().contains("text"));
        response.text().await.unwrap()
    };
    let page = metrics().await;
    let requests = |verb: &str, resource: &str, code: u16| {
        sample(
            &page,
            &format!(
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",subresource=\"\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(requests("POST", "apps", 201), Some(1.0), "{page}");
    assert_eq!(requests("GET", "apps", 200), Some(1.0), "{page}");
    assert_eq!(requests("GET", "apps", 404), Some(1.0), "{page}");
    assert_eq!(requests("LIST", "apps", 200), Some(1.0), "{page}");
    assert_eq!(requests("WATCH", "apps", 200), Some(1.0), "{page}");
    assert_eq!(requests("GET", "", 404), Some(1.0), "a made-up resource is not a label value: {page}");
    assert!(!page.contains("widgets"), "{page}");
    let listed = "apiserver_request_duration_seconds_count{verb=\"LIST\",resource=\"apps\",subresource=\"\"}";
    assert_eq!(sample(&page, listed), Some(1.0), "{page}");
    assert!(page.contains("apiserver_request_duration_seconds_bucket{le=\"0.0001\",verb=\"POST\""), "{page}");
    assert!(!page.contains("apiserver_request_duration_seconds_count{verb=\"WATCH\""), "watches are not timed");
    assert_eq!(sample(&page, "apiserver_watches{resource=\"apps\"}"), Some(1.0), "{page}");
    assert!(sample(&page, "apiserver_store_request_duration_seconds_count{operation=\"txn\"}").unwrap() >= 1.0);
    assert!(sample(&page, "apiserver_store_request_duration_seconds_count{operation=\"get\"}").unwrap() >= 2.0);

    // The gauge goes down when the client goes away.
    drop(watch);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = metrics().await;
        if sample(&page, "apiserver_watches{resource=\"apps\"}") == Some(0.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closed watch is still counted: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn namespaces_are_the_ones_in_use() {
    let server = Server::embedded().await;
    let (_, v1) = server.get("/api/v1").await;
    assert_eq!(v1["resources"][0]["name"], "namespaces", "{v1}");
    server.post("/apis/agora/v1/namespaces/prod/apps", app("a")).await;
    server.post("/apis/agora/v1/namespaces/prod/apps", app("b")).await;
    server.post("/apis/agora/v1/namespaces/prod-2/cronjobs", json!({"apiVersion": "agora/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"schedule": "R/2026-01-01T00:00:00Z/P1D", "command": "true"}})).await;
    server
        .post(
            "/apis/agora/v1/frameworks",
            json!({"apiVersion": "agora/v1", "kind": "Framework", "metadata": {"name": "fw"}, "spec": {}}),
        )
        .await;
    let (code, list) = server.get("/api/v1/namespaces").await;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "NamespaceList");
    assert!(list["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()));
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|n| n["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "prod", "prod-2"]);
    let (code, prod) = server.get("/api/v1/namespaces/prod").await;
    assert_eq!(
        (code, prod["kind"].clone(), prod["status"]["phase"].clone()),
        (StatusCode::OK, json!("Namespace"), json!("Active"))
    );
    let message = status(&server.get("/api/v1/namespaces/staging").await, 404, "NotFound");
    assert!(message.contains("staging"), "{message}");
    // A namespace is as old as the objects in it.
    let (_, a) = server.get("/apis/agora/v1/namespaces/prod/apps/a").await;
    assert_eq!(prod["metadata"]["creationTimestamp"], a["metadata"]["creationTimestamp"], "{prod}");
    assert!(list["items"][0]["metadata"]["creationTimestamp"].is_string(), "an empty default has one too: {list}");
    // They come into being when used: creating or deleting one is a 405 that says so.
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "staging"}});
    let message = status(&server.post("/api/v1/namespaces", namespace).await, 405, "MethodNotAllowed");
    assert!(message.contains("comes into being when the first object is created in it"), "{message}");
    status(&server.delete("/api/v1/namespaces/prod").await, 405, "MethodNotAllowed");
}

/// A big list is gzipped for a client that accepts it (as Kubernetes' apiserver does): the same JSON in far fewer
/// bytes. Small answers and watch streams are sent as they are: a watch is never held back to be compressed.
#[tokio::test]
async fn big_lists_are_gzipped_for_clients_that_accept_it_and_streams_never_are() {
    use std::io::Read as _;
    let server = Server::embedded().await;
    for i in 0..400 {
        let mut object = app(&format!("app-{i:03}"));
        object["metadata"]["labels"] = json!({"padding": "x".repeat(60), "team": "a-rather-long-team-name"});
        assert_eq!(server.post(APPS, object).await.0, StatusCode::CREATED);
    }
    let url = format!("{}{APPS}", server.base);
    let plain = server.http.get(&url).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none(), "not asked for");
    let plain = plain.bytes().await.unwrap();
    assert!(plain.len() > 128 * 1024, "the list is big enough: {} bytes", plain.len());
    let gzipped = server.http.get(&url).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let bytes = gzipped.bytes().await.unwrap();
    assert!(bytes.len() * 5 < plain.len(), "{} bytes gzipped of {}", bytes.len(), plain.len());
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
    let (a, b): (Value, Value) = (serde_json::from_str(&text).unwrap(), serde_json::from_slice(&plain).unwrap());
    assert_eq!(a["items"], b["items"]);
    // One object: small, as it is.
    let one = server.http.get(format!("{url}/app-001")).header("accept-encoding", "gzip").send().await.unwrap();
    assert!(one.headers().get("content-encoding").is_none());
    // A watch of all 400 (far more than 128 KiB in all): plain, each event as it comes.
    let watch = server
        .http
        .get(format!("{url}?watch=true&resourceVersion=0"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(watch.headers().get("content-encoding").is_none(), "a stream is never compressed");
    let events = common::read_events(watch, 400).await;
    assert_eq!(events.len(), 400);
    assert_eq!(events[0]["type"], "ADDED");
}

#[tokio::test]
async fn rbac_objects_are_served_in_their_own_group_beside_agoras_kinds_of_the_same_name() {
    let server = Server::embedded().await;
    const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
        "rules": [{"verbs": ["get", "list"], "apiGroups": ["agora"], "resources": ["apps"]}]});
    let (code, created) = server.post(&format!("{RBAC}/namespaces/team-a/roles"), role).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["apiVersion"], "rbac.authorization.k8s.io/v1");
    assert_eq!(created["metadata"]["managedFields"][0]["apiVersion"], "rbac.authorization.k8s.io/v1");
    // Agora's own Role (a DRF role) of the same name lives apart.
    let drf = json!({"apiVersion": "agora/v1", "kind": "Role", "metadata": {"name": "reader"}, "spec": {"weight": 2}});
    assert_eq!(server.post("/apis/agora/v1/roles", drf).await.0, StatusCode::CREATED);
    let (_, list) = server.get(&format!("{RBAC}/namespaces/team-a/roles")).await;
    assert_eq!(
        (list["apiVersion"].as_str(), list["kind"].as_str()),
        (Some("rbac.authorization.k8s.io/v1"), Some("RoleList"))
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, agoras) = server.get("/apis/agora/v1/roles").await;
    assert_eq!(agoras["items"][0]["spec"]["weight"], 2.0);
    let message = status(&server.get(&format!("{RBAC}/namespaces/team-a/roles/nope")).await, 404, "NotFound");
    assert_eq!(message, "roles.rbac.authorization.k8s.io \"nope\" not found");

    let binding = |role_kind: &str, subject_kind: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "alice"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "reader"},
               "subjects": [{"kind": subject_kind, "name": "alice"}]})
    };
    let path = format!("{RBAC}/namespaces/team-a/rolebindings");
    let (code, answer) = server.post(&path, binding("Role", "ServiceAccount")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["details"]["causes"][0]["field"], "subjects[0].kind", "{answer}");
    assert_eq!(answer["details"]["group"], "rbac.authorization.k8s.io", "{answer}");
    assert_eq!(server.post(&path, binding("Role", "User")).await.0, StatusCode::CREATED);
    let (code, answer) = server.put(&format!("{path}/alice"), binding("ClusterRole", "User")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("roleRef"), "{answer}");
    // A body of one group sent to the other's path is refused.
    let (code, _) = server.post("/apis/agora/v1/namespaces/team-a/rolebindings", binding("Role", "User")).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "agora/v1 has no rolebindings");

    // Discovery and OpenAPI list both groups; a group Agora does not serve is a 404.
    let (_, groups) = server.get("/apis").await;
    let names: Vec<&str> = groups["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["agora", "rbac.authorization.k8s.io"]);
    let (_, resources) = server.get(RBAC).await;
    let names: Vec<&str> =
        resources["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["roles", "clusterroles", "rolebindings", "clusterrolebindings"]);
    assert!(resources["resources"][0]["categories"].as_array().unwrap().is_empty(), "not in `kubectl get all`");
    assert_eq!(server.get("/apis/apps/v1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/apis/apps/v1/deployments").await.0, StatusCode::NOT_FOUND);
    let (_, index) = server.get("/openapi/v3").await;
    let url = index["paths"]["apis/rbac.authorization.k8s.io/v1"]["serverRelativeURL"].as_str().unwrap().to_owned();
    let (_, document) = server.get(&url).await;
    assert_eq!(
        document["components"]["schemas"]["Role"]["x-kubernetes-group-version-kind"][0]["group"],
        "rbac.authorization.k8s.io"
    );
    assert_eq!(server.get("/openapi/v3/apis/apps/v1").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_framework_principal_acts_only_as_its_framework_and_runs_tasks_only_as_its_users() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap());
    let server = Server::on(store, Box::new(dir), ApiConfig::default().token(Some("s3cret".to_owned()))).await;
    let admin = |method: Method, path: &str, body: Value| {
        let path = path.to_owned();
        let server = &server;
        async move { call_as(server, "s3cret", method, &path, Some(body)).await }
    };
    let created = |answer: (StatusCode, Value)| assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.1);
    created(
        admin(
            Method::POST,
            "/apis/agora/v1/tokens",
            json!({"apiVersion": "agora/v1", "kind": "Token", "metadata": {"name": "bob"},
            "spec": {"principal": "bob", "sha256": agora_apiserver::auth::digest_hex("bob-secret")}}),
        )
        .await,
    );
    let rules = json!([
        {"verbs": ["get", "list", "watch"], "apiGroups": ["agora"], "resources": ["offers", "tasks"]},
        {"verbs": ["create"], "apiGroups": ["agora"], "resources": ["offers/accept"]},
        {"verbs": ["create", "update", "patch", "delete", "deletecollection"], "apiGroups": ["agora"], "resources": ["frameworks", "leases"]},
        {"verbs": ["use"], "apiGroups": ["agora"], "resources": ["frameworks"], "resourceNames": ["b"]},
        {"verbs": ["use"], "apiGroups": ["agora"], "resources": ["users"], "resourceNames": ["1000:1000"]},
        {"verbs": ["use"], "apiGroups": ["agora"], "resources": ["roles"], "resourceNames": ["team-b"]},
    ]);
    const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
    created(
        admin(
            Method::POST,
            &format!("{RBAC}/clusterroles"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole", "metadata": {"name": "framework-b"}, "rules": rules}),
        )
        .await,
    );
    created(
        admin(Method::POST, &format!("{RBAC}/clusterrolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding", "metadata": {"name": "bob-is-b"}, "subjects": [{"kind": "User", "name": "bob"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "framework-b"}}))
        .await,
    );
    for (name, framework) in [("oa", "a"), ("ob", "b")] {
        created(
            admin(
                Method::POST,
                OFFERS,
                json!({"apiVersion": "agora/v1", "kind": "Offer", "metadata": {"name": name},
                "spec": {"framework": framework, "agent": "n1", "hostname": "n1",
                         "resources": {"cpus": 2.0, "mem": 1024.0, "disk": 100.0, "ports": [[31000, 31010]]}}}),
            )
            .await,
        );
    }
    // The binding reaches the policy through the apiserver's watch: a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while call_as(&server, "bob-secret", Method::GET, OFFERS, None).await.0 != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "bob never got to list offers");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let accept = |offer: &str, user: &str| {
        let body = json!({"tasks": [{"metadata": {"name": format!("{offer}-t"), "namespace": "default"},
                                     "spec": {"cmd": "true", "cpus": 0.1, "mem": 16, "user": user}}]});
        let (path, server) = (format!("{OFFERS}/{offer}/accept"), &server);
        async move { call_as(server, "bob-secret", Method::POST, &path, Some(body)).await }
    };

    let (code, answer) = accept("oa", "1000:1000").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("User \"bob\" cannot act as framework \"a\""), "{answer}");
    let (code, answer) = accept("ob", "root").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("cannot run tasks as user \"root\""), "{answer}");
    for offer in ["oa", "ob"] {
        let (_, left) = call_as(&server, "s3cret", Method::GET, &format!("{OFFERS}/{offer}"), None).await;
        assert!(left["status"]["phase"].is_null() || left["status"]["phase"] == "Outstanding", "{left}");
    }
    assert_eq!(call_as(&server, "s3cret", Method::GET, &format!("{TASKS}/oa-t"), None).await.0, StatusCode::NOT_FOUND);
    let (code, answer) = accept("ob", "1000:1000").await;
    assert_eq!(code, StatusCode::OK, "its own offer, as a user it may use: {answer}");

    let framework = |name: &str, role: &str| json!({"apiVersion": "agora/v1", "kind": "Framework", "metadata": {"name": name}, "spec": {"roles": [role]}});
    let post = |path: &str, body: Value| {
        let (path, server) = (path.to_owned(), &server);
        async move { call_as(server, "bob-secret", Method::POST, &path, Some(body)).await }
    };
    assert_eq!(post("/apis/agora/v1/frameworks", framework("a", "team-b")).await.0, StatusCode::FORBIDDEN);
    let (code, answer) = post("/apis/agora/v1/frameworks", framework("b", "team-a")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "another team's role: {answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("cannot register a framework for role \"team-a\""),
        "{answer}"
    );
    assert_eq!(post("/apis/agora/v1/frameworks", framework("b", "team-b")).await.0, StatusCode::CREATED);
    // Nor by a patch, in any of its forms.
    let frameworks_b = format!("{}/apis/agora/v1/frameworks/b", server.base);
    for (content_type, body) in [
        ("application/merge-patch+json", r#"{"spec": {"roles": ["team-b", "team-a"]}}"#),
        ("application/json-patch+json", r#"[{"op": "add", "path": "/spec/roles/-", "value": "team-a"}]"#),
        (
            "application/apply-patch+yaml",
            "apiVersion: agora/v1\nkind: Framework\nmetadata: {name: b}\nspec:\n  roles: [team-a]\n",
        ),
    ] {
        let response = server
            .http
            .patch(format!("{frameworks_b}?fieldManager=bob"))
            .bearer_auth("bob-secret")
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{content_type}");
    }
    let lease = |name: &str| {
        json!({"apiVersion": "agora/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "agora-frameworks"}, "spec": {"holderIdentity": "bob"}})
    };
    let leases = "/apis/agora/v1/namespaces/agora-frameworks/leases";
    assert_eq!(post(leases, lease("a")).await.0, StatusCode::FORBIDDEN, "another framework's lease");
    assert_eq!(post(leases, lease("b")).await.0, StatusCode::CREATED);
    let renew = json!({"spec": {"holderIdentity": "bob-2"}});
    let patch = |name: &str| {
        let path = format!("{leases}/{name}");
        let server = &server;
        let renew = renew.clone();
        async move {
            let response = server
                .http
                .patch(format!("{}{path}", server.base))
                .bearer_auth("bob-secret")
                .header("content-type", "application/merge-patch+json")
                .body(renew.to_string())
                .send()
                .await
                .unwrap();
            response.status()
        }
    };
    assert_eq!(patch("b").await, StatusCode::OK);
    created(admin(Method::POST, leases, lease("a")).await);
    assert_eq!(patch("a").await, StatusCode::FORBIDDEN, "renewing another framework's lease");
    let every = call_as(&server, "bob-secret", Method::DELETE, leases, None).await;
    assert_eq!(every.0, StatusCode::FORBIDDEN, "deleting every framework's lease at once: {}", every.1);
    assert!(every.1["message"].as_str().unwrap().contains("act as framework \"*\""), "{}", every.1);
    let (code, _) = call_as(&server, "bob-secret", Method::DELETE, &format!("{leases}/a"), None).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "deleting another framework's lease");
    let offer = json!({"apiVersion": "agora/v1", "kind": "Offer", "metadata": {"name": "forged"},
        "spec": {"framework": "b", "agent": "n1", "hostname": "n1", "resources": {"cpus": 64.0}}});
    assert_eq!(post(OFFERS, offer).await.0, StatusCode::FORBIDDEN, "only the allocator's principal makes offers");
}
