//! Authorization at the edge: the RBAC objects of the store followed into a [`Policy`] (a list and a watch per kind,
//! rebuilt on every change), every request checked against it before any handler reads the store (so a refusal never
//! tells whether a name exists), `403 Forbidden` naming principal, verb and resource, and
//! `SelfSubjectAccessReview` for `kubectl auth can-i`.
//!
//! The built-in ClusterRoles ([`BUILT_IN`]) are created at start when missing, as Kubernetes bootstraps its own:
//! `cluster-admin`, `admin`, `edit`, `view`, and `system:discovery` (bound to every authenticated principal).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use agora_schemas::rbac::{ClusterRole, ClusterRoleBinding, RBAC_GROUP, Role, RoleBinding};
use agora_schemas::{KindInfo, StatusReason};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::api::ApiError;
use crate::auth::Principal;
use crate::authz::{Policy, Request as Asked};
use crate::store::{KeyLayout, RangeRequest, SharedStore, StoreError, WatchEvent};

/// The RBAC kinds, in the order their objects are indexed.
const KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

/// The policy every request is checked against.
pub struct Authorizer {
    /// Where a framework's offers and users are read (acting as a framework is checked against what it is).
    store: SharedStore,
    keys: KeyLayout,
    policy: RwLock<Arc<Policy>>,
    /// Per kind, the objects by key, as stored.
    objects: Mutex<HashMap<&'static str, HashMap<String, Value>>>,
    loaded: tokio::sync::watch::Sender<usize>,
}

fn rbac_kind(kind: &str) -> &'static KindInfo {
    agora_schemas::kind_of(agora_schemas::rbac::RBAC_API_VERSION, kind)
        .unwrap_or_else(|| unreachable!("RBAC kinds are registered"))
}

