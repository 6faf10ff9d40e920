//! The Kubernetes-style REST API over the store, for every kind of [`agora_schemas::KINDS`].
//!
//! Objects travel as JSON and are stored as JSON without `metadata.resourceVersion`: the revision of the store write
//! *is* the resource version, filled in on every read. Every write goes through [`agora_schemas::admit`] (strict
//! decoding, the kind's defaults, validation) and a compare-and-swap transaction, so a stale write is a 409 and
//! nothing half-written is ever stored.
//!
//! Paths: `/apis/agora/v1/[namespaces/{ns}/]{plural}[/{name}[/status|/scale|/accept]]`, and
//! `/apis/agora/v1/{plural}` across namespaces. Field ownership and server-side apply live in [`managed`], the
//! watch cache in [`watch`].

mod accept;
mod cronjobs;
pub mod decode;
pub mod error;
mod logs;
pub mod managed;
pub mod patch;
pub mod selectors;
pub mod watch;

use std::collections::HashMap;

use agora_schemas::{API_VERSION, AdmitError, FieldError, FieldErrorKind, KindInfo, StatusReason};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

pub use self::error::{ApiError, ApiResult};
use self::managed::{Manage, Scope};
use self::selectors::{FieldSelector, LabelSelector};
use self::watch::{Next, WatchCache};
use crate::store::{Compare, KeyLayout, KeyValue, Op, RangeRequest, Revision, SharedStore, Txn};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// How many times an unconditional write retries after losing a race.
const WRITE_ATTEMPTS: usize = 8;
/// The PATCH media types served.
const PATCH_TYPES: [&str; 3] =
    ["application/merge-patch+json", "application/json-patch+json", "application/apply-patch+yaml"];

/// The resource API: the store, where objects live in it, and the shared watch caches.
#[derive(Clone)]
pub struct ResourceApi {
    store: SharedStore,
    keys: KeyLayout,
    watches: WatchCache,
    /// For proxying task logs from agents.
    http: reqwest::Client,
    /// Presented to agents when proxying their logs.
    agent_token: Option<String>,
}

/// Which objects a list or watch returns: one namespace (or all), label and field selectors.
struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(target: &Target, query: &Query) -> ApiResult<Self> {
        let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?;
        let mut allowed = vec!["metadata.name", "metadata.namespace"];
        allowed.extend(target.kind.field_selectors);
        let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str), &allowed)
            .map_err(ApiError::bad_request)?;
        Ok(Self { namespace: target.namespace.clone(), labels, fields })
    }

    fn matches(&self, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| meta_str(object, "namespace") == Some(ns)) && self.selects(object)
    }

    /// Whether the label and field selectors take `object`.
    fn selects(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
        self.labels.matches_with(|key| labels?.get(key)?.as_str()) && self.fields.matches(object)
    }

    /// Whether the filter takes every object under its namespace's key prefix (no label or field selector).
    fn selects_all_in_namespace(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// The event type a watcher with this filter gets for `change`, if any. As in Kubernetes, an object modified
    /// into the selection arrives as ADDED and one modified out of it as DELETED (with its new state).
    /// The namespace comes from the change's key and never changes, so only selectors look into the object.
    fn event_type(&self, change: &watch::Change) -> Option<&'static str> {
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

/// A watch event as sent: a JSON line, or a Server-Sent Event when `sse`.
fn watch_frame(kind: &str, object: &[u8], sse: bool) -> bytes::Bytes {
    let mut out = Vec::with_capacity(object.len() + 64);
    if sse {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
    }
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(if sse { b"}\n\n" } else { b"}\n" });
    bytes::Bytes::from(out)
}

/// `event` (`{"type":..,"object":..}`) as sent.
fn watch_line(event: &Value, sse: bool) -> bytes::Bytes {
    let kind = event["type"].as_str().unwrap_or("MESSAGE");
    watch_frame(kind, &serde_json::to_vec(&event["object"]).unwrap_or_default(), sse)
}

/// The live part of a watch: changes from the shared cache as the client reads them, bookmarks, the timeout.
struct WatchStream {
    subscription: watch::Subscription,
    filter: Filter,
    /// The revision the client has been brought to (for bookmarks).
    latest: Revision,
    ticker: Option<tokio::time::Interval>,
    expired: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    kind: &'static KindInfo,
    sse: bool,
}

impl WatchStream {
    /// The events, ending at the timeout or after an ERROR.
    fn into_stream(self) -> impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut watch = state?;
            let chunk = loop {
                let expired = async {
                    match watch.expired.as_mut() {
                        Some(sleep) => sleep.as_mut().await,
                        None => std::future::pending().await,
                    }
                };
                let tick = async {
                    match watch.ticker.as_mut() {
                        Some(ticker) => ticker.tick().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = expired => return None,
                    _ = tick => break watch_line(&watch::bookmark(watch.kind, watch.latest, false), watch.sse),
                    next = watch.subscription.next() => match next {
                        Next::Change(change) => {
                            watch.latest = change.revision;
                            let Some(kind) = watch.filter.event_type(&change) else { continue };
                            break if kind == change.kind && !watch.sse {
                                change.framed()
                            } else {
                                watch_frame(kind, change.encoded(), watch.sse)
                            };
                        }
                        Next::Progress(revision) => watch.latest = watch.latest.max(revision),
                        Next::End(status) => {
                            let error = watch_line(&json!({ "type": "ERROR", "object": status }), watch.sse);
                            return Some((Ok(error), None));
                        }
                    },
                }
            };
            Some((Ok(chunk), Some(watch)))
        })
    }
}

