//! [`Client`]: one pooled HTTP connection set to the apiserver, shared by every [`Api`](crate::Api) made from it.
//! It adds the bearer token, applies timeouts, and turns failures into [`Error`]s that carry the server's `Status`.

use std::sync::Arc;
use std::time::Duration;

use agora_schemas::{Status, StatusReason};
use reqwest::{Method, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::error::{Error, Operation, Result};

/// A handle on the apiserver. Cheap to clone: clones share connections.
///
/// ```no_run
/// # async fn run() -> agora_client::Result<()> {
/// use agora_client::{Api, Client, Config};
/// use agora_schemas::App;
///
/// let client = Client::new(Config::infer()?)?;
/// let apps: Api<App> = Api::namespaced(client, "default");
/// let web = apps.get("web").await?;
/// println!("{} wants {} instances", web.metadata.display_name(), web.spec.instances());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
    timeout: Duration,
    namespace: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("server", &self.inner.server).finish_non_exhaustive()
    }
}

/// One request, described for the HTTP layer and for error messages.
pub(crate) struct Request {
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Content type and bytes.
    pub body: Option<(&'static str, Vec<u8>)>,
    pub operation: Operation,
    /// `None`: no limit beyond the connect timeout (watches and followed logs end on their own).
    pub timeout: Option<Duration>,
    /// The `Accept` header.
    pub accept: &'static str,
}

impl Request {
    pub fn new(method: Method, path: String, operation: Operation) -> Self {
        Self { method, path, body: None, operation, timeout: Some(Duration::ZERO), accept: "application/json" }
    }

