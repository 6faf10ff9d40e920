//! Hyper's own refusals of an HTTP/1.1 request it cannot parse — a request target over 64 KiB (414), a head larger
//! than its read buffer (431), a malformed head (400) — are written with an empty body before the request reaches
//! the service, so no middleware can answer them. [`RefusalBodies`] sits between hyper and the connection and gives
//! exactly those answers a Kubernetes `Status` body, as every other refusal has: a client that reads the body learns
//! what was wrong and by how much.
//!
//! A hyper refusal is recognised by its whole shape — one write that is a complete head and nothing more, status
//! 400, 414 or 431, `content-length: 0` and no content type — which no response of the service has: those carry a
//! `Status` body of their own. Hyper closes the connection after such a refusal, so nothing follows it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest head taken for a refusal.
const MAX_REFUSAL_HEAD: usize = 512;

/// A connection whose hyper refusals get `Status` bodies.
#[derive(Debug)]
pub struct RefusalBodies<S> {
    inner: S,
    /// A rewritten refusal being written: the bytes, how many are written, and how many the caller handed over.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> RefusalBodies<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner, pending: None }
    }
}

/// What a refusal says, by its status code.
fn message(code: u16) -> Option<&'static str> {
    match code {
        400 => Some("the request could not be parsed as HTTP/1.1"),
        414 => Some("the request target is longer than 65534 bytes, the most this server reads"),
        431 => Some("the request's head (its target and headers) is larger than this server reads"),
        _ => None,
    }
}

/// The refusal with a `Status` body, when `written` is a hyper refusal.
fn rewrite(written: &[u8]) -> Option<Vec<u8>> {
    if written.len() > MAX_REFUSAL_HEAD || !written.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(written).ok()?;
    let mut lines = head.trim_end().split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line.strip_prefix("HTTP/1.1 ")?;
    let code: u16 = rest.get(..3)?.parse().ok()?;
    let message = message(code)?;
    let mut empty = false;
    let mut kept = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value.trim() == "0" => empty = true,
            "content-length" | "content-type" | "transfer-encoding" => return None,
            _ => kept.push(line),
        }
    }
    if !empty {
        return None;
    }
    let body = format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{message}","reason":"BadRequest","code":{code}}}"#
    );
    let mut out = format!("{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: AsyncWrite + Unpin> RefusalBodies<S> {
    /// Writes what is pending; the count the caller handed over once all of it is written.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<Option<usize>>> {
        while let Some((bytes, done, handed)) = &mut self.pending {
            if *done == bytes.len() {
                let handed = *handed;
                self.pending = None;
                return Poll::Ready(Ok(Some(handed)));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(None))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RefusalBodies<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RefusalBodies<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.pending.is_none()
            && let Some(rewritten) = rewrite(buf)
        {
            self.pending = Some((rewritten, 0, buf.len()));
        }
        match ready!(self.poll_pending(cx))? {
            Some(handed) => Poll::Ready(Ok(handed)),
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_refusals_get_a_status() {
        let refusal = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 20:00:00 GMT\r\n\r\n";
        let rewritten = String::from_utf8(rewrite(refusal).unwrap()).unwrap();
        let (head, body) = rewritten.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())) && head.contains("date: Sun"), "{head}");
        let status: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!((status["kind"].as_str(), status["code"].as_u64()), (Some("Status"), Some(414)));
        assert!(rewrite(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n").is_some());
        // The service's own answers, other codes, and bodies are left alone.
        assert!(
            rewrite(b"HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n")
                .is_none()
        );
        assert!(rewrite(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\nmore").is_none());
        assert!(rewrite(b"HTTP/1.1 414 URI Too Long\r\ntransfer-encoding: chunked\r\n\r\n").is_none());
        assert!(rewrite(b"{\"kind\":\"Status\"}").is_none());
    }

    #[tokio::test]
    async fn a_refusal_is_written_whole_and_counted_as_what_was_handed_over() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (client, server) = tokio::io::duplex(16);
        let mut wrapped = RefusalBodies::new(server);
        let refusal = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        let n = wrapped.write(refusal).await.unwrap();
        assert_eq!(n, refusal.len());
        wrapped.write_all(b"").await.unwrap();
        wrapped.shutdown().await.unwrap();
        drop(wrapped);
        let all = String::from_utf8(reader.await.unwrap()).unwrap();
        assert!(all.ends_with("\"code\":431}"), "{all}");
    }
}