/// A boolean query parameter ([`check_query`] has refused anything but Go's `strconv.ParseBool` spellings).
fn flag(query: &Query, name: &str) -> bool {
    query.get(name).is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// The boolean query parameters Agora reads.
const FLAGS: &[&str] = &["watch", "follow", "force", "allowWatchBookmarks", "sendInitialEvents", "pretty"];

/// Refuses query parameters whose values mean nothing, instead of reading them as their default: a flag that is not
/// a boolean, a `resourceVersion` that is not a revision, an unknown `resourceVersionMatch`.
fn check_query(query: &Query) -> ApiResult<()> {
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
struct Target {
    kind: &'static KindInfo,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    /// Parses the part of the path after `/apis/agora/v1/`.
    fn parse(rest: &str, full_path: &str) -> ApiResult<Self> {
        // One trailing slash is tolerated; an empty segment anywhere else (`apps//web`) names nothing.
        let parts: Vec<&str> = rest.strip_suffix('/').unwrap_or(rest).split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(ApiError::no_such_path(full_path));
        }
        let (namespace, parts) = match parts.as_slice() {
            ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
            _ => (None, parts.as_slice()),
        };
        let Some((plural, tail)) = parts.split_first() else { return Err(ApiError::no_such_path(full_path)) };
        let kind = agora_schemas::KINDS
            .iter()
            .find(|k| k.plural == *plural)
            .ok_or_else(|| ApiError::no_such_path(full_path))?;
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

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// The query parameters, by name.
type Query = HashMap<String, String>;

fn parse_query(raw: Option<&str>) -> ApiResult<Query> {
    match raw {
        None => Ok(Query::new()),
        Some(raw) => serde_urlencoded::from_str::<Vec<(String, String)>>(raw)
            .map(|pairs| pairs.into_iter().collect())
            .map_err(|e| ApiError::bad_request(format!("cannot parse the query string: {e}"))),
    }
}

/// The current time at whole seconds, as Kubernetes timestamps are written.
pub(crate) fn now() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut response = (code, serde_json::to_vec(body).unwrap_or_default()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// The object stored under a key, with its resourceVersion.
fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|_| not_json(&kv.key))?;
    set_meta(&mut object, "resourceVersion", json!(kv.mod_revision.to_string()));
    Ok(object)
}

/// Stored object bytes with `"resourceVersion":"<revision>"` in `metadata`. Objects are stored by [`encode`] with
/// sorted keys, so the first `"metadata":{` is the top-level one (only `apiVersion` and `kind`, plain validated
/// strings, come before it) and the field is spliced in without decoding — a list of 100,000 objects is then mostly
/// a copy. Bytes of any other shape are decoded and encoded again; `None` when they are not a JSON object.
fn with_resource_version(value: &[u8], revision: Revision) -> Option<Vec<u8>> {
    const METADATA: &[u8] = b"\"metadata\":{";
    let found = value.windows(METADATA.len()).take(96).position(|w| w == METADATA);
    match found {
        Some(at) if value.starts_with(b"{\"apiVersion\":") => {
            let at = at + METADATA.len();
            let empty = value.get(at) == Some(&b'}');
            let field = format!("\"resourceVersion\":\"{revision}\"{}", if empty { "" } else { "," });
            let mut out = Vec::with_capacity(value.len() + field.len());
            out.extend_from_slice(&value[..at]);
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(&value[at..]);
            Some(out)
        }
        _ => {
            let mut object: Value = serde_json::from_slice(value).ok()?;
            object.is_object().then_some(())?;
            set_meta(&mut object, "resourceVersion", json!(revision.to_string()));
            serde_json::to_vec(&object).ok()
        }
    }
}

/// A stored value that is not a JSON object: the store holds something this server did not write.
fn not_json(key: &str) -> ApiError {
    ApiError::new(StatusReason::InternalError, format!("the stored object {key} is not a JSON object"))
}

/// The bytes to store: the object without its resourceVersion (the write's revision will be it).
/// The largest object stored (as JSON): the body limit, checked on what a write would store — after a merge
/// patch, an apply or a JSON patch's last operation, whatever the request's own size.
pub const MAX_OBJECT_BYTES: usize = MAX_BODY_BYTES;

/// [`encode`], refusing an object larger than [`MAX_OBJECT_BYTES`].
fn encode_checked(kind: &KindInfo, name: &str, object: &Value) -> ApiResult<bytes::Bytes> {
    let bytes = encode(object);
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::new(
            StatusReason::RequestEntityTooLarge,
            format!(
                "{} {name} would be {} bytes of JSON; the limit is {MAX_OBJECT_BYTES}",
                kind.kind.to_ascii_lowercase(),
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

fn encode(object: &Value) -> bytes::Bytes {
    if object.pointer("/metadata/resourceVersion").is_none() {
        return bytes::Bytes::from(serde_json::to_vec(object).unwrap_or_default());
    }
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    bytes::Bytes::from(serde_json::to_vec(&object).unwrap_or_default())
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata was just made an object")
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    meta_mut(object).insert(field.to_owned(), value);
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Server-managed metadata a client may send but never decides.
const SERVER_FIELDS: [&str; 7] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
];

async fn parse_body(body: &Bytes, admission: &Admission) -> ApiResult<Value> {
    parse_object(body, "the request body", Format::Json, admission).await
}

/// What a body is written in.
#[derive(Clone, Copy)]
enum Format {
    Json,
    Yaml,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Yaml => "YAML or JSON",
        }
    }
}

/// Decodes a body as `format` (a large one on the blocking pool), with its duplicate keys refused or warned about
/// per `fieldValidation`; `what` names it in errors.
async fn parse_value(body: &Bytes, what: &str, format: Format, admission: &Admission) -> ApiResult<Value> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusReason::RequestEntityTooLarge,
            format!("{what} is {} bytes; the limit is {MAX_BODY_BYTES}", body.len()),
        ));
    }
    let run = move |bytes: Bytes| match format {
        Format::Json => decode::json(&bytes),
        Format::Yaml => decode::yaml(&bytes),
    };
    let decoded = if body.len() <= decode::INLINE_BYTES {
        run(body.clone())
    } else {
        let bytes = body.clone();
        decode::heavy(move || run(bytes)).await.map_err(|e| ApiError::new(StatusReason::InternalError, e))?
    };
    let decoded = decoded.map_err(|e| ApiError::bad_request(format!("{what} is not valid {}: {e}", format.name())))?;
    admission.duplicates(what, &decoded.duplicates)?;
    Ok(decoded.value)
}

