//! Reads in the other forms clients ask for — `meta.k8s.io/v1` Tables (kubectl get), `PartialObjectMetadata` (metadata
//! informers) on get, list and watch — and Agora's Events served in core `v1` shape where `kubectl describe` reads
//! them; on both stores.

mod common;

use common::{APPS, Server, app, read_events, status};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TABLE: &str =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
const METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

async fn get_as(server: &Server, path: &str, accept: &str) -> (StatusCode, String, Value) {
    let response = server.http.get(format!("{}{path}", server.base)).header("accept", accept).send().await.unwrap();
    let code = response.status();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (code, content_type, response.json().await.unwrap())
}

async fn views(server: &Server) {
    let mut web = app("web");
    web["spec"]["instances"] = json!(3);
    let (_, created) = server.post(APPS, web).await;
    server.post(APPS, app("api")).await;

    // A Table: the kind's columns, a row per object with its metadata, wide columns at priority 1.
    let (code, content_type, table) = get_as(server, APPS, TABLE).await;
    assert_eq!((code, content_type.as_str()), (StatusCode::OK, "application/json;as=Table;v=v1;g=meta.k8s.io"));
    assert_eq!((table["kind"].as_str(), table["apiVersion"].as_str()), (Some("Table"), Some("meta.k8s.io/v1")));
    let columns: Vec<(&str, u64)> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_u64().unwrap()))
        .collect();
    assert_eq!(&columns[..4], [("Name", 0), ("Instances", 0), ("Running", 0), ("Healthy", 0)]);
    assert!(columns.contains(&("Age", 0)) && columns.contains(&("Staged", 1)), "{columns:?}");
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1]["cells"][0].as_str(), rows[1]["cells"][1].as_i64()), (Some("web"), Some(3)), "{table}");
    assert_eq!(rows[1]["object"]["kind"], "PartialObjectMetadata");
    assert!(table["metadata"]["resourceVersion"].is_string());
    let (_, _, with_object) = get_as(server, &format!("{APPS}?includeObject=Object"), TABLE).await;
    assert_eq!(with_object["rows"][1]["object"]["spec"]["instances"], 3);
    let (_, _, bare) = get_as(server, &format!("{APPS}/web?includeObject=None"), TABLE).await;
    assert_eq!(bare["rows"].as_array().map(Vec::len), Some(1));
    assert!(bare["rows"][0].get("object").is_none(), "{bare}");
    status(&get_as_answer(server, &format!("{APPS}?includeObject=All"), TABLE).await, 400, "BadRequest");
    status(&get_as_answer(server, APPS, "application/vnd.kubernetes.protobuf").await, 406, "NotAcceptable");

    // Metadata only: get and list.
    let (code, content_type, meta) = get_as(server, &format!("{APPS}/web"), METADATA).await;
    assert_eq!(code, StatusCode::OK);
    assert!(content_type.contains("as=PartialObjectMetadata"), "{content_type}");
    assert_eq!(
        (meta["kind"].as_str(), meta["apiVersion"].as_str()),
        (Some("PartialObjectMetadata"), Some("meta.k8s.io/v1"))
    );
    assert_eq!(meta["metadata"], created["metadata"]);
    assert!(meta.get("spec").is_none(), "{meta}");
    let (_, _, list) = get_as(server, &format!("{APPS}?labelSelector=tier%3Dweb&limit=1"), METADATA_LIST).await;
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert!(list["metadata"]["continue"].is_string(), "pagination still works: {list}");

    // And watches: a metadata watch from a revision, and a Table watch whose first event alone defines the columns.
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    let watch = |accept: &'static str| {
        server
            .http
            .get(format!("{}{APPS}?watch=true&resourceVersion={rv}", server.base))
            .header("accept", accept)
            .send()
    };
    let metadata_watch = watch(METADATA).await.unwrap();
    let table_watch = watch(TABLE).await.unwrap();
    assert!(table_watch.headers()["content-type"].to_str().unwrap().contains("as=Table"));
    server.patch(&format!("{APPS}/web"), "application/merge-patch+json", json!({"spec": {"instances": 4}})).await;
    server.delete(&format!("{APPS}/api")).await;
    let events = read_events(metadata_watch, 2).await;
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["object"]["kind"].as_str()),
        (Some("MODIFIED"), Some("PartialObjectMetadata"))
    );
    assert_eq!(events[1]["object"]["metadata"]["name"], "api");
    assert!(events[0]["object"].get("spec").is_none());
    let events = read_events(table_watch, 2).await;
    assert_eq!(events[0]["object"]["kind"], "Table");
    assert_eq!(events[0]["object"]["rows"][0]["cells"][1], 4);
    assert!(events[0]["object"]["columnDefinitions"].is_array());
    assert!(events[1]["object"].get("columnDefinitions").is_none(), "only the first Table defines columns");
    assert_eq!(events[1]["type"], "DELETED");
}

