//! What the core group (`/api/v1`) serves: namespaces, which exist by being used, and — read-only — Agora's Events
//! in core `v1` shape, where `kubectl describe` looks for them
//! (`/api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name=…,involvedObject.kind=…`).

use std::collections::BTreeMap;

use agora_schemas::StatusReason;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::codec::{meta_str, stored_object};
use super::error::{ApiError, ApiResult};
use super::print::View;
use super::read::Filter;
use super::route::{Query, Target, check_query, parse_query};
use super::{ResourceApi, json_response};
use crate::store::RangeRequest;

/// Why namespaces cannot be created or deleted, in the 405 that says so.
const NAMESPACES_ARE_IMPLICIT: &str = "namespaces are not objects in Agora: one comes into being when the first \
    object is created in it, and is gone when its last object is deleted (to empty one: kubectl delete \
    apps,cronjobs,tasks --all -n NAME)";

impl ResourceApi {
    /// The namespaces in use — every namespace that holds an object of some kind, and `default` — each with a
    /// creation time: the oldest `creationTimestamp` among the first objects of each kind found in it (the store is
    /// skip-scanned, one small range per namespace and kind, so this is not a scan of every object), or the time
    /// this server started for an empty `default`.
    ///
    /// # Errors
    /// The store failed.
    pub async fn namespaces(&self) -> ApiResult<BTreeMap<String, String>> {
        let mut names = BTreeMap::<String, String>::new();
        for kind in agora_schemas::KINDS.iter().filter(|k| k.namespaced) {
            let prefix = self.keys.kind_prefix(kind.storage);
            let mut after = None;
            loop {
                let request =
                    RangeRequest { prefix: prefix.clone(), start_after: after, limit: Some(1), revision: None };
                let page = self.store.range(request).await?;
                let Some(kv) = page.kvs.first() else { break };
                let Some(namespace) = kv.key[prefix.len()..].split('/').next().map(str::to_owned) else { break };
                // Past every key of this namespace: names are ASCII, so U+10FFFF sorts after all of them.
                after = Some(format!("{prefix}{namespace}/\u{10FFFF}"));
                let created = stored_object(kv).ok().and_then(|o| meta_str(&o, "creationTimestamp").map(str::to_owned));
                let entry = names.entry(namespace).or_default();
                if let Some(created) = created.filter(|c| entry.is_empty() || c < entry) {
                    *entry = created;
                }
            }
        }
        names.entry("default".to_owned()).or_insert_with(|| self.started.to_string());
        Ok(names)
    }

    /// `/api/v1/namespaces[/{name}]`: get and list; anything else is a 405 saying why.
    pub async fn core_namespaces(&self, method: &Method, name: Option<&str>) -> Response {
        let answer = async {
            if *method != Method::GET && *method != Method::HEAD {
                return Err(ApiError::new(
                    StatusReason::MethodNotAllowed,
                    format!("{method} is not supported on namespaces: {NAMESPACES_ARE_IMPLICIT}"),
                ));
            }
            let names = self.namespaces().await?;
            let object = |(name, created): (&String, &String)| {
                json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": { "name": name, "creationTimestamp": created },
                    "spec": { "finalizers": [] },
                    "status": { "phase": "Active" },
                })
            };
            match name {
                Some(name) => names
                    .get_key_value(name)
                    .map(object)
                    .ok_or_else(|| ApiError::new(StatusReason::NotFound, format!("namespaces \"{name}\" not found"))),
                None => {
                    let revision = self.store.current_revision().await?;
                    let items: Vec<Value> = names.iter().map(object).collect();
                    Ok(json!({
                        "apiVersion": "v1",
                        "kind": "NamespaceList",
                        "metadata": { "resourceVersion": revision.to_string() },
                        "items": items,
                    }))
                }
            }
        };
        match answer.await {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(e) => e.into_response(),
        }
    }

    /// `/api/v1/[namespaces/{ns}/]events[/{name}]`: Agora's Events (stored under `agora/v1`) as core `v1` Events,
    /// listed with the field selectors `kubectl describe` sends, or got by name. Writes go to `agora/v1`.
    ///
    /// # Errors
    /// What the request gets instead, as a `Status`.
    pub async fn core_events(
        &self,
        method: &Method,
        namespace: Option<&str>,
        name: Option<&str>,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> ApiResult<Response> {
        if *method != Method::GET && *method != Method::HEAD {
            return Err(ApiError::method_not_allowed(
                method.as_str(),
                "core v1 events, which Agora serves read-only; Events are written at /apis/agora/v1/namespaces/{ns}/events",
            ));
        }
        let query: Query = parse_query(query)?;
        check_query(&query)?;
        if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
            return Err(ApiError::method_not_allowed(
                "WATCH",
                "core v1 events (watch Agora's Events at /apis/agora/v1/events?watch=true)",
            ));
        }
        let view = View::negotiate(headers, &query)?;
        if !matches!(view, View::Object) {
            return Err(ApiError::new(
                StatusReason::NotAcceptable,
                "core v1 events are served as plain JSON; ask /apis/agora/v1/events for Tables or metadata",
            ));
        }
        let kind = agora_schemas::kind_info("Event").ok_or_else(|| ApiError::bad_request("no Event kind"))?;
        let target =
            Target { kind, namespace: namespace.map(str::to_owned), name: name.map(str::to_owned), subresource: None };
        if name.is_some() {
            let object = self.get(&target).await?;
            return Ok(json_response(StatusCode::OK, &core_event(object)));
        }
        let filter = Filter::new(&target, &query)?;
        let (items, revision) =
            self.select(&target, &filter, |event| serde_json::to_vec(&core_event(event)).unwrap_or_default()).await?;
        let mut body = br#"{"apiVersion":"v1","items":["#.to_vec();
        body.extend_from_slice(&items.join(&b","[..]));
        body.extend_from_slice(
            format!("],\"kind\":\"EventList\",\"metadata\":{{\"resourceVersion\":\"{revision}\"}}}}").as_bytes(),
        );
        let mut response = (StatusCode::OK, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        Ok(response)
    }
}

/// An Agora Event in core `v1` shape: the same fields under `apiVersion: v1`, with the fields core Events always
/// carry that Agora's leave out.
fn core_event(mut event: Value) -> Value {
    event["apiVersion"] = json!("v1");
    for (field, default) in
        [("reportingComponent", json!("")), ("reportingInstance", json!("")), ("eventTime", Value::Null)]
    {
        if event.get(field).is_none() {
            event[field] = default;
        }
    }
    if event["reportingComponent"] == ""
        && let Some(component) = event.pointer("/source/component").cloned()
    {
        event["reportingComponent"] = component;
    }
    event
}
