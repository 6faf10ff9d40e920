//! # agora-e2e
//!
//! The harness Agora's tests share for real processes, and (as later issues add them) the end-to-end tests: `agora`
//! processes on both stores, driven through the HTTP API, the CLI and the real `/usr/bin/kubectl`.
//!
//! - [`EtcdProcess`]: Debian's `etcd` on a free loopback port with a temporary data directory, killed (and its
//!   directory removed) when dropped.
//! - [`EtcdCluster`]: three members on loopback, any of which can be killed mid-test.
//! - [`Proc`]: any child process (an `agora` part), signalled, measured (CPU, memory) and killed when dropped.
//!
//! Only loopback addresses are ever used.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed when dropped (continued first, should a test have stopped it).
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// Starts `binary` with `args`, `AGORA_LOG=warn`, stdout discarded and stderr passed through.
    ///
    /// # Panics
    /// When it cannot be started.
    #[must_use]
    pub fn quiet<S: AsRef<std::ffi::OsStr>>(binary: &std::path::Path, args: impl IntoIterator<Item = S>) -> Self {
        let child = Command::new(binary)
            .args(args)
            .env("AGORA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Self(child)
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-KILL`, ...).
    ///
    /// # Panics
    /// When `kill` fails.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.0.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {signal}");
    }

    /// CPU seconds the process has used (user + system).
    #[must_use]
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap_or_default();
        // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
        ticks / 100.0 // USER_HZ
    }

    /// The process's resident memory, bytes.
    #[must_use]
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        kib.unwrap_or(0) * 1024
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The etcd binary (Debian's `etcd-server`).
pub const ETCD: &str = "etcd";

/// A port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// When the machine cannot bind loopback at all.
#[must_use]
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Whether `GET path` on 127.0.0.1:`port` answers 200.
#[must_use]
pub fn http_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_some()
}

/// The body of `GET path` on 127.0.0.1:`port`, if it answers 200.
#[must_use]
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    if !(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")) {
        return None;
    }
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// One etcd member.
pub struct EtcdProcess {
    child: Option<Child>,
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl EtcdProcess {
    /// The etcd process's pid, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts a single-member etcd and waits until it serves.
    ///
    /// # Panics
    /// When etcd cannot be started (is `etcd-server` installed? `make test` installs it).
    #[must_use]
    pub fn start() -> Self {
        for attempt in 1..=3 {
            let (client, peer) = (free_port(), free_port());
            let name = format!("n{client}");
            let cluster = format!("{name}=http://127.0.0.1:{peer}");
            let mut member = Self::spawn(&name, client, peer, &cluster);
            if member.wait_healthy(Duration::from_secs(20)) {
                return member;
            }
            eprintln!("etcd did not start (attempt {attempt}): {}", member.log_tail());
            member.kill();
        }
        panic!("etcd would not start on loopback; is Debian's etcd-server installed?");
    }

    fn spawn(name: &str, client_port: u16, peer_port: u16, initial_cluster: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for etcd");
        let log = dir.path().join("etcd.log");
        let log_file = std::fs::File::create(&log).expect("etcd log file");
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(ETCD)
            .args(["--name", name, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "agora-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {ETCD}: {e} (is Debian's etcd-server installed?)"));
        Self { child: Some(child), name: name.to_owned(), client_port, peer_port, dir, log }
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:<port>`, as `--store` takes it.
    #[must_use]
    pub fn store_url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    /// Whether the member answers `/health` with `"health":"true"`.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.contains("\"health\":\"true\"")
    }

    fn wait_healthy(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            if self.is_healthy() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Kills the member with SIGKILL and starts it again on the same ports and data, as after a crash.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.kill();
        let cluster = format!("{}=http://127.0.0.1:{}", self.name, self.peer_port);
        let log = std::fs::OpenOptions::new().append(true).open(&self.log).expect("etcd log file");
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(ETCD)
            .args(["--name", &self.name, "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &cluster, "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("restart etcd");
        self.child = Some(child);
        assert!(self.wait_healthy(Duration::from_secs(20)), "etcd did not come back: {}", self.log_tail());
    }

    /// Kills the member with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The end of the member's log, for failure messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The member's data directory.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of etcd members on loopback.
pub struct EtcdCluster {
    /// The members, in the order of `endpoints()`.
    pub members: Vec<EtcdProcess>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until all serve.
    ///
    /// # Panics
    /// When the cluster does not come up.
    #[must_use]
    pub fn start(size: usize) -> Self {
        for attempt in 1..=3 {
            let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
            let initial = ports
                .iter()
                .map(|(client, peer)| format!("n{client}=http://127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut members: Vec<EtcdProcess> = ports
                .iter()
                .map(|(client, peer)| EtcdProcess::spawn(&format!("n{client}"), *client, *peer, &initial))
                .collect();
            if members.iter_mut().all(|m| m.wait_healthy(Duration::from_secs(30))) {
                return Self { members };
            }
            let logs: Vec<String> = members.iter().map(|m| format!("{}: {}", m.name, m.log_tail())).collect();
            eprintln!("etcd cluster did not start (attempt {attempt}):\n{}", logs.join("\n"));
        }
        panic!("a {size}-member etcd cluster would not start on loopback");
    }

    /// Every member's client URL.
    #[must_use]
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdProcess::endpoint).collect()
    }

    /// The member's peer port (for diagnostics).
    #[must_use]
    pub fn peer_port(&self, member: usize) -> u16 {
        self.members[member].peer_port
    }
}

/// Asks `check` every 50 ms until it answers `Some` (what tests wait on: an object reaching a state on the server, a
/// file appearing), and returns the answer.
///
/// # Panics
/// When `limit` passes first, naming `what` was awaited.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A binary built beside the running test: `target/<profile>/<name>` (`cargo test --workspace` and
/// `cargo nextest run --workspace` build every binary and example before the tests run).
///
/// # Panics
/// When it has not been built.
#[must_use]
pub fn built_binary(relative: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe.parent().and_then(std::path::Path::parent).expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join(relative);
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo nextest run --workspace` (or build it first)",
        binary.display()
    );
    binary
}

/// The `agora` binary built beside the running test.
///
/// # Panics
/// When it has not been built.
#[must_use]
pub fn agora_binary() -> PathBuf {
    built_binary("agora")
}

/// `agora apiserver` as a process on a free loopback port, on the embedded store in a temporary directory (or on
/// etcd). Killed when dropped.
///
/// [`embedded`](Self::embedded) and [`on_etcd`](Self::on_etcd) run it with `--insecure-allow-unauthenticated`
/// (plain HTTP, no token: for tests where authentication is beside the point); [`secure`](Self::secure) and
/// [`secure_on_etcd`](Self::secure_on_etcd) run the secure default (HTTPS, a generated token, the kubeconfig it
/// writes), and [`embedded_with_token`](Self::embedded_with_token) the secure default with a given token file.
pub struct ApiserverProcess {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    store: Option<String>,
    mode: Mode,
    dir: tempfile::TempDir,
}

#[derive(Clone, PartialEq, Eq)]
enum Mode {
    Insecure,
    Secure,
    SecureWithToken(String),
}

impl ApiserverProcess {
    /// Starts it on the embedded store, insecure, and waits until it is ready.
    ///
    /// # Panics
    /// When it does not become ready within 20 s.
    #[must_use]
    pub fn embedded() -> Self {
        Self::start(None, Mode::Insecure)
    }

    /// Starts it on the etcd at `store_url` (`etcd://...`), insecure, and waits until it is ready.
    ///
    /// # Panics
    /// When it does not become ready within 20 s.
    #[must_use]
    pub fn on_etcd(store_url: &str) -> Self {
        Self::start(Some(store_url.to_owned()), Mode::Insecure)
    }

    /// Starts the secure default on the embedded store: HTTPS, a generated CA and token, its kubeconfig written.
    ///
    /// # Panics
    /// When it does not become ready within 20 s.
    #[must_use]
    pub fn secure() -> Self {
        Self::start(None, Mode::Secure)
    }

    /// Starts the secure default on the etcd at `store_url`.
    ///
    /// # Panics
    /// When it does not become ready within 20 s.
    #[must_use]
    pub fn secure_on_etcd(store_url: &str) -> Self {
        Self::start(Some(store_url.to_owned()), Mode::Secure)
    }

    /// Starts the secure default on the embedded store requiring the bearer `token` (`--token-file`).
    ///
    /// # Panics
    /// When it does not become ready within 20 s.
    #[must_use]
    pub fn embedded_with_token(token: &str) -> Self {
        Self::start(None, Mode::SecureWithToken(token.to_owned()))
    }

    fn start(store: Option<String>, mode: Mode) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for the apiserver");
        let mut server = Self { child: None, port: free_port(), store, mode, dir };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new(agora_binary());
        command.args(["apiserver", "--listen", &format!("127.0.0.1:{}", self.port)]);
        command.arg("--data-dir").arg(self.data_dir());
        if let Some(url) = &self.store {
            command.args(["--store", url]);
        }
        match &self.mode {
            Mode::Insecure => {
                command.arg("--insecure-allow-unauthenticated");
            }
            Mode::Secure => {
                command.arg("--audit-log").arg(self.audit_log());
            }
            Mode::SecureWithToken(token) => {
                let file = self.token_file();
                std::fs::write(&file, token).expect("write the token file");
                command.arg("--token-file").arg(file);
                command.arg("--audit-log").arg(self.audit_log());
            }
        }
        // A kubeconfig is written once the new process listens: the old one must not be taken for it.
        let _ = std::fs::remove_file(self.kubeconfig());
        let child = command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start agora apiserver");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ready() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("agora apiserver exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "agora apiserver did not become ready on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ready(&self) -> bool {
        if self.mode == Mode::Insecure {
            return http_ok(self.port, "/readyz");
        }
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        self.kubeconfig().exists() && TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
    }

    /// Its data directory (the embedded store, generated credentials, the kubeconfig).
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The audit log a secure apiserver writes.
    #[must_use]
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// The kubeconfig a secure apiserver writes (server, CA, token).
    #[must_use]
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("kubeconfig")
    }

    /// Whether it serves HTTPS with a token.
    #[must_use]
    pub fn is_secure(&self) -> bool {
        self.mode != Mode::Insecure
    }

    /// The file holding the bearer token a secure apiserver requires.
    #[must_use]
    pub fn token_file(&self) -> PathBuf {
        match self.mode {
            Mode::SecureWithToken(_) => self.dir.path().join("token"),
            _ => self.data_dir().join("token"),
        }
    }

    /// A client of it: from its kubeconfig when secure.
    ///
    /// # Panics
    /// When the client cannot be built.
    #[must_use]
    pub fn client(&self) -> agora_client::Client {
        let config = if self.is_secure() {
            agora_client::Config::from_kubeconfig(&self.kubeconfig(), None).expect("the apiserver's kubeconfig")
        } else {
            agora_client::Config::new(self.url())
        };
        agora_client::Client::new(config).expect("a client of the apiserver")
    }

    /// The bearer token it requires, if any.
    #[must_use]
    pub fn token(&self) -> Option<String> {
        self.is_secure().then(|| agora_client::read_token(&self.token_file()).expect("the apiserver's token"))
    }

    /// `https://127.0.0.1:<port>` (secure) or `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        let scheme = if self.is_secure() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The arguments that point an `agora` command (an agent) at it.
    #[must_use]
    pub fn cluster_args(&self) -> Vec<std::ffi::OsString> {
        if self.is_secure() {
            vec!["--kubeconfig".into(), self.kubeconfig().into()]
        } else {
            vec!["--server".into(), self.url().into()]
        }
    }

    /// How many watch streams of `resource` (a plural) are open, from its `/metrics`.
    #[must_use]
    pub fn open_watches(&self, resource: &str) -> u64 {
        let metrics = http_get(self.port, "/metrics").unwrap_or_default();
        let series = format!("apiserver_watches{{resource=\"{resource}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64)
    }

    /// Kills it with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again after [`kill`](Self::kill), on the same port and store.
    ///
    /// # Panics
    /// When it does not become ready.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the apiserver is already running");
        self.spawn();
    }

    /// Starts it again on the same port and store (after [`kill`](Self::kill), or kills it first).
    ///
    /// # Panics
    /// When it does not become ready again.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for ApiserverProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
