//! The Kubernetes-style REST API over the store, for every kind of [`agora_schemas::KINDS`].
//!
//! Objects travel as JSON and are stored as JSON without `metadata.resourceVersion`: the revision of the store write
//! *is* the resource version, filled in on every read. Every write goes through [`agora_schemas::admit`] (strict
//! decoding, the kind's defaults, validation) and a compare-and-swap transaction, so a stale write is a 409 and
//! nothing half-written is ever stored.
//!
//! Paths: `/apis/agora/v1/[namespaces/{ns}/]{plural}[/{name}[/status|/scale|/accept|/trigger|/log]]`, and
//! `/apis/agora/v1/{plural}` across namespaces.
//!
//! One concern per module: `route` (what a path and query name, and which handler serves each verb), `admission`
//! (bodies into admitted objects), `read` (get, list), `stream` (watch over HTTP; the shared cache is [`watch`]),
//! `write` (create, replace, patch, scale and the update loop), `apply` (server-side apply; field ownership is
//! [`managed`]), `delete`, and the kind-specific `accept`, `cronjobs` and `logs`. This file holds what they share:
//! how objects are stored and read back.

mod accept;
mod admission;
mod apply;
mod core;
mod cronjobs;
pub mod decode;
mod delete;
pub mod error;
mod logs;
pub mod managed;
pub mod patch;
mod print;
mod read;
mod route;
pub mod selectors;
mod stream;
pub mod watch;
mod write;

use agora_schemas::{KindInfo, StatusReason};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use self::admission::{Admission, Format, SERVER_FIELDS, check_type, parse_body, parse_object, parse_value};
pub use self::error::{ApiError, ApiResult};
use self::read::Filter;
use self::route::{Query, Target, flag};
use self::stream::watch_frame;
use self::watch::WatchCache;
use self::write::{Change, scale_of};
use crate::store::{KeyLayout, KeyValue, Revision, SharedStore};

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
    /// When this server started (an empty `default` namespace's creation time).
    started: jiff::Timestamp,
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
/// The largest object stored (as JSON), checked on what a write would store — after a merge patch, an apply or
/// each JSON patch operation, whatever the request's own size. 1.5 MB: below etcd's default request limit (1.5 MiB,
/// `--max-request-bytes`), so an object and its key fit in one etcd write, and the same on the embedded store.
pub const MAX_OBJECT_BYTES: usize = 1_500_000;

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

impl ResourceApi {
    /// The API over `store`, with objects under `keys`; a watch client more than `watch_backlog` events behind is
    /// cut off.
    #[must_use]
    pub fn new(store: SharedStore, keys: KeyLayout, watch_backlog: usize) -> Self {
        let watches = WatchCache::new(store.clone(), keys.clone(), watch_backlog);
        Self {
            store,
            keys,
            watches,
            http: agent_client(None, None).unwrap_or_default(),
            agent_token: None,
            started: now(),
        }
    }

    /// Starts every kind's watch cache in the background (call within a Tokio runtime).
    pub fn start_watch_caches(&self) {
        self.watches.start_all();
    }

    /// Presents `token` (the cluster's) to agents when proxying their logs.
    #[must_use]
    pub fn with_agent_token(mut self, token: Option<&str>) -> Self {
        self.http = agent_client(token, None).unwrap_or_default();
        self.agent_token = token.map(str::to_owned);
        self
    }

    fn key(&self, target: &Target, name: &str) -> String {
        self.keys.object_key(target.kind.plural, target.namespace.as_deref(), name)
    }

    /// The target's object as the watch cache last saw it, where the cache keeps objects (etcd): possibly stale, for
    /// a read that a compare-and-swap checks.
    fn cached(&self, target: &Target) -> Option<(KeyValue, Value)> {
        let kv = self.watches.cached(target.kind, &self.key(target, target.name()))?;
        let object = decode(&kv).ok()?;
        Some((kv, object))
    }

    async fn current(&self, target: &Target) -> ApiResult<(KeyValue, Value)> {
        let key = self.key(target, target.name());
        let kv = self.store.get(&key).await?.ok_or_else(|| ApiError::not_found(target.kind, target.name()))?;
        let object = decode(&kv)?;
        Ok((kv, object))
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
