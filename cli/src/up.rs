//! `agora up`: a whole cluster on this machine — the apiserver on the embedded store, the controllers (allocator,
//! marathon, chronos) and one agent — as one parent supervising the `agora` commands that run each part.
//!
//! Each part is the very command a real cluster runs separately, so `up` adds no second way of running them: the
//! parent starts the apiserver, waits until it answers (it writes the data dir's token, certificates and
//! kubeconfig on first start), starts the controllers and the agent with that kubeconfig, restarts a part that dies
//! (with a growing delay), and on SIGINT or SIGTERM stops them in reverse order — agent, controllers, apiserver —
//! each with SIGTERM and, after a grace period, SIGKILL. Tasks' state stays in the store: the next `up` on the same
//! data dir continues, and the agent reconciles the tasks it finds.

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
            .args(&self.args)
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
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait().context("waiting for a part")? {
                self.child = None;
                // A part that ran a while starts again soon; one that keeps dying waits longer each time.
                if self.started.elapsed() > MAX_RESTART_DELAY {
                    self.delay = Duration::from_secs(1);
                }
                eprintln!(
                    "agora up: the {} exited ({status}); restarting in {} s (log: {})",
                    self.name,
                    self.delay.as_secs(),
                    logs.join(format!("{}.log", self.name)).display()
                );
                self.restart_at = Some(Instant::now() + self.delay);
                self.delay = (self.delay * 2).min(MAX_RESTART_DELAY);
            }
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

/// The data dir, made private (it holds the CA key and the token).
fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("creating {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    Ok(())
}

/// Waits until the apiserver answers through the kubeconfig it writes, or the part exits.
fn wait_ready(apiserver: &mut Part, kubeconfig: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("a runtime")?;
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Some(child) = &mut apiserver.child {
            if let Some(status) = child.try_wait().context("waiting for the apiserver")? {
                anyhow::bail!("the apiserver exited ({status}) before it was ready");
            }
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
    let logs = dir.join("logs");
    let kubeconfig = agora_client::kubeconfig_in(&dir);
    let exe = std::env::current_exe().context("finding the agora binary")?;
    let os = |s: &str| std::ffi::OsString::from(s);
    let started = Instant::now();

    let mut apiserver = Part::new(
        "apiserver",
        vec![os("apiserver"), os("--data-dir"), dir.clone().into(), os("--listen"), os(&config.listen.to_string())],
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

/// `agora apply -f` of each path; what fails is said, and the cluster keeps running.
fn apply_manifests(kubeconfig: &Path, paths: &[PathBuf]) {
    let client = agora_client::Config::from_kubeconfig(kubeconfig, None)
        .and_then(|config| agora_client::Client::new(config.user_agent("agora")));
    let applied = client.map_err(anyhow::Error::from).and_then(|client| {
        let apply = crate::apply::Apply {
            files: paths.to_vec(),
            namespace: None,
            force_conflicts: false,
            dry_run: false,
            ..Default::default()
        };
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
