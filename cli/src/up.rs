//! `agora up`: a whole cluster on this machine — the apiserver on the embedded store, the controllers (allocator,
//! marathon, chronos) and one agent — as one parent supervising the `agora` commands that run each part.
//!
//! Each part is the very command a real cluster runs separately, so `up` adds no second way of running them: the
//! parent starts the apiserver, waits until it answers (it writes the data dir's token, certificates and
//! kubeconfig on first start), starts the controllers and the agent with that kubeconfig, restarts a part that dies
//! (with a growing delay), and on SIGINT or SIGTERM stops them in reverse order — agent, controllers, apiserver —
//! each with SIGTERM and, after a grace period, SIGKILL. Tasks' state stays in the store: the next `up` on the same
//! data dir continues, and the agent reconciles the tasks it finds.
//!
//! The parts die with their parent: each is started with `--parent PID`, asks the kernel for SIGKILL when its
//! parent ends (`PR_SET_PDEATHSIG`) and exits at once if its parent is already not the one named, so a `kill -9` of
//! `up` or a closed terminal leaves nothing holding the ports and the store. (A SIGKILL is safe for each: the store
//! keeps every acknowledged write, and the agent leaves tasks running for the next one to reattach.) One `up` holds
//! the data dir at a time (a lock on `DATA_DIR/up.lock`, which names its pid).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a part may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the apiserver may take to answer after it starts.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The longest wait before restarting a part that keeps dying.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// How many lines of a dead part's log `up` prints.
const LOG_TAIL_LINES: usize = 8;

/// What `agora up` runs.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// The data dir: the embedded store, credentials, kubeconfig, the agent's work dir and the parts' logs.
    pub data_dir: PathBuf,
    /// The apiserver's address.
    pub listen: std::net::SocketAddr,
    /// The agent's address (logs, health).
    pub agent_listen: std::net::SocketAddr,
    /// The agent's resources (`cpus:2;mem:2048;...`; empty: what the machine has).
    pub agent_resources: String,
    /// Run no agent.
    pub no_agent: bool,
    /// Manifests to apply once the cluster is up (`agora apply -f` each).
    pub apply: Vec<PathBuf>,
    /// Whether `data_dir` is the one the client verbs look in by themselves (`~/.agora`).
    pub default_dir: bool,
}

/// One supervised part.
struct Part {
    name: &'static str,
    args: Vec<std::ffi::OsString>,
    child: Option<Child>,
    /// When it was last started, and how long to wait before the next restart.
    started: Instant,
    delay: Duration,
    restart_at: Option<Instant>,
}

impl Part {
    fn new(name: &'static str, args: Vec<std::ffi::OsString>) -> Self {
        Self { name, args, child: None, started: Instant::now(), delay: Duration::from_secs(1), restart_at: None }
    }

    fn start(&mut self, exe: &Path, logs: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", self.name)))
            .with_context(|| format!("opening the {} log in {}", self.name, logs.display()))?;
        let child = Command::new(exe)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .args(&self.args)
            // Logs are files: no colour codes in them.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("the log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {}", self.name))?;
        self.child = Some(child);
        self.started = Instant::now();
        self.restart_at = None;
        Ok(())
    }

    /// Notices an exit and schedules the restart; restarts when due.
    fn supervise(&mut self, exe: &Path, logs: &Path) -> Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait().context("waiting for a part")?
        {
            self.child = None;
            // A part that ran a while starts again soon; one that keeps dying waits longer each time.
            if self.started.elapsed() > MAX_RESTART_DELAY {
                self.delay = Duration::from_secs(1);
            }
            let log = logs.join(format!("{}.log", self.name));
            eprintln!(
                "agora up: the {} exited ({status}); restarting in {} s. The end of {}:",
                self.name,
                self.delay.as_secs(),
                log.display()
            );
            for line in log_tail(&log, LOG_TAIL_LINES) {
                eprintln!("  | {line}");
            }
            self.restart_at = Some(Instant::now() + self.delay);
            self.delay = (self.delay * 2).min(MAX_RESTART_DELAY);
        }
        if self.restart_at.is_some_and(|at| Instant::now() >= at) {
            self.start(exe, logs)?;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after the grace period.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("agora up: the {} did not stop within {} s; killing it", self.name, STOP_GRACE.as_secs());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The last `lines` lines of a log (its last 16 KiB at most), control characters dropped.
fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    last_lines(&String::from_utf8_lossy(&agora_agent::logs::file_tail(path, 16 * 1024)), lines)
}

/// The last `count` non-empty lines of `text`, without ANSI escapes or other control characters.
fn last_lines(text: &str, count: usize) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(crate::style::plain).filter(|l| !l.trim().is_empty()).collect();
    let skip = lines.len().saturating_sub(count);
    lines.drain(..skip);
    lines
}

