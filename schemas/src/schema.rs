//! JSON Schema and OpenAPI v3 documents generated from the types.
//!
//! `schemas/json/<kind>.json` are committed and kept current by a test (run
//! `AGORA_UPDATE_SCHEMAS=1 cargo test -p agora-schemas --test schemas` to regenerate them). The OpenAPI document is
//! what the apiserver serves at `/openapi/v3/apis/agora/v1`: kubectl needs it for `apply` (it then leaves field
//! validation to the server) and for `explain`.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{API_GROUP, API_GROUP_VERSION, KINDS, KindInfo, Status};

/// Adds `"default": value` to the property named `field` (snake_case, as in Rust) of an object schema.
/// Used by the schemars transforms that [`defaults!`](crate::defaults) generates.
pub fn set_property_default(schema: &mut Schema, field: &str, value: &impl Serialize) {
    let name = camel_case(field);
    let Ok(value) = serde_json::to_value(value) else {
        return;
    };
    if let Some(property) = schema
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .and_then(|properties| properties.get_mut(&name))
        .and_then(Value::as_object_mut)
    {
        property.insert("default".to_owned(), value);
    }
}

/// `max_launch_delay_seconds` → `maxLaunchDelaySeconds`; a trailing `_` (for `type_`) is dropped.
fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.trim_end_matches('_').chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The standalone JSON Schema (draft 2020-12) of one kind, with its nested types under `$defs`.
#[must_use]
pub fn kind_schema(kind: &KindInfo) -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let reference = (kind.schema)(&mut generator);
    let mut definitions = generator.take_definitions(true);
    let mut root = definitions.remove(kind.kind).unwrap_or_else(|| reference.to_value());
    if let Some(object) = root.as_object_mut() {
        object.insert("$schema".to_owned(), json!("https://json-schema.org/draft/2020-12/schema"));
        object.insert("x-kubernetes-group-version-kind".to_owned(), gvk(kind.kind));
        if !definitions.is_empty() {
            object.insert("$defs".to_owned(), Value::Object(definitions));
        }
    }
    root
}

/// Every committed schema file: `(file name, pretty JSON with a trailing newline)`.
#[must_use]
pub fn schema_files() -> Vec<(String, String)> {
    KINDS
        .iter()
        .map(|kind| {
            let text = serde_json::to_string_pretty(&kind_schema(kind)).unwrap_or_default();
            let name = if kind.is_agoras() {
                format!("{}.json", kind.singular)
            } else {
                format!("{}.{}.json", kind.singular, kind.group)
            };
            (name, text + "\n")
        })
        .collect()
}

fn gvk(kind: &str) -> Value {
    json!([{ "group": API_GROUP, "version": API_GROUP_VERSION, "kind": kind }])
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn schema_of<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// The media types PATCH accepts. Strategic merge patch is deliberately absent: kubectl then uses JSON merge patch.
pub const PATCH_CONTENT_TYPES: [&str; 3] =
    ["application/merge-patch+json", "application/json-patch+json", "application/apply-patch+yaml"];

/// The group versions Agora serves (`agora/v1`, `rbac.authorization.k8s.io/v1`), in discovery order.
#[must_use]
pub fn group_versions() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for kind in KINDS {
        if !out.contains(&kind.api_version) {
            out.push(kind.api_version);
        }
    }
    out
}

/// The OpenAPI v3 document of one group version (`agora/v1`): every path, verb and schema, with
/// `x-kubernetes-group-version-kind` on the kinds and on their operations. Empty of paths for a version Agora does
/// not serve.
#[must_use]
pub fn openapi_v3(api_version: &str) -> Value {
    let kinds: Vec<&KindInfo> = KINDS.iter().filter(|k| k.api_version == api_version).collect();
    let mut document = openapi_of(&kinds);
    if let Some(kind) = kinds.first().filter(|k| !k.is_agoras()) {
        retarget(&mut document, kind.group, kind.version());
    }
    document
}

