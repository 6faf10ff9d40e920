//! The apiserver's Prometheus metrics, served at `/metrics` in the text exposition format:
//!
//! - `apiserver_request_total{verb, resource, subresource, code}` — every request, by Kubernetes verb (`GET`, `LIST`,
//!   `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY`, `DELETE`; other paths by HTTP method) and answer code;
//! - `apiserver_request_duration_seconds{verb, resource, subresource}` — time to the response head (watches excluded:
//!   they last as long as the client wants);
//! - `apiserver_watches{resource}` — open watch streams;
//! - `apiserver_store_request_duration_seconds{operation}` — every store call, through the store wrapper
//!   [`Metrics::metered`] returns.
//!
//! Label values come from fixed sets (the kinds' plurals and subresources), so a client cannot grow the metrics
//! without bound by requesting made-up paths.

use std::sync::Arc;
use std::time::Instant;

use agora_schemas::KINDS;
use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::WatchStream;
use crate::store::{KeyValue, RangeRequest, RangeResponse, Result, Revision, SharedStore, Store, Txn, TxnResponse};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    resource: &'static str,
    subresource: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: &'static str,
    resource: &'static str,
    subresource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The registry and the metrics the apiserver records. Cheap to clone (one shared allocation).
#[derive(Clone)]
pub struct Metrics(Arc<Recorded>);

struct Recorded {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<LatencyLabels>,
    watches: Family<ResourceLabels, Gauge>,
    store: HistogramFamily<OperationLabels>,
}

/// 100 µs to ~52 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<LatencyLabels> = Family::new_with_constructor(latency_histogram);
        let watches = Family::<ResourceLabels, Gauge>::default();
        let store: HistogramFamily<OperationLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("apiserver_request", "Requests by verb, resource, subresource and code", requests.clone());
        registry.register(
            "apiserver_request_duration_seconds",
            "Time from a request to its response head, by verb, resource and subresource (watches excluded)",
            latency.clone(),
        );
        registry.register("apiserver_watches", "Open watch streams by resource", watches.clone());
        registry.register(
            "apiserver_store_request_duration_seconds",
            "Latency of store calls by operation",
            store.clone(),
        );
        Self(Arc::new(Recorded { registry, requests, latency, watches, store }))
    }
}

impl Metrics {
    /// The metrics in the text exposition format.
    #[must_use]
    pub fn render(&self) -> Response {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.0.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        let mut response = text.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    }

    /// Wraps `store` so that every call is timed.
    #[must_use]
    pub fn metered(&self, store: SharedStore) -> SharedStore {
        Arc::new(MeteredStore { inner: store, metrics: self.clone() })
    }

    fn time_store(&self, operation: &'static str, started: Instant) {
        self.0.store.get_or_create(&OperationLabels { operation }).observe(started.elapsed().as_secs_f64());
    }
}

/// What a request is, in the terms of the metrics' labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Classified {
    verb: &'static str,
    resource: &'static str,
    subresource: &'static str,
}

/// Classifies a request by Kubernetes verb, resource and subresource.
fn classify(method: &Method, path: &str, query: Option<&str>, content_type: Option<&str>) -> Classified {
    let Some(rest) = path.strip_prefix("/apis/") else {
        return Classified { verb: method_name(method), resource: "", subresource: "" };
    };
    let mut segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let api_version = match segments.as_slice() {
        [group, version, ..] => format!("{group}/{version}"),
        _ => return Classified { verb: method_name(method), resource: "", subresource: "" },
    };
    segments.drain(..2);
    if segments.first() == Some(&"namespaces") && segments.len() >= 3 {
        segments.drain(..2);
    }
    let kind =
        segments.first().and_then(|plural| KINDS.iter().find(|k| k.api_version == api_version && k.plural == *plural));
    let resource = kind.map_or("", |k| k.plural);
    let subresource = match (kind, segments.get(2)) {
        (Some(kind), Some(sub)) => kind.subresources.iter().find(|s| *s == sub).copied().unwrap_or(""),
        _ => "",
    };
    let named = segments.len() >= 2;
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        Method::GET if !named && watch => "WATCH",
        Method::GET if !named => "LIST",
        Method::GET => "GET",
        Method::PATCH if content_type.is_some_and(|c| c.starts_with("application/apply-patch")) => "APPLY",
        ref other => method_name(other),
    };
    Classified { verb, resource, subresource }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware: counts and times every request; tracks open watches until their stream is dropped.
