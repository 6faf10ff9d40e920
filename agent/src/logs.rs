//! The agent's HTTP endpoint: a task's stdout or stderr, whole, its last lines, or followed as it grows —
//! `GET /v1/tasks/{uid}/{stdout|stderr}?tailLines=N&follow=true`. The apiserver proxies
//! `tasks/{name}/log` here (the agent's address is in its Agent status).
//!
//! The files are read from the task's sandbox, which the task owns and can fill with anything: a log is opened only
//! as a regular file directly in the sandbox, never through a link (or a FIFO, a device, a directory) the task put
//! in its place — that answers 403 and reads nothing. A followed log ends when the task is no longer running and
//! everything written has been sent.
//!
//! With a token (the cluster's, from `--token-file`), every request but `/healthz` must present it as
//! `Authorization: Bearer <token>`; the apiserver presents its own when it proxies. Without one the agent only listens
//! on loopback, as the apiserver does.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How a followed log looks for new output.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
/// The most read back to find the last lines.
const TAIL_WINDOW: u64 = 8 << 20;

/// What the endpoint needs from the agent.
pub trait TaskLogs: Send + Sync + 'static {
    /// The sandbox of the task with this uid.
    fn sandbox(&self, uid: &str) -> PathBuf;
    /// Whether the task may still write output.
    fn running(&self, uid: &str) -> bool;
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    tail_lines: Option<u64>,
    #[serde(default)]
    follow: bool,
}

/// The endpoint's routes.
pub fn router(tasks: Arc<dyn TaskLogs>) -> Router {
    Router::new()
        .route("/v1/tasks/{uid}/{stream}", get(log))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(tasks)
}

/// `router` with every route but `/healthz` requiring `token` as a bearer token (401 otherwise), when there is one.
pub fn require_token(router: Router, token: Option<Arc<str>>) -> Router {
    let Some(token) = token else { return router };
    router.layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
        let token = token.clone();
        async move {
            if request.uri().path() != "/healthz" && !agora_tls::authorized(request.headers(), &token) {
                return plain(StatusCode::UNAUTHORIZED, "a valid bearer token is required".into());
            }
            next.run(request).await
        }
    }))
}

fn plain(code: StatusCode, message: String) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

async fn log(
    State(tasks): State<Arc<dyn TaskLogs>>,
    Path((uid, stream)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return plain(StatusCode::BAD_REQUEST, format!("{uid:?} is not a task uid"));
    }
    if stream != "stdout" && stream != "stderr" {
        return plain(StatusCode::BAD_REQUEST, format!("container must be stdout or stderr, not {stream:?}"));
    }
    let sandbox = tasks.sandbox(&uid);
    let path = sandbox.join(&stream);
    let opened = {
        let stream = stream.clone();
        tokio::task::spawn_blocking(move || open_log(&sandbox, &stream)).await
    };
    let mut file = match opened {
        Ok(Ok(file)) => tokio::fs::File::from_std(file),
        Ok(Err(LogError::Missing)) => {
            return plain(StatusCode::NOT_FOUND, format!("task {uid} has no {stream} on this agent"));
        }
        Ok(Err(LogError::NotAFile(what))) => {
            return plain(
                StatusCode::FORBIDDEN,
                format!(
                    "task {uid}'s {stream} is {what}, not the log file the agent made: the task replaced it, and the \
                     agent reads nothing through it"
                ),
            );
        }
        Ok(Err(LogError::Io(e))) => {
            return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {}: {e}", path.display()));
        }
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {}: {e}", path.display())),
    };
    let start = match query.tail_lines {
        Some(lines) => match tail_offset(&mut file, lines).await {
            Ok(offset) => offset,
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {}: {e}", path.display())),
        },
        None => 0,
    };
    let follow = query.follow;
    let chunks = futures::stream::unfold((file, start, false), move |(mut file, offset, done)| {
        let tasks = tasks.clone();
        let uid = uid.clone();
        async move {
            if done {
                return None;
            }
            loop {
                if file.seek(SeekFrom::Start(offset)).await.is_err() {
                    return None;
                }
                let mut buffer = vec![0u8; 64 << 10];
                let read = file.read(&mut buffer).await.unwrap_or(0);
                if read > 0 {
                    buffer.truncate(read);
                    return Some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from(buffer)),
                        (file, offset + read as u64, false),
                    ));
                }
                if !follow || !tasks.running(&uid) {
                    // One last look: output written just before the task ended.
                    let read = file.read(&mut buffer).await.unwrap_or(0);
                    if read > 0 {
                        buffer.truncate(read);
                        return Some((Ok(bytes::Bytes::from(buffer)), (file, offset + read as u64, true)));
                    }
                    return None;
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
            }
        }
    });
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(chunks)).into_response()
}