/// Rewrites the group-version-kinds of Agora's group in `value` to `group`/`version` (the document of another group
/// is built with the same helpers).
fn retarget(value: &mut Value, group: &str, version: &str) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "x-kubernetes-group-version-kind" {
                    let entries: Vec<&mut Value> = match child {
                        Value::Array(list) => list.iter_mut().collect(),
                        other => vec![other],
                    };
                    for entry in entries {
                        if entry["group"] == API_GROUP {
                            entry["group"] = json!(group);
                            entry["version"] = json!(version);
                        }
                    }
                } else {
                    retarget(child, group, version);
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|v| retarget(v, group, version)),
        _ => {}
    }
}

fn openapi_of(kinds: &[&KindInfo]) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    for kind in kinds {
        (kind.schema)(&mut generator);
    }
    schema_of::<Status>(&mut generator);
    schema_of::<crate::app::Scale>(&mut generator);
    schema_of::<crate::meta::ListMeta>(&mut generator);
    let mut schemas = generator.take_definitions(true);
    for kind in kinds {
        if let Some(object) = schemas.get_mut(kind.kind).and_then(Value::as_object_mut) {
            object.insert("x-kubernetes-group-version-kind".to_owned(), gvk(kind.kind));
        }
        schemas.insert(
            format!("{}List", kind.kind),
            json!({
                "description": format!("A list of {}.", kind.plural),
                "type": "object",
                "required": ["apiVersion", "kind", "metadata", "items"],
                "properties": {
                    "apiVersion": { "type": "string" },
                    "kind": { "type": "string" },
                    "metadata": reference("ListMeta"),
                    "items": { "type": "array", "items": reference(kind.kind) },
                },
                "x-kubernetes-group-version-kind": gvk(&format!("{}List", kind.kind)),
            }),
        );
    }
    if let Some(scale) = schemas.get_mut("Scale").and_then(Value::as_object_mut) {
        scale.insert(
            "x-kubernetes-group-version-kind".to_owned(),
            json!([{ "group": "autoscaling", "version": "v1", "kind": "Scale" }]),
        );
    }
    let mut paths = Map::new();
    for kind in kinds {
        add_kind_paths(&mut paths, kind);
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Agora", "version": API_GROUP_VERSION },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

fn parameter(name: &str, location: &str, description: &str, schema: Value) -> Value {
    let mut p = json!({ "name": name, "in": location, "description": description, "schema": schema });
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn query(name: &str, description: &str, kind: &str) -> Value {
    parameter(name, "query", description, json!({ "type": kind, "uniqueItems": true }))
}

fn write_parameters() -> Vec<Value> {
    vec![
        query("dryRun", "When present (All), the change is checked but not stored.", "string"),
        query("fieldManager", "The name of the actor making the change, recorded in managedFields.", "string"),
        query(
            "fieldValidation",
            "Strict (default): unknown or duplicate fields are rejected. Warn: accepted with a Warning header. Ignore: dropped silently.",
            "string",
        ),
    ]
}

fn list_parameters() -> Vec<Value> {
    vec![
        query("labelSelector", "Only objects whose labels match (=, ==, !=, in, notin, key, !key).", "string"),
        query(
            "fieldSelector",
            "Only objects whose fields match (metadata.name, metadata.namespace and the kind's own).",
            "string",
        ),
        query("limit", "At most this many objects; the rest through continue.", "integer"),
        query("continue", "The token of the previous page; pages are read at one revision.", "string"),
        query("resourceVersion", "List at (or watch from) this revision.", "string"),
        query("watch", "Stream changes as watch events.", "boolean"),
        query("allowWatchBookmarks", "Send BOOKMARK events.", "boolean"),
        query("sendInitialEvents", "Start a watch with ADDED events for current objects, then a bookmark.", "boolean"),
        query("timeoutSeconds", "End a watch after this many seconds.", "integer"),
    ]
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn responses(ok: u16, schema: &Value) -> Value {
    let mut map = Map::new();
    map.insert(ok.to_string(), json!({ "description": "OK", "content": json_content(schema.clone()) }));
    if ok == 200 {
        map.insert("201".to_owned(), json!({ "description": "Created", "content": json_content(schema.clone()) }));
    }
    map.insert(
        "default".to_owned(),
        json!({ "description": "A Status describing the failure", "content": json_content(reference("Status")) }),
    );
    Value::Object(map)
}

fn operation(
    id: &str,
    action: &str,
    gvk_kind: Option<&str>,
    parameters: Vec<Value>,
    body: Option<Value>,
    response: Value,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "parameters": parameters,
        "responses": response,
    });
    if let Some(kind) = gvk_kind {
        op["x-kubernetes-group-version-kind"] =
            json!({ "group": API_GROUP, "version": API_GROUP_VERSION, "kind": kind });
    }
    if let Some(body) = body {
        op["requestBody"] = json!({ "required": true, "content": body });
    }
    op
}

fn add_kind_paths(paths: &mut Map<String, Value>, kind: &KindInfo) {
    let base = format!("/apis/{}", kind.api_version);
    let scope = if kind.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", kind.plural)
    } else {
        format!("{base}/{}", kind.plural)
    };
    let object = reference(kind.kind);
    let list = reference(&format!("{}List", kind.kind));
    let name = parameter("name", "path", &format!("The {}'s name.", kind.singular), json!({ "type": "string" }));
    let namespace = parameter("namespace", "path", "The namespace.", json!({ "type": "string" }));
    let scoped = |mut extra: Vec<Value>| -> Vec<Value> {
        if kind.namespaced {
            extra.insert(0, namespace.clone());
        }
        extra
    };
    let patch_body = |schema: Value| -> Value {
        let mut content = Map::new();
        for media in PATCH_CONTENT_TYPES {
            content.insert(media.to_owned(), json!({ "schema": schema.clone() }));
        }
        Value::Object(content)
    };
    let suffix = kind.kind;
    let k = Some(kind.kind);

    let mut collection = Map::new();
    collection.insert(
        "get".to_owned(),
        operation(&format!("list{suffix}"), "list", k, scoped(list_parameters()), None, responses(200, &list)),
    );
    collection.insert(
        "post".to_owned(),
        operation(
            &format!("create{suffix}"),
            "post",
            k,
            scoped(write_parameters()),
            Some(json_content(object.clone())),
            responses(200, &object),
        ),
    );
    paths.insert(scope.clone(), Value::Object(collection));

    if kind.namespaced {
        let all = json!({ "get": operation(&format!("list{suffix}ForAllNamespaces"), "list", k, list_parameters(), None, responses(200, &list)) });
        paths.insert(format!("{base}/{}", kind.plural), all);
    }

    let item_params = |extra: Vec<Value>| -> Vec<Value> {
        let mut params = scoped(vec![name.clone()]);
        params.extend(extra);
        params
    };
    let mut patch_params = write_parameters();
    patch_params.push(query("force", "Server-side apply: take fields other managers own.", "boolean"));
    let delete_params = vec![
        query("propagationPolicy", "Background (default), Foreground or Orphan: what happens to dependents.", "string"),
        query("gracePeriodSeconds", "Seconds before the object is deleted.", "integer"),
        query("dryRun", "When present (All), nothing is deleted.", "string"),
    ];
    let item = json!({
        "get": operation(&format!("read{suffix}"), "get", k, item_params(vec![]), None, responses(200, &object)),
        "put": operation(&format!("replace{suffix}"), "put", k, item_params(write_parameters()), Some(json_content(object.clone())), responses(200, &object)),
        "patch": operation(&format!("patch{suffix}"), "patch", k, item_params(patch_params.clone()), Some(patch_body(json!({ "type": "object" }))), responses(200, &object)),
        "delete": operation(&format!("delete{suffix}"), "delete", k, item_params(delete_params), None, responses(200, &reference("Status"))),
    });
    paths.insert(format!("{scope}/{{name}}"), item);

    for sub in kind.subresources {
        let path = format!("{scope}/{{name}}/{sub}");
        let entry = match *sub {
            "status" => json!({
                "get": operation(&format!("read{suffix}Status"), "get", k, item_params(vec![]), None, responses(200, &object)),
                "put": operation(&format!("replace{suffix}Status"), "put", k, item_params(write_parameters()), Some(json_content(object.clone())), responses(200, &object)),
                "patch": operation(&format!("patch{suffix}Status"), "patch", k, item_params(patch_params.clone()), Some(patch_body(json!({ "type": "object" }))), responses(200, &object)),
            }),
            "scale" => {
                let scale = reference("Scale");
                json!({
                    "get": operation(&format!("read{suffix}Scale"), "get", None, item_params(vec![]), None, responses(200, &scale)),
                    "put": operation(&format!("replace{suffix}Scale"), "put", None, item_params(write_parameters()), Some(json_content(scale.clone())), responses(200, &scale)),
                    "patch": operation(&format!("patch{suffix}Scale"), "patch", None, item_params(patch_params.clone()), Some(patch_body(json!({ "type": "object" }))), responses(200, &scale)),
                })
            }
            "accept" => json!({
                "post": operation(
                    &format!("accept{suffix}"), "post", k, item_params(vec![]),
                    Some(json_content(json!({ "type": "object", "description": "The tasks to create from the offer." }))),
                    responses(200, &object),
                ),
            }),
            "trigger" => json!({
                "post": operation(&format!("trigger{suffix}"), "post", k, item_params(vec![]), None, responses(200, &object)),
            }),
            "log" => json!({
                "get": {
                    "operationId": format!("read{suffix}Log"),
                    "x-kubernetes-action": "get",
                    "parameters": item_params(vec![
                        query("follow", "Keep streaming as the task writes.", "boolean"),
                        query("tailLines", "Start this many lines from the end.", "integer"),
                        query("container", "stdout (default) or stderr.", "string"),
                    ]),
                    "responses": { "200": { "description": "The log", "content": { "text/plain": { "schema": { "type": "string" } } } } },
                },
            }),
            _ => continue,
        };
        paths.insert(path, entry);
    }
}