impl Authorizer {
    /// An authorizer with no RBAC objects yet; [`Self::follow`] reads them.
    #[must_use]
    pub fn new(store: SharedStore, keys: KeyLayout) -> Arc<Self> {
        Arc::new(Self {
            store,
            keys,
            policy: RwLock::default(),
            objects: Mutex::default(),
            loaded: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The current policy.
    #[must_use]
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether every kind has been read once.
    async fn ready(&self) -> bool {
        if *self.loaded.borrow() >= KINDS.len() {
            return true;
        }
        let mut loaded = self.loaded.subscribe();
        tokio::time::timeout(Duration::from_secs(5), loaded.wait_for(|n| *n >= KINDS.len())).await.is_ok()
    }

    fn rebuild(&self) {
        let objects = self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut policy = Policy::default();
        let each = |kind: &str| objects.get(kind).into_iter().flat_map(HashMap::values);
        for value in each("Role") {
            if let Ok(role) = serde_json::from_value::<Role>(value.clone()) {
                policy.add_role(&role);
            }
        }
        for value in each("ClusterRole") {
            if let Ok(role) = serde_json::from_value::<ClusterRole>(value.clone()) {
                policy.add_cluster_role(&role);
            }
        }
        for value in each("RoleBinding") {
            if let Ok(binding) = serde_json::from_value::<RoleBinding>(value.clone()) {
                policy.add_role_binding(&binding);
            }
        }
        for value in each("ClusterRoleBinding") {
            if let Ok(binding) = serde_json::from_value::<ClusterRoleBinding>(value.clone()) {
                policy.add_cluster_role_binding(&binding);
            }
        }
        *self.policy.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
    }

    /// Follows the RBAC objects of the store for as long as the server runs (one list and watch per kind, started
    /// over after a pause whenever it breaks).
    pub async fn follow(self: Arc<Self>) {
        let (store, keys) = (self.store.clone(), self.keys.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for kind in KINDS {
            let (authorizer, store, prefix) = (self.clone(), store.clone(), keys.kind_prefix(rbac_kind(kind).storage));
            tasks.spawn(async move {
                let mut first = true;
                loop {
                    if let Err(e) = authorizer.follow_kind(kind, &store, &prefix, &mut first).await {
                        tracing::warn!(error = %e, kind, "reading the RBAC objects again");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn follow_kind(
        &self,
        kind: &'static str,
        store: &SharedStore,
        prefix: &str,
        first: &mut bool,
    ) -> Result<(), StoreError> {
        let listed = store.range(RangeRequest::prefix(prefix)).await?;
        {
            let mut objects = self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let of_kind = objects.entry(kind).or_default();
            of_kind.clear();
            for kv in &listed.kvs {
                if let Ok(value) = serde_json::from_slice::<Value>(&kv.value) {
                    of_kind.insert(kv.key.clone(), value);
                }
            }
        }
        self.rebuild();
        if std::mem::take(first) {
            self.loaded.send_modify(|n| *n += 1);
        }
        let mut changes = store.watch_changes(prefix, listed.revision + 1).await?;
        while let Some(change) = changes.next().await {
            {
                let mut objects = self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let of_kind = objects.entry(kind).or_default();
                match change? {
                    WatchEvent::Put { kv, .. } => {
                        if let Ok(value) = serde_json::from_slice::<Value>(&kv.value) {
                            of_kind.insert(kv.key.clone(), value);
                        }
                    }
                    WatchEvent::Delete { key, .. } => {
                        of_kind.remove(&key);
                    }
                    WatchEvent::Progress { .. } => continue,
                }
            }
            self.rebuild();
        }
        Err(StoreError::Unavailable("the watch of the RBAC objects ended".to_owned()))
    }
}

/// What an HTTP request asks, in RBAC's terms: a verb on a resource for the API's paths, a verb on a path otherwise.
#[must_use]
pub fn asked<'a>(method: &'a Method, path: &'a str, query: Option<&str>) -> Asked<'a> {
    let lower = match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    };
    let (group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("", rest)
    } else if let Some(rest) = path.strip_prefix("/apis/") {
        match rest.splitn(3, '/').collect::<Vec<_>>().as_slice() {
            [group, _version, rest] if !rest.is_empty() => (*group, *rest),
            _ => return Asked::Path { verb: lower, path },
        }
    } else {
        return Asked::Path { verb: lower, path };
    };
    let mut parts: Vec<&'a str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let mut namespace = None;
    if parts.first() == Some(&"namespaces") && parts.len() >= 3 {
        namespace = Some(parts[1]);
        parts.drain(..2);
    }
    let (resource, name, subresource) = match parts.as_slice() {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub, ..] => (*resource, Some(*name), Some(*sub)),
        _ => return Asked::Path { verb: lower, path },
    };
    // `/api/v1/namespaces/NAME` names a namespace, not a namespace's resources.
    let (resource, name, namespace) = match (group, namespace, resource) {
        ("", None, "namespaces") => ("namespaces", name, None),
        _ => (resource, name, namespace),
    };
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match (method.clone(), name.is_some(), subresource) {
        (Method::GET | Method::HEAD, false, _) if watch => "watch",
        (Method::GET | Method::HEAD, false, _) => "list",
        (Method::GET | Method::HEAD, true, _) => "get",
        // Acting through a subresource that makes something happen (an offer's acceptance, a job's trigger) is
        // creating it, as Kubernetes authorizes pods/eviction.
        (Method::POST, _, _) => "create",
        (Method::PUT, _, _) => "update",
        (Method::PATCH, _, _) => "patch",
        (Method::DELETE, true, _) => "delete",
        (Method::DELETE, false, _) => "deletecollection",
        _ => lower,
    };
    Asked::Resource { verb, group, resource, subresource, namespace, name }
}

/// Kubernetes' wording of a refusal: `apps.agora "web" is forbidden: User "alice" cannot get resource "apps" in API
/// group "agora" in the namespace "team-b"`.
#[must_use]
pub fn forbidden_message(principal: &Principal, asked: &Asked<'_>) -> String {
    match *asked {
        Asked::Resource { verb, group, resource, subresource, namespace, name } => {
            let qualified = if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") };
            let object = match name {
                Some(name) => format!("{qualified} \"{name}\""),
                None => qualified,
            };
            let what = match subresource {
                Some(sub) => format!("resource \"{resource}/{sub}\""),
                None => format!("resource \"{resource}\""),
            };
            let scope = match namespace {
                Some(ns) => format!("in the namespace \"{ns}\""),
                None => "at the cluster scope".to_owned(),
            };
            format!(
                "{object} is forbidden: User \"{}\" cannot {verb} {what} in API group \"{group}\" {scope}",
                principal.name
            )
        }
        Asked::Path { verb, path } => {
            format!("forbidden: User \"{}\" cannot {verb} path \"{path}\"", principal.name)
        }
    }
}

/// What acting as a framework takes besides the request's own verb: `use` on the framework — to accept or decline
/// its offers, to write its Framework object, to hold its lease — and `use` on the `users` its tasks would run as
/// (Mesos' `run_tasks` ACL), read from the acceptance and the framework. `body` is the request's body, when the
/// request is one whose body names what is used.
async fn uses(
    authorizer: &Authorizer,
    asked: &Asked<'_>,
    body: Option<&Value>,
) -> Result<Vec<(String, String)>, StoreError> {
    let Asked::Resource { verb, group: agora_schemas::API_GROUP, resource, subresource, namespace, name } = *asked
    else {
        return Ok(Vec::new());
    };
    let writes = matches!(verb, "create" | "update" | "patch" | "delete");
    let named = || {
        name.map(str::to_owned)
            .or_else(|| body.and_then(|b| b.pointer("/metadata/name")).and_then(Value::as_str).map(str::to_owned))
    };
    let framework = |f: String| ("frameworks".to_owned(), f);
    match (resource, subresource, namespace) {
        // Deleting them all is acting as every one of them: only a grant of `use` on any framework (no names) does.
        ("frameworks", None, None) | ("leases", None, Some(agora_schemas::names::FRAMEWORK_LEASE_NAMESPACE))
            if verb == "deletecollection" =>
        {
            Ok(vec![framework("*".to_owned())])
        }
        ("frameworks", None, None) if writes => {
            // The roles it registers for: a team may not claim another's quota by naming its role.
            let mut needed: Vec<(String, String)> = named().map(framework).into_iter().collect();
            needed.extend(roles_named(body).into_iter().map(|r| ("roles".to_owned(), r)));
            Ok(needed)
        }
        ("leases", None, Some(agora_schemas::names::FRAMEWORK_LEASE_NAMESPACE)) if writes => {
            Ok(named().map(framework).into_iter().collect())
        }
        ("offers", Some("accept"), None) => {
            let Some(offer) = name else { return Ok(Vec::new()) };
            let read = |key: String| async move {
                authorizer
                    .store
                    .get(&key)
                    .await
                    .map(|kv| kv.and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok()))
            };
            // An offer that does not exist is the handler's 404 (the principal may accept offers).
            let Some(offer) = read(authorizer.keys.object_key("offers", None, offer)).await? else {
                return Ok(Vec::new());
            };
            let f = offer.pointer("/spec/framework").and_then(Value::as_str).unwrap_or_default().to_owned();
            let mut needed = vec![framework(f.clone())];
            let tasks = body.and_then(|b| b.get("tasks")).and_then(Value::as_array).cloned().unwrap_or_default();
            let mut users: Vec<String> = tasks
                .iter()
                .filter_map(|t| t.pointer("/spec/user").and_then(Value::as_str).map(str::to_owned))
                .collect();
            if tasks.iter().any(|t| t.pointer("/spec/user").and_then(Value::as_str).is_none())
                && let Some(record) = read(authorizer.keys.object_key("frameworks", None, &f)).await?
                && let Some(user) = record.pointer("/spec/user").and_then(Value::as_str)
            {
                users.push(user.to_owned());
            }
            users.sort();
            users.dedup();
            needed.extend(users.into_iter().map(|u| ("users".to_owned(), u)));
            Ok(needed)
        }
        _ => Ok(Vec::new()),
    }
}

/// The DRF roles a Framework write names: `spec.roles` of an object, a merge patch or an apply, and the values a JSON
/// patch puts under `/spec/roles`.
fn roles_named(body: Option<&Value>) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    };
    match body {
        Some(Value::Array(operations)) => operations
            .iter()
            .filter(|op| op["path"].as_str().is_some_and(|p| p.starts_with("/spec/roles")))
            .flat_map(|op| strings(&op["value"]))
            .collect(),
        Some(object) => object.pointer("/spec/roles").map(strings).unwrap_or_default(),
        None => Vec::new(),
    }
}

/// Whether a request's body must be read to authorize it ([`uses`]).
fn reads_body(asked: &Asked<'_>) -> bool {
    matches!(
        *asked,
        Asked::Resource {
            verb: "create",
            group: agora_schemas::API_GROUP,
            resource: "frameworks" | "leases" | "offers",
            ..
        } | Asked::Resource { verb: "update" | "patch", group: agora_schemas::API_GROUP, resource: "frameworks", .. }
    )
}

/// Middleware: refuses (403) what the request's principal may not do. Requests without a principal (the open paths)
/// pass; `SelfSubjectAccessReview`s are always allowed (a principal may ask what it may do).
pub async fn authorize(State(authorizer): State<Arc<Authorizer>>, request: Request, next: Next) -> Response {
    let Some(principal) = request.extensions().get::<Arc<Principal>>().cloned() else {
        return next.run(request).await;
    };
    if principal.is_master() || request.uri().path() == SELF_REVIEWS {
        return next.run(request).await;
    }
    if !authorizer.ready().await {
        return ApiError::new(
            StatusReason::ServiceUnavailable,
            "the apiserver is still reading its RBAC policy; try again",
        )
        .into_response();
    }
    let (method, path, query) =
        (request.method().clone(), request.uri().path().to_owned(), request.uri().query().map(str::to_owned));
    let asked = asked(&method, &path, query.as_deref());
    let policy = authorizer.policy();
    if !policy.authorize(&principal, &asked) {
        let mut status = agora_schemas::Status::failure(StatusReason::Forbidden, forbidden_message(&principal, &asked));
        if let Asked::Resource { group, resource, name, .. } = asked {
            status = status.with_object(resource, name).in_group(group);
        }
        return crate::api::ApiError(Box::new(status)).into_response();
    }
    // What the body names, for the requests whose authorization depends on it (read with the API's limits).
    let mut request = request;
    let mut body = None;
    if reads_body(&asked) {
        let (parts, stream) = request.into_parts();
        let read =
            tokio::time::timeout(Duration::from_secs(60), axum::body::to_bytes(stream, crate::api::MAX_BODY_BYTES));
        let bytes = match read.await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                return ApiError::new(StatusReason::RequestEntityTooLarge, "the request body is too large")
                    .into_response();
            }
            Err(_) => {
                return ApiError::new(StatusReason::Timeout, "the request body did not arrive within 60 s")
                    .into_response();
            }
        };
        // Read as the handler will read it (an apply may be YAML); a body that does not decode is the handler's 400.
        let apply = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/apply-patch"));
        let decoded = if apply { crate::api::decode::yaml(&bytes) } else { crate::api::decode::json(&bytes) };
        body = decoded.ok().map(|d| d.value);
        request = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    let needed = match uses(&authorizer, &asked, body.as_ref()).await {
        Ok(needed) => needed,
        Err(e) => return ApiError::from(e).into_response(),
    };
    for (resource, name) in &needed {
        let using = Asked::Resource {
            verb: "use",
            group: agora_schemas::API_GROUP,
            resource,
            subresource: None,
            namespace: None,
            name: Some(name),
        };
        if !policy.authorize(&principal, &using) {
            let status = agora_schemas::Status::failure(
                StatusReason::Forbidden,
                use_refused(&principal, &asked, resource, name),
            )
            .with_object(resource, Some(name))
            .in_group(agora_schemas::API_GROUP);
            return crate::api::ApiError(Box::new(status)).into_response();
        }
    }
    next.run(request).await
}

/// The words of a refusal to act as a framework, or to run tasks as a user.
#[must_use]
pub fn use_refused(principal: &Principal, asked: &Asked<'_>, resource: &str, name: &str) -> String {
    let what = match resource {
        "users" => "run tasks as user",
        "roles" => "register a framework for role",
        _ => "act as framework",
    };
    let object = forbidden_message(principal, asked);
    let object = object.split(" is forbidden").next().unwrap_or_default();
    format!(
        "{object} is forbidden: User \"{}\" cannot {what} \"{name}\" (that takes the verb use on {resource}.agora \"{name}\")",
        principal.name
    )
}

/// Where `kubectl auth can-i` asks.
pub const SELF_REVIEWS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// `POST` [`SELF_REVIEWS`]: whether the asking principal may do what the review's spec says (JSON, or the protobuf
/// kubectl sends).
pub fn self_review(
    authorizer: &Authorizer,
    principal: &Principal,
    media: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let review = if media == crate::api::PROTOBUF {
        crate::api::self_review_from_protobuf(body)?
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))?
    };
    let spec = &review["spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let (allowed, spec_out) = if let Some(attributes) = spec.get("resourceAttributes").filter(|a| a.is_object()) {
        let (verb, group, resource) =
            (text(&attributes["verb"]), text(&attributes["group"]), text(&attributes["resource"]));
        let (subresource, namespace, name) =
            (text(&attributes["subresource"]), text(&attributes["namespace"]), text(&attributes["name"]));
        if verb.is_empty() || resource.is_empty() {
            return Err(ApiError::bad_request("spec.resourceAttributes needs a verb and a resource"));
        }
        let asked = Asked::Resource {
            verb: &verb,
            group: &group,
            resource: &resource,
            subresource: Some(subresource.as_str()).filter(|s| !s.is_empty()),
            namespace: Some(namespace.as_str()).filter(|s| !s.is_empty()),
            name: Some(name.as_str()).filter(|s| !s.is_empty()),
        };
        (authorizer.policy().authorize(principal, &asked), json!({ "resourceAttributes": attributes }))
    } else if let Some(attributes) = spec.get("nonResourceAttributes").filter(|a| a.is_object()) {
        let (verb, path) = (text(&attributes["verb"]), text(&attributes["path"]));
        let asked = Asked::Path { verb: &verb, path: &path };
        (authorizer.policy().authorize(principal, &asked), json!({ "nonResourceAttributes": attributes }))
    } else {
        return Err(ApiError::bad_request("spec needs resourceAttributes or nonResourceAttributes"));
    };
    Ok(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {},
        "spec": spec_out,
        "status": { "allowed": allowed || principal.is_master(), "reason": if allowed || principal.is_master() { "allowed by RBAC" } else { "" } },
    }))
}

