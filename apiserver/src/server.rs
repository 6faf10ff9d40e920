//! The HTTP server: routes, authentication, body limits, and the `agora apiserver` entry point.
//!
//! Secure by default ([`Security::Secure`]): HTTPS with a bearer token. Without a certificate of the operator's, the
//! apiserver makes a CA and a serving certificate in `DATA_DIR/pki`; without a token file, a token in
//! `DATA_DIR/token`; and it writes `DATA_DIR/kubeconfig` (server, CA, token; `0600`) for `agora`, the controllers,
//! the agents and kubectl. Plain HTTP without authentication only with [`Security::InsecureUnauthenticated`]
//! (`--insecure-allow-unauthenticated`), and only on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use agora_schemas::StatusReason;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::{ApiError, MAX_BODY_BYTES, ResourceApi};
use crate::discovery::{self, OpenApi};
use crate::metrics::Metrics;
use crate::store::{KeyLayout, SharedStore, StoreConfig};

/// How `agora apiserver` runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen (loopback unless a token is required).
    pub listen: SocketAddr,
    /// Which store to open.
    pub store: StoreConfig,
    /// The key prefix in the store (several clusters can share one etcd).
    pub prefix: String,
    /// Who may call it, and over what.
    pub security: Security,
    /// Where every write and refusal is recorded; nowhere without.
    pub audit: Option<crate::audit::AuditConfig>,
}

/// Who may call the apiserver, and over what.
#[derive(Clone, Debug)]
pub enum Security {
    /// HTTPS, and every request but health checks presents the bearer token: the default.
    Secure(SecureConfig),
    /// Plain HTTP, and anyone who can connect may do anything — so only on loopback, and never where untrusted
    /// processes (tasks!) share the machine's network: `--insecure-allow-unauthenticated`.
    InsecureUnauthenticated,
}

/// Where the secure default's credentials come from.
#[derive(Clone, Debug, Default)]
pub struct SecureConfig {
    /// Where a generated token (`token`), CA and serving certificate (`pki/`) and the `kubeconfig` are kept.
    pub data_dir: PathBuf,
    /// The file holding the token every request must present; without one, `DATA_DIR/token` (made on first start).
    pub token_file: Option<PathBuf>,
    /// A certificate and private key to serve (`--tls-cert-file`, `--tls-private-key-file`); without them, the
    /// generated ones.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// More DNS names or IP addresses the generated certificate covers (besides the listen address, loopback,
    /// `localhost` and the hostname).
    pub names: Vec<String>,
}

/// The credentials a secure apiserver serves with.
struct Credentials {
    token: String,
    tls: Arc<rustls::ServerConfig>,
    /// The CA clients must trust, when the apiserver made it.
    ca_pem: Option<String>,
}

impl SecureConfig {
    /// The token, the TLS configuration and the CA (made in the data dir where not given), for clients of `listen`.
    fn credentials(&self, listen: SocketAddr) -> Result<Credentials, ServerError> {
        let fail = |what: String| move |e: std::io::Error| ServerError::Credentials(format!("{what}: {e}"));
        std::fs::create_dir_all(&self.data_dir).map_err(fail(format!("creating {}", self.data_dir.display())))?;
        let token = match &self.token_file {
            Some(file) => agora_client::read_token(file)
                .map_err(|e| ServerError::Credentials(format!("the apiserver's --token-file: {}", bare(e))))?,
            None => generated_token(&self.data_dir.join("token"))?,
        };
        let tls_error = |e: agora_tls::Error| ServerError::Credentials(e.to_string());
        let (tls, ca_pem) = match &self.tls_files {
            Some((cert, key)) => (agora_tls::load_server_config(cert, key).map_err(tls_error)?, None),
            None => {
                let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
                if !listen.ip().is_unspecified() {
                    names.push(listen.ip().to_string());
                }
                names.extend(hostname());
                names.extend(self.names.iter().cloned());
                names.dedup();
                let issued = agora_tls::TlsFiles::new(self.data_dir.join("pki")).ensure(&names).map_err(tls_error)?;
                let config = agora_tls::server_config(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
                    .map_err(tls_error)?;
                (config, Some(issued.ca_pem))
            }
        };
        Ok(Credentials { token, tls, ca_pem })
    }
}

/// The token in `path`, or a new random one written there (`0600`) on first start.
fn generated_token(path: &std::path::Path) -> Result<String, ServerError> {
    if path.exists() {
        return agora_client::read_token(path)
            .map_err(|e| ServerError::Credentials(format!("the apiserver's generated token: {}", bare(e))));
    }
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").map_err(ServerError::Random)?, &mut bytes)
        .map_err(ServerError::Random)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, token.as_bytes())?;
    Ok(token)
}

