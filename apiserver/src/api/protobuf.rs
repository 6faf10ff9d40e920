//! Kubernetes' protobuf encoding, read for the kinds kubectl's typed commands send that way: `kubectl create role`,
//! `create rolebinding`, `create clusterrole` and `create clusterrolebinding` post RBAC objects as
//! `application/vnd.kubernetes.protobuf` (they are built-in kinds to kubectl), and answers in JSON are fine to it.
//!
//! A body is the four bytes `k8s\0` and a `runtime.Unknown` message: the type meta and the object's own message
//! (`k8s.io.api.rbac.v1.Role` …), whose fields this module decodes into the JSON the rest of the API reads. Only the
//! fields a client may set are read; server-managed metadata is ignored, as it is in JSON.

use std::collections::BTreeMap;

use agora_schemas::KindInfo;
use agora_schemas::rbac::RBAC_API_VERSION;
use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult};

/// The media type.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// What every protobuf body starts with.
const MAGIC: &[u8; 4] = b"k8s\0";

#[derive(Clone, PartialEq, prost::Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    content_encoding: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "13")]
    owner_references: Vec<OwnerReference>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OwnerReference {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    uid: Option<String>,
    #[prost(string, optional, tag = "5")]
    api_version: Option<String>,
    #[prost(bool, optional, tag = "6")]
    controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    block_owner_deletion: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PolicyRule {
    #[prost(string, repeated, tag = "1")]
    verbs: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    api_groups: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    resources: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    resource_names: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    non_resource_urls: Vec<String>,
}

/// `Role` and `ClusterRole` (whose `aggregationRule`, field 3, Agora does not serve).
#[derive(Clone, PartialEq, prost::Message)]
struct RoleMessage {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    rules: Vec<PolicyRule>,
    #[prost(bytes = "vec", optional, tag = "3")]
    aggregation_rule: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Subject {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "2")]
    api_group: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    namespace: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RoleRef {
    #[prost(string, optional, tag = "1")]
    api_group: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
}

/// `RoleBinding` and `ClusterRoleBinding`.
#[derive(Clone, PartialEq, prost::Message)]
struct BindingMessage {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, repeated, tag = "2")]
    subjects: Vec<Subject>,
    #[prost(message, optional, tag = "3")]
    role_ref: Option<RoleRef>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SelfSubjectAccessReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<ReviewSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

/// The JSON of a `SelfSubjectAccessReview` sent as protobuf (`kubectl auth can-i` sends it so).
///
/// # Errors
/// 400 for a body that is not one.
pub(crate) fn self_review(body: &[u8]) -> ApiResult<Value> {
    let bad = |why: String| {
        ApiError::bad_request(format!("the request body is not a SelfSubjectAccessReview in {MEDIA_TYPE}: {why}"))
    };
    let envelope = body.strip_prefix(MAGIC.as_slice()).ok_or_else(|| bad("it does not start with k8s\\0".into()))?;
    let unknown: Unknown = prost::Message::decode(envelope).map_err(|e| bad(e.to_string()))?;
    let kind = unknown.type_meta.and_then(|t| t.kind).unwrap_or_default();
    if kind != "SelfSubjectAccessReview" {
        return Err(bad(format!("it holds {kind:?}")));
    }
    let review: SelfSubjectAccessReview =
        prost::Message::decode(unknown.raw.unwrap_or_default().as_slice()).map_err(|e| bad(e.to_string()))?;
    let spec = review.spec.unwrap_or_default();
    let mut out = Map::new();
    if let Some(r) = spec.resource_attributes {
        let mut attributes = Map::new();
        for (field, value) in [
            ("namespace", r.namespace),
            ("verb", r.verb),
            ("group", r.group),
            ("version", r.version),
            ("resource", r.resource),
            ("subresource", r.subresource),
            ("name", r.name),
        ] {
            put(&mut attributes, field, json!(value));
        }
        out.insert("resourceAttributes".into(), Value::Object(attributes));
    }
    if let Some(n) = spec.non_resource_attributes {
        out.insert(
            "nonResourceAttributes".into(),
            json!({ "path": n.path.unwrap_or_default(), "verb": n.verb.unwrap_or_default() }),
        );
    }
    Ok(json!({ "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": out }))
}

