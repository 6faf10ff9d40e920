//! The committed JSON Schemas match the types, and the OpenAPI document has what kubectl needs.

use std::path::PathBuf;

use agora_schemas::schema::{PATCH_CONTENT_TYPES, openapi_v3, schema_files};
use agora_schemas::{KINDS, kind_info};

const REGENERATE: &str = "AGORA_UPDATE_SCHEMAS=1 cargo test -p agora-schemas --test schemas";

fn json_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json")
}

#[test]
fn committed_json_schemas_match_the_types() {
    let dir = json_dir();
    let generated = schema_files();
    if std::env::var_os("AGORA_UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &generated {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let mut stale = Vec::new();
    for (name, text) in &generated {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(committed) if committed == *text => {}
            Ok(_) => stale.push(format!("{name} differs from the types")),
            Err(_) => stale.push(format!("{name} is missing")),
        }
    }
    let expected: Vec<&String> = generated.iter().map(|(name, _)| name).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !expected.contains(&&name) {
            stale.push(format!("{name} belongs to no kind"));
        }
    }
    assert!(stale.is_empty(), "schemas/json is out of date ({}). Regenerate with:\n    {REGENERATE}", stale.join("; "));
}

#[test]
fn every_kind_has_a_schema_file_with_its_gvk_and_defaults() {
    let files = schema_files();
    assert_eq!(files.len(), KINDS.len());
    let app: serde_json::Value = serde_json::from_str(&files.iter().find(|(n, _)| n == "app.json").unwrap().1).unwrap();
    assert_eq!(app["x-kubernetes-group-version-kind"][0]["kind"], "App");
    assert_eq!(app["additionalProperties"], false, "unknown fields are rejected");
    let spec = &app["$defs"]["AppSpec"]["properties"];
    assert_eq!(spec["instances"]["default"], 1);
    assert_eq!(spec["mem"]["default"], 128.0);
    assert_eq!(spec["backoffFactor"]["default"], 1.15);
    assert_eq!(spec["killSelection"]["default"], "YoungestFirst");
    let check = &app["$defs"]["HealthCheck"]["properties"];
    assert_eq!(check["gracePeriodSeconds"]["default"], 300);
    assert_eq!(check["maxConsecutiveFailures"]["default"], 3);
    let cron: serde_json::Value =
        serde_json::from_str(&files.iter().find(|(n, _)| n == "cronjob.json").unwrap().1).unwrap();
    let spec = &cron["$defs"]["CronJobSpec"]["properties"];
    assert_eq!(spec["cpus"]["default"], 0.1);
    assert_eq!(spec["epsilon"]["default"], "PT60S");
    assert_eq!(spec["concurrencyPolicy"]["default"], "Forbid");
}

#[test]
fn openapi_has_every_kind_path_and_what_kubectl_needs() {
    for api_version in agora_schemas::schema::group_versions() {
        let doc = openapi_v3(api_version);
        every_kind_path_and_what_kubectl_needs(api_version, &doc);
    }
    assert_eq!(agora_schemas::schema::group_versions(), ["agora/v1", "rbac.authorization.k8s.io/v1"]);
    assert!(openapi_v3("apps/v1")["paths"].as_object().unwrap().is_empty(), "nothing of a version not served");
}

fn every_kind_path_and_what_kubectl_needs(api_version: &str, doc: &serde_json::Value) {
    let schemas = &doc["components"]["schemas"];
    let paths = doc["paths"].as_object().unwrap();
    for kind in KINDS.iter().filter(|k| k.api_version == api_version) {
        let schema = &schemas[kind.kind];
        assert_eq!(schema["x-kubernetes-group-version-kind"][0]["group"], kind.group, "{}", kind.kind);
        assert_eq!(schema["x-kubernetes-group-version-kind"][0]["kind"], kind.kind);
        assert!(schemas.get(format!("{}List", kind.kind)).is_some());
        let base = if kind.namespaced {
            format!("/apis/{api_version}/namespaces/{{namespace}}/{}", kind.plural)
        } else {
            format!("/apis/{api_version}/{}", kind.plural)
        };
        let item = &paths[&format!("{base}/{{name}}")];
        let patch = &item["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], kind.kind);
        assert_eq!(patch["x-kubernetes-group-version-kind"]["group"], kind.group);
        let params: Vec<&str> =
            patch["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert!(params.contains(&"fieldValidation"), "kubectl leaves validation to the server only with this");
        let media: Vec<&String> = patch["requestBody"]["content"].as_object().unwrap().keys().collect();
        assert_eq!(media.len(), PATCH_CONTENT_TYPES.len());
        assert!(!media.iter().any(|m| m.contains("strategic")), "strategic merge is never offered");
        for sub in kind.subresources {
            assert!(paths.contains_key(&format!("{base}/{{name}}/{sub}")), "{} {sub}", kind.kind);
        }
    }
    if api_version == "agora/v1" {
        assert!(paths.contains_key("/apis/agora/v1/apps"), "all-namespaces list");
        assert!(!paths.contains_key("/apis/agora/v1/namespaces/{namespace}/agents"), "agents are cluster-scoped");
        assert_eq!(kind_info("App").unwrap().plural, "apps");
    } else {
        assert!(paths.keys().all(|p| p.starts_with(&format!("/apis/{api_version}/"))), "only its own paths");
    }
    // Every $ref resolves.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(schemas.get(name).is_some(), "dangling $ref to {name}");
    }
}

#[test]
fn openapi_schemas_are_openapi_3_0() {
    // OpenAPI 3.0 has no type arrays: optional fields must be `nullable` instead.
    let doc = openapi_v3("agora/v1");
    let cpus = &doc["components"]["schemas"]["AppSpec"]["properties"]["cpus"];
    assert_eq!(cpus["type"], "number", "{cpus}");
    assert_eq!(cpus["nullable"], true);
    assert_eq!(cpus["default"], 1.0);
    assert!(!doc.to_string().contains("\"type\":[\""), "no JSON Schema type arrays in OpenAPI 3.0");
}

#[test]
fn unknown_fields_are_pruned_by_the_schema() {
    let app = kind_info("App").unwrap();
    let mut object = serde_json::json!({
        "apiVersion": "agora/v1", "kind": "App", "bogus": 1,
        "metadata": {"name": "web", "labels": {"any.key/is": "fine"}, "nope": true},
        "spec": {"cmd": "x", "cpu": 2, "env": {"FREE": "form"}, "healthChecks": [{"protocol": "TCP", "intervalSecond": 5}],
                 "container": {"image": "busybox", "pull": "always"}, "constraints": [["hostname", "UNIQUE"]]},
        "status": {"tasksRunning": 1, "extra": 1},
    });
    let mut removed = agora_schemas::schema::prune_unknown_fields(app, &mut object);
    removed.sort();
    assert_eq!(
        removed,
        [
            "bogus",
            "metadata.nope",
            "spec.container.pull",
            "spec.cpu",
            "spec.healthChecks[0].intervalSecond",
            "status.extra"
        ]
    );
    assert_eq!(object["spec"]["env"]["FREE"], "form", "map entries are not unknown fields");
    assert_eq!(object["metadata"]["labels"]["any.key/is"], "fine");
    agora_schemas::admit::<agora_schemas::App>(object).expect("the pruned object is admitted");
}