/// [`parse_value`] for a body that must be one object.
async fn parse_object(body: &Bytes, what: &str, format: Format, admission: &Admission) -> ApiResult<Value> {
    let value = parse_value(body, what, format, admission).await?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!("{what} must be a {} object", format.name())));
    }
    Ok(value)
}

/// Checks the body names this kind (`apiVersion` and `kind` are required, as in Kubernetes).
fn check_type(kind: &KindInfo, object: &mut Value) -> ApiResult<()> {
    for (field, expected) in [("apiVersion", API_VERSION), ("kind", kind.kind)] {
        match object.get(field) {
            None | Some(Value::Null) => {
                return Err(ApiError::bad_request(format!(
                    "{field} is missing from the body: it must be {expected:?} (this path serves {})",
                    kind.plural
                )));
            }
            Some(Value::String(s)) if s == expected => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "the body's {field} is {other}, but this path serves {expected} ({})",
                    kind.plural
                )));
            }
        }
    }
    Ok(())
}

/// How a write's fields are checked (`fieldValidation`), and the warnings it produced.
struct Admission {
    mode: FieldValidation,
    warnings: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    /// Unknown fields are errors (the default, and what kubectl sends).
    Strict,
    /// Unknown fields are dropped, each with a `Warning` header.
    Warn,
    /// Unknown fields are dropped silently.
    Ignore,
}

impl Admission {
    fn from_query(query: &Query) -> ApiResult<Self> {
        let mode = match query.get("fieldValidation").map(String::as_str) {
            None | Some("" | "Strict") => FieldValidation::Strict,
            Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation must be Strict, Warn or Ignore, not {other:?}"
                )));
            }
        };
        Ok(Self { mode, warnings: std::sync::Mutex::default() })
    }

    /// Prunes unknown fields unless strict, then decodes strictly, defaults and validates.
    fn admit(&self, kind: &KindInfo, name: &str, mut object: Value) -> ApiResult<Value> {
        self.prune(kind, &mut object);
        admit(kind, name, object)
    }

    /// Drops unknown fields from a partial object (an applied configuration) unless strict; in strict mode they
    /// are left for admission to reject with their paths.
    fn prune(&self, kind: &KindInfo, object: &mut Value) {
        if self.mode != FieldValidation::Strict {
            let removed = agora_schemas::schema::prune_unknown_fields(kind, object);
            if self.mode == FieldValidation::Warn {
                let mut warnings = self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                warnings.extend(removed.into_iter().map(|path| format!("unknown field \"{path}\"")));
            }
        }
    }

    /// Duplicate keys of a body: refused when strict (as Kubernetes does), a warning each when warning.
    fn duplicates(&self, what: &str, paths: &[String]) -> ApiResult<()> {
        let Some(first) = paths.first() else { return Ok(()) };
        match self.mode {
            FieldValidation::Strict => Err(ApiError::bad_request(format!(
                "{what} has a duplicate field \"{first}\"{} (fieldValidation=Strict refuses duplicate fields)",
                if paths.len() > 1 { format!(" (and {} more)", paths.len() - 1) } else { String::new() }
            ))),
            FieldValidation::Warn => {
                let mut warnings = self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                warnings.extend(paths.iter().map(|path| format!("duplicate field \"{path}\"")));
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        }
    }

    /// Adds a `Warning: 299` header per warning.
    fn decorate(&self, mut response: Response) -> Response {
        let warnings = self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for warning in warnings.iter() {
            let text = format!("299 - \"{}\"", warning.replace('\\', "\\\\").replace('"', "\\\""));
            if let Ok(value) = header::HeaderValue::from_str(&text) {
                response.headers_mut().append(header::WARNING, value);
            }
        }
        response
    }
}

/// Decodes strictly, defaults and validates; maps failures to 422 with field causes.
fn admit(kind: &KindInfo, name: &str, object: Value) -> ApiResult<Value> {
    (kind.admit)(object).map_err(|e| match e {
        AdmitError::Decode { path, message } => {
            ApiError::invalid(kind, name, &[FieldError { path, kind: FieldErrorKind::Invalid, message }])
        }
        AdmitError::Invalid(errors) => ApiError::invalid(kind, name, errors.errors()),
    })
}

/// How an update turns the stored object into the desired one, and whether that (with the admission after it) can
/// cost far more than an ordinary request (JSON patches, large bodies): then it runs off the async workers.
struct Change {
    apply: Box<ChangeFn>,
    heavy: bool,
}

type ChangeFn = dyn Fn(&Value) -> ApiResult<Value> + Send + Sync;

impl Change {
    fn inline(apply: impl Fn(&Value) -> ApiResult<Value> + Send + Sync + 'static) -> Self {
        Self { apply: Box::new(apply), heavy: false }
    }

    fn heavy(apply: impl Fn(&Value) -> ApiResult<Value> + Send + Sync + 'static) -> Self {
        Self { apply: Box::new(apply), heavy: true }
    }
}

/// A continue token: the revision the list is read at and the last key returned.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: Revision,
    start: String,
}

impl Continue {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str) -> ApiResult<Self> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| ApiError::bad_request("the continue token is not one this server issued"))
    }
}

impl ResourceApi {
    /// The API over `store`, with objects under `keys`; a watch client more than `watch_backlog` events behind is
    /// cut off.
    #[must_use]
    pub fn new(store: SharedStore, keys: KeyLayout, watch_backlog: usize) -> Self {
        let watches = WatchCache::new(store.clone(), keys.clone(), watch_backlog);
        Self { store, keys, watches, http: agent_client(None, None).unwrap_or_default(), agent_token: None }
    }