    pub fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.body = Some((content_type, body));
        self
    }

    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Client {
    /// A client for the apiserver `config` names.
    ///
    /// # Errors
    /// [`Error::Config`] when the server URL is not an `http://` URL or the HTTP client cannot be built.
    pub fn new(config: Config) -> Result<Self> {
        let url = reqwest::Url::parse(&config.server)
            .map_err(|e| Error::Config(format!("the server address {:?} is not a URL: {e}", config.server)))?;
        let Some(host) = url.host_str() else {
            return Err(Error::Config(format!("the server address {:?} names no host", config.server)));
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90));
        match url.scheme() {
            "https" => {
                // Without a CA of its own, the system's roots are trusted.
                if let Some(ca) = &config.ca_pem {
                    builder = builder.tls_backend_preconfigured(crate::config::tls_client_config(ca)?);
                }
            }
            "http" => {
                let loopback = host == "localhost"
                    || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if config.token.is_some() && !loopback {
                    return Err(Error::Config(format!(
                        "refusing to send a bearer token over plain HTTP to {host}: use the apiserver's https:// address"
                    )));
                }
            }
            other => {
                return Err(Error::Config(format!(
                    "the server address {:?} must start with https:// (or http:// for an apiserver run with \
                     --insecure-allow-unauthenticated), not {other}://",
                    config.server
                )));
            }
        }
        let http = builder.build().map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                server: config.server,
                token: config.token,
                timeout: config.timeout,
                namespace: config.namespace,
            }),
        })
    }

    /// The default namespace of the configuration the client was made from (a kubeconfig context's), if any.
    #[must_use]
    pub fn default_namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }

    /// A client of the cluster the environment names ([`Config::infer`]).
    ///
    /// # Errors
    /// As [`Config::infer`] and [`Client::new`].
    pub fn try_default() -> Result<Self> {
        Self::new(Config::infer()?)
    }

    /// Saves a snapshot of the whole store (`GET /store/snapshot`) to `out`, by rename once it is complete; returns
    /// the revision it holds.
    ///
    /// # Errors
    /// The server's refusal, a transport failure, or a file that cannot be written.
    pub async fn snapshot_to(&self, out: &std::path::Path) -> Result<i64> {
        use futures::StreamExt;
        use std::io::Write;
        let operation = Operation { verb: "snapshot", object: "the store".into() };
        let request = Request::new(Method::GET, "/store/snapshot".into(), operation.clone()).timeout(None);
        let response = self.send(request).await?;
        let revision = response
            .headers()
            .get("x-agora-snapshot-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let written = |e: std::io::Error| Error::Config(format!("writing the snapshot to {}: {e}", out.display()));
        let partial = out.with_extension("partial");
        let mut file = std::fs::File::create(&partial).map_err(written)?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| self.transport_error(&operation, source))?;
            file.write_all(&chunk).map_err(written)?;
        }
        file.sync_all().and_then(|()| std::fs::rename(&partial, out)).map_err(written)?;
        Ok(revision)
    }

    /// The apiserver's base URL.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// `GET path` (from `/`, with its query) as JSON, asking for `accept` — e.g. a `meta.k8s.io/v1` Table
    /// ([`TABLE`]), as `agora get` prints them.
    ///
    /// # Errors
    /// The server's `Status` as [`Error::Api`], or any failure.
    pub async fn get_json(&self, path: &str, accept: &'static str) -> Result<serde_json::Value> {
        let operation = Operation { verb: "get", object: path.to_owned() };
        let mut request = Request::new(Method::GET, path.to_owned(), operation);
        request.accept = accept;
        self.call(request, "JSON").await
    }

    /// `DELETE path` (from `/`, an object or a collection with its query): the object as it was (or is, when
    /// finalizers keep it), or the list deleted.
    ///
    /// # Errors
    /// The server's `Status` as [`Error::Api`] (a 404 when there is no such object), or any failure.
    pub async fn delete_json(&self, path: &str) -> Result<serde_json::Value> {
        let operation = Operation { verb: "delete", object: path.to_owned() };
        self.call(Request::new(Method::DELETE, path.to_owned(), operation), "JSON").await
    }

    /// A JSON merge patch of the object at `path` (from `/`, with its query) as `manager`: the object as stored.
    ///
    /// # Errors
    /// The server's `Status` as [`Error::Api`], or any failure.
    pub async fn merge_patch_json(
        &self,
        path: &str,
        manager: &str,
        patch: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let operation = Operation { verb: "patch", object: path.to_owned() };
        let body = serde_json::to_vec(patch)
            .map_err(|e| Error::Request { operation: operation.clone(), message: format!("cannot encode: {e}") })?;
        let request = Request::new(Method::PATCH, format!("{path}?fieldManager={manager}"), operation)
            .body("application/merge-patch+json", body);
        self.call(request, "JSON").await
    }

    /// A watch (`path` from `/`, with `watch=true` in its query) as JSON events, asking for `accept` — e.g. the
    /// Tables `agora get -w` prints. As [`Api::watch`](crate::Api::watch), but for any kind.
    ///
    /// # Errors
    /// The request's failure; later failures arrive as items of the stream.
    pub async fn watch_json(
        &self,
        path: &str,
        accept: &'static str,
    ) -> Result<impl futures::Stream<Item = Result<serde_json::Value>> + Send + 'static + use<>> {
        let operation = Operation { verb: "watch", object: path.to_owned() };
        let mut request = Request::new(Method::GET, path.to_owned(), operation.clone()).timeout(None);
        request.accept = accept;
        let response = self.send(request).await?;
        Ok(json_lines::<serde_json::Value>(self, response, operation, "watch event"))
    }

    /// Server-side apply of `object` (JSON, any kind) at `path` (the object's path from `/`) as `manager`:
    /// whether it created the object, and the object as stored (or, with `dry_run`, as it would be).
    ///
    /// # Errors
    /// The server's `Status` as [`Error::Api`] (a 409 with `FieldManagerConflict` causes when another manager owns
    /// a field and not `force`), or any failure.
    pub async fn apply_json(
        &self,
        path: &str,
        manager: &str,
        force: bool,
        dry_run: bool,
        object: &serde_json::Value,
    ) -> Result<(bool, serde_json::Value)> {
        let operation = Operation { verb: "apply", object: path.to_owned() };
        let mut query = format!("?fieldManager={manager}&force={force}");
        if dry_run {
            query.push_str("&dryRun=All");
        }
        let body = serde_json::to_vec(object)
            .map_err(|e| Error::Request { operation: operation.clone(), message: format!("cannot encode: {e}") })?;
        let request = Request::new(Method::PATCH, format!("{path}{query}"), operation.clone())
            .body("application/apply-patch+yaml", body);
        let response = self.send(request).await?;
        let created = response.status() == StatusCode::CREATED;
        let bytes = response.bytes().await.map_err(|source| self.transport_error(&operation, source))?;
        Ok((created, decode(&bytes, &operation, "the applied object")?))
    }

    /// Sends `request`; a successful answer is returned as it is, a failure becomes [`Error::Api`] (with the server's
    /// `Status`) or [`Error::Transport`].
    pub(crate) async fn send(&self, request: Request) -> Result<reqwest::Response> {
        let Request { method, path, body, operation, timeout, accept } = request;
        let mut builder = self.inner.http.request(method, format!("{}{path}", self.inner.server));
        builder = builder.header(header::ACCEPT, accept);
        if let Some(token) = &self.inner.token {
            builder = builder.bearer_auth(token);
        }
        match timeout {
            Some(limit) if limit.is_zero() => builder = builder.timeout(self.inner.timeout),
            Some(limit) => builder = builder.timeout(limit),
            None => {}
        }
        if let Some((content_type, bytes)) = body {
            builder = builder.header(header::CONTENT_TYPE, content_type).body(bytes);
        }
        tracing::trace!(%operation, %path, "request");
        let response = builder.send().await.map_err(|source| Error::Transport {
            operation: operation.clone(),
            server: self.inner.server.clone(),
            source,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(Error::Api { operation, status: Box::new(status_of(code, &text)) })
    }

    /// Sends `request` and decodes the answer as `T` (named `expected` in errors).
    pub(crate) async fn call<T: DeserializeOwned>(&self, request: Request, expected: &'static str) -> Result<T> {
        let operation = request.operation.clone();
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(|source| Error::Transport {
            operation: operation.clone(),
            server: self.inner.server.clone(),
            source,
        })?;
        decode(&bytes, &operation, expected)
    }

    pub(crate) fn transport_error(&self, operation: &Operation, source: reqwest::Error) -> Error {
        Error::Transport { operation: operation.clone(), server: self.inner.server.clone(), source }
    }
}

/// The `Accept` header asking for a `meta.k8s.io/v1` Table (the kind's printed columns), then plain JSON.
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// Decodes `bytes` as `T`, naming the JSON path of what does not fit.
/// The longest watch event line accepted: objects are at most 3 MiB, escaped JSON a little more.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// A streamed answer of one JSON document a line (a watch), each decoded as `T` (named `expected` in errors).
pub(crate) fn json_lines<T: DeserializeOwned + Send + 'static>(
    client: &Client,
    response: reqwest::Response,
    operation: Operation,
    expected: &'static str,
) -> impl futures::Stream<Item = Result<T>> + Send + 'static + use<T> {
    use futures::{StreamExt as _, TryStreamExt as _};
    use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
    let client = client.clone();
    let bytes = response.bytes_stream().map_err(std::io::Error::other);
    let lines =
        FramedRead::new(tokio_util::io::StreamReader::new(bytes), LinesCodec::new_with_max_length(MAX_EVENT_BYTES));
    lines.filter_map(move |line| {
        let failed = |message: String| Error::Decode { operation: operation.clone(), expected, message };
        let result = match line {
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => Some(decode::<T>(line.as_bytes(), &operation, expected)),
            Err(LinesCodecError::Io(e)) => Some(Err(match e.into_inner() {
                Some(inner) => match inner.downcast::<reqwest::Error>() {
                    Ok(source) => client.transport_error(&operation, *source),
                    Err(other) => failed(other.to_string()),
                },
                None => failed("the connection failed".into()),
            })),
            Err(e) => Some(Err(failed(e.to_string()))),
        };
        std::future::ready(result)
    })
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], operation: &Operation, expected: &'static str) -> Result<T> {
    // The plain decoder first (tracking the path costs on every value); only a failure is decoded again for its path.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) };
        Error::Decode { operation: operation.clone(), expected, message }
    })
}

