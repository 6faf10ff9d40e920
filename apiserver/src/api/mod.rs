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
//! (bodies into admitted objects), `read` (get, list), `stream` (watch over HTTP; the shared cache is [`watch_cache`]),
//! `write` (create, replace, patch, scale and the update loop), `apply` (server-side apply; field ownership is
//! [`managed`]), `delete`, `codec` (how objects are stored and read back), and the kind-specific `accept`, `cronjobs`
//! and `logs`. This file holds the `ResourceApi` they all extend.

mod accept;
mod admission;
mod apply;
mod codec;
mod core;
mod cronjobs;
pub mod decode;
mod delete;
pub mod error;
mod logs;
pub mod managed;
pub mod patch;
mod print;
mod protobuf;
pub(crate) use protobuf::{MEDIA_TYPE as PROTOBUF, self_review as self_review_from_protobuf};
mod read;
mod route;
pub mod selectors;
mod stream;
pub mod watch_cache;
mod write;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub use self::codec::MAX_OBJECT_BYTES;
use self::codec::{stored_object, with_resource_version};
pub use self::error::{ApiError, ApiResult};
use self::route::Target;
use self::stream::watch_frame;
use self::watch_cache::WatchCache;
use crate::store::{KeyLayout, KeyValue, SharedStore};

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
        self.keys.object_key(target.kind.storage, target.namespace.as_deref(), name)
    }

    /// The target's object as the watch cache last saw it, where the cache keeps objects (etcd): possibly stale, for
    /// a read that a compare-and-swap checks.
    fn cached(&self, target: &Target) -> Option<(KeyValue, Value)> {
        let kv = self.watches.cached(target.kind, &self.key(target, target.name()))?;
        let object = stored_object(&kv).ok()?;
        Some((kv, object))
    }

    async fn current(&self, target: &Target) -> ApiResult<(KeyValue, Value)> {
        let key = self.key(target, target.name());
        let kv = self.store.get(&key).await?.ok_or_else(|| ApiError::not_found(target.kind, target.name()))?;
        let object = stored_object(&kv)?;
        Ok((kv, object))
    }
}

/// The media type of the request body, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
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
