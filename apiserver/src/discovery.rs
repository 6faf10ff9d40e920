//! What clients ask before anything else: `/version`, API discovery (`/api`, `/apis`, `/apis/agora/v1`,
//! `/apis/rbac.authorization.k8s.io/v1`, and the aggregated form kubectl prefers), the OpenAPI v3 documents generated
//! from the types, and health.

use agora_schemas::schema::group_versions;
use agora_schemas::{KINDS, KindInfo};
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

/// The categories `kubectl get all` and `kubectl get agora` gather: Agora's own kinds only.
fn categories(kind: &KindInfo) -> Vec<&'static str> {
    if kind.is_agoras() { vec!["all", "agora"] } else { Vec::new() }
}

/// The kinds of one group version.
fn kinds_of(api_version: &str) -> impl Iterator<Item = &'static KindInfo> + '_ {
    KINDS.iter().filter(move |k| k.api_version == api_version)
}

/// The resources of a group version, as `APIResource` entries (objects and their subresources).
fn resources(api_version: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for kind in kinds_of(api_version) {
        out.push(json!({
            "name": kind.plural,
            "singularName": kind.singular,
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": VERBS,
            "shortNames": kind.short_names,
            "categories": categories(kind),
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

/// `GET /apis/GROUP/VERSION`; `None` for a group version Agora does not serve.
#[must_use]
pub fn group_version(api_version: &str) -> Option<Response> {
    group_versions().contains(&api_version).then(|| {
        json(&json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources(api_version),
        }))
    })
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=APIGroupDiscoveryList"))
}

/// One group version's resources in the aggregated discovery document.
fn aggregated(api_version: &str) -> Vec<Value> {
    kinds_of(api_version)
        .map(|kind| {
            let response_kind = json!({ "group": kind.group, "version": kind.version(), "kind": kind.kind });
            let mut entry = json!({
                "resource": kind.plural,
                "responseKind": response_kind,
                "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": kind.singular,
                "verbs": VERBS,
                "shortNames": kind.short_names,
                "categories": categories(kind),
            });
            let mut subresources = Vec::new();
            if kind.subresources.contains(&"status") {
                subresources.push(json!({
                    "subresource": "status",
                    "responseKind": response_kind,
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
        .collect()
}

/// `GET /apis`: the group list, or the aggregated discovery document when the client asks for it.
#[must_use]
pub fn groups(headers: &HeaderMap) -> Response {
    let served = group_versions();
    let group_of = |api_version: &str| api_version.split_once('/').map_or(("", ""), |(g, v)| (g, v)).0.to_owned();
    if wants_aggregated(headers) {
        let items: Vec<Value> = served
            .iter()
            .map(|api_version| {
                let version = api_version.rsplit('/').next().unwrap_or_default();
                json!({
                    "metadata": { "name": group_of(api_version) },
                    "versions": [{ "version": version, "resources": aggregated(api_version), "freshness": "Current" }],
                })
            })
            .collect();
        return json_with_type(
            &json!({ "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items }),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        );
    }
    let groups: Vec<Value> = served
        .iter()
        .map(|api_version| {
            let version =
                json!({ "groupVersion": api_version, "version": api_version.rsplit('/').next().unwrap_or_default() });
            json!({ "name": group_of(api_version), "versions": [version.clone()], "preferredVersion": version })
        })
        .collect();
    json(&json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups }))
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

/// The OpenAPI document of each group version, and its hash (for the `serverRelativeURL` kubectl caches by).
#[derive(Debug, Clone)]
pub struct OpenApi {
    documents: Vec<(&'static str, Vec<u8>, String)>,
}

impl Default for OpenApi {
    fn default() -> Self {
        let documents = group_versions()
            .into_iter()
            .map(|api_version| {
                let document = serde_json::to_vec(&agora_schemas::schema::openapi_v3(api_version)).unwrap_or_default();
                // FNV-1a: a stable fingerprint of the document, so clients' caches refresh when it changes.
                let hash = document
                    .iter()
                    .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
                (api_version, document, format!("{hash:016X}"))
            })
            .collect();
        Self { documents }
    }
}

impl OpenApi {
    /// `GET /openapi/v3`.
    #[must_use]
    pub fn index(&self) -> Response {
        let paths: serde_json::Map<String, Value> = self
            .documents
            .iter()
            .map(|(api_version, _, hash)| {
                (
                    format!("apis/{api_version}"),
                    json!({ "serverRelativeURL": format!("/openapi/v3/apis/{api_version}?hash={hash}") }),
                )
            })
            .collect();
        json(&json!({ "paths": paths }))
    }

    /// `GET /openapi/v3/apis/GROUP/VERSION`; `None` for a group version Agora does not serve.
    #[must_use]
    pub fn group(&self, api_version: &str) -> Option<Response> {
        let (_, document, _) = self.documents.iter().find(|(served, _, _)| *served == api_version)?;
        let mut response = (StatusCode::OK, document.clone()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        Some(response)
    }
}
