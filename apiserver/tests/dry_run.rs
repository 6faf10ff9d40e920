//! `dryRun=All` on every write path, delete-collection, and the content types a write accepts — on both stores.
//!
//! A dry run runs defaulting, admission, conflict checks and managed fields as a real write and answers with what
//! would be stored; the store's revision stays where it was and no watcher hears of it (a watch opened before the dry
//! runs gets, as its first event, the real write made after them).

mod common;

use common::{APPS, Server, app, read_events, status};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The store's revision, as a list reports it.
async fn revision(server: &Server) -> String {
    let (code, list) = server.get(APPS).await;
    assert_eq!(code, StatusCode::OK, "{list}");
    list["metadata"]["resourceVersion"].as_str().unwrap().to_owned()
}

const DRY: &str = "?dryRun=All";

async fn every_verb_dry(server: &Server) {
    let (code, created) = server.post(APPS, app("web")).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let mut with_finalizer = app("held");
    with_finalizer["metadata"]["finalizers"] = json!(["example.com/hold"]);
    server.post(APPS, with_finalizer).await;
    let before = revision(server).await;
    let watch =
        server.http.get(format!("{}{APPS}?watch=true&resourceVersion={before}", server.base)).send().await.unwrap();
    let web = format!("{APPS}/web");

    // Create: the server's defaults and metadata, no resourceVersion, nothing stored.
    let (code, dry) = server.post(&format!("{APPS}{DRY}"), app("new")).await;
    assert_eq!(code, StatusCode::CREATED, "{dry}");
    assert_eq!(dry["spec"]["mem"], 128.0, "defaults applied: {dry}");
    assert!(dry["metadata"]["uid"].is_string() && dry["metadata"]["resourceVersion"].is_null(), "{dry}");
    assert_eq!(dry["metadata"]["managedFields"][0]["operation"], "Update", "{dry}");
    status(&server.get(&format!("{APPS}/new")).await, 404, "NotFound");
    let mut generated = app("x");
    generated["metadata"] = json!({ "generateName": "gen-" });
    let (code, dry) = server.post(&format!("{APPS}{DRY}"), generated).await;
    assert_eq!(code, StatusCode::CREATED, "{dry}");
    assert!(dry["metadata"]["name"].as_str().unwrap().starts_with("gen-"), "{dry}");
    // Its checks are the real write's.
    status(&server.post(&format!("{APPS}{DRY}"), app("web")).await, 409, "AlreadyExists");
    let mut invalid = app("bad");
    invalid["spec"]["instances"] = json!(-1);
    let message = status(&server.post(&format!("{APPS}{DRY}"), invalid).await, 422, "Invalid");
    assert!(message.contains("spec.instances"), "{message}");

    // Replace: generation bumps in the answer only; a stale resourceVersion is still a conflict.
    let mut changed = created.clone();
    changed["spec"]["instances"] = json!(3);
    let (code, dry) = server.put(&format!("{web}{DRY}"), changed.clone()).await;
    assert_eq!(
        (code, dry["spec"]["instances"].clone(), dry["metadata"]["generation"].clone()),
        (StatusCode::OK, json!(3), json!(2)),
        "{dry}"
    );
    assert_eq!(dry["metadata"]["resourceVersion"], rv.as_str(), "answered at the revision it was decided against");
    changed["metadata"]["resourceVersion"] = json!("12345");
    status(&server.put(&format!("{web}{DRY}"), changed).await, 409, "Conflict");

    // The three patch types and apply, create and update.
    let (code, dry) =
        server.patch(&format!("{web}{DRY}"), "application/merge-patch+json", json!({"spec": {"instances": 4}})).await;
    assert_eq!((code, dry["spec"]["instances"].clone()), (StatusCode::OK, json!(4)), "{dry}");
    let ops = json!([{"op": "replace", "path": "/spec/instances", "value": 5}]);
    let (code, dry) = server.patch(&format!("{web}{DRY}"), "application/json-patch+json", ops).await;
    assert_eq!((code, dry["spec"]["instances"].clone()), (StatusCode::OK, json!(5)), "{dry}");
    let failing = json!([{"op": "test", "path": "/spec/instances", "value": 99}]);
    status(&server.patch(&format!("{web}{DRY}"), "application/json-patch+json", failing).await, 422, "Invalid");
    let applied = "apiVersion: agora/v1\nkind: App\nmetadata:\n  name: web\nspec:\n  cmd: sleep 100\n  instances: 6\n";
    let (code, dry) = server.apply(&format!("{web}{DRY}"), "me", true, applied).await;
    assert_eq!((code, dry["spec"]["instances"].clone()), (StatusCode::OK, json!(6)), "{dry}");
    assert!(dry["metadata"]["managedFields"].as_array().unwrap().iter().any(|m| m["manager"] == "me"), "{dry}");
    let fresh = applied.replace("name: web", "name: applied");
    let (code, dry) = server.apply(&format!("{APPS}/applied{DRY}"), "me", false, &fresh).await;
    assert_eq!(code, StatusCode::CREATED, "{dry}");
    // An apply that conflicts with another manager's field is refused as it would be.
    let (code, conflict) = server.apply(&format!("{web}{DRY}"), "other", false, applied).await;
    assert_eq!(code, StatusCode::CONFLICT, "{conflict}");

    // Status and scale.
    let mut with_status = created.clone();
    with_status["status"] = json!({ "tasksRunning": 2 });
    let (code, dry) = server.put(&format!("{web}/status{DRY}"), with_status).await;
    assert_eq!((code, dry["status"]["tasksRunning"].clone()), (StatusCode::OK, json!(2)), "{dry}");
    let (code, dry) = server
        .patch(&format!("{web}/status{DRY}"), "application/merge-patch+json", json!({"status": {"tasksRunning": 1}}))
        .await;
    assert_eq!((code, dry["status"]["tasksRunning"].clone()), (StatusCode::OK, json!(1)), "{dry}");
    let (code, dry) = server
        .patch(&format!("{web}/scale{DRY}"), "application/merge-patch+json", json!({"spec": {"replicas": 9}}))
        .await;
    assert_eq!((code, dry["spec"]["replicas"].clone()), (StatusCode::OK, json!(9)), "{dry}");

    // Delete: of one object (also with propagation), of one with a finalizer (it would be marked), of the collection.
    let (code, dry) = server.call(Method::DELETE, &format!("{web}{DRY}"), "application/json", None).await;
    assert_eq!((code, dry["metadata"]["name"].clone()), (StatusCode::OK, json!("web")), "{dry}");
    let foreground = json!({"propagationPolicy": "Foreground", "dryRun": ["All"]});
    let (code, dry) = server.call(Method::DELETE, &web, "application/json", Some(foreground)).await;
    assert!(code == StatusCode::OK && dry["metadata"]["deletionTimestamp"].is_string(), "{dry}");
    let (code, dry) = server.call(Method::DELETE, &format!("{APPS}/held{DRY}"), "", None).await;
    assert!(code == StatusCode::OK && dry["metadata"]["deletionTimestamp"].is_string(), "{dry}");
    let (code, dry) = server.call(Method::DELETE, &format!("{APPS}{DRY}"), "", None).await;
    assert_eq!((code, dry["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(2)), "{dry}");
    assert_eq!(dry["kind"], "AppList");

    // None of it was written.
    assert_eq!(revision(server).await, before, "a dry run moved the store");
    let (_, web_now) = server.get(&web).await;
    assert_eq!(web_now, created, "the object is as created");
    let (_, held) = server.get(&format!("{APPS}/held")).await;
    assert!(held["metadata"]["deletionTimestamp"].is_null(), "{held}");

    // And no watcher heard of it: the first event after them is this real write.
    server.post(APPS, app("real")).await;
    let events = read_events(watch, 1).await;
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("real"))
    );

    // What a dry run cannot be.
    let message = status(&server.post(&format!("{APPS}?dryRun=true"), app("x")).await, 400, "BadRequest");
    assert!(message.contains("dryRun must be All"), "{message}");
    let body = json!({"dryRun": ["Some"]});
    let message = status(&server.call(Method::DELETE, &web, "application/json", Some(body)).await, 400, "BadRequest");
    assert!(message.contains("dryRun must be [\"All\"]"), "{message}");
    let message = status(
        &server.post(&format!("/apis/agora/v1/offers/o1/accept{DRY}"), json!({"tasks": []})).await,
        400,
        "BadRequest",
    );
    assert!(message.contains("dryRun is not supported by offers/accept"), "{message}");
    let message = status(
        &server.post(&format!("/apis/agora/v1/namespaces/default/cronjobs/j/trigger{DRY}"), json!({})).await,
        400,
        "BadRequest",
    );
    assert!(message.contains("cronjobs/trigger"), "{message}");
}

#[tokio::test]
async fn every_write_dry_runs_on_the_embedded_store() {
    every_verb_dry(&Server::embedded().await).await;
}

#[tokio::test]
async fn every_write_dry_runs_on_etcd() {
    every_verb_dry(&Server::etcd().await).await;
}

fn names(list: &Value) -> Vec<&str> {
    let mut names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    names
}

async fn delete_collection(server: &Server) {
    for (name, tier, ns) in
        [("a", "web", "default"), ("b", "web", "default"), ("c", "db", "default"), ("d", "web", "other")]
    {
        let mut object = app(name);
        object["metadata"]["labels"]["tier"] = json!(tier);
        let (code, body) = server.post(&format!("/apis/agora/v1/namespaces/{ns}/apps"), object).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
    }
    // A label selector, in one namespace.
    let (code, deleted) = server.delete(&format!("{APPS}?labelSelector=tier%3Dweb")).await;
    assert_eq!(code, StatusCode::OK, "{deleted}");
    assert_eq!(names(&deleted), ["a", "b"]);
    let (_, left) = server.get("/apis/agora/v1/apps").await;
    assert_eq!(names(&left), ["c", "d"], "d is in another namespace, c not selected");
    // A field selector.
    let (code, deleted) = server.delete(&format!("{APPS}?fieldSelector=metadata.name%3Dc")).await;
    assert_eq!((code, names(&deleted)), (StatusCode::OK, vec!["c"]), "{deleted}");
    // Foreground propagation marks each for the collector, which removes it once its dependents are gone.
    let body = json!({"propagationPolicy": "Foreground"});
    let (code, marked) =
        server.call(Method::DELETE, "/apis/agora/v1/namespaces/other/apps", "application/json", Some(body)).await;
    assert_eq!(code, StatusCode::OK, "{marked}");
    assert!(marked["items"][0]["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.get("/apis/agora/v1/namespaces/other/apps/d").await.0 != StatusCode::NOT_FOUND {
        assert!(tokio::time::Instant::now() < deadline, "the collector never removed d");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Refused: preconditions on a collection, a bad selector, a bad policy.
    let body = json!({"preconditions": {"uid": "x"}});
    status(&server.call(Method::DELETE, APPS, "application/json", Some(body)).await, 400, "BadRequest");
    status(&server.delete(&format!("{APPS}?labelSelector=%3D%3D")).await, 400, "BadRequest");
    status(&server.delete(&format!("{APPS}?propagationPolicy=Sideways")).await, 400, "BadRequest");
    // Not every namespace at once.
    let message = status(&server.delete("/apis/agora/v1/apps").await, 405, "MethodNotAllowed");
    assert!(message.contains("/namespaces/{ns}/apps"), "{message}");
    // An empty collection deletes nothing, successfully.
    let (code, deleted) = server.delete(APPS).await;
    assert_eq!((code, names(&deleted)), (StatusCode::OK, Vec::<&str>::new()), "{deleted}");
}

#[tokio::test]
async fn collections_are_deleted_by_selector_on_the_embedded_store() {
    delete_collection(&Server::embedded().await).await;
}

#[tokio::test]
async fn collections_are_deleted_by_selector_on_etcd() {
    delete_collection(&Server::etcd().await).await;
}

#[tokio::test]
async fn a_body_in_an_unknown_media_type_is_a_415_on_the_embedded_store() {
    media_types(&Server::embedded().await).await;
}

#[tokio::test]
async fn a_body_in_an_unknown_media_type_is_a_415_on_etcd() {
    media_types(&Server::etcd().await).await;
}

async fn media_types(server: &Server) {
    let body = serde_json::to_vec(&app("web")).unwrap();
    let message = status(
        &server.call_raw(Method::POST, APPS, "text/plain", Some(body.clone())).await,
        415,
        "UnsupportedMediaType",
    );
    assert!(message.contains("\"text/plain\"") && message.contains("application/json"), "{message}");
    status(
        &server
            .call_raw(Method::PUT, &format!("{APPS}/web"), "application/x-www-form-urlencoded", Some(body.clone()))
            .await,
        415,
        "UnsupportedMediaType",
    );
    // Parameters are allowed, and a body without a Content-Type is read as JSON.
    let (code, created) = server.call_raw(Method::POST, APPS, "application/json; charset=utf-8", Some(body)).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let untyped = server
        .http
        .post(format!("{}{APPS}", server.base))
        .body(serde_json::to_vec(&app("plain")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(untyped.status(), StatusCode::CREATED);
    // Invalid's details name the kind, as its message does.
    let mut invalid = app("bad");
    invalid["spec"]["instances"] = json!(-1);
    let answer = server.post(APPS, invalid).await;
    status(&answer, 422, "Invalid");
    assert_eq!(answer.1["details"]["kind"], "App", "{}", answer.1);
}
