//! What a request names and asks: the path's target, the query, and the routing of each verb to its handler.

use std::collections::HashMap;

use agora_schemas::{KindInfo, StatusReason};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::admission::Admission;
use super::delete::DeleteOptions;
use super::error::{ApiError, ApiResult};
use super::managed::{self, Manage, Scope};
use super::print::View;
use super::write::scale_of;
use super::{PATCH_TYPES, ResourceApi, json_response, media_type};

/// A boolean query parameter ([`check_query`] has refused anything but Go's `strconv.ParseBool` spellings).
pub(super) fn flag(query: &Query, name: &str) -> bool {
    query.get(name).is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// The boolean query parameters Agora reads.
pub(super) const FLAGS: &[&str] = &["watch", "follow", "force", "allowWatchBookmarks", "sendInitialEvents", "pretty"];

/// Refuses query parameters whose values mean nothing, instead of reading them as their default: a flag that is not
/// a boolean, a `resourceVersion` that is not a revision, an unknown `resourceVersionMatch`.
pub(super) fn check_query(query: &Query) -> ApiResult<()> {
    const BOOLEANS: &[&str] = &["1", "t", "T", "true", "TRUE", "True", "0", "f", "F", "false", "FALSE", "False"];
    for name in FLAGS {
        if let Some(value) = query.get(*name).filter(|v| !v.is_empty() && !BOOLEANS.contains(&v.as_str())) {
            return Err(ApiError::bad_request(format!("{name} must be true or false, not {value:?}")));
        }
    }
    if let Some(rv) = query.get("resourceVersion").filter(|rv| !rv.is_empty() && rv.parse::<u64>().is_err()) {
        return Err(ApiError::bad_request(format!(
            "resourceVersion {rv:?} is not one this server issued (a non-negative integer)"
        )));
    }
    match query.get("resourceVersionMatch").map(String::as_str) {
        None | Some("" | "NotOlderThan" | "Exact") => Ok(()),
        Some(other) => {
            Err(ApiError::bad_request(format!("resourceVersionMatch must be NotOlderThan or Exact, not {other:?}")))
        }
    }
}

/// What a request path names.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) kind: &'static KindInfo,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

impl Target {
    /// Parses the part of the path after `/apis/`: `GROUP/VERSION/[namespaces/NS/]PLURAL[/NAME[/SUBRESOURCE]]`.
    pub(super) fn parse(rest: &str, full_path: &str) -> ApiResult<Self> {
        // One trailing slash is tolerated; an empty segment anywhere else (`apps//web`) names nothing.
        let parts: Vec<&str> = rest.strip_suffix('/').unwrap_or(rest).split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ApiError::no_such_path(full_path));
        }
        let [group, version, parts @ ..] = parts.as_slice() else { return Err(ApiError::no_such_path(full_path)) };
        let api_version = format!("{group}/{version}");
        let (namespace, parts) = match parts {
            ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
            _ => (None, parts),
        };
        let Some((plural, tail)) = parts.split_first() else { return Err(ApiError::no_such_path(full_path)) };
        let kind = agora_schemas::resource_of(&api_version, plural).ok_or_else(|| ApiError::no_such_path(full_path))?;
        if namespace.is_some() && !kind.namespaced {
            return Err(ApiError::no_such_path(full_path));
        }
        let (name, subresource) = match tail {
            [] => (None, None),
            [name] => (Some((*name).to_owned()), None),
            [name, sub] => (Some((*name).to_owned()), Some((*sub).to_owned())),
            _ => return Err(ApiError::no_such_path(full_path)),
        };
        // A namespaced object is only addressed inside its namespace.
        if kind.namespaced && namespace.is_none() && name.is_some() {
            return Err(ApiError::no_such_path(full_path));
        }
        Ok(Self { kind, namespace, name, subresource })
    }

    pub(super) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// The query parameters, by name.
pub(super) type Query = HashMap<String, String>;

pub(super) fn parse_query(raw: Option<&str>) -> ApiResult<Query> {
    match raw {
        None => Ok(Query::new()),
        Some(raw) => serde_urlencoded::from_str::<Vec<(String, String)>>(raw)
            .map(|pairs| pairs.into_iter().collect())
            .map_err(|e| ApiError::bad_request(format!("cannot parse the query string: {e}"))),
    }
}

