//! Reads: get and list, with selectors, pagination and consistent reads at a revision.

use agora_schemas::StatusReason;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::ResourceApi;
use super::codec::{meta_str, not_json, stored_object, with_resource_version};
use super::error::{ApiError, ApiResult};
use super::print::View;
use super::route::{Query, Target};
use super::selectors::{FieldSelector, LabelSelector};
use super::watch_cache::{self};
use crate::store::{RangeRequest, Revision};

/// Which objects a list or watch returns: one namespace (or all), label and field selectors.
pub(super) struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub(super) fn new(target: &Target, query: &Query) -> ApiResult<Self> {
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        let mut allowed = vec!["metadata.name", "metadata.namespace"];
        allowed.extend(target.kind.field_selectors);
        let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str), &allowed)
            .map_err(ApiError::bad_request)?;
        Ok(Self { namespace: target.namespace.clone(), labels, fields })
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| meta_str(object, "namespace") == Some(ns)) && self.selects(object)
    }

    /// Whether the label and field selectors take `object`.
    pub(super) fn selects(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
        self.labels.matches_with(|key| labels?.get(key)?.as_str()) && self.fields.matches(object)
    }

    /// Whether the filter takes every object under its namespace's key prefix (no label or field selector).
    pub(super) fn selects_all_in_namespace(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// The event type a watcher with this filter gets for `change`, if any. As in Kubernetes, an object modified
    /// into the selection arrives as ADDED and one modified out of it as DELETED (with its new state).
    /// The namespace comes from the change's key and never changes, so only selectors look into the object.
    pub(super) fn event_type(&self, change: &watch_cache::Change) -> Option<&'static str> {
        if self.namespace.is_some() && self.namespace != change.namespace {
            return None;
        }
        if self.selects_all_in_namespace() {
            return Some(change.kind);
        }
        let now = self.selects(change.object());
        match (change.kind, change.previous()) {
            ("MODIFIED", Some(previous)) => match (self.selects(previous), now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
            (kind, _) => now.then_some(kind),
        }
    }
}

/// A continue token: the revision the list is read at and the last key returned.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Continue {
    rv: Revision,
    start: String,
}

impl Continue {
    pub(super) fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(super) fn decode(token: &str) -> ApiResult<Self> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| ApiError::bad_request("the continue token is not one this server issued"))
    }
}

impl ResourceApi {
    /// Waits (up to 3 s, as Kubernetes' watch cache does) for the store to reach `revision`, which a client asked
    /// to read or watch from; past that, Kubernetes' "Too large resource version" (504) rather than silence.
    pub(super) async fn reach(&self, revision: Revision) -> ApiResult<()> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let current = self.store.current_revision().await?;
            if revision <= current {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let mut status = agora_schemas::Status::failure(
                    StatusReason::Timeout,
                    format!("Too large resource version: {revision}, current: {current}"),
                );
                status.details = Some(agora_schemas::StatusDetails {
                    causes: vec![agora_schemas::StatusCause {
                        reason: Some("ResourceVersionTooLarge".into()),
                        message: Some("Too large resource version".into()),
                        field: None,
                    }],
                    retry_after_seconds: Some(1),
                    ..agora_schemas::StatusDetails::default()
                });
                return Err(ApiError(Box::new(status)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Every object under the target's namespace (or all) that the filter takes, read at one revision, each as
    /// `each` makes it (so a caller that only answers with them need not hold them all decoded), and that revision.
    pub(super) async fn select<T>(
        &self,
        target: &Target,
        filter: &Filter,
        mut each: impl FnMut(Value) -> T,
    ) -> ApiResult<(Vec<T>, Revision)> {
        let prefix = match &target.namespace {
            Some(ns) => self.keys.namespace_prefix(target.kind.storage, ns),
            None => self.keys.kind_prefix(target.kind.storage),
        };
        let listed = self.store.range(RangeRequest { prefix, start_after: None, limit: None, revision: None }).await?;
        let mut objects = Vec::new();
        for kv in &listed.kvs {
            let object = stored_object(kv)?;
            if filter.matches(&object) {
                objects.push(each(object));
            }
        }
        Ok((objects, listed.revision))
    }

    pub(super) async fn get(&self, target: &Target) -> ApiResult<Value> {
        Ok(self.current(target).await?.1)
    }

    pub(super) async fn list(&self, target: &Target, query: &Query, view: View) -> ApiResult<Response> {
        let kind = target.kind;
        let filter = Filter::new(target, query)?;
        let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
            None | Some(Ok(0)) => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return Err(ApiError::bad_request("limit must be a non-negative integer")),
        };
        let prefix = match &target.namespace {
            Some(ns) => self.keys.namespace_prefix(kind.storage, ns),
            None => self.keys.kind_prefix(kind.storage),
        };
        let (mut revision, mut after) = match query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let token = Continue::decode(token)?;
                (Some(token.rv), Some(token.start))
            }
            None => {
                let exact = query.get("resourceVersionMatch").is_some_and(|m| m == "Exact");
                let pinned = query.get("resourceVersion").filter(|rv| exact && !rv.is_empty() && *rv != "0");
                let pinned = pinned
                    .map(|rv| {
                        rv.parse::<Revision>().map_err(|_| {
                            ApiError::bad_request(format!("resourceVersion {rv:?} is not one this server issued"))
                        })
                    })
                    .transpose()?;
                let wanted = query.get("resourceVersion").and_then(|rv| rv.parse::<Revision>().ok());
                if let Some(revision) = pinned.or(wanted).filter(|r| *r > 0) {
                    self.reach(revision).await?;
                }
                (pinned, None)
            }
        };
        // Items are written as JSON as they are read. Without selectors the stored bytes are copied as they are,
        // with the resourceVersion spliced in: a list of 100,000 objects is then mostly a copy.
        // Other views are built item by item from the decoded objects.
        let raw = filter.selects_all_in_namespace() && view == View::Object;
        let mut items = Vec::<u8>::new();
        let now = super::now();
        let mut count = 0usize;
        let mut token = None;
        loop {
            let page = limit.map(|l| (l - count).max(1));
            let request = RangeRequest { prefix: prefix.clone(), start_after: after.clone(), limit: page, revision };
            let response = match self.store.range(request).await {
                Err(crate::store::StoreError::Compacted { .. }) if query.contains_key("continue") => {
                    return Err(ApiError::new(
                        StatusReason::Expired,
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                other => other?,
            };
            revision = Some(response.revision);
            for kv in &response.kvs {
                let object = if raw {
                    with_resource_version(&kv.value, kv.mod_revision).ok_or_else(|| not_json(&kv.key))?
                } else {
                    let object = stored_object(kv)?;
                    if !filter.matches(&object) {
                        continue;
                    }
                    match view {
                        View::Object => serde_json::to_vec(&object),
                        _ => serde_json::to_vec(&view.item(kind, &object, now)),
                    }
                    .unwrap_or_default()
                };
                if count > 0 {
                    items.push(b',');
                }
                items.extend_from_slice(&object);
                count += 1;
            }
            after = response.kvs.last().map(|kv| kv.key.clone()).or(after);
            let full = limit.is_some_and(|l| count >= l);
            if !response.more {
                break;
            }
            if full {
                token = after.clone().map(|start| Continue { rv: response.revision, start }.encode());
                break;
            }
        }
        let mut metadata = json!({ "resourceVersion": revision.unwrap_or_default().to_string() });
        if let Some(token) = token {
            metadata["continue"] = json!(token);
        }
        let body = view.list(kind, &items, &metadata);
        let mut response = (StatusCode::OK, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(view.content_type(true)));
        Ok(response)
    }
}
