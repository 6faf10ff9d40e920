//! The accept loop of Agora's servers: each connection TLS (when there is a configuration) and then HTTP/2 or
//! HTTP/1.1 as ALPN chose (plain HTTP is HTTP/1.1), with bounds a slow or hostile client cannot stretch: the TLS
//! handshake and each request's headers must arrive within their timeouts (so must the next request on a kept-alive
//! HTTP/1.1 connection, which bounds idle ones), and a connection beyond the cap is closed at once instead of queued.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::refusal::RefusalBodies;

/// The largest HTTP/2 header block read (the service refuses smaller ones it will not serve, with a `Status`).
const MAX_HTTP2_HEADER_LIST: u32 = 2 << 20;

/// The bounds every connection is held to.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct Limits {
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long a client may take to send a request's headers (and, between requests, to start the next one).
    pub header_read_timeout: Duration,
    /// The most connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// How long open connections get to finish their requests once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// Headers (and the next request on a kept-alive connection) must come within `timeout`.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// At most `connections` open at once.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }
}

/// Serves `app` on `listener` — over TLS with `tls`, plain HTTP without — until `shutdown` completes; then stops
/// accepting and gives open connections [`Limits::shutdown_grace`] to finish.
///
/// # Errors
/// Never for a single connection's failure (logged at debug and dropped); only when the listener itself fails for
/// good.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    // One builder per protocol: with TLS, ALPN has already chosen (so no wait for a preface that may never come);
    // plain HTTP is HTTP/1.1 only, whose header timeout runs from the connection's first moment.
    let builder = |only: fn(auto::Builder<TokioExecutor>) -> auto::Builder<TokioExecutor>| {
        let mut builder = only(auto::Builder::new(TokioExecutor::new()));
        builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
        // A header block up to 2 MiB reaches the service, whose own bounds answer with a `Status` (h2's refusal of
        // a larger one has no body). One block is assembled at a time per connection.
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_header_list_size(MAX_HTTP2_HEADER_LIST);
        Arc::new(builder)
    };
    let (http1, http2) = (builder(auto::Builder::http1_only), builder(auto::Builder::http2_only));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "too many open connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, acceptor, watcher) = (app.clone(), acceptor.clone(), graceful.watcher());
        let (http1, http2) = (http1.clone(), http2.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = TowerToHyperService::new(app);
            let served = match acceptor {
                Some(acceptor) => match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            watcher.watch(http2.serve_connection(TokioIo::new(stream), service).into_owned()).await
                        } else {
                            let stream = TokioIo::new(RefusalBodies::new(stream));
                            watcher.watch(http1.serve_connection(stream, service).into_owned()).await
                        }
                    }
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                },
                None => {
                    let stream = TokioIo::new(RefusalBodies::new(stream));
                    watcher.watch(http1.serve_connection(stream, service).into_owned()).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => tracing::debug!("connections still open at shutdown were cut"),
    }
    Ok(())
}
