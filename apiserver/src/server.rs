//! The HTTP server: routes, authentication, body limits, and the `agora apiserver` entry point.

use std::net::SocketAddr;
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
    /// When set, every request but health checks needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Listening beyond loopback without authentication is refused.
    #[error(
        "refusing to listen on {0} without --token-file: only loopback addresses may serve unauthenticated requests"
    )]
    Unauthenticated(SocketAddr),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] crate::store::StoreError),
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { keys: KeyLayout::default(), token: None, watch_backlog: crate::api::watch::CLIENT_BACKLOG }
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

    /// Cut off watch clients this many events behind.
    #[must_use]
    pub fn watch_backlog(mut self, events: usize) -> Self {
        self.watch_backlog = events;
        self
    }
}

/// What every handler shares; cloned per request, hence behind one `Arc`.
type AppState = Arc<Shared>;

struct Shared {
    api: ResourceApi,
    store: SharedStore,
    openapi: Arc<OpenApi>,
    token: Option<Arc<str>>,
    metrics: Metrics,
}

/// The routes over an open store, with the garbage collector running beside them. Call within a Tokio runtime.
pub fn router(store: SharedStore, config: ApiConfig) -> Router {
    let metrics = Metrics::default();
    let store = metrics.metered(store);
    tokio::spawn(crate::gc::GarbageCollector::new(store.clone(), &config.keys).run());
    let state = Arc::new(Shared {
        api: ResourceApi::new(store.clone(), config.keys, config.watch_backlog)
            .with_agent_token(config.token.as_deref()),
        store,
        openapi: Arc::new(OpenApi::default()),
        token: config.token.map(Arc::from),
        metrics: metrics.clone(),
    });
    Router::new()
        .route("/version", get(|| async { discovery::version() }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(|State(state): State<AppState>| async move { state.metrics.render() }))
        .route("/api", get(|headers: HeaderMap| async move { discovery::core(&headers) }))
        .route("/api/v1", get(|| async { discovery::core_v1() }))
        .route("/api/v1/namespaces", get(namespaces))
        .route("/api/v1/namespaces/{name}", get(namespace))
        .route("/apis", get(|headers: HeaderMap| async move { discovery::groups(&headers) }))
        .route("/apis/agora/v1", get(|| async { discovery::group_version() }))
        .route("/apis/agora/v1/", get(|| async { discovery::group_version() }))
        .route("/apis/agora/v1/{*rest}", axum::routing::any(resources))
        .route("/openapi/v3", get(|State(state): State<AppState>| async move { state.openapi.index() }))
        .route("/openapi/v3/apis/agora/v1", get(|State(state): State<AppState>| async move { state.openapi.group() }))
        .fallback(|uri: Uri| async move { ApiError::no_such_path(uri.path()).into_response() })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(metrics, crate::metrics::record))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.store.current_revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn namespaces(State(state): State<AppState>) -> Response {
    let listed = async {
        let revision = state.store.current_revision().await?;
        Ok::<_, ApiError>((state.api.namespaces().await?, revision))
    };
    match listed.await {
        Ok((names, revision)) => discovery::namespace_list(&names, &revision.to_string()),
        Err(e) => e.into_response(),
    }
}

async fn namespace(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.api.namespaces().await {
        Ok(names) if names.contains(&name) => discovery::namespace_response(&name),
        Ok(_) => ApiError(Box::new(agora_schemas::Status::failure(
            StatusReason::NotFound,
            format!("namespaces \"{name}\" not found"),
        )))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn resources(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::new(
            StatusReason::RequestEntityTooLarge,
            format!("the request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
    };
    let path = uri.path();
    let rest = path.strip_prefix("/apis/agora/v1/").unwrap_or_default();
    state.api.handle(method, path, rest, uri.query(), &headers, bytes).await
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let open = matches!(request.uri().path(), "/healthz" | "/livez" | "/readyz");
    if let (Some(token), false) = (&state.token, open) {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_ref()) {
            return ApiError::new(StatusReason::Unauthorized, "Unauthorized: a valid bearer token is required")
                .into_response();
        }
    }
    next.run(request).await
}

/// Opens the store, binds, and serves until `shutdown` completes.
///
/// # Errors
/// The address is not loopback and no token is set, the store cannot be opened, or the address cannot be bound.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(ServerError::Unauthenticated(config.listen));
    }
    let store = config.store.open().await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Io { address: config.listen, source })?;
    let address = listener.local_addr().map_err(|source| ServerError::Io { address: config.listen, source })?;
    tracing::info!(%address, store = ?config.store, "apiserver listening");
    let app = router(store, ApiConfig::default().keys(KeyLayout::new(&config.prefix)).token(config.token));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServerError::Io { address, source })
}