enum LogError {
    Missing,
    /// What stands there instead of a regular file.
    NotAFile(&'static str),
    Io(std::io::Error),
}

/// Opens `name` in `sandbox` as the agent's log file: resolved beneath the sandbox with no link followed (not even
/// the last component), without blocking (a FIFO would hang the open), and only if it is a regular file.
fn open_log(sandbox: &std::path::Path, name: &str) -> Result<std::fs::File, LogError> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let errno = |e: rustix::io::Errno| match e {
        rustix::io::Errno::NOENT => LogError::Missing,
        rustix::io::Errno::LOOP => LogError::NotAFile("a symbolic link"),
        rustix::io::Errno::XDEV => LogError::NotAFile("a mount"),
        other => LogError::Io(other.into()),
    };
    let dir = rustix::fs::open(
        sandbox,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    let fd = rustix::fs::openat2(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )
    .map_err(errno)?;
    let stat = rustix::fs::fstat(&fd).map_err(errno)?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Ok(std::fs::File::from(fd)),
        FileType::Directory => Err(LogError::NotAFile("a directory")),
        FileType::Fifo => Err(LogError::NotAFile("a FIFO")),
        FileType::Socket => Err(LogError::NotAFile("a socket")),
        FileType::CharacterDevice | FileType::BlockDevice => Err(LogError::NotAFile("a device")),
        _ => Err(LogError::NotAFile("something other than a regular file")),
    }
}

/// Where the last `lines` lines of `file` start.
/// The last `max` bytes of the file at `path` (empty when it cannot be read): a log's end, never the whole of a
/// large one.
#[must_use]
pub fn file_tail(path: &std::path::Path, max: u64) -> Vec<u8> {
    use std::io::{Read as _, Seek as _};
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let length = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(max)));
    let mut bytes = Vec::new();
    let _ = file.take(max).read_to_end(&mut bytes);
    bytes
}

async fn tail_offset(file: &mut tokio::fs::File, lines: u64) -> std::io::Result<u64> {
    let length = file.metadata().await?.len();
    if lines == 0 {
        return Ok(length);
    }
    let from = length.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(from)).await?;
    let mut window = Vec::new();
    file.read_to_end(&mut window).await?;
    // A final newline ends the last line; it does not start another.
    let body = window.strip_suffix(b"\n").unwrap_or(&window);
    let mut seen = 0;
    for (i, byte) in body.iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == lines {
                return Ok(from + i as u64 + 1);
            }
        }
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::{LogError, file_tail, open_log};

    #[test]
    fn a_files_tail_is_its_last_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(file_tail(&path, 4), b"6789");
        assert_eq!(file_tail(&path, 100), b"0123456789");
        assert!(file_tail(&dir.path().join("missing"), 4).is_empty());
    }

    #[test]
    fn only_a_regular_file_in_the_sandbox_is_opened() {
        let sandbox = tempfile::tempdir().unwrap();
        let dir = sandbox.path();
        std::fs::write(dir.join("stdout"), "mine\n").unwrap();
        assert!(open_log(dir, "stdout").is_ok());
        assert!(matches!(open_log(dir, "stderr"), Err(LogError::Missing)));
        // What a hostile task leaves in its sandbox instead.
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(secret.path(), dir.join("linked")).unwrap();
        assert!(matches!(open_log(dir, "linked"), Err(LogError::NotAFile("a symbolic link"))));
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/file"), "x").unwrap();
        std::os::unix::fs::symlink("sub", dir.join("via")).unwrap();
        assert!(matches!(open_log(dir, "via/file"), Err(LogError::NotAFile("a symbolic link"))));
        assert!(matches!(open_log(dir, "../x"), Err(LogError::NotAFile(_) | LogError::Io(_))));
        assert!(matches!(open_log(dir, "sub"), Err(LogError::NotAFile("a directory"))));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(matches!(open_log(dir, "fifo"), Err(LogError::NotAFile("a FIFO"))), "and the open did not block");
    }
}