    /// Presents `token` (the cluster's) to agents when proxying their logs.
    #[must_use]
    pub fn with_agent_token(mut self, token: Option<&str>) -> Self {
        self.http = agent_client(token, None).unwrap_or_default();
        self.agent_token = token.map(str::to_owned);
        self
    }

    /// The namespaces in use: every namespace that holds an object of some kind, and `default`. Agora's namespaces
    /// exist by being used (no Namespace objects); the store is skip-scanned, one small range per namespace and kind.
    ///
    /// # Errors
    /// The store failed.
    pub async fn namespaces(&self) -> ApiResult<std::collections::BTreeSet<String>> {
        let mut names = std::collections::BTreeSet::from(["default".to_owned()]);
        for kind in agora_schemas::KINDS.iter().filter(|k| k.namespaced) {
            let prefix = self.keys.kind_prefix(kind.plural);
            let mut after = None;
            loop {
                let request =
                    RangeRequest { prefix: prefix.clone(), start_after: after, limit: Some(1), revision: None };
                let page = self.store.range(request).await?;
                let Some(namespace) = page.kvs.first().and_then(|kv| kv.key[prefix.len()..].split('/').next()) else {
                    break;
                };
                // Past every key of this namespace: names are ASCII, so U+10FFFF sorts after all of them.
                after = Some(format!("{prefix}{namespace}/\u{10FFFF}"));
                names.insert(namespace.to_owned());
            }
        }
        Ok(names)
    }

    /// Serves one request to `/apis/agora/v1/{rest}`.
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