/// The `Status` in a failed answer, or one made from the HTTP code when the body is not a `Status` (a proxy's page).
fn status_of(code: StatusCode, body: &str) -> Status {
    if let Ok(status) = serde_json::from_str::<Status>(body)
        && status.kind == "Status"
    {
        return status;
    }
    let reason = match code.as_u16() {
        400 => StatusReason::BadRequest,
        401 => StatusReason::Unauthorized,
        403 => StatusReason::Forbidden,
        404 => StatusReason::NotFound,
        405 => StatusReason::MethodNotAllowed,
        406 => StatusReason::NotAcceptable,
        409 => StatusReason::Conflict,
        410 => StatusReason::Gone,
        413 => StatusReason::RequestEntityTooLarge,
        415 => StatusReason::UnsupportedMediaType,
        422 => StatusReason::Invalid,
        429 => StatusReason::TooManyRequests,
        503 => StatusReason::ServiceUnavailable,
        504 => StatusReason::Timeout,
        500..=599 => StatusReason::InternalError,
        _ => StatusReason::Unknown,
    };
    let mut text: String = body.trim().chars().take(300).collect();
    if text.is_empty() {
        text = code.canonical_reason().unwrap_or("request failed").to_owned();
    }
    let mut status = Status::failure(reason, text);
    status.code = code.as_u16();
    status
}