/// The ClusterRoles every cluster starts with (created when missing; edited ones are left as they are).
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "cluster-admin",
        r#"[{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]}]"#,
    ),
    (
        "view",
        r#"[{"verbs": ["get", "list", "watch"], "apiGroups": ["agora"], "resources": ["apps", "apps/scale", "appversions", "cronjobs", "tasks", "tasks/log", "events", "offers", "frameworks", "agents", "roles"]},
               {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces", "events"]}]"#,
    ),
    (
        "edit",
        r#"[{"verbs": ["get", "list", "watch"], "apiGroups": ["agora"], "resources": ["apps", "apps/scale", "appversions", "cronjobs", "tasks", "tasks/log", "events", "offers", "frameworks", "agents", "roles", "secrets"]},
               {"verbs": ["create", "update", "patch", "delete", "deletecollection"], "apiGroups": ["agora"], "resources": ["apps", "apps/scale", "cronjobs", "cronjobs/trigger", "secrets"]},
               {"verbs": ["update", "patch"], "apiGroups": ["agora"], "resources": ["tasks"]},
               {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces", "events"]}]"#,
    ),
    (
        "admin",
        r#"[{"verbs": ["get", "list", "watch"], "apiGroups": ["agora"], "resources": ["apps", "apps/scale", "appversions", "cronjobs", "tasks", "tasks/log", "events", "offers", "frameworks", "agents", "roles", "secrets"]},
               {"verbs": ["create", "update", "patch", "delete", "deletecollection"], "apiGroups": ["agora"], "resources": ["apps", "apps/scale", "cronjobs", "cronjobs/trigger", "secrets"]},
               {"verbs": ["update", "patch"], "apiGroups": ["agora"], "resources": ["tasks"]},
               {"verbs": ["get", "list", "watch"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"]},
               {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces", "events"]}]"#,
    ),
    (
        "system:discovery",
        r#"[{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/version", "/openapi", "/openapi/*", "/healthz", "/livez", "/readyz"]}]"#,
    ),
];

/// Creates the built-in ClusterRoles that are missing, and binds `system:discovery` to every authenticated principal.
///
/// # Errors
/// The store's.
pub async fn bootstrap(store: &SharedStore, keys: &KeyLayout) -> Result<(), StoreError> {
    let role_kind = rbac_kind("ClusterRole");
    let binding_kind = rbac_kind("ClusterRoleBinding");
    let now = jiff::Timestamp::now().to_string();
    let meta = |name: &str| {
        json!({ "name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now, "generation": 1,
                "labels": { "kubernetes.io/bootstrapping": "rbac-defaults" } })
    };
    let mut objects: Vec<(String, Value)> = Vec::new();
    for (name, rules) in BUILT_IN {
        let rules: Value = serde_json::from_str(rules).unwrap_or_else(|_| unreachable!("the built-in rules are JSON"));
        let role = json!({ "apiVersion": role_kind.api_version, "kind": "ClusterRole", "metadata": meta(name), "rules": rules });
        objects.push((keys.object_key(role_kind.storage, None, name), role));
    }
    let binding = json!({ "apiVersion": binding_kind.api_version, "kind": "ClusterRoleBinding", "metadata": meta("system:discovery"),
        "subjects": [{ "kind": "Group", "apiGroup": RBAC_GROUP, "name": agora_schemas::AUTHENTICATED_GROUP }],
        "roleRef": { "apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "system:discovery" } });
    objects.push((keys.object_key(binding_kind.storage, None, "system:discovery"), binding));
    for (key, object) in objects {
        let bytes = bytes::Bytes::from(serde_json::to_vec(&object).unwrap_or_default());
        let txn = crate::store::Txn::new(
            vec![crate::store::Compare::Absent(key.clone())],
            vec![crate::store::Op::Put(key, bytes)],
        );
        store.txn(txn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_in_rbacs_terms() {
        let get = Method::GET;
        let resource = |verb, group, resource, subresource, namespace, name| Asked::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        };
        assert_eq!(
            asked(&get, "/apis/agora/v1/namespaces/a/apps/web", None),
            resource("get", "agora", "apps", None, Some("a"), Some("web"))
        );
        assert_eq!(
            asked(&get, "/apis/agora/v1/namespaces/a/apps", None),
            resource("list", "agora", "apps", None, Some("a"), None)
        );
        assert_eq!(
            asked(&get, "/apis/agora/v1/apps", Some("watch=true")),
            resource("watch", "agora", "apps", None, None, None)
        );
        assert_eq!(
            asked(&Method::POST, "/apis/agora/v1/namespaces/f/offers/o1/accept", None),
            resource("create", "agora", "offers", Some("accept"), Some("f"), Some("o1"))
        );
        assert_eq!(
            asked(&Method::PATCH, "/apis/agora/v1/namespaces/a/apps/web/scale", None),
            resource("patch", "agora", "apps", Some("scale"), Some("a"), Some("web"))
        );
        assert_eq!(
            asked(&Method::DELETE, "/apis/agora/v1/namespaces/a/apps", None),
            resource("deletecollection", "agora", "apps", None, Some("a"), None)
        );
        assert_eq!(asked(&get, "/api/v1/namespaces", None), resource("list", "", "namespaces", None, None, None));
        assert_eq!(asked(&get, "/api/v1/namespaces/a", None), resource("get", "", "namespaces", None, None, Some("a")));
        assert_eq!(
            asked(&get, "/api/v1/namespaces/a/events", None),
            resource("list", "", "events", None, Some("a"), None)
        );
        assert_eq!(
            asked(&get, "/apis/rbac.authorization.k8s.io/v1/clusterroles/view", None),
            resource("get", "rbac.authorization.k8s.io", "clusterroles", None, None, Some("view"))
        );
        assert_eq!(asked(&get, "/apis/agora/v1", None), Asked::Path { verb: "get", path: "/apis/agora/v1" });
        assert_eq!(asked(&get, "/metrics", None), Asked::Path { verb: "get", path: "/metrics" });
        assert_eq!(
            asked(&Method::POST, "/store/snapshot", None),
            Asked::Path { verb: "post", path: "/store/snapshot" }
        );
    }

    #[test]
    fn refusals_name_principal_verb_and_resource_as_kubernetes_words_them() {
        let alice = Principal { name: "alice".into(), groups: vec![] };
        let asked = asked(&Method::GET, "/apis/agora/v1/namespaces/team-b/apps/web", None);
        assert_eq!(
            forbidden_message(&alice, &asked),
            "apps.agora \"web\" is forbidden: User \"alice\" cannot get resource \"apps\" in API group \"agora\" in the namespace \"team-b\""
        );
        let asked = self::asked(&Method::GET, "/apis/agora/v1/apps", None);
        assert!(
            forbidden_message(&alice, &asked)
                .ends_with("cannot list resource \"apps\" in API group \"agora\" at the cluster scope")
        );
        let asked = self::asked(&Method::POST, "/apis/agora/v1/namespaces/f/offers/o1/accept", None);
        assert!(forbidden_message(&alice, &asked).contains("cannot create resource \"offers/accept\""));
    }

    /// Agora has no escalation check yet (Kubernetes' `escalate` and `bind` verbs): whoever may write RBAC objects may
    /// grant themselves anything in that scope. So no built-in role but cluster-admin writes them.
    #[test]
    fn no_built_in_role_but_cluster_admin_writes_rbac_objects_or_tokens() {
        for (name, rules) in BUILT_IN.iter().filter(|(name, _)| *name != "cluster-admin") {
            let mut policy = Policy::default();
            let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
                              "rules": serde_json::from_str::<Value>(rules).unwrap()});
            policy.add_cluster_role(&serde_json::from_value(role).unwrap());
            let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "b", "namespace": "team-a"}, "subjects": [{"kind": "User", "name": "alice"}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}});
            policy.add_role_binding(&serde_json::from_value(binding).unwrap());
            let alice = Principal { name: "alice".into(), groups: vec![] };
            for (verb, group, resource) in [
                ("create", "rbac.authorization.k8s.io", "rolebindings"),
                ("patch", "rbac.authorization.k8s.io", "roles"),
                ("create", "agora", "tokens"),
                ("create", "agora", "tasks"),
            ] {
                let asked =
                    Asked::Resource { verb, group, resource, subresource: None, namespace: Some("team-a"), name: None };
                assert!(!policy.authorize(&alice, &asked), "{name} may {verb} {resource}");
            }
        }
    }

    #[test]
    fn the_built_in_roles_are_valid_cluster_roles() {
        for (name, rules) in BUILT_IN {
            let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
                              "rules": serde_json::from_str::<Value>(rules).unwrap()});
            agora_schemas::admit::<ClusterRole>(role).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
