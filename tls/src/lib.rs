//! # agora-tls
//!
//! How Agora's servers speak TLS — the apiserver, and the agent's own endpoint (logs, metrics):
//!
//! - [`pki`]: a CA and a serving certificate made on first start in a directory of the server's (keys `0600`), kept
//!   across restarts and reissued when the names they must cover change or they near their end, as k3s does; or a
//!   certificate and key the operator gives.
//! - [`serve`](mod@serve): the accept loop both servers use: HTTPS (HTTP/1.1 and HTTP/2 by ALPN) or, where the operator asked
//!   for it explicitly, plain HTTP; TLS handshakes and request headers that must arrive in bounded time, a cap on
//!   open connections, graceful shutdown.
//! - [`refusal`]: a `Status` body for the HTTP/1.1 requests hyper refuses before any service sees them.
//!
//! The client half (trusting a cluster's CA) lives in `agora-client`, so a framework written against the API does
//! not carry certificate generation with it.

pub mod pki;
pub mod refusal;
pub mod serve;

pub use pki::{Error, ServingCert, TlsFiles, load_server_config, server_config};
pub use serve::{Limits, serve};

/// The token of an `Authorization: Bearer <token>` header value (the scheme in any case, as RFC 7235 says).
#[must_use]
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `presented` is `expected`, in time that depends only on their lengths (no early exit a caller could
/// time to guess the token byte by byte).
#[must_use]
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the `Authorization` header among `headers` presents `expected` as a bearer token.
#[must_use]
pub fn authorized(headers: &axum::http::HeaderMap, expected: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|token| token_matches(token, expected))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_tokens_are_read_in_any_case_and_compared_whole() {
        assert_eq!(super::bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("bearer abc"), Some("abc"));
        assert_eq!(super::bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(super::bearer_token("Basic abc"), None);
        assert_eq!(super::bearer_token("Bearer"), None);
        assert!(super::token_matches("abc", "abc"));
        assert!(!super::token_matches("abd", "abc") && !super::token_matches("ab", "abc"));
    }
}