/// Sets `field` of `map` when `value` says something (an absent or empty field stays absent, as in JSON).
fn put(map: &mut Map<String, Value>, field: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if !empty {
        map.insert(field.to_owned(), value);
    }
}

fn metadata(meta: Option<ObjectMeta>) -> Value {
    let meta = meta.unwrap_or_default();
    let mut out = Map::new();
    put(&mut out, "name", json!(meta.name));
    put(&mut out, "generateName", json!(meta.generate_name));
    put(&mut out, "namespace", json!(meta.namespace));
    put(&mut out, "labels", json!(meta.labels));
    put(&mut out, "annotations", json!(meta.annotations));
    put(&mut out, "finalizers", json!(meta.finalizers));
    let owners: Vec<Value> = meta
        .owner_references
        .into_iter()
        .map(|o| {
            let mut owner = Map::new();
            put(&mut owner, "apiVersion", json!(o.api_version));
            put(&mut owner, "kind", json!(o.kind));
            put(&mut owner, "name", json!(o.name));
            put(&mut owner, "uid", json!(o.uid));
            put(&mut owner, "controller", json!(o.controller));
            put(&mut owner, "blockOwnerDeletion", json!(o.block_owner_deletion));
            Value::Object(owner)
        })
        .collect();
    put(&mut out, "ownerReferences", json!(owners));
    Value::Object(out)
}

/// Whether a request body of `media` (the Content-Type's media type) is protobuf this module reads for `kind`.
pub(super) fn reads(kind: &KindInfo, media: &str) -> bool {
    media == MEDIA_TYPE && kind.api_version == RBAC_API_VERSION
}