/// A client-library error's message without its "client configuration" heading: here the apiserver is the one
/// reading its own files.
fn bare(error: agora_client::Error) -> String {
    match error {
        agora_client::Error::Config(message) => message,
        other => other.to_string(),
    }
}

/// Writes `bytes` to `path` by rename, readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| ServerError::Credentials(format!("writing {}: {e}", path.display()));
    let temp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp).map_err(fail)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(fail)?;
    std::fs::rename(&temp, path).map_err(fail)
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Listening beyond loopback without authentication is refused.
    #[error(
        "refusing to serve {0} without authentication: --insecure-allow-unauthenticated is for loopback addresses only"
    )]
    Unauthenticated(SocketAddr),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The token, certificates or kubeconfig could not be read or made.
    #[error("{0}")]
    Credentials(String),
    /// The audit log cannot be opened.
    #[error("opening the audit log {}: {source}", path.display())]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// No random bytes for a token.
    #[error("reading /dev/urandom for a new token: {0}")]
    Random(std::io::Error),
    /// The address could not be bound, or serving failed.
    #[error("serving on {address}: {source}")]
    Io {
        /// The address.
        address: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// How the routes behave, beyond the store they serve.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Where objects live in the store.
    pub keys: KeyLayout,
    /// When set, every request but health checks needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// How many events a watch client may fall behind before it is cut off with an ERROR event.
    pub watch_backlog: usize,
    /// How long a request's body may take to arrive.
    pub body_read_timeout: std::time::Duration,
    /// Where every write and refusal is recorded.
    pub audit: Option<crate::audit::AuditLog>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: KeyLayout::default(),
            token: None,
            watch_backlog: crate::api::watch_cache::CLIENT_BACKLOG,
            body_read_timeout: BODY_READ_TIMEOUT,
            audit: None,
        }
    }
}

impl ApiConfig {
    /// Objects under this key layout.
    #[must_use]
    pub fn keys(mut self, keys: KeyLayout) -> Self {
        self.keys = keys;
        self
    }

    /// Require this bearer token.
    #[must_use]
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Record every write and refusal in `log`.
    #[must_use]
    pub fn audit(mut self, log: Option<crate::audit::AuditLog>) -> Self {
        self.audit = log;
        self
    }

    /// Cut off watch clients this many events behind.
    #[must_use]
    pub fn watch_backlog(mut self, events: usize) -> Self {
        self.watch_backlog = events;
        self
    }

    /// Cut off a request whose body has not arrived within `timeout`.
    #[must_use]
    pub fn body_read_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }
}

/// What every handler shares; cloned per request, hence behind one `Arc`.
type AppState = Arc<Shared>;

struct Shared {
    api: ResourceApi,
    store: SharedStore,
    openapi: Arc<OpenApi>,
    auth: Arc<crate::auth::Authenticator>,
    authorizer: Arc<crate::access::Authorizer>,
    metrics: Metrics,
    body_read_timeout: std::time::Duration,
}