/// The data dir, made private (it holds the CA key and the token).
fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("creating {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    Ok(())
}

/// Takes the data dir for this `up`: a lock on `DATA_DIR/up.lock`, held while the returned file is open, with this
/// process's pid written in it. A data dir another `up` holds is refused, naming that `up`'s pid.
fn lock(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = dir.join("up.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who =
                if holder.is_empty() { "another agora up".to_owned() } else { format!("agora up (pid {holder})") };
            anyhow::bail!(
                "{} is in use by {who}: stop it first (Ctrl-C in its terminal, or kill {}), or give another --data-dir",
                dir.display(),
                if holder.is_empty() { "it" } else { holder }
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0).and_then(|()| file.rewind()).with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{}", std::process::id()).with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

/// A part started by `up` (`agora --parent PID PART ...`): ends with its parent. The kernel kills it with SIGKILL
/// when the parent goes; a parent already gone before that request (the part is then a child of init) ends it now.
///
/// # Errors
/// The request cannot be made, or the parent is not `parent` any more.
pub fn die_with_parent(parent: u32) -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).context("asking to end with agora up")?;
    let now = nix::unistd::getppid().as_raw();
    anyhow::ensure!(
        u32::try_from(now).ok() == Some(parent),
        "the agora up that started this part (pid {parent}) is gone; not running without it"
    );
    Ok(())
}