    async fn dispatch(
        &self,
        method: Method,
        path: &str,
        rest: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> ApiResult<Response> {
        let target = Target::parse(rest, path)?;
        if let Some(sub) = target.subresource.as_deref() {
            if !matches!(sub, "status" | "scale" | "accept" | "log" | "trigger")
                || !target.kind.subresources.contains(&sub)
            {
                return Err(ApiError::no_such_path(path));
            }
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
        let update = |scope| Manage::Update { manager: manager.clone(), scope };
        let ok = |object: Value| admission.decorate(json_response(StatusCode::OK, &object));
        let created = |object: Value| admission.decorate(json_response(StatusCode::CREATED, &object));
        let admission = &admission;
        match (target.name.is_some(), target.subresource.as_deref(), &method) {
            (false, None, &Method::GET) if flag(&query, "watch") => self.watch(&target, &query, headers).await,
            (false, None, &Method::GET) => self.list(&target, &query).await,
            (false, None, &Method::POST) => {
                self.create(&target, body, admission, &update(Scope::Main)).await.map(created)
            }
            (true, None | Some("status"), &Method::GET) => self.get(&target).await.map(ok),
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
            (true, None, &Method::DELETE) => self.delete(&target, body).await.map(ok),
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

    fn key(&self, target: &Target, name: &str) -> String {
        self.keys.object_key(target.kind.plural, target.namespace.as_deref(), name)
    }

    /// Waits (up to 3 s, as Kubernetes' watch cache does) for the store to reach `revision`, which a client asked
    /// to read or watch from; past that, Kubernetes' "Too large resource version" (504) rather than silence.
    async fn reach(&self, revision: Revision) -> ApiResult<()> {
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

    async fn current(&self, target: &Target) -> ApiResult<(KeyValue, Value)> {
        let key = self.key(target, target.name());
        let kv = self.store.get(&key).await?.ok_or_else(|| ApiError::not_found(target.kind, target.name()))?;
        let object = decode(&kv)?;
        Ok((kv, object))
    }

    async fn get(&self, target: &Target) -> ApiResult<Value> {
        Ok(self.current(target).await?.1)
    }

    async fn list(&self, target: &Target, query: &Query) -> ApiResult<Response> {
        let kind = target.kind;
        let filter = Filter::new(target, query)?;
        let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
            None | Some(Ok(0)) => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return Err(ApiError::bad_request("limit must be a non-negative integer")),
        };
        let prefix = match &target.namespace {
            Some(ns) => self.keys.namespace_prefix(kind.plural, ns),
            None => self.keys.kind_prefix(kind.plural),
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
        let raw = filter.selects_all_in_namespace();
        let mut items = Vec::<u8>::new();
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
                    let object = decode(kv)?;
                    if !filter.matches(&object) {
                        continue;
                    }
                    serde_json::to_vec(&object).unwrap_or_default()
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
        let mut body = Vec::with_capacity(items.len() + 128);
        body.extend_from_slice(format!("{{\"apiVersion\":\"{API_VERSION}\",\"items\":[").as_bytes());
        body.extend_from_slice(&items);
        body.extend_from_slice(format!("],\"kind\":\"{}List\",\"metadata\":{metadata}}}", kind.kind).as_bytes());
        let mut response = (StatusCode::OK, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        Ok(response)
    }

    /// `?watch=true`: a stream of events, one JSON object per line (or Server-Sent Events for `text/event-stream`).
    async fn watch(&self, target: &Target, query: &Query, headers: &HeaderMap) -> ApiResult<Response> {
        let kind = target.kind;
        let filter = Filter::new(target, query)?;
        let bookmarks = flag(query, "allowWatchBookmarks");
        let initial_events = flag(query, "sendInitialEvents");
        let timeout = match query.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
            None => None,
            Some(Ok(seconds)) => Some(std::time::Duration::from_secs(seconds)),
            Some(Err(_)) => return Err(ApiError::bad_request("timeoutSeconds must be a non-negative integer")),
        };
        let sse = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/event-stream"));
        let resume =
            match query.get("resourceVersion").map(String::as_str) {
                None | Some("" | "0") => None,
                Some(rv) => Some(rv.parse::<Revision>().map_err(|_| {
                    ApiError::bad_request(format!("resourceVersion {rv:?} is not one this server issued"))
                })?),
            };
        if let Some(revision) = resume {
            self.reach(revision).await?;
        }
        // Without a revision (or with sendInitialEvents), the client first gets the current objects as ADDED.
        let initial = resume.is_none() || initial_events;
        let line = |event: &Value| watch_line(event, sse);
        let frame = |kind: &str, object: &[u8]| watch_frame(kind, object, sse);
        // What goes before the live events: an ERROR for a compacted revision, or the initial objects and backlog.
        let mut first = Vec::new();
        let mut live = None;
        let subscription = match self.watches.subscribe(kind, if initial { None } else { resume }).await {
            Ok(subscription) => Some(subscription),
            Err(crate::store::StoreError::Compacted { requested, compacted }) => {
                let status = agora_schemas::Status::failure(
                    StatusReason::Expired,
                    format!("too old resource version: {requested} ({compacted})"),
                );
                first.push(line(&json!({ "type": "ERROR", "object": status })));
                None
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(mut subscription) = subscription {
            if initial {
                let listed = self
                    .store
                    .range(RangeRequest {
                        prefix: self.keys.kind_prefix(kind.plural),
                        start_after: None,
                        limit: None,
                        revision: Some(subscription.revision),
                    })
                    .await?;
                for kv in &listed.kvs {
                    let object = decode(kv)?;
                    if filter.matches(&object) {
                        first.push(line(&json!({ "type": "ADDED", "object": object })));
                    }
                }
                if initial_events {
                    first.push(line(&watch::bookmark(kind, subscription.revision, true)));
                }
            }
            for change in std::mem::take(&mut subscription.backlog) {
                if let Some(kind) = filter.event_type(&change) {
                    first.push(frame(kind, change.encoded()));
                }
            }
            // The body polls the subscription itself: no task and channel between the broadcast and the
            // connection, so an event reaches each client with one wake-up. A client that stops reading stops
            // polling; the broadcast then cuts it off (an ERROR event) without holding back the others.
            live = Some(WatchStream {
                latest: subscription.revision,
                subscription,
                filter,
                ticker: bookmarks.then(|| {
                    let mut ticker = tokio::time::interval(watch::BOOKMARK_EVERY);
                    ticker.reset();
                    ticker
                }),
                expired: timeout.map(|t| Box::pin(tokio::time::sleep(t))),
                kind,
                sse,
            });
        }
        use futures::StreamExt as _;
        let first = futures::stream::iter(first.into_iter().map(Ok::<_, std::convert::Infallible>));
        let live = futures::stream::iter(live).flat_map(WatchStream::into_stream);
        let mut response = axum::body::Body::from_stream(first.chain(live)).into_response();
        let content_type = if sse { "text/event-stream" } else { "application/json" };
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
        Ok(response)
    }

    async fn create(&self, target: &Target, body: Bytes, admission: &Admission, manage: &Manage) -> ApiResult<Value> {
        let mut object = parse_body(&body, admission).await?;
        check_type(target.kind, &mut object)?;
        self.create_object(target, object, admission, manage).await
    }

    /// Creates `object` (a POST body, or the configuration of an apply that finds nothing to update).
    async fn create_object(
        &self,
        target: &Target,
        mut object: Value,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let kind = target.kind;
        let requested = object.pointer("/metadata/managedFields").cloned();
        let meta = meta_mut(&mut object);
        match (&target.namespace, meta.get("namespace").and_then(Value::as_str)) {
            (Some(path_ns), Some(body_ns)) if path_ns != body_ns => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({body_ns}) does not match the namespace on the request ({path_ns})"
                )));
            }
            (Some(path_ns), _) => {
                meta.insert("namespace".to_owned(), json!(path_ns));
            }
            (None, _) if kind.namespaced => {
                return Err(ApiError::bad_request(format!(
                    "{} are namespaced: create them under /namespaces/{{ns}}/",
                    kind.plural
                )));
            }
            (None, _) => {}
        }
        for field in SERVER_FIELDS {
            meta.remove(field);
        }
        meta.insert("uid".to_owned(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".to_owned(), json!(now().to_string()));
        meta.insert("generation".to_owned(), json!(1));
        let generate = meta.get("generateName").and_then(Value::as_str).map(str::to_owned);
        if kind.subresources.contains(&"status") {
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        let heavy = patch::encoded_len(&object, decode::INLINE_BYTES).is_none();
        for _ in 0..WRITE_ATTEMPTS {
            let mut candidate = object.clone();
            let name = match (meta_str(&candidate, "name"), &generate) {
                (Some(name), _) => name.to_owned(),
                (None, Some(prefix)) => {
                    let name = format!("{prefix}{}", random_suffix());
                    set_meta(&mut candidate, "name", json!(name));
                    name
                }
                (None, None) => String::new(),
            };
            // Admission of a large object is heavy: off the async workers, as its decoding was.
            let (admitted, bytes) = decode::in_place(heavy, || {
                let mut admitted = admission.admit(kind, &name, candidate)?;
                let managed = managed::record(kind, &name, None, requested.as_ref(), &admitted, manage)?;
                set_managed_fields(&mut admitted, managed);
                let bytes = encode_checked(kind, &name, &admitted)?;
                Ok::<_, ApiError>((admitted, bytes))
            })
            .await?;
            self.check_parents(target, &name, &admitted).await?;
            let key = self.key(target, &name);
            let response =
                self.store.txn(Txn::new(vec![Compare::Absent(key.clone())], vec![Op::Put(key, bytes)])).await?;
            if response.succeeded {
                let mut created = admitted;
                set_meta(&mut created, "resourceVersion", json!(response.revision.to_string()));
                return Ok(created);
            }
            if meta_str(&object, "name").is_some() {
                return Err(ApiError::already_exists(kind, &name));
            }
        }
        Err(ApiError::new(StatusReason::AlreadyExists, "could not generate a unique name; try again"))
    }

    /// PUT of the object (`status_only` false: status is kept from the stored object) or of `/status` (only status
    /// is taken from the body).
    async fn replace(&self, target: &Target, body: Bytes, admission: &Admission, manage: &Manage) -> ApiResult<Value> {
        let mut object = parse_body(&body, admission).await?;
        check_type(target.kind, &mut object)?;
        if let Some(name) = meta_str(&object, "name").filter(|n| *n != target.name()) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                target.name()
            )));
        }
        if let (Some(ns), Some(body_ns)) = (&target.namespace, meta_str(&object, "namespace")) {
            if ns != body_ns {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({body_ns}) does not match the namespace on the request ({ns})"
                )));
            }
        }
        let precondition = meta_str(&object, "resourceVersion").map(str::to_owned);
        self.update(target, precondition, Change::inline(move |_| Ok(object.clone())), admission, manage).await
    }

    async fn patch(
        &self,
        target: &Target,
        headers: &HeaderMap,
        body: Bytes,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let media = media_type(headers);
        if !PATCH_TYPES.contains(&media.as_str()) {
            return Err(ApiError::new(
                StatusReason::UnsupportedMediaType,
                format!(
                    "the body of the request was in an unknown format ({media:?}) - accepted media types include: {}",
                    PATCH_TYPES.join(", ")
                ),
            ));
        }
        let patch = parse_value(&body, "the patch", Format::Json, admission).await?;
        let json_patch = if media == PATCH_TYPES[1] {
            Some(serde_json::from_value::<json_patch::Patch>(patch.clone()).map_err(|e| {
                ApiError::bad_request(format!("the patch is not a JSON patch (a list of {{op, path, value}}): {e}"))
            })?)
        } else {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            None
        };
        let kind = target.kind;
        let name = target.name().to_owned();
        // A resourceVersion in a merge patch is a precondition, as in Kubernetes (a JSON patch that sets one is
        // checked against the stored object in `update`).
        let precondition = patch.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
        // A JSON patch's operations can cost far more than its size: they run on the blocking pool, bounded.
        let heavy = json_patch.is_some() || body.len() > decode::INLINE_BYTES;
        let change = move |current: &Value| {
            let mut patched = current.clone();
            match &json_patch {
                Some(ops) => patch::apply(&mut patched, ops, MAX_BODY_BYTES).map_err(|e| match e {
                    patch::Error::TooLarge { op, limit } => ApiError::new(
                        StatusReason::RequestEntityTooLarge,
                        format!("the JSON patch would make the object larger than {limit} bytes (at operation {op})"),
                    ),
                    patch::Error::Invalid(message) => ApiError::invalid(
                        kind,
                        &name,
                        &[FieldError {
                            path: ".".into(),
                            kind: FieldErrorKind::Invalid,
                            message: format!("the JSON patch cannot be applied: {message}"),
                        }],
                    ),
                })?,
                None => json_patch::merge(&mut patched, &patch),
            }
            if !patched.is_object() {
                return Err(ApiError::bad_request("the patch must leave an object"));
            }
            Ok(patched)
        };
        let change = if heavy { Change::heavy(change) } else { Change::inline(change) };
        self.update(target, precondition, change, admission, manage).await
    }

    /// PUT or PATCH of `/scale`: the change is made to the `Scale` view and lands in `spec.instances`.
    async fn scale(
        &self,
        target: &Target,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let request = parse_body(&body, admission).await?;
        let kind = target.kind;
        let name = target.name().to_owned();
        let merge = method == Method::PUT || media_type(headers) == PATCH_TYPES[0];
        if !merge {
            return Err(ApiError::new(
                StatusReason::UnsupportedMediaType,
                format!("the scale subresource accepts {} (or PUT of a Scale)", PATCH_TYPES[0]),
            ));
        }
        let precondition = request.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
        self.update(
            target,
            precondition,
            Change::inline(move |current: &Value| {
                let mut scale = scale_of(current);
                json_patch::merge(&mut scale, &request);
                let replicas = match scale.pointer("/spec/replicas") {
                    Some(Value::Number(n)) if n.as_i64().is_some_and(|r| (0..=i64::from(i32::MAX)).contains(&r)) => {
                        n.clone()
                    }
                    other => {
                        let message = format!(
                            "must be a non-negative integer, got {}",
                            other.map_or("nothing".to_owned(), Value::to_string)
                        );
                        return Err(ApiError::invalid(
                            kind,
                            &name,
                            &[FieldError { path: "spec.replicas".into(), kind: FieldErrorKind::Invalid, message }],
                        ));
                    }
                };
                let mut next = current.clone();
                next["spec"]["instances"] = Value::Number(replicas);
                Ok(next)
            }),
            admission,
            manage,
        )
        .await
    }

    /// Server-side apply: creates the object from the configuration, or merges the configuration into it under the
    /// field-ownership rules of [`managed`]. Returns whether it created the object.
    async fn apply(
        &self,
        target: &Target,
        body: Bytes,
        admission: &Admission,
        manager: &str,
        scope: Scope,
        force: bool,
    ) -> ApiResult<(bool, Value)> {
        let kind = target.kind;
        let name = target.name();
        let mut applied = parse_object(&body, "the applied configuration", Format::Yaml, admission).await?;
        for field in ["apiVersion", "kind"] {
            if applied.get(field).is_none_or(Value::is_null) {
                return Err(ApiError::bad_request(format!("{field} must be set in an applied configuration")));
            }
        }
        check_type(kind, &mut applied)?;
        if let Some(body_name) = meta_str(&applied, "name").filter(|n| *n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let (Some(ns), Some(body_ns)) = (&target.namespace, meta_str(&applied, "namespace")) {
            if ns != body_ns {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({body_ns}) does not match the namespace on the request ({ns})"
                )));
            }
        }
        if applied.pointer("/metadata/managedFields").is_some_and(|m| !m.is_null()) {
            return Err(ApiError::bad_request("metadata.managedFields must be nil in an applied configuration"));
        }
        admission.prune(kind, &mut applied);
        let precondition = meta_str(&applied, "resourceVersion").map(str::to_owned);
        // A uid in an applied configuration is a precondition, as in Kubernetes.
        let uid = meta_str(&applied, "uid").map(str::to_owned);
        let heavy = body.len() > decode::INLINE_BYTES;
        let (view, fields) = decode::in_place(heavy, || {
            let view = managed::managed_view(&applied, kind, scope);
            let fields = managed::FieldSet::of(&view);
            (view, fields)
        })
        .await;
        let manage = Manage::Apply { manager: manager.to_owned(), scope, fields: fields.clone(), force };
        let (view, fields, owner) = (std::sync::Arc::new(view), std::sync::Arc::new(fields), manager.to_owned());
        for _ in 0..WRITE_ATTEMPTS {
            let (view, fields, owner, uid) = (view.clone(), fields.clone(), owner.clone(), uid.clone());
            let object = name.to_owned();
            let change = move |current: &Value| {
                if let Some(uid) = uid.as_deref().filter(|uid| Some(*uid) != meta_str(current, "uid")) {
                    return Err(ApiError::conflict(
                        kind,
                        &object,
                        &format!("the uid in the applied configuration ({uid}) is not the object's"),
                    ));
                }
                Ok(managed::apply_to(current, &view, &fields, &owner, scope))
            };
            let change = if heavy { Change::heavy(change) } else { Change::inline(change) };
            let updated = self.update(target, precondition.clone(), change, admission, &manage).await;
            match updated {
                Err(e) if e.0.code == 404 && scope == Scope::Main && precondition.is_none() => {
                    let mut object = applied.clone();
                    set_meta(&mut object, "name", json!(name));
                    match self.create_object(target, object, admission, &manage).await {
                        Err(e) if e.0.reason == Some(StatusReason::AlreadyExists) => {}
                        created => return created.map(|object| (true, object)),
                    }
                }
                updated => return updated.map(|object| (false, object)),
            }
        }
        Err(ApiError::conflict(kind, name, "the object kept being created and deleted; try again"))
    }

    /// The synchronous heart of an update: the change, its checks, admission, managed fields, the bytes to store.
    /// `None` when nothing would change. Runs where [`decode::in_place`] puts it.
    #[allow(clippy::too_many_arguments, reason = "the parts of one update")]
    fn prepare(
        &self,
        target: &Target,
        precondition: Option<&str>,
        kv: &KeyValue,
        current: &Value,
        change: &Change,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Option<(Value, String, Op)>> {
        let kind = target.kind;
        let name = target.name();
        let status_only = manage.scope() == Scope::Status;
        let mut desired = (change.apply)(current)?;
        check_type(kind, &mut desired)?;
        // A JSON patch may set the resourceVersion: it is a precondition, as with a PUT.
        if precondition.is_none() {
            if let Some(rv) = meta_str(&desired, "resourceVersion").filter(|rv| *rv != kv.mod_revision.to_string()) {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    &format!(
                        "the object has been modified (resourceVersion {rv} is not the stored {}); please apply your changes to the latest version and try again",
                        kv.mod_revision
                    ),
                ));
            }
        }
        for (field, stored) in [("name", Some(name)), ("namespace", target.namespace.as_deref())] {
            if let Some(asked) = meta_str(&desired, field).filter(|asked| Some(*asked) != stored) {
                return Err(ApiError::invalid(
                    kind,
                    name,
                    &[FieldError {
                        path: format!("metadata.{field}"),
                        kind: FieldErrorKind::Invalid,
                        message: format!(
                            "is immutable: the object's {field} is {:?}, not {asked:?} (another name is another \
                             object: create it)",
                            stored.unwrap_or_default()
                        ),
                    }],
                ));
            }
        }
        let requested = desired.pointer("/metadata/managedFields").cloned();
        if let Some(uid) = meta_str(&desired, "uid").filter(|uid| Some(*uid) != meta_str(current, "uid")) {
            return Err(ApiError::conflict(kind, name, &format!("the uid in the request ({uid}) is not the object's")));
        }
        let mut next = if status_only {
            let mut next = current.clone();
            match desired.get("status") {
                Some(status) => next["status"] = status.clone(),
                None => {
                    if let Some(map) = next.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            next
        } else {
            let mut next = desired;
            let kept_status = current.get("status").cloned();
            if let Some(map) = next.as_object_mut() {
                match kept_status {
                    Some(status) if kind.subresources.contains(&"status") => {
                        map.insert("status".to_owned(), status);
                    }
                    _ if kind.subresources.contains(&"status") => {
                        map.remove("status");
                    }
                    _ => {}
                }
            }
            next
        };
        // The server's fields come from the stored object, whatever the client sent.
        for field in SERVER_FIELDS {
            match current.get("metadata").and_then(|m| m.get(field)) {
                Some(value) => set_meta(&mut next, field, value.clone()),
                None => {
                    meta_mut(&mut next).remove(field);
                }
            }
        }
        set_meta(&mut next, "name", json!(name));
        if let Some(ns) = &target.namespace {
            set_meta(&mut next, "namespace", json!(ns));
        }
        let mut admitted = admission.admit(kind, name, next)?;
        if admitted.get("spec") != current.get("spec") {
            let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            set_meta(&mut admitted, "generation", json!(generation));
        }
        let managed = managed::record(kind, name, Some(current), requested.as_ref(), &admitted, manage)?;
        set_managed_fields(&mut admitted, managed);
        meta_mut(&mut admitted).remove("resourceVersion");
        let mut unchanged = current.clone();
        meta_mut(&mut unchanged).remove("resourceVersion");
        if admitted == unchanged {
            return Ok(None);
        }
        let key = self.key(target, name);
        let deleting = current.pointer("/metadata/deletionTimestamp").is_some()
            && admitted.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
        let op = if deleting {
            Op::Delete(key.clone())
        } else {
            Op::Put(key.clone(), encode_checked(kind, name, &admitted)?)
        };
        Ok(Some((admitted, key, op)))
    }

    /// Read, change, compare-and-swap; retried when another writer got there first, unless the client pinned a
    /// resourceVersion (then it is a 409).
    async fn update(
        &self,
        target: &Target,
        precondition: Option<String>,
        change: Change,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let kind = target.kind;
        let name = target.name();
        for _ in 0..WRITE_ATTEMPTS {
            let (kv, current) = self.current(target).await?;
            if precondition.as_ref().is_some_and(|rv| *rv != kv.mod_revision.to_string()) {
                return Err(ApiError::stale(kind, name));
            }
            let prepared = decode::in_place(change.heavy, || {
                self.prepare(target, precondition.as_deref(), &kv, &current, &change, admission, manage)
            })
            .await?;
            let Some((mut admitted, key, op)) = prepared else { return Ok(current) };
            // Only a change of a job's parents can close a cycle (the check reads the namespace's jobs).
            let parents = |o: &Value| o.pointer("/spec/parents").cloned();
            if matches!(op, Op::Put(..)) && parents(&admitted) != parents(&current) {
                self.check_parents(target, name, &admitted).await?;
            }
            let response = self.store.txn(Txn::new(vec![Compare::ModRevision(key, kv.mod_revision)], vec![op])).await?;
            if response.succeeded {
                set_meta(&mut admitted, "resourceVersion", json!(response.revision.to_string()));
                return Ok(admitted);
            }
            if precondition.is_some() {
                return Err(ApiError::stale(kind, name));
            }
        }
        Err(ApiError::conflict(kind, name, "the object kept changing; try again"))
    }

    async fn delete(&self, target: &Target, body: Bytes) -> ApiResult<Value> {
        let kind = target.kind;
        let name = target.name();
        let options: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the delete options are not valid JSON: {e}")))?
        };
        // Foreground and Orphan hand the object to the garbage collector through a finalizer; Background (the
        // default) deletes it now, and the collector removes its dependents afterwards.
        let policy_finalizer = match options.get("propagationPolicy").and_then(Value::as_str) {
            None | Some("Background") => None,
            Some("Foreground") => Some(crate::gc::FOREGROUND),
            Some("Orphan") => Some(crate::gc::ORPHAN),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy must be Background, Foreground or Orphan, not {other:?}"
                )));
            }
        };
        for _ in 0..WRITE_ATTEMPTS {
            let (kv, mut current) = self.current(target).await?;
            if let Some(finalizer) = policy_finalizer {
                if let Some(list) = current.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
                    if !list.iter().any(|f| f == finalizer) {
                        list.push(json!(finalizer));
                    }
                } else {
                    set_meta(&mut current, "finalizers", json!([finalizer]));
                }
            }
            if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str) {
                if Some(uid) != meta_str(&current, "uid") {
                    return Err(ApiError::conflict(
                        kind,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(&current, "uid").unwrap_or_default()
                        ),
                    ));
                }
            }
            if let Some(rv) = options.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
                if rv != kv.mod_revision.to_string() {
                    return Err(ApiError::conflict(
                        kind,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            kv.mod_revision
                        ),
                    ));
                }
            }
            let key = self.key(target, name);
            let has_finalizers =
                current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            if has_finalizers {
                // Marked for deletion; the object goes when its last finalizer is removed.
                if current.pointer("/metadata/deletionTimestamp").is_some() {
                    return Ok(current);
                }
                let mut marked = current.clone();
                set_meta(&mut marked, "deletionTimestamp", json!(now().to_string()));
                set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
                let response = self
                    .store
                    .txn(Txn::new(
                        vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
                        vec![Op::Put(key, encode(&marked))],
                    ))
                    .await?;
                if response.succeeded {
                    set_meta(&mut marked, "resourceVersion", json!(response.revision.to_string()));
                    return Ok(marked);
                }
                continue;
            }
            let response = self
                .store
                .txn(Txn::new(vec![Compare::ModRevision(key.clone(), kv.mod_revision)], vec![Op::Delete(key)]))
                .await?;
            if response.succeeded {
                return Ok(current);
            }
        }
        Err(ApiError::conflict(kind, name, "the object kept changing; try again"))
    }
}