/// The standalone schema of every kind, generated once.
fn cached_schema(kind: &KindInfo) -> &'static Value {
    static SCHEMAS: std::sync::OnceLock<std::collections::HashMap<&'static str, Value>> = std::sync::OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| KINDS.iter().map(|k| (k.kind, kind_schema(k))).collect());
    schemas.get(kind.kind).unwrap_or(&Value::Null)
}

/// Removes the fields of `object` that the kind's schema does not declare, returning their paths
/// (`spec.healthChecks[0].foo`). This is how `fieldValidation=Warn` and `Ignore` accept what `Strict` rejects;
/// wrongly typed fields are left for admission to report.
pub fn prune_unknown_fields(kind: &KindInfo, object: &mut Value) -> Vec<String> {
    let root = cached_schema(kind);
    let mut removed = Vec::new();
    prune(object, root, root, "", &mut removed);
    removed
}

fn prune(value: &mut Value, schema: &Value, root: &Value, path: &str, removed: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/$defs/");
        if let Some(target) = root.get("$defs").and_then(|d| d.get(name)) {
            prune(value, target, root, path, removed);
        }
        return;
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            for branch in branches.iter().filter(|b| b.get("type").and_then(Value::as_str) != Some("null")) {
                prune(value, branch, root, path, removed);
            }
        }
    }
    let join = |key: &str| {
        let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match (path.is_empty(), plain) {
            (true, true) => key.to_owned(),
            (false, true) => format!("{path}.{key}"),
            (_, false) => format!("{path}[{key}]"),
        }
    };
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_schema =
                    properties.and_then(|p| p.get(&key)).or_else(|| additional.filter(|a| a.is_object()));
                match child_schema {
                    Some(child_schema) => {
                        if let Some(child) = map.get_mut(&key) {
                            prune(child, child_schema, root, &join(&key), removed);
                        }
                    }
                    None if additional == Some(&Value::Bool(false)) => {
                        map.remove(&key);
                        removed.push(join(&key));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|i| i.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, item_schema, root, &format!("{path}[{i}]"), removed);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_matches_serde() {
        assert_eq!(camel_case("max_launch_delay_seconds"), "maxLaunchDelaySeconds");
        assert_eq!(camel_case("type_"), "type");
        assert_eq!(camel_case("cpus"), "cpus");
    }
}
