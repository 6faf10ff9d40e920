//! Server-side apply (`application/apply-patch+yaml`) and `metadata.managedFields` over HTTP: create-or-update, the
//! applied configuration winning for its fields, removal of fields a manager stops applying, conflicts with other
//! managers (409 `FieldManagerConflict`) and `force`, `/status` applies, ownership taken by updates, and the error
//! paths — on the embedded store, and the core paths again on etcd.

mod common;

use common::{APPS, Server, status};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const WEB: &str = "/apis/agora/v1/namespaces/default/apps/web";

/// An applied configuration of App `web` with these spec lines (YAML, as kubectl writes it).
fn web(spec: &str) -> String {
    format!("apiVersion: agora/v1\nkind: App\nmetadata:\n  name: web\nspec:\n{spec}")
}

/// The `managedFields` entry of `manager`, if any.
fn entry<'a>(object: &'a Value, manager: &str) -> Option<&'a Value> {
    object["metadata"]["managedFields"].as_array()?.iter().find(|e| e["manager"] == manager)
}

async fn apply_lifecycle(server: &Server) {
    // Apply creates.
    let (code, created) =
        server.apply(WEB, "alice", false, &web("  cmd: sleep 100\n  instances: 2\n  cpus: 0.5\n")).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!((created["spec"]["instances"].clone(), created["spec"]["mem"].clone()), (json!(2), json!(128.0)));
    let alice = entry(&created, "alice").expect("alice's entry");
    assert_eq!(alice["operation"], "Apply");
    assert_eq!(alice["apiVersion"], "agora/v1");
    assert_eq!(alice["fieldsType"], "FieldsV1");
    assert_eq!(alice["fieldsV1"], json!({"f:spec": {"f:cmd": {}, "f:instances": {}, "f:cpus": {}}}));
    assert!(alice["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{alice}");
    assert_eq!(created["metadata"]["managedFields"].as_array().unwrap().len(), 1, "defaults are nobody's");

    // The same configuration again changes nothing: same resourceVersion.
    let (code, again) =
        server.apply(WEB, "alice", false, &web("  cmd: sleep 100\n  instances: 2\n  cpus: 0.5\n")).await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(again["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);

    // Another manager changes a field alice applied (an Update takes it from her).
    let (code, patched) = server
        .call(
            Method::PATCH,
            &format!("{WEB}?fieldManager=bob"),
            "application/merge-patch+json",
            Some(json!({"spec": {"instances": 5}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    let bob = entry(&patched, "bob").expect("bob's entry");
    assert_eq!(
        (bob["operation"].clone(), bob["fieldsV1"].clone()),
        (json!("Update"), json!({"f:spec": {"f:instances": {}}}))
    );
    assert_eq!(entry(&patched, "alice").unwrap()["fieldsV1"], json!({"f:spec": {"f:cmd": {}, "f:cpus": {}}}));

    // alice applying another value for bob's field conflicts, names both, and changes nothing.
    let conflicting = web("  cmd: sleep 100\n  instances: 3\n  cpus: 0.5\n");
    let answer = server.apply(WEB, "alice", false, &conflicting).await;
    let message = status(&answer, 409, "Conflict");
    assert!(message.contains("conflict with \"bob\"") && message.contains(".spec.instances"), "{message}");
    let causes = answer.1["details"]["causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(
        (causes[0]["reason"].clone(), causes[0]["field"].clone()),
        (json!("FieldManagerConflict"), json!(".spec.instances"))
    );
    assert_eq!(server.get(WEB).await.1["spec"]["instances"], 5, "a conflict writes nothing");

    // Applying bob's value is no conflict: both own it.
    let (code, shared) =
        server.apply(WEB, "alice", false, &web("  cmd: sleep 100\n  instances: 5\n  cpus: 0.5\n")).await;
    assert_eq!(code, StatusCode::OK, "{shared}");
    assert_eq!(entry(&shared, "bob").unwrap()["fieldsV1"], json!({"f:spec": {"f:instances": {}}}));
    assert!(entry(&shared, "alice").unwrap()["fieldsV1"]["f:spec"].get("f:instances").is_some());

    // force takes the field: bob owns nothing more, so his entry goes.
    let (code, forced) = server.apply(WEB, "alice", true, &conflicting).await;
    assert_eq!(code, StatusCode::OK, "{forced}");
    assert_eq!(forced["spec"]["instances"], 3);
    assert!(entry(&forced, "bob").is_none(), "{forced}");

    // A field alice stops applying is removed (back to its default); one she never applied stays.
    let (_, labelled) = server
        .call(
            Method::PATCH,
            &format!("{WEB}?fieldManager=carol"),
            "application/merge-patch+json",
            Some(json!({"metadata": {"labels": {"team": "x"}}})),
        )
        .await;
    assert_eq!(labelled["metadata"]["labels"]["team"], "x");
    let (code, trimmed) = server.apply(WEB, "alice", false, &web("  cmd: sleep 100\n  instances: 3\n")).await;
    assert_eq!(code, StatusCode::OK, "{trimmed}");
    assert_eq!(trimmed["spec"]["cpus"], 1.0, "cpus removed, so defaulted again");
    assert_eq!(trimmed["metadata"]["labels"]["team"], "x", "carol's label is not alice's to remove");
    assert_eq!(entry(&trimmed, "alice").unwrap()["fieldsV1"], json!({"f:spec": {"f:cmd": {}, "f:instances": {}}}));

    // A field alice stops applying but carol also owns stays.
    server.apply(WEB, "alice", false, &web("  cmd: sleep 100\n  instances: 3\n  disk: 10\n")).await;
    server
        .call(
            Method::PATCH,
            &format!("{WEB}?fieldManager=carol"),
            "application/merge-patch+json",
            Some(json!({"spec": {"disk": 20}})),
        )
        .await;
    let (_, kept) = server.apply(WEB, "alice", true, &web("  cmd: sleep 100\n  instances: 3\n")).await;
    assert_eq!(kept["spec"]["disk"], 20.0, "{kept}");
}

#[tokio::test]
async fn apply_lifecycle_on_the_embedded_store() {
    apply_lifecycle(&Server::embedded().await).await;
}

#[tokio::test]
async fn apply_lifecycle_on_etcd() {
    apply_lifecycle(&Server::etcd().await).await;
}

#[tokio::test]
async fn apply_to_status_and_scale_are_recorded_per_subresource() {
    let server = Server::embedded().await;
    server.apply(WEB, "alice", false, &web("  cmd: sleep 100\n")).await;
    // An applied status on the main resource is dropped and not owned.
    let with_status = format!("{}status:\n  tasksRunning: 9\n", web("  cmd: sleep 100\n"));
    let (code, main) = server.apply(WEB, "alice", false, &with_status).await;
    assert_eq!(code, StatusCode::OK, "{main}");
    assert!(main.get("status").is_none(), "{main}");
    assert!(entry(&main, "alice").unwrap()["fieldsV1"].get("f:status").is_none());

    let body = "apiVersion: agora/v1\nkind: App\nmetadata:\n  name: web\nstatus:\n  tasksRunning: 2\n";
    let (code, applied) = server.apply(&format!("{WEB}/status"), "marathon", false, body).await;
    assert_eq!(code, StatusCode::OK, "{applied}");
    assert_eq!(applied["status"]["tasksRunning"], 2);
    let marathon = entry(&applied, "marathon").unwrap();
    assert_eq!(
        (marathon["subresource"].clone(), marathon["fieldsV1"].clone()),
        (json!("status"), json!({"f:status": {"f:tasksRunning": {}}}))
    );
    assert_eq!(applied["metadata"]["generation"], 1, "status applies do not bump generation");

    // Applying /status to an object that does not exist is a 404, not a create.
    let missing = "apiVersion: agora/v1\nkind: App\nmetadata:\n  name: nope\nstatus:\n  tasksRunning: 2\n";
    status(&server.apply(&format!("{APPS}/nope/status"), "marathon", false, missing).await, 404, "NotFound");

    // kubectl scale records its change under the scale subresource.
    let (code, _) = server
        .call(
            Method::PATCH,
            &format!("{WEB}/scale?fieldManager=kubectl-scale"),
            "application/merge-patch+json",
            Some(json!({"spec": {"replicas": 4}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (_, scaled) = server.get(WEB).await;
    let scale = entry(&scaled, "kubectl-scale").unwrap();
    assert_eq!(
        (scale["subresource"].clone(), scale["fieldsV1"].clone()),
        (json!("scale"), json!({"f:spec": {"f:instances": {}}}))
    );
}

#[tokio::test]
async fn managed_fields_sent_with_an_update_replace_the_stored_list() {
    // kubectl migrates client-side-apply ownership with a JSON patch that replaces managedFields.
    let server = Server::embedded().await;
    let (_, created) = server
        .call(
            Method::POST,
            &format!("{APPS}?fieldManager=kubectl-client-side-apply"),
            "application/json",
            Some(json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "web"}, "spec": {"cmd": "x"}})),
        )
        .await;
    assert_eq!(entry(&created, "kubectl-client-side-apply").unwrap()["operation"], "Update");
    let rv = created["metadata"]["resourceVersion"].clone();
    let migrated = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "agora/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:cmd": {}}}}]);
    let ops = json!([{"op": "replace", "path": "/metadata/managedFields", "value": migrated}, {"op": "replace", "path": "/metadata/resourceVersion", "value": rv}]);
    let (code, after) = server.patch(WEB, "application/json-patch+json", ops.clone()).await;
    assert_eq!(code, StatusCode::OK, "{after}");
    assert!(entry(&after, "kubectl-client-side-apply").is_none(), "{after}");
    assert_eq!(entry(&after, "kubectl").unwrap()["operation"], "Apply");
    // The resourceVersion in that patch is a precondition: the same patch again is stale.
    status(&server.patch(WEB, "application/json-patch+json", ops).await, 409, "Conflict");

    // A malformed list is a 422 naming the field; nothing is written.
    let bad = json!({"metadata": {"managedFields": [{"manager": "x", "operation": "Delete"}]}});
    let message = status(&server.patch(WEB, "application/merge-patch+json", bad).await, 422, "Invalid");
    assert!(message.contains("metadata.managedFields") && message.contains("operation"), "{message}");
    let bad = json!({"metadata": {"managedFields": [{"manager": "x", "operation": "Apply", "fieldsV1": {"spec": 1}}]}});
    status(&server.patch(WEB, "application/merge-patch+json", bad).await, 422, "Invalid");
    assert_eq!(server.get(WEB).await.1["metadata"]["managedFields"], after["metadata"]["managedFields"]);
}

#[tokio::test]
async fn apply_errors_answer_with_status_and_write_nothing() {
    let server = Server::embedded().await;
    let good = web("  cmd: sleep 100\n");
    let raw = |query: &str, body: &str| {
        let path = format!("{WEB}{query}");
        let body = body.as_bytes().to_vec();
        let server = &server;
        async move { server.call_raw(Method::PATCH, &path, "application/apply-patch+yaml", Some(body)).await }
    };
    let message = status(&raw("", &good).await, 400, "BadRequest");
    assert!(message.contains("fieldManager is required"), "{message}");
    let message = status(&raw("?fieldManager=a", "spec: [unclosed").await, 400, "BadRequest");
    assert!(message.contains("not valid YAML"), "{message}");
    status(&raw("?fieldManager=a", "- 1\n- 2\n").await, 400, "BadRequest");
    let message = status(&raw("?fieldManager=a", "metadata: {name: web}\nspec: {cmd: x}\n").await, 400, "BadRequest");
    assert!(message.contains("apiVersion must be set"), "{message}");
    let message = status(&raw("?fieldManager=a", &good.replace("name: web", "name: other")).await, 400, "BadRequest");
    assert!(message.contains("does not match the name on the URL"), "{message}");
    let with_managed = good.replace("  name: web\n", "  name: web\n  managedFields: [{manager: a}]\n");
    let message = status(&raw("?fieldManager=a", &with_managed).await, 400, "BadRequest");
    assert!(message.contains("managedFields must be nil"), "{message}");
    let long = "m".repeat(129);
    status(&raw(&format!("?fieldManager={long}"), &good).await, 400, "BadRequest");
    // Unknown and invalid fields are 422s naming the path.
    let answer = raw("?fieldManager=a", &web("  cmd: x\n  cpu: 1\n")).await;
    let message = status(&answer, 422, "Invalid");
    assert!(message.contains("spec.cpu: unknown field"), "{message}");
    let message = status(&raw("?fieldManager=a", &web("  cmd: x\n  mem: -5\n")).await, 422, "Invalid");
    assert!(message.contains("spec.mem"), "{message}");
    // ... unless unknown fields are to be ignored.
    let (code, ignored) = raw("?fieldManager=a&fieldValidation=Ignore", &web("  cmd: x\n  cpu: 1\n")).await;
    assert_eq!(code, StatusCode::CREATED, "{ignored}");
    assert!(entry(&ignored, "a").unwrap()["fieldsV1"]["f:spec"].get("f:cpu").is_none(), "{ignored}");
    // force belongs to apply only.
    let message = status(
        &server
            .call(Method::PATCH, &format!("{WEB}?force=true"), "application/merge-patch+json", Some(json!({})))
            .await,
        400,
        "BadRequest",
    );
    assert!(message.contains("force is only allowed"), "{message}");
    // A stale resourceVersion in the configuration is a conflict.
    let stale = good.replace("  name: web\n", "  name: web\n  resourceVersion: \"999\"\n");
    status(&raw("?fieldManager=a", &stale).await, 409, "Conflict");
    assert_eq!(server.get(APPS).await.1["items"].as_array().unwrap().len(), 1);
}