/// The media type of the request body, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Stores the managed-fields list on an object, leaving the field out when no manager owns anything.
fn set_managed_fields(object: &mut Value, managed: Value) {
    if managed.as_array().is_some_and(Vec::is_empty) {
        meta_mut(object).remove("managedFields");
    } else {
        set_meta(object, "managedFields", managed);
    }
}

/// The `autoscaling/v1` `Scale` view of an App: `spec.replicas` is `spec.instances`, `status.replicas` the running
/// tasks.
fn scale_of(object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let keep = ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"];
    let metadata: Map<String, Value> = meta
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| keep.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": metadata,
        "spec": { "replicas": object.pointer("/spec/instances").cloned().unwrap_or(json!(1)) },
        "status": { "replicas": object.pointer("/status/tasksRunning").cloned().unwrap_or(json!(0)) },
    })
}

/// Five characters from `[a-z0-9]`, as Kubernetes appends to `generateName`.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes.iter().take(5).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

/// The client for agents' endpoints: it presents `token` as a bearer token when there is one.
/// A client for agents' endpoints presenting `token`; for an HTTPS endpoint, trusting only the agent's own CA.
fn agent_client(token: Option<&str>, ca_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(mut value) = token.and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder =
        reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5)).default_headers(headers);
    if let Some(ca) = ca_pem {
        builder = builder.tls_backend_preconfigured(agora_client::tls_client_config(ca).map_err(|e| e.to_string())?);
    }
    builder.build().map_err(|e| e.to_string())
}