async fn get_as_answer(server: &Server, path: &str, accept: &str) -> (StatusCode, Value) {
    let response = server.http.get(format!("{}{path}", server.base)).header("accept", accept).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn tables_and_metadata_on_the_embedded_store() {
    views(&Server::embedded().await).await;
}

#[tokio::test]
async fn tables_and_metadata_on_etcd() {
    views(&Server::etcd().await).await;
}

fn event(name: &str, kind: &str, object: &str, uid: &str, reason: &str) -> Value {
    json!({
        "apiVersion": "agora/v1", "kind": "Event", "metadata": {"name": name},
        "involvedObject": {"apiVersion": "agora/v1", "kind": kind, "namespace": "default", "name": object, "uid": uid},
        "reason": reason, "message": format!("{reason} {object}"), "type": "Normal",
        "source": {"component": "marathon"}, "lastTimestamp": "2026-12-01T00:00:00Z",
    })
}

async fn core_events(server: &Server) {
    let events = "/apis/agora/v1/namespaces/default/events";
    for (name, kind, object, uid, reason) in [
        ("e1", "App", "web", "u1", "Scaled"),
        ("e2", "App", "web", "u1", "Deployed"),
        ("e3", "App", "api", "u2", "Scaled"),
        ("e4", "CronJob", "web", "u3", "Missed"),
    ] {
        let (code, body) = server.post(events, event(name, kind, object, uid, reason)).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
    }
    // What kubectl describe app web sends.
    let selector = "involvedObject.name%3Dweb,involvedObject.namespace%3Ddefault,involvedObject.kind%3DApp,involvedObject.uid%3Du1";
    let (code, list) = server.get(&format!("/api/v1/namespaces/default/events?fieldSelector={selector}")).await;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!((list["kind"].as_str(), list["apiVersion"].as_str()), (Some("EventList"), Some("v1")));
    let reasons: Vec<&str> = list["items"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["Scaled", "Deployed"]);
    let first = &list["items"][0];
    assert_eq!((first["apiVersion"].as_str(), first["kind"].as_str()), (Some("v1"), Some("Event")));
    assert_eq!(first["involvedObject"]["kind"], "App");
    assert_eq!(first["reportingComponent"], "marathon");
    // Across namespaces, by name, and what is refused.
    let (_, all) = server.get("/api/v1/events?fieldSelector=reason%3DScaled").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2), "{all}");
    let (code, one) = server.get("/api/v1/namespaces/default/events/e4").await;
    assert_eq!((code, one["involvedObject"]["kind"].as_str()), (StatusCode::OK, Some("CronJob")));
    status(&server.get("/api/v1/namespaces/default/events/nope").await, 404, "NotFound");
    let message =
        status(&server.get("/api/v1/namespaces/default/events?fieldSelector=color%3Dred").await, 400, "BadRequest");
    assert!(message.contains("color"), "{message}");
    let message = status(
        &server.post("/api/v1/namespaces/default/events", event("x", "App", "web", "u1", "Nope")).await,
        405,
        "MethodNotAllowed",
    );
    assert!(message.contains("/apis/agora/v1/namespaces/{ns}/events"), "{message}");
}

#[tokio::test]
async fn events_are_served_where_kubectl_describe_reads_them_on_the_embedded_store() {
    core_events(&Server::embedded().await).await;
}

#[tokio::test]
async fn events_are_served_where_kubectl_describe_reads_them_on_etcd() {
    core_events(&Server::etcd().await).await;
}