/// The routes over an open store, with the garbage collector running beside them. Call within a Tokio runtime.
pub fn router(store: SharedStore, config: ApiConfig) -> Router {
    let metrics = Metrics::default();
    let store = metrics.metered(store);
    tokio::spawn(crate::gc::GarbageCollector::new(store.clone(), &config.keys).run());
    let auth = crate::auth::Authenticator::new(config.token.as_deref().map(Arc::from));
    tokio::spawn(auth.clone().follow(store.clone(), config.keys.clone()));
    let authorizer = crate::access::Authorizer::new(store.clone(), config.keys.clone());
    // Without a token every request is a master's: there is no one to authorize, and nothing to bootstrap.
    if config.token.is_some() {
        // The built-in roles first: the policy is ready only once it holds them.
        let (authorizer, store, keys) = (authorizer.clone(), store.clone(), config.keys.clone());
        tokio::spawn(async move {
            while let Err(e) = crate::access::bootstrap(&store, &keys).await {
                tracing::warn!(error = %e, "creating the built-in ClusterRoles; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            authorizer.follow().await;
        });
    }
    let api =
        ResourceApi::new(store.clone(), config.keys, config.watch_backlog).with_agent_token(config.token.as_deref());
    // Every kind's watch cache starts now, so a watch from any revision this server has answered with finds it.
    api.start_watch_caches();
    let state = Arc::new(Shared {
        api,
        store,
        openapi: Arc::new(OpenApi::default()),
        auth,
        authorizer: authorizer.clone(),
        metrics: metrics.clone(),
        body_read_timeout: config.body_read_timeout,
    });
    Router::new()
        .route("/version", get(|| async { discovery::version() }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(|State(state): State<AppState>| async move { state.metrics.render() }))
        .route("/api", get(|headers: HeaderMap| async move { discovery::core(&headers) }))
        .route("/api/v1", get(|| async { discovery::core_v1() }))
        .route("/api/v1/namespaces", axum::routing::any(namespaces))
        .route("/api/v1/namespaces/{name}", axum::routing::any(namespace))
        .route("/api/v1/events", axum::routing::any(all_events))
        .route("/api/v1/namespaces/{namespace}/events", axum::routing::any(events))
        .route("/api/v1/namespaces/{namespace}/events/{name}", axum::routing::any(event))
        .route("/apis", get(|headers: HeaderMap| async move { discovery::groups(&headers) }))
        .route(crate::access::SELF_REVIEWS, axum::routing::post(self_review))
        .route("/apis/{group}/{version}", get(group_version))
        .route("/apis/{group}/{version}/", get(group_version))
        .route("/apis/{group}/{version}/{*rest}", axum::routing::any(resources))
        .route("/store/snapshot", get(snapshot))
        .route("/ui", get(crate::ui::root))
        .route("/ui/", get(crate::ui::index))
        .route("/ui/{file}", get(crate::ui::file))
        .route("/openapi/v3", get(|State(state): State<AppState>| async move { state.openapi.index() }))
        .route("/openapi/v3/apis/{group}/{version}", get(openapi_group))
        .fallback(|uri: Uri| async move { ApiError::no_such_path(uri.path()).into_response() })
        .layer(middleware::from_fn_with_state(authorizer, crate::access::authorize))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(config.audit, crate::audit::record))
        .layer(middleware::from_fn(bound_request))
        .layer(middleware::from_fn_with_state(metrics, crate::metrics::record))
        .layer(DefaultBodyLimit::disable())
        .layer(
            tower_http::compression::CompressionLayer::new()
                .quality(tower_http::CompressionLevel::Fastest)
                .compress_when(LargeWhole),
        )
        .with_state(state)
}

/// Which answers are gzipped (for a client that accepts it, as Kubernetes' apiserver does): whole ones of at least
/// 128 KiB — a big list. Streams (watches, logs) have no known length and are never held back to compress.
#[derive(Clone, Copy)]
struct LargeWhole;

impl tower_http::compression::Predicate for LargeWhole {
    fn should_compress<B: axum::body::HttpBody>(&self, response: &axum::http::Response<B>) -> bool {
        const AT_LEAST: u64 = 128 * 1024;
        response.body().size_hint().exact().is_some_and(|size| size >= AT_LEAST)
    }
}

/// `GET /store/snapshot`: a consistent snapshot of the whole store, taken while it serves (one at a time), as a
/// file to keep: the embedded store's data file, or etcd's own snapshot. `agora store snapshot` saves it.
async fn snapshot(State(state): State<AppState>) -> Response {
    static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let Ok(_permit) = ONE_AT_A_TIME.try_acquire() else {
        return ApiError::new(StatusReason::TooManyRequests, "a snapshot is being taken; try again when it is done")
            .into_response();
    };
    let taken = async {
        let file = tempfile::NamedTempFile::new()
            .map_err(|e| ApiError::new(StatusReason::InternalError, format!("a file for the snapshot: {e}")))?;
        let revision = state.store.snapshot(file.path()).await?;
        // The open handle outlives the name: the file goes when the answer has been sent.
        let handle = tokio::fs::File::open(file.path())
            .await
            .map_err(|e| ApiError::new(StatusReason::InternalError, format!("reading the snapshot: {e}")))?;
        let length = handle.metadata().await.map(|m| m.len()).unwrap_or(0);
        Ok::<_, ApiError>((revision, length, handle))
    };
    match taken.await {
        Ok((revision, length, handle)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, length.to_string()),
                (header::HeaderName::from_static("x-agora-snapshot-revision"), revision.to_string()),
            ],
            Body::from_stream(tokio_util::io::ReaderStream::new(handle)),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.store.current_revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn namespaces(State(state): State<AppState>, method: Method) -> Response {
    state.api.core_namespaces(&method, None).await
}

async fn namespace(State(state): State<AppState>, method: Method, Path(name): Path<String>) -> Response {
    state.api.core_namespaces(&method, Some(&name)).await
}

async fn all_events(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    state.api.core_events(&method, None, None, uri.query(), &headers).await.unwrap_or_else(IntoResponse::into_response)
}

async fn events(
    State(state): State<AppState>,
    method: Method,
    Path(namespace): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    state
        .api
        .core_events(&method, Some(&namespace), None, uri.query(), &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn event(
    State(state): State<AppState>,
    method: Method,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    state
        .api
        .core_events(&method, Some(&namespace), Some(&name), uri.query(), &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: what the asking principal may do.
async fn self_review(State(state): State<AppState>, request: Request) -> Response {
    let principal = request.extensions().get::<Arc<crate::auth::Principal>>().cloned();
    let media = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default();
    let read = tokio::time::timeout(state.body_read_timeout, axum::body::to_bytes(request.into_body(), 64 * 1024));
    let body = match read.await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return ApiError::bad_request("a SelfSubjectAccessReview is at most 64 KiB").into_response(),
        Err(_) => return refused(408, StatusReason::Timeout, "the request body did not arrive in time".to_owned()),
    };
    let principal =
        principal.unwrap_or_else(|| Arc::new(crate::auth::Principal { name: String::new(), groups: Vec::new() }));
    match crate::access::self_review(&state.authorizer, &principal, &media, &body) {
        Ok(review) => {
            let mut response = (axum::http::StatusCode::CREATED, axum::Json(review)).into_response();
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /apis/GROUP/VERSION`: the group version's resources.
async fn group_version(Path((group, version)): Path<(String, String)>, uri: Uri) -> Response {
    discovery::group_version(&format!("{group}/{version}"))
        .unwrap_or_else(|| ApiError::no_such_path(uri.path()).into_response())
}

/// `GET /openapi/v3/apis/GROUP/VERSION`: the group version's OpenAPI document.
async fn openapi_group(
    State(state): State<AppState>,
    Path((group, version)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    state
        .openapi
        .group(&format!("{group}/{version}"))
        .unwrap_or_else(|| ApiError::no_such_path(uri.path()).into_response())
}

async fn resources(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = state.body_read_timeout;
    let bytes = match tokio::time::timeout(limit, read_body(body)).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => {
            return ApiError::new(
                StatusReason::RequestEntityTooLarge,
                format!("the request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
            )
            .into_response();
        }
        Ok(Err(e)) => return ApiError::bad_request(format!("reading the request body: {e}")).into_response(),
        Err(_) => {
            let message = format!("the request body did not arrive within {} s", limit.as_secs_f64());
            return refused(408, StatusReason::Timeout, message);
        }
    };
    let path = uri.path();
    let rest = path.strip_prefix("/apis/").unwrap_or_default();
    state.api.handle(method, path, rest, uri.query(), &headers, bytes).await
}

/// How long a request's body may take to arrive (a client that starts one and never finishes is cut off).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest request target (path and query) served; longer ones get 414.
const MAX_URI_BYTES: usize = 16 * 1024;
/// The most header bytes a request may carry; more get 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How much of a body over the limit is still read (and dropped) before the 413 is sent.
const DRAINED_BODY_BYTES: usize = 8 * MAX_BODY_BYTES;

/// A request body of at most [`MAX_BODY_BYTES`], or `None` for a larger one. The rest of a larger body is read and
/// dropped (up to [`DRAINED_BODY_BYTES`]) before the caller answers: an HTTP/2 client still sending when the 413
/// arrives sees its stream reset under it (curl: "Stream error in the HTTP/2 framing layer") instead of the answer.
/// Past that bound the answer goes out anyway, and the stream ends with RST_STREAM NO_ERROR after it.
async fn read_body(mut body: Body) -> Result<Option<bytes::Bytes>, axum::Error> {
    use http_body_util::BodyExt as _;
    let mut read = bytes::BytesMut::new();
    let mut over = false;
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > MAX_BODY_BYTES {
            over = true;
            read = bytes::BytesMut::new();
            if seen > DRAINED_BODY_BYTES {
                break;
            }
        } else {
            read.extend_from_slice(&data);
        }
    }
    Ok((!over).then(|| read.freeze()))
}

/// Refuses a request whose target or headers are larger than this server reads, with a `Status` (hyper's own
/// refusals, for requests beyond its buffer, carry no body).
async fn bound_request(request: Request, next: Next) -> Response {
    let uri = request.uri().to_string().len();
    if uri > MAX_URI_BYTES {
        return refused(
            414,
            StatusReason::BadRequest,
            format!("the request target is {uri} bytes; the limit is {MAX_URI_BYTES}"),
        );
    }
    let headers: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if headers > MAX_HEADER_BYTES {
        let message = format!("the request's headers are {headers} bytes; the limit is {MAX_HEADER_BYTES}");
        return refused(431, StatusReason::BadRequest, message);
    }
    next.run(request).await
}

/// A failure `Status` with an HTTP code its reason does not carry (408, 414, 431).
fn refused(code: u16, reason: StatusReason, message: String) -> Response {
    let mut status = agora_schemas::Status::failure(reason, message);
    status.code = code;
    ApiError(Box::new(status)).into_response()
}

/// The most of an unauthenticated request's body read before it is refused.
const UNAUTHENTICATED_BODY_BYTES: usize = 64 * 1024;

/// Middleware: who the request is from ([`crate::auth`]); the principal goes into the request's extensions (for the
/// handlers) and the response's (for the audit log). A watch or followed log of a token that is revoked or expires
/// ends then.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if matches!(path, "/healthz" | "/livez" | "/readyz") || crate::ui::is_ui(path) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(agora_tls::bearer_token)
        .map(str::to_owned);
    let who = match state.auth.authenticate(presented.as_deref()).await {
        Ok(who) => who,
        Err(refusal) => {
            // A small body is read first: answering before it arrives resets an HTTP/2 stream, which some clients
            // (curl) report as a framing error instead of the 401. Bounded in size and time: a stranger's body
            // costs little.
            let body = axum::body::to_bytes(request.into_body(), UNAUTHENTICATED_BODY_BYTES);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), body).await;
            return match refusal {
                crate::auth::Refusal::Unauthorized => {
                    ApiError::new(StatusReason::Unauthorized, "Unauthorized: a valid bearer token is required")
                }
                crate::auth::Refusal::Loading => ApiError::new(
                    StatusReason::ServiceUnavailable,
                    "the apiserver is still reading its tokens from the store; try again",
                ),
            }
            .into_response();
        }
    };
    let query = request.uri().query().unwrap_or_default();
    let streams = query.split('&').any(|p| matches!(p, "watch=true" | "watch=1" | "follow=true" | "follow=1"));
    request.extensions_mut().insert(who.principal.clone());
    let principal = who.principal.clone();
    let mut response = next.run(request).await;
    response.extensions_mut().insert(principal);
    if streams && who.can_end() {
        let (parts, body) = response.into_parts();
        let stream = futures::StreamExt::take_until(body.into_data_stream(), who.ends());
        return Response::from_parts(parts, axum::body::Body::from_stream(stream));
    }
    response
}

/// Opens the store, binds, and serves until `shutdown` completes. A secure server writes its kubeconfig once it
/// listens (by rename: a client that finds the file finds a server).
///
/// # Errors
/// Insecure off loopback, credentials that cannot be read or made, a store that cannot be opened, or an address
/// that cannot be bound.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let credentials = match &config.security {
        Security::InsecureUnauthenticated if !config.listen.ip().is_loopback() => {
            return Err(ServerError::Unauthenticated(config.listen));
        }
        Security::InsecureUnauthenticated => None,
        Security::Secure(secure) => Some(secure.credentials(config.listen)?),
    };
    let store = config.store.open().await?;
    // A fresh embedded store is at revision 0, which clients read as "any": a list answered at resourceVersion 0
    // cannot be resumed from (kube-rs' watcher would miss what happens between its list and its watch). Its first
    // revision records when it was made instead, as etcd starts at revision 1. The key is outside every kind's.
    if store.current_revision().await? == 0 {
        let key = format!("/{}/.created", config.prefix.trim_matches('/'));
        store.put(&key, bytes::Bytes::from(crate::api::now().to_string())).await?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Io { address: config.listen, source })?;
    let address = listener.local_addr().map_err(|source| ServerError::Io { address: config.listen, source })?;
    let token = credentials.as_ref().map(|c| c.token.clone());
    let audit = match &config.audit {
        Some(audit) => Some(
            crate::audit::AuditLog::open(audit.clone())
                .map_err(|source| ServerError::Audit { path: audit.path.clone(), source })?,
        ),
        None => None,
    };
    let app = router(store, ApiConfig::default().keys(KeyLayout::new(&config.prefix)).token(token).audit(audit));
    if let (Some(credentials), Security::Secure(secure)) = (&credentials, &config.security) {
        let host =
            if address.ip().is_unspecified() { "127.0.0.1".parse().unwrap_or(address.ip()) } else { address.ip() };
        let server = format!("https://{}", SocketAddr::new(host, address.port()));
        let kubeconfig =
            agora_client::Kubeconfig::single("agora", &server, credentials.ca_pem.as_deref(), Some(&credentials.token));
        let path = agora_client::kubeconfig_in(&secure.data_dir);
        write_private(&path, kubeconfig.to_yaml().as_bytes())?;
        tracing::info!(%address, store = ?config.store, kubeconfig = %path.display(), "apiserver listening (HTTPS)");
    } else {
        tracing::warn!(%address, store = ?config.store, "apiserver listening on plain HTTP WITHOUT authentication");
    }
    let limits = agora_tls::Limits::default().header_read_timeout(std::time::Duration::from_secs(10));
    agora_tls::serve(listener, app, credentials.map(|c| c.tls), limits, shutdown)
        .await
        .map_err(|source| ServerError::Io { address, source })
}