pub async fn record(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let what = classify(request.method(), request.uri().path(), request.uri().query(), content_type);
    let started = Instant::now();
    let response = next.run(request).await;
    let code = response.status().as_u16();
    metrics
        .0
        .requests
        .get_or_create(&RequestLabels { verb: what.verb, resource: what.resource, subresource: what.subresource, code })
        .inc();
    if what.verb != "WATCH" {
        let labels = LatencyLabels { verb: what.verb, resource: what.resource, subresource: what.subresource };
        metrics.0.latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        return response;
    }
    if !response.status().is_success() {
        return response;
    }
    let gauge = metrics.0.watches.get_or_create_owned(&ResourceLabels { resource: what.resource });
    gauge.inc();
    let open = OpenWatch(gauge);
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _open = &open; // dropped with the stream, when the watch ends
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// Decrements the open-watches gauge when the watch's body is dropped.
struct OpenWatch(Gauge);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A store that times every call into [`Metrics`].
struct MeteredStore {
    inner: SharedStore,
    metrics: Metrics,
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let started = Instant::now();
        let result = self.inner.get(key).await;
        self.metrics.time_store("get", started);
        result
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let started = Instant::now();
        let result = self.inner.range(request).await;
        self.metrics.time_store("range", started);
        result
    }

    async fn snapshot(&self, out: &std::path::Path) -> Result<Revision> {
        let started = Instant::now();
        let result = self.inner.snapshot(out).await;
        self.metrics.time_store("snapshot", started);
        result
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let started = Instant::now();
        let result = self.inner.txn(txn).await;
        self.metrics.time_store("txn", started);
        result
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        let started = Instant::now();
        let result = self.inner.watch(prefix, from_revision).await;
        self.metrics.time_store("watch", started);
        result
    }

    fn previous_values_are_cheap(&self) -> bool {
        self.inner.previous_values_are_cheap()
    }

    async fn watch_changes(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        let started = Instant::now();
        let result = self.inner.watch_changes(prefix, from_revision).await;
        self.metrics.time_store("watch", started);
        result
    }

    async fn current_revision(&self) -> Result<Revision> {
        let started = Instant::now();
        let result = self.inner.current_revision().await;
        self.metrics.time_store("current_revision", started);
        result
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.compact(revision).await;
        self.metrics.time_store("compact", started);
        result
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.compacted_revision().await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<Revision> {
        let started = Instant::now();
        let result = self.inner.put(key, value).await;
        self.metrics.time_store("put", started);
        result
    }

    async fn delete(&self, key: &str) -> Result<Revision> {
        let started = Instant::now();
        let result = self.inner.delete(key).await;
        self.metrics.time_store("delete", started);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_verb_resource_and_subresource() {
        let c = |method: Method, path: &str, query: Option<&str>, ct: Option<&str>| {
            let c = classify(&method, path, query, ct);
            (c.verb, c.resource, c.subresource)
        };
        assert_eq!(c(Method::GET, "/apis/agora/v1/namespaces/default/apps", None, None), ("LIST", "apps", ""));
        assert_eq!(c(Method::GET, "/apis/agora/v1/apps", Some("watch=true"), None), ("WATCH", "apps", ""));
        assert_eq!(c(Method::GET, "/apis/agora/v1/namespaces/d/apps/web", None, None), ("GET", "apps", ""));
        assert_eq!(
            c(Method::PUT, "/apis/agora/v1/namespaces/d/apps/web/status", None, None),
            ("PUT", "apps", "status")
        );
        assert_eq!(
            c(Method::PATCH, "/apis/agora/v1/offers/o/accept", None, Some("application/apply-patch+yaml")),
            ("APPLY", "offers", "accept")
        );
        assert_eq!(c(Method::POST, "/apis/agora/v1/frameworks", None, None), ("POST", "frameworks", ""));
        // Made-up names never become label values.
        assert_eq!(c(Method::GET, "/apis/agora/v1/namespaces/d/widgets/x/y", None, None), ("GET", "", ""));
        assert_eq!(c(Method::GET, "/apis/agora/v1/namespaces/d/apps/x/nonsense", None, None), ("GET", "apps", ""));
        assert_eq!(c(Method::GET, "/healthz", None, None), ("GET", "", ""));
    }
}
