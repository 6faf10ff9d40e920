//! The audit log: every write and every refused request, as one JSON line each — when, who, what, the answer's code —
//! appended to a file that is rotated by size (`audit.log` → `audit.log.1` → … up to the number of files kept).
//!
//! ```json
//! {"time":"2026-12-07T08:00:00Z","principal":"alice","verb":"create","resource":"apps","namespace":"team-a","name":"web","code":201}
//! ```
//!
//! Lines are written by one thread behind a bounded queue: a slow disk holds writes back rather than losing their
//! record. docs/security.md has `jq` recipes for reading it.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};

use crate::auth::Principal;

/// Where and how much to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The file written (rotated files beside it, with `.1`, `.2`, … appended).
    pub path: PathBuf,
    /// The size past which the file is rotated.
    pub max_bytes: u64,
    /// How many rotated files are kept besides the current one.
    pub max_files: usize,
}

impl AuditConfig {
    /// 100 MiB files, 5 kept.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), max_bytes: 100 * 1024 * 1024, max_files: 5 }
    }
}

/// Lines waiting for the writer.
const QUEUE: usize = 65_536;

/// The audit log of a running apiserver (cheap to clone).
#[derive(Clone, Debug)]
pub struct AuditLog {
    lines: tokio::sync::mpsc::Sender<String>,
}

impl AuditLog {
    /// Opens (creating, `0600`) the file and starts its writer thread.
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn open(config: AuditConfig) -> std::io::Result<Self> {
        let mut writer = Writer::open(config)?;
        let (lines, mut queue) = tokio::sync::mpsc::channel::<String>(QUEUE);
        std::thread::Builder::new().name("audit-log".into()).spawn(move || {
            while let Some(line) = queue.blocking_recv() {
                let mut batch = vec![line];
                while let Ok(more) = queue.try_recv() {
                    batch.push(more);
                }
                if let Err(e) = writer.write(&batch) {
                    tracing::error!(error = %e, file = %writer.config.path.display(), "writing the audit log failed");
                }
            }
        })?;
        Ok(Self { lines })
    }

    async fn record(&self, line: String) {
        let _ = self.lines.send(line).await;
    }
}

struct Writer {
    config: AuditConfig,
    file: BufWriter<File>,
    size: u64,
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl Writer {
    fn open(config: AuditConfig) -> std::io::Result<Self> {
        let file = append(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Self { config, file: BufWriter::new(file), size })
    }

    fn write(&mut self, lines: &[String]) -> std::io::Result<()> {
        for line in lines {
            if self.size > 0 && self.size + line.len() as u64 + 1 > self.config.max_bytes {
                self.rotate()?;
            }
            self.file.write_all(line.as_bytes())?;
            self.file.write_all(b"\n")?;
            self.size += line.len() as u64 + 1;
        }
        self.file.flush()
    }

    /// `audit.log.(n-1)` → `audit.log.n`, …, `audit.log` → `audit.log.1`, and a new `audit.log`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let numbered = |n: usize| {
            let mut name = self.config.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.config.max_files == 0 {
            std::fs::remove_file(&self.config.path)?;
        } else {
            for n in (1..self.config.max_files).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.config.path, numbered(1))?;
        }
        self.file = BufWriter::new(append(&self.config.path)?);
        self.size = 0;
        Ok(())
    }
}

