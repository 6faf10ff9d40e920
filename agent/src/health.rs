//! Health checks from a task's spec, run by its agent (Marathon's semantics):
//!
//! - HTTP: `GET http://127.0.0.1:<port><path>` answers 2xx or 3xx within the timeout;
//! - TCP: a connection to the port opens within the timeout;
//! - COMMAND: the shell command exits 0 within the timeout, run inside the task's namespaces and cgroup.
//!
//! Failures during `gracePeriodSeconds` after the start are not counted, unless the task has already been healthy.
//! A pass makes the task healthy and resets the count; a counted failure makes it unhealthy and adds one to
//! `healthCheckFailures` (the framework kills it after `maxConsecutiveFailures`). With several checks, the task is
//! healthy when every check's latest verdict is a pass.

use std::time::Duration;

use agora_schemas::{HealthCheck, HealthCheckProtocol};
use tokio::time::Instant;

/// The verdicts of a task's checks so far: what its status says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// Per check: its latest counted verdict (`None` before the first).
    latest: Vec<Option<bool>>,
    /// Per check: consecutive counted failures.
    failures: Vec<u32>,
    /// Whether the task has passed a check yet (which ends every grace period).
    ever_healthy: bool,
}

impl Verdicts {
    /// Verdicts for `checks` checks, none made.
    #[must_use]
    pub fn new(checks: usize) -> Self {
        Self { latest: vec![None; checks], failures: vec![0; checks], ever_healthy: false }
    }

    /// Records check `index`'s result, `in_grace` if its grace period has not ended; returns whether anything the
    /// status shows changed (the verdict or the failure count).
    pub fn record(&mut self, index: usize, passed: bool, in_grace: bool) -> bool {
        let before = (self.healthy(), self.failures());
        if passed {
            self.latest[index] = Some(true);
            self.failures[index] = 0;
            self.ever_healthy = true;
        } else if !in_grace || self.ever_healthy {
            self.latest[index] = Some(false);
            self.failures[index] += 1;
        }
        before != (self.healthy(), self.failures())
    }

    /// The task's health: unknown until every check has a verdict, then whether all pass (any failure decides).
    #[must_use]
    pub fn healthy(&self) -> Option<bool> {
        if self.latest.contains(&Some(false)) {
            Some(false)
        } else if self.latest.iter().all(|v| *v == Some(true)) && !self.latest.is_empty() {
            Some(true)
        } else {
            None
        }
    }

    /// The longest run of consecutive failures among the checks.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures.iter().copied().max().unwrap_or(0)
    }
}

/// The HTTP client every HTTP check of an agent shares (redirects are answers, not followed).
#[must_use]
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default()
}

/// Runs one HTTP or TCP check against `ports` (HTTP through `http`); `Err` for a COMMAND check (run by the caller,
/// in the container).
///
/// Returns whether it passed and a line saying what was seen.
pub async fn probe(check: &HealthCheck, ports: &[u16], http: &reqwest::Client) -> Result<(bool, String), ()> {
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds().max(1)));
    let index = check.port_index.unwrap_or(0) as usize;
    let Some(port) = ports.get(index).copied() else {
        return Ok((false, format!("the task has no port {index}")));
    };
    match check.protocol() {
        HealthCheckProtocol::Tcp => {
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
            Ok(match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(_)) => (true, format!("connected to port {port}")),
                Ok(Err(e)) => (false, format!("port {port}: {e}")),
                Err(_) => (false, format!("port {port}: no connection within {}s", timeout.as_secs())),
            })
        }
        HealthCheckProtocol::Http => {
            let path = check.path.clone().unwrap_or_else(|| "/".to_owned());
            let url = format!("http://127.0.0.1:{port}{path}");
            Ok(match http.get(&url).timeout(timeout).send().await {
                Ok(response) => {
                    let status = response.status();
                    (status.is_success() || status.is_redirection(), format!("GET {url}: {status}"))
                }
                Err(e) if e.is_timeout() => (false, format!("GET {url}: no answer within {}s", timeout.as_secs())),
                Err(e) => (false, format!("GET {url}: {e}")),
            })
        }
        HealthCheckProtocol::Command => Err(()),
    }
}

/// Whether `check`'s grace period, counted from `started`, is still running at `now`.
#[must_use]
pub fn in_grace(check: &HealthCheck, started: Instant, now: Instant) -> bool {
    now.duration_since(started) < Duration::from_secs(u64::from(check.grace_period_seconds()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_counts_and_aggregation_follow_marathon() {
        let mut v = Verdicts::new(2);
        assert!(!v.record(0, false, true), "a failure in the grace period is not counted");
        assert_eq!((v.healthy(), v.failures()), (None, 0));
        v.record(0, true, true);
        assert_eq!(v.healthy(), None, "unknown until every check has a verdict");
        assert!(v.record(1, true, true));
        assert_eq!(v.healthy(), Some(true));
        assert!(v.record(1, false, true), "after being healthy, the grace period is over");
        assert_eq!((v.healthy(), v.failures()), (Some(false), 1));
        v.record(1, false, false);
        assert_eq!(v.failures(), 2);
        assert!(!v.record(0, true, false), "check 0 passing again changes nothing shown");
        assert!(v.record(1, true, false));
        assert_eq!((v.healthy(), v.failures()), (Some(true), 0));
    }

    #[tokio::test]
    async fn tcp_and_http_probes() {
        let client = http_client();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let tcp = HealthCheck {
            protocol: Some(HealthCheckProtocol::Tcp),
            timeout_seconds: Some(1),
            ..HealthCheck::default()
        };
        assert!(probe(&tcp, &[open], &client).await.unwrap().0);
        let (passed, output) = probe(&tcp, &[closed], &client).await.unwrap();
        assert!(!passed && output.contains(&closed.to_string()), "{output}");
        let missing = HealthCheck { port_index: Some(3), ..tcp.clone() };
        assert_eq!(probe(&missing, &[open], &client).await.unwrap(), (false, "the task has no port 3".to_owned()));

        // An HTTP server answering 200 for /ok and 500 otherwise.
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut request = [0u8; 1024];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let ok = String::from_utf8_lossy(&request[..n]).starts_with("GET /ok ");
                    let answer = if ok {
                        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        "HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n"
                    };
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        let http = |path: &str| HealthCheck {
            protocol: Some(HealthCheckProtocol::Http),
            path: Some(path.to_owned()),
            timeout_seconds: Some(2),
            ..HealthCheck::default()
        };
        assert!(probe(&http("/ok"), &[open], &client).await.unwrap().0);
        let (passed, output) = probe(&http("/broken"), &[open], &client).await.unwrap();
        assert!(!passed && output.contains("500"), "{output}");
        let command = HealthCheck { protocol: Some(HealthCheckProtocol::Command), ..HealthCheck::default() };
        assert!(probe(&command, &[open], &client).await.is_err(), "COMMAND checks run in the container");
    }
}