/// Waits until the apiserver answers through the kubeconfig it writes, or the part exits.
fn wait_ready(apiserver: &mut Part, kubeconfig: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("a runtime")?;
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Some(child) = &mut apiserver.child
            && let Some(status) = child.try_wait().context("waiting for the apiserver")?
        {
            anyhow::bail!("the apiserver exited ({status}) before it was ready");
        }
        if kubeconfig.exists() {
            let answered = runtime.block_on(async {
                let config = agora_client::Config::from_kubeconfig(kubeconfig, None).ok()?;
                let client = agora_client::Client::new(config.user_agent("agora-up")).ok()?;
                let frameworks: agora_client::Api<agora_schemas::Framework> = agora_client::Api::all(client);
                frameworks.list(&agora_client::ListParams::default().limit(1)).await.ok()
            });
            if answered.is_some() {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the apiserver did not answer within {} s", READY_WITHIN.as_secs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the cluster until SIGINT or SIGTERM.
///
/// # Errors
/// The data dir cannot be made, a part cannot be started, or the apiserver never answers.
pub fn run(config: &UpConfig) -> Result<bool> {
    let dir = std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    prepare(&dir)?;
    let _lock = lock(&dir)?;
    let logs = dir.join("logs");
    let kubeconfig = agora_client::kubeconfig_in(&dir);
    let exe = std::env::current_exe().context("finding the agora binary")?;
    let os = |s: &str| std::ffi::OsString::from(s);
    let started = Instant::now();

    let mut apiserver = Part::new(
        "apiserver",
        vec![
            os("apiserver"),
            os("--data-dir"),
            dir.clone().into(),
            os("--listen"),
            os(&config.listen.to_string()),
            os("--audit-log"),
            dir.join("audit.log").into(),
        ],
    );
    apiserver.start(&exe, &logs)?;
    if let Err(e) = wait_ready(&mut apiserver, &kubeconfig) {
        apiserver.stop();
        return Err(e.context(format!("see {}", logs.join("apiserver.log").display())));
    }
    let mut parts = vec![apiserver];
    parts.push(Part::new("controllers", vec![os("controllers"), os("--kubeconfig"), kubeconfig.clone().into()]));
    if !config.no_agent {
        let mut args = vec![os("agent"), os("--kubeconfig"), kubeconfig.clone().into()];
        args.extend([os("--work-dir"), dir.join("agent").into(), os("--listen"), os(&config.agent_listen.to_string())]);
        if !config.agent_resources.is_empty() {
            args.extend([os("--resources"), os(&config.agent_resources)]);
        }
        // Tasks on the host's file system must not read the cluster's credentials or its store.
        for secret in ["pki", "token", "kubeconfig", "agora.redb", "logs"] {
            args.extend([os("--hide-path"), dir.join(secret).into()]);
        }
        parts.push(Part::new("agent", args));
    }
    for part in parts.iter_mut().skip(1) {
        part.start(&exe, &logs)?;
    }
    let server = agora_client::Config::from_kubeconfig(&kubeconfig, None)
        .map(|c| c.server)
        .unwrap_or_else(|_| format!("https://{}", config.listen));
    println!("agora is up in {:.1} s: {server}", started.elapsed().as_secs_f64());
    println!("  apiserver     embedded store in {}", dir.display());
    println!("  controllers   allocator, marathon, chronos");
    if config.no_agent {
        println!("  agent         none (--no-agent)");
    } else {
        println!("  agent         this machine, work dir {}", dir.join("agent").display());
    }
    println!("  logs          {}", logs.display());
    println!("  dashboard     {server}/ui/   (its token: {})", dir.join("token").display());
    println!();
    if config.default_dir {
        println!("  agora get apps -A          # agora finds this cluster by itself");
    } else {
        println!("  agora --kubeconfig {} get apps -A", kubeconfig.display());
    }
    println!("  export KUBECONFIG={}   # for kubectl", kubeconfig.display());
    println!("  kubectl get apps -A");
    println!();
    if !config.apply.is_empty() {
        apply_manifests(&kubeconfig, &config.apply);
        println!();
    }
    println!("Ctrl-C stops it; `agora up --data-dir {}` again continues where it stopped.", dir.display());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM] {
        signal_hook_flag(signal, &stop)?;
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        for part in &mut parts {
            part.supervise(&exe, &logs)?;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("agora up: stopping");
    for part in parts.iter_mut().rev() {
        part.stop();
    }
    println!("agora up: stopped; the cluster's state is in {}", dir.display());
    Ok(true)
}

/// `agora apply -f` of each path, creating what is missing and leaving existing objects alone; what fails is said,
/// and the cluster keeps running.
fn apply_manifests(kubeconfig: &Path, paths: &[PathBuf]) {
    let client = agora_client::Config::from_kubeconfig(kubeconfig, None)
        .and_then(|config| agora_client::Client::new(config.user_agent("agora")));
    let applied = client.map_err(anyhow::Error::from).and_then(|client| {
        // What exists is left as it is: a user's scale or edit since the last `up` is not undone.
        let apply = crate::apply::Apply { files: paths.to_vec(), only_missing: true, ..Default::default() };
        crate::apply::run(&client, &apply)
    });
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    match applied {
        Ok(true) => println!("applied {}: `agora get apps -A` and `agora get cronjobs -A` show them", names.join(", ")),
        Ok(false) => eprintln!("agora up: not everything in {} was applied (see above)", names.join(", ")),
        Err(e) => eprintln!("agora up: applying {}: {}", names.join(", "), crate::error_chain(&e)),
    }
}

/// Sets `flag` when `signal` arrives (a Tokio signal stream on a thread of its own).
fn signal_hook_flag(
    signal: nix::sys::signal::Signal,
    flag: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let kind = tokio::signal::unix::SignalKind::from_raw(signal as i32);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("a runtime")?;
    let mut stream = runtime.block_on(async { tokio::signal::unix::signal(kind) }).context("listening for signals")?;
    let flag = flag.clone();
    std::thread::spawn(move || {
        runtime.block_on(stream.recv());
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_is_its_last_lines_as_plain_text() {
        let log = "one\n\x1b[2m2026\x1b[0m \x1b[31mERROR\x1b[0m bind: address in use\n\nthree\r\n";
        assert_eq!(last_lines(log, 2), ["2026 ERROR bind: address in use", "three"]);
        assert_eq!(last_lines(log, 10).len(), 3);
        assert!(last_lines("", 3).is_empty());
    }

    #[test]
    fn a_data_dir_in_use_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let refused = lock(dir.path()).unwrap_err().to_string();
        assert!(refused.contains(&format!("pid {}", std::process::id())), "{refused}");
        assert!(refused.contains("in use"), "{refused}");
        drop(held);
        assert!(lock(dir.path()).is_ok(), "free again once the holder is gone");
    }
}