/// The Kubernetes verb of a request.
fn verb(method: &Method, named: bool, query: Option<&str>, content_type: Option<&str>) -> &'static str {
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *method {
        Method::GET | Method::HEAD if !named && watch => "watch",
        Method::GET | Method::HEAD if !named => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH if content_type.is_some_and(|c| c.starts_with("application/apply-patch")) => "apply",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// The audit line of a request (`path` without its query), answered with `code`.
#[must_use]
pub fn line(
    principal: Option<&Principal>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    code: u16,
) -> Value {
    // /apis/<group>/<version>/[namespaces/<ns>/]<resource>[/<name>[/<subresource>]], or /api/v1/...
    let rest = path
        .strip_prefix("/apis/")
        .and_then(|r| r.splitn(3, '/').nth(2))
        .or_else(|| path.strip_prefix("/api/v1/"))
        .unwrap_or("");
    let mut parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let mut namespace = None;
    if parts.first() == Some(&"namespaces") && parts.len() >= 3 {
        namespace = Some(parts[1]);
        parts.drain(..2);
    }
    let (resource, name, subresource) = (parts.first(), parts.get(1), parts.get(2));
    let mut line = json!({
        "time": jiff::Timestamp::now().to_string(),
        "principal": principal.map(|p| p.name.as_str()),
        "verb": verb(method, name.is_some(), query, content_type),
        "code": code,
    });
    let mut set = |field: &str, value: Option<&&str>| {
        if let Some(value) = value {
            line[field] = json!(value);
        }
    };
    set("resource", resource);
    set("subresource", subresource);
    set("namespace", namespace.as_ref());
    set("name", name);
    if resource.is_none() {
        line["path"] = json!(path);
    }
    line
}

/// Middleware: records every write and every refusal (401, 403).
pub async fn record(State(log): State<Option<AuditLog>>, request: Request, next: Next) -> Response {
    let Some(log) = log else { return next.run(request).await };
    let method = request.method().clone();
    let write = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = next.run(request).await;
    let code = response.status().as_u16();
    if write || code == 401 || code == 403 {
        let principal = response.extensions().get::<std::sync::Arc<Principal>>().map(AsRef::as_ref);
        let line = line(principal, &method, &path, query.as_deref(), content_type.as_deref(), code);
        log.record(line.to_string()).await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_who_did_what_to_which_object() {
        let alice = Principal { name: "alice".into(), groups: vec![] };
        let l = line(Some(&alice), &Method::POST, "/apis/agora/v1/namespaces/team-a/apps", None, None, 201);
        assert_eq!((l["principal"].as_str(), l["verb"].as_str()), (Some("alice"), Some("create")));
        assert_eq!(
            (l["resource"].as_str(), l["namespace"].as_str(), l["name"].as_str()),
            (Some("apps"), Some("team-a"), None)
        );
        let l = line(Some(&alice), &Method::POST, "/apis/agora/v1/namespaces/d/offers/o1/accept", None, None, 403);
        assert_eq!(
            (l["name"].as_str(), l["subresource"].as_str(), l["code"].as_u64()),
            (Some("o1"), Some("accept"), Some(403))
        );
        let l = line(None, &Method::GET, "/apis/agora/v1/tasks", Some("watch=true"), None, 401);
        assert!(l["principal"].is_null());
        assert_eq!(l["verb"], "watch");
        let apply = Some("application/apply-patch+yaml");
        assert_eq!(line(None, &Method::PATCH, "/apis/agora/v1/agents/a", None, apply, 200)["verb"], "apply");
        assert_eq!(
            line(None, &Method::DELETE, "/apis/agora/v1/namespaces/d/apps", None, None, 200)["verb"],
            "deletecollection"
        );
        assert_eq!(line(None, &Method::DELETE, "/api/v1/namespaces/team-a", None, None, 200)["name"], "team-a");
        let other = line(None, &Method::POST, "/store/snapshot", None, None, 405);
        assert_eq!(other["path"], "/store/snapshot");
    }

    #[test]
    fn the_file_is_rotated_by_size_keeping_so_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut writer = Writer::open(AuditConfig { path: path.clone(), max_bytes: 100, max_files: 2 }).unwrap();
        let line = "x".repeat(39); // 40 bytes with its newline: two fit in 100
        for _ in 0..7 {
            writer.write(std::slice::from_ref(&line)).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        assert_eq!(
            (size(&path), size(&rotated(1)), size(&rotated(2)), size(&rotated(3))),
            (Some(40), Some(80), Some(80), None)
        );
        // Reopened, it appends to what is there.
        drop(writer);
        let mut writer = Writer::open(AuditConfig { path: path.clone(), max_bytes: 100, max_files: 2 }).unwrap();
        writer.write(&[line]).unwrap();
        assert_eq!(size(&path), Some(80));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
