//! What clients ask before anything else: `/version`, API discovery (`/api`, `/apis`, `/apis/agora/v1`, and the
//! aggregated form kubectl prefers), the OpenAPI v3 documents generated from the types, and health.

use agora_schemas::{API_GROUP, API_GROUP_VERSION, API_VERSION, KINDS};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The Kubernetes minor version kubectl's dispatcher should pick (it must be one it ships).
pub const KUBE_MINOR: &str = "32";

fn json(value: &Value) -> Response {
    json_with_type(value, "application/json")
}

fn json_with_type(value: &Value, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, serde_json::to_vec(value).unwrap_or_default()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// `GET /version`.
#[must_use]
pub fn version() -> Response {
    json(&json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-agora.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

/// The verbs every kind serves.
const VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The resources of the group, as `APIResource` entries (objects and their subresources).
fn resources() -> Vec<Value> {
    let mut out = Vec::new();
    for kind in KINDS {
        out.push(json!({
            "name": kind.plural,
            "singularName": kind.singular,
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": VERBS,
            "shortNames": kind.short_names,
            "categories": ["all", "agora"],
        }));
        if kind.subresources.contains(&"status") {
            out.push(json!({
                "name": format!("{}/status", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": kind.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if kind.subresources.contains(&"scale") {
            out.push(json!({
                "name": format!("{}/scale", kind.plural),
                "singularName": "",
                "namespaced": kind.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    out
}

/// `GET /apis/agora/v1`.
#[must_use]
pub fn group_version() -> Response {
    json(
        &json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION, "resources": resources() }),
    )
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=APIGroupDiscoveryList"))
}

/// `GET /apis`: the group list, or the aggregated discovery document when the client asks for it.
#[must_use]
pub fn groups(headers: &HeaderMap) -> Response {
    let version = json!({ "groupVersion": API_VERSION, "version": API_GROUP_VERSION });
    if wants_aggregated(headers) {
        let resources: Vec<Value> = KINDS
            .iter()
            .map(|kind| {
                let mut entry = json!({
                    "resource": kind.plural,
                    "responseKind": { "group": API_GROUP, "version": API_GROUP_VERSION, "kind": kind.kind },
                    "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": kind.singular,
                    "verbs": VERBS,
                    "shortNames": kind.short_names,
                    "categories": ["all", "agora"],
                });
                let mut subresources = Vec::new();
                if kind.subresources.contains(&"status") {
                    subresources.push(json!({
                        "subresource": "status",
                        "responseKind": { "group": API_GROUP, "version": API_GROUP_VERSION, "kind": kind.kind },
                        "verbs": ["get", "patch", "update"],
                    }));
                }
                if kind.subresources.contains(&"scale") {
                    subresources.push(json!({
                        "subresource": "scale",
                        "responseKind": { "group": "autoscaling", "version": "v1", "kind": "Scale" },
                        "verbs": ["get", "patch", "update"],
                    }));
                }
                if !subresources.is_empty() {
                    entry["subresources"] = json!(subresources);
                }
                entry
            })
            .collect();
        return json_with_type(
            &json!({
                "kind": "APIGroupDiscoveryList",
                "apiVersion": "apidiscovery.k8s.io/v2",
                "metadata": {},
                "items": [{
                    "metadata": { "name": API_GROUP },
                    "versions": [{ "version": API_GROUP_VERSION, "resources": resources, "freshness": "Current" }],
                }],
            }),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        );
    }
    json(&json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{ "name": API_GROUP, "versions": [version.clone()], "preferredVersion": version }],
    }))
}

/// `GET /api`: the core group, where Agora serves only `namespaces` (read-only: they exist by being used).
#[must_use]
pub fn core(headers: &HeaderMap) -> Response {
    if wants_aggregated(headers) {
        let namespaces = json!({
            "resource": "namespaces",
            "responseKind": { "group": "", "version": "v1", "kind": "Namespace" },
            "scope": "Cluster",
            "singularResource": "namespace",
            "verbs": ["get", "list"],
            "shortNames": ["ns"],
        });
        return json_with_type(
            &json!({
                "kind": "APIGroupDiscoveryList",
                "apiVersion": "apidiscovery.k8s.io/v2",
                "metadata": {},
                "items": [{ "metadata": {}, "versions": [{ "version": "v1", "resources": [namespaces], "freshness": "Current" }] }],
            }),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        );
    }
    json(&json!({ "kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [] }))
}

/// `GET /api/v1`.
#[must_use]
pub fn core_v1() -> Response {
    json(&json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": [{
            "name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
            "verbs": ["get", "list"], "shortNames": ["ns"],
        }],
    }))
}

/// The OpenAPI document of the group, and its hash (for the `serverRelativeURL` kubectl caches by).
#[derive(Debug, Clone)]
pub struct OpenApi {
    document: Vec<u8>,
    hash: String,
}

impl Default for OpenApi {
    fn default() -> Self {
        let document = serde_json::to_vec(&agora_schemas::schema::openapi_v3()).unwrap_or_default();
        // FNV-1a: a stable fingerprint of the document, so clients' caches refresh when it changes.
        let hash =
            document.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
        Self { document, hash: format!("{hash:016X}") }
    }
}

impl OpenApi {
    /// `GET /openapi/v3`.
    #[must_use]
    pub fn index(&self) -> Response {
        json(&json!({
            "paths": {
                format!("apis/{API_GROUP}/{API_GROUP_VERSION}"): {
                    "serverRelativeURL": format!("/openapi/v3/apis/{API_GROUP}/{API_GROUP_VERSION}?hash={}", self.hash),
                },
            },
        }))
    }

    /// `GET /openapi/v3/apis/agora/v1`.
    #[must_use]
    pub fn group(&self) -> Response {
        let mut response = (StatusCode::OK, self.document.clone()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        response
    }
}