/// The JSON of a protobuf body posted to `kind`'s path.
///
/// # Errors
/// 400 for a body that is not Kubernetes protobuf, or of another kind than the path's.
pub(super) fn to_json(kind: &KindInfo, body: &[u8]) -> ApiResult<Vec<u8>> {
    let bad =
        |why: String| ApiError::bad_request(format!("the request body is not a {} in {MEDIA_TYPE}: {why}", kind.kind));
    let envelope = body.strip_prefix(MAGIC.as_slice()).ok_or_else(|| bad("it does not start with k8s\\0".into()))?;
    let unknown: Unknown = prost::Message::decode(envelope).map_err(|e| bad(e.to_string()))?;
    if unknown.content_encoding.as_deref().is_some_and(|e| !e.is_empty()) {
        return Err(bad("content encodings are not read".into()));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let (api_version, kind_name) = (type_meta.api_version.unwrap_or_default(), type_meta.kind.unwrap_or_default());
    if api_version != kind.api_version || kind_name != kind.kind {
        return Err(bad(format!("it holds {kind_name} of {api_version}")));
    }
    let raw = unknown.raw.unwrap_or_default();
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind_name));
    match kind.kind {
        "Role" | "ClusterRole" => {
            let role: RoleMessage = prost::Message::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            if role.aggregation_rule.is_some() {
                return Err(ApiError::bad_request("aggregationRule: Agora does not aggregate ClusterRoles"));
            }
            object.insert("metadata".into(), metadata(role.metadata));
            let rules: Vec<Value> = role
                .rules
                .into_iter()
                .map(|r| {
                    let mut rule = Map::new();
                    rule.insert("verbs".into(), json!(r.verbs));
                    put(&mut rule, "apiGroups", json!(r.api_groups));
                    put(&mut rule, "resources", json!(r.resources));
                    put(&mut rule, "resourceNames", json!(r.resource_names));
                    put(&mut rule, "nonResourceURLs", json!(r.non_resource_urls));
                    Value::Object(rule)
                })
                .collect();
            object.insert("rules".into(), json!(rules));
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let binding: BindingMessage = prost::Message::decode(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
            object.insert("metadata".into(), metadata(binding.metadata));
            let subjects: Vec<Value> = binding
                .subjects
                .into_iter()
                .map(|s| {
                    let mut subject = Map::new();
                    subject.insert("kind".into(), json!(s.kind.unwrap_or_default()));
                    subject.insert("name".into(), json!(s.name.unwrap_or_default()));
                    put(&mut subject, "apiGroup", json!(s.api_group));
                    put(&mut subject, "namespace", json!(s.namespace));
                    Value::Object(subject)
                })
                .collect();
            object.insert("subjects".into(), json!(subjects));
            let role_ref = binding.role_ref.unwrap_or_default();
            object.insert(
                "roleRef".into(),
                json!({ "apiGroup": role_ref.api_group.unwrap_or_default(), "kind": role_ref.kind.unwrap_or_default(),
                        "name": role_ref.name.unwrap_or_default() }),
            );
        }
        other => return Err(bad(format!("{other} is not read from protobuf"))),
    }
    Ok(serde_json::to_vec(&object).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
        };
        [MAGIC.as_slice(), &unknown.encode_to_vec()].concat()
    }

    fn info(kind: &str) -> &'static KindInfo {
        agora_schemas::kind_of(RBAC_API_VERSION, kind).unwrap()
    }

    #[test]
    fn a_role_and_a_binding_as_kubectl_sends_them_read_as_json() {
        let role = RoleMessage {
            metadata: Some(ObjectMeta {
                name: Some("reader".into()),
                namespace: Some("team-a".into()),
                ..Default::default()
            }),
            rules: vec![PolicyRule {
                verbs: vec!["get".into()],
                api_groups: vec!["agora".into()],
                resources: vec!["apps".into()],
                ..Default::default()
            }],
            aggregation_rule: None,
        };
        let body = envelope(RBAC_API_VERSION, "Role", role.encode_to_vec());
        let json: Value = serde_json::from_slice(&to_json(info("Role"), &body).unwrap()).unwrap();
        assert_eq!(
            json,
            json!({"apiVersion": RBAC_API_VERSION, "kind": "Role", "metadata": {"name": "reader", "namespace": "team-a"},
                   "rules": [{"verbs": ["get"], "apiGroups": ["agora"], "resources": ["apps"]}]})
        );
        let binding = BindingMessage {
            metadata: Some(ObjectMeta { name: Some("alice".into()), ..Default::default() }),
            subjects: vec![Subject {
                kind: Some("User".into()),
                name: Some("alice".into()),
                api_group: Some("rbac.authorization.k8s.io".into()),
                namespace: None,
            }],
            role_ref: Some(RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: Some("Role".into()),
                name: Some("reader".into()),
            }),
        };
        let body = envelope(RBAC_API_VERSION, "RoleBinding", binding.encode_to_vec());
        let json: Value = serde_json::from_slice(&to_json(info("RoleBinding"), &body).unwrap()).unwrap();
        assert_eq!(
            json["subjects"][0],
            json!({"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"})
        );
        assert_eq!(json["roleRef"]["name"], "reader");
    }

    #[test]
    fn what_is_not_such_a_body_is_a_clear_400() {
        let role = info("Role");
        for (body, says) in [
            (b"{\"kind\":\"Role\"}".to_vec(), "k8s\\0"),
            ([MAGIC.as_slice(), &[0xff, 0xff, 0xff]].concat(), "not a Role"),
            (envelope(RBAC_API_VERSION, "RoleBinding", Vec::new()), "it holds RoleBinding"),
            (envelope("agora/v1", "Role", Vec::new()), "it holds Role of agora/v1"),
        ] {
            let error = to_json(role, &body).unwrap_err();
            assert_eq!(error.0.code, 400);
            let message = error.0.message.unwrap_or_default();
            assert!(message.contains(says), "{says}: {message}");
        }
        assert!(reads(role, MEDIA_TYPE) && !reads(agora_schemas::kind_info("App").unwrap(), MEDIA_TYPE));
    }
}
