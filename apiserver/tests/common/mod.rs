//! What the HTTP tests share: a server on a loopback port over either store, request helpers, and the `Status`
//! assertion.

#![allow(dead_code, reason = "each test binary uses its own subset")]

use std::sync::Arc;

use agora_apiserver::server::{ApiConfig, router};
use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore, EtcdStore, SharedStore};
use agora_e2e::EtcdProcess;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

pub struct Server {
    pub base: String,
    pub http: Client,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Server {
    pub async fn on(store: SharedStore, keep: Box<dyn std::any::Any + Send + Sync>, config: ApiConfig) -> Self {
        Self::on_with(store, keep, config, agora_tls::Limits::default()).await
    }

    /// A server with these connection limits, served by the apiserver's own accept loop.
    pub async fn on_with(
        store: SharedStore,
        keep: Box<dyn std::any::Any + Send + Sync>,
        config: ApiConfig,
        limits: agora_tls::Limits,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(store, config);
        tokio::spawn(agora_tls::serve(listener, app, None, limits, std::future::pending()));
        Self { base, http: Client::new(), _keep: keep }
    }

    pub async fn embedded() -> Self {
        Self::embedded_with(ApiConfig::default()).await
    }

    pub async fn embedded_with(config: ApiConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap());
        Self::on(store, Box::new(dir), config).await
    }

    pub async fn etcd() -> Self {
        let etcd = tokio::task::spawn_blocking(EtcdProcess::start).await.unwrap();
        let store = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
        Self::on(store, Box::new(etcd), ApiConfig::default()).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_raw(method, path, content_type, body.map(|b| serde_json::to_vec(&b).unwrap())).await
    }

    /// A request with a body of any bytes; the answer parsed as JSON (or kept as a string).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.unwrap();
        let code = response.status();
        let text = response.text().await.unwrap();
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A server-side apply of `body` (YAML or JSON text) by `manager`.
    pub async fn apply(&self, path: &str, manager: &str, force: bool, body: &str) -> (StatusCode, Value) {
        let joiner = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{joiner}fieldManager={manager}&force={force}");
        self.call_raw(Method::PATCH, &path, "application/apply-patch+yaml", Some(body.as_bytes().to_vec())).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, "", None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, "application/json", Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, "application/json", Some(body)).await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, content_type, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, "", None).await
    }
}

pub const APPS: &str = "/apis/agora/v1/namespaces/default/apps";

pub fn app(name: &str) -> Value {
    json!({ "apiVersion": "agora/v1", "kind": "App", "metadata": { "name": name, "labels": { "tier": "web" } }, "spec": { "cmd": "sleep 100" } })
}

/// Asserts a failure `Status` with this code and reason, and returns its message.
pub fn status(answer: &(StatusCode, Value), code: u16, reason: &str) -> String {
    let (got, body) = answer;
    assert_eq!(got.as_u16(), code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    body["message"].as_str().unwrap_or_default().to_owned()
}

/// Reads watch events (one JSON object per line) until `n` have arrived or the stream ends.
pub async fn read_events(response: reqwest::Response, n: usize) -> Vec<Value> {
    use futures::StreamExt;
    let mut stream = response.bytes_stream();
    let (mut buffer, mut events) = (Vec::new(), Vec::new());
    while events.len() < n {
        let chunk = match tokio::time::timeout(std::time::Duration::from_secs(10), stream.next()).await {
            Ok(Some(chunk)) => chunk.unwrap(),
            Ok(None) => break,
            Err(_) => panic!("no watch event within 10 s; got {events:?}"),
        };
        // Lines are split only where a chunk has a newline, so large objects are not rescanned chunk after chunk.
        let mut rest = &chunk[..];
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            buffer.extend_from_slice(&rest[..end]);
            events.push(serde_json::from_slice(&buffer).unwrap());
            buffer.clear();
            rest = &rest[end + 1..];
        }
        buffer.extend_from_slice(rest);
    }
    events
}