impl ResourceApi {
    /// Serves one request to `/apis/{rest}` (`rest` = `GROUP/VERSION/…`).
    pub async fn handle(
        &self,
        method: Method,
        path: &str,
        rest: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        match self.dispatch(method, path, rest, query, headers, body).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        }
    }

    pub(super) async fn dispatch(
        &self,
        method: Method,
        path: &str,
        rest: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> ApiResult<Response> {
        let target = Target::parse(rest, path)?;
        if let Some(sub) = target.subresource.as_deref()
            && (!matches!(sub, "status" | "scale" | "accept" | "log" | "trigger")
                || !target.kind.subresources.contains(&sub))
        {
            return Err(ApiError::no_such_path(path));
        }
        let query = parse_query(query)?;
        check_query(&query)?;
        let admission = Admission::from_query(&query)?;
        // HEAD is a GET whose body is not sent.
        let method = if method == Method::HEAD { Method::GET } else { method };
        let manager = managed::manager_name(
            query.get("fieldManager").map(String::as_str),
            headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
        )?;
        let applying = method == Method::PATCH && media_type(headers) == PATCH_TYPES[2];
        if query.contains_key("force") && !applying {
            return Err(ApiError::bad_request(
                "force is only allowed for server-side apply (application/apply-patch+yaml)",
            ));
        }
        if admission.dry_run
            && let Some(sub @ ("accept" | "trigger")) = target.subresource.as_deref()
        {
            return Err(ApiError::bad_request(format!(
                "dryRun is not supported by {}/{sub}: it acts at once (an acceptance claims the offer, a trigger \
                     queues a run), so a dry run would only pretend",
                target.kind.plural
            )));
        }
        let mut body = body;
        if matches!(method, Method::POST | Method::PUT) {
            if super::protobuf::reads(target.kind, &media_type(headers)) {
                body = Bytes::from(super::protobuf::to_json(target.kind, &body)?);
            } else {
                check_content_type(headers)?;
            }
        }
        let update = |scope| Manage::Update { manager: manager.clone(), scope };
        let ok = |object: Value| admission.decorate(json_response(StatusCode::OK, &object));
        let created = |object: Value| admission.decorate(json_response(StatusCode::CREATED, &object));
        let admission = &admission;
        match (target.name.is_some(), target.subresource.as_deref(), &method) {
            (false, None, &Method::GET) if flag(&query, "watch") => {
                self.watch(&target, &query, headers, View::negotiate(headers, &query)?).await
            }
            (false, None, &Method::GET) => self.list(&target, &query, View::negotiate(headers, &query)?).await,
            (false, None, &Method::POST) => {
                self.create(&target, body, admission, &update(Scope::Main)).await.map(created)
            }
            (true, None | Some("status"), &Method::GET) => {
                let view = View::negotiate(headers, &query)?;
                let object = self.get(&target).await?;
                let mut response = json_response(StatusCode::OK, &view.one(target.kind, &object, true));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(view.content_type(false)));
                Ok(response)
            }
            (true, None, &Method::PUT) => self.replace(&target, body, admission, &update(Scope::Main)).await.map(ok),
            (true, Some("status"), &Method::PUT) => {
                self.replace(&target, body, admission, &update(Scope::Status)).await.map(ok)
            }
            (true, None | Some("status"), &Method::PATCH) if applying => {
                let scope = if target.subresource.is_some() { Scope::Status } else { Scope::Main };
                let force = flag(&query, "force");
                if query.get("fieldManager").is_none_or(String::is_empty) {
                    return Err(ApiError::bad_request(
                        "fieldManager is required for server-side apply (application/apply-patch+yaml)",
                    ));
                }
                match self.apply(&target, body, admission, &manager, scope, force).await? {
                    (true, object) => Ok(created(object)),
                    (false, object) => Ok(ok(object)),
                }
            }
            (true, None, &Method::PATCH) => {
                self.patch(&target, headers, body, admission, &update(Scope::Main)).await.map(ok)
            }
            (true, Some("status"), &Method::PATCH) => {
                self.patch(&target, headers, body, admission, &update(Scope::Status)).await.map(ok)
            }
            (true, None, &Method::DELETE) => self.delete(&target, &DeleteOptions::parse(&body, &query)?).await.map(ok),
            (false, None, &Method::DELETE) => {
                self.delete_collection(&target, &query, &DeleteOptions::parse(&body, &query)?).await.map(ok)
            }
            (true, Some("accept"), &Method::POST) => self.accept(&target, body).await.map(ok),
            (true, Some("trigger"), &Method::POST) => {
                self.trigger(&target, body, admission, &update(Scope::Main)).await.map(ok)
            }
            (true, Some("log"), &Method::GET) => self.log(&target, &query).await,
            (true, Some("scale"), &Method::GET) => self.get(&target).await.map(|object| ok(scale_of(&object))),
            (true, Some("scale"), &Method::PUT | &Method::PATCH) => self
                .scale(&target, &method, headers, body, admission, &update(Scope::Scale))
                .await
                .map(|object| ok(scale_of(&object))),
            _ => Err(ApiError::method_not_allowed(method.as_str(), path)),
        }
    }
}

/// The body media types POST and PUT accept.
const BODY_TYPES: [&str; 1] = ["application/json"];

/// Refuses a POST or PUT body in a media type the server does not read (415, as Kubernetes answers); a request
/// without a Content-Type is read as JSON.
fn check_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let media = media_type(headers);
    if media.is_empty() || BODY_TYPES.contains(&media.as_str()) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusReason::UnsupportedMediaType,
        format!(
            "the body of the request was in an unknown format ({media:?}) - accepted media types include: {}",
            BODY_TYPES.join(", ")
        ),
    ))
}
