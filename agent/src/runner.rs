//! The agent proper: runs the Tasks bound to it (`fieldSelector=spec.agent=<name>`) as containers, through the
//! [`executor`](crate::executor) every agent shares — Staging → Starting → Running → Finished (exit 0), Failed (exit
//! code; `OOMKilled` when the memory cgroup killed it; `ImageNotFound`, `StartFailed`), or Killed.
//!
//! [`Containers`] is its [`TaskRuntime`]: each task in a container of its own (its image's layers, or the host's root
//! read-only with its sandbox and its own `/tmp` writable), owned by a [`shim`] so a restarted agent reattaches to
//! running tasks and learns of exits that happened while it was down. [`run`] wires the process: registration and
//! heartbeat, the log and `/metrics` endpoint, and the collectors of old sandboxes, unused images and orphaned
//! containers.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agora_client::{Api, Client};
use agora_schemas::{DOCKER_CONFIG_KEY, HealthCheck, PullPolicy, Resources, Secret, SecretType, Task};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::cgroups;
use crate::container::{self, ContainerConfig, ContainerRuntime, RootFs};
use crate::executor::{Agent, Executor, Failure, Starting, TaskRuntime, Usage};
use crate::images::{self, ImageStore};
use crate::lifecycle::End;
use crate::registration::{self, HeartbeatConfig, Registration};
use crate::shim;

pub use crate::executor::DEFAULT_KILL_GRACE;
pub use agora_schemas::names::AGENT_FINALIZER as FINALIZER;

/// One agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Agent object's name.
    pub name: String,
    /// Where images, containers' state and task sandboxes live.
    pub work_dir: PathBuf,
    /// What it offers.
    pub resources: Resources,
    /// Its attributes.
    pub attributes: BTreeMap<String, String>,
    /// Heartbeat timing.
    pub heartbeat: HeartbeatConfig,
    /// Where the agent serves task logs and `/metrics` (its Agent status names it, for the apiserver's log proxy).
    pub listen: std::net::SocketAddr,
    /// How often each running task's usage is read from its cgroup into its status and `/metrics`.
    pub usage_every: Duration,
    /// How long a finished task's sandbox (with its logs) is kept.
    pub sandbox_retention: Duration,
    /// The bearer token the agent's endpoint requires (the cluster's token, which the apiserver presents when it
    /// proxies a log). Without one, the endpoint may only listen on loopback.
    pub token: Option<String>,
    /// The program run as each task's shim (`<program> container-shim TASK_DIR STATE_DIR`): the `agora` binary.
    pub shim: PathBuf,
    /// Whether a task may run as root (its spec or framework says so). Off by default: tasks run unprivileged.
    pub allow_root_tasks: bool,
    /// Host paths a task on the host's root file system must not see (credentials, the apiserver's data dir); the
    /// agent's work dir is always hidden.
    pub hidden_paths: Vec<PathBuf>,
    /// A static init run as each container's PID 1 (Debian's `tini-static`); `None` runs the command as PID 1.
    pub init: Option<PathBuf>,
    /// How images are pulled from registries.
    pub registries: crate::pull::RegistryOptions,
    /// How the image store is kept within its budget.
    pub image_gc: crate::image_gc::GcPolicy,
}

/// Where Debian's `tini` package puts its static build, which runs in any image.
pub const DEFAULT_INIT: &str = "/usr/bin/tini-static";

/// [`DEFAULT_INIT`] when this host has it.
#[must_use]
pub fn default_init() -> Option<PathBuf> {
    let path = PathBuf::from(DEFAULT_INIT);
    path.is_file().then_some(path)
}

/// How long a shim may take to start its container.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Registration failed.
    #[error("registering agent {name}: {source}")]
    Register {
        /// The agent.
        name: String,
        /// What the apiserver said.
        #[source]
        source: agora_client::Error,
    },
    /// The image store or container state directory is unusable.
    #[error("agent work dir: {0}")]
    WorkDir(String),
    /// The log endpoint would serve unauthenticated requests beyond this machine.
    #[error(
        "refusing to listen on {0} without the cluster's token (from a kubeconfig, or --token-file): only loopback \
         addresses may serve unauthenticated requests"
    )]
    Insecure(std::net::SocketAddr),
    /// The log endpoint cannot listen.
    #[error("listening on {address}: {source}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
}

/// Registers the agent, heartbeats, and runs its Tasks until `shutdown` completes.
///
/// # Errors
/// When registration fails or the work dir cannot be used.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(Error::Insecure(config.listen));
    }
    let images = ImageStore::open(&config.work_dir).map_err(|e| Error::WorkDir(e.to_string()))?;
    let state_dir = config.work_dir.join("containers");
    let runtime = ContainerRuntime::new(&state_dir).map_err(|e| Error::WorkDir(e.to_string()))?;
    let host = crate::resources::hostname();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen { address: config.listen, source })?;
    let address = listener.local_addr().map_err(|source| Error::Listen { address: config.listen, source })?;
    // With the cluster's token, the endpoint serves HTTPS with a certificate of the agent's own CA (made in its work
    // dir), which the Agent status publishes for the apiserver to trust; without one, plain HTTP on loopback.
    let tls = match &config.token {
        Some(_) => {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned(), host.clone()];
            if !address.ip().is_unspecified() {
                names.push(address.ip().to_string());
            }
            let issued = agora_tls::TlsFiles::new(config.work_dir.join("pki"))
                .ensure(&names)
                .map_err(|e| Error::WorkDir(e.to_string()))?;
            let server = agora_tls::server_config(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
                .map_err(|e| Error::WorkDir(e.to_string()))?;
            Some((server, issued.ca_pem))
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let registration = Registration {
        name: config.name.clone(),
        resources: config.resources.clone(),
        attributes: config.attributes.clone(),
        hostname: host.clone(),
        address: Some(format!("{scheme}://{address}")),
        certificate_authority: tls.as_ref().map(|(_, ca)| ca.clone()),
    };
    registration::register(&client, &registration)
        .await
        .map_err(|source| Error::Register { name: config.name.clone(), source })?;
    tracing::info!(agent = %config.name, "registered");
    let heartbeat = tokio::spawn(registration::heartbeat(client.clone(), config.name.clone(), config.heartbeat));
    let containers = Containers {
        client: client.clone(),
        agent: config.name.clone(),
        host: host.clone(),
        work_dir: config.work_dir.clone(),
        puller: crate::pull::Puller::new(images.clone(), config.registries.clone()),
        collect_images: tokio::sync::Notify::new(),
        pulls: Mutex::default(),
        images,
        runtime,
        started: Mutex::default(),
        http: crate::health::http_client(),
        shim: config.shim.clone(),
        spare: Mutex::new(shim::spawn_spare(&config.shim, &state_dir).ok()),
        state_dir,
        allow_root_tasks: config.allow_root_tasks,
        hidden_paths: std::iter::once(config.work_dir.clone()).chain(config.hidden_paths.clone()).collect(),
        cgroups: cgroups::CgroupLayout::of_host(),
        init: config.init.clone(),
    };
    let agents = HashMap::from([(config.name.clone(), Agent { resources: config.resources.clone(), host })]);
    let context = Executor::new(client, containers, agents, Some(config.usage_every));
    tokio::spawn(remove_orphans(context.clone()));
    let collector = tokio::spawn(collect_sandboxes(context.clone(), config.sandbox_retention));
    let image_collector = tokio::spawn(collect_images(context.clone(), config.image_gc));
    let metrics = context.metrics().clone();
    let endpoint = crate::logs::router(context.clone()).route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                let headers = [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
                (headers, metrics.encode())
            }
        }),
    );
    let endpoint = crate::logs::require_token(endpoint, config.token.as_deref().map(Arc::from));
    let serving = tokio::spawn(async move {
        let limits = agora_tls::Limits::default().max_connections(1024);
        let served =
            agora_tls::serve(listener, endpoint, tls.map(|(server, _)| server), limits, std::future::pending());
        if let Err(e) = served.await {
            tracing::error!(error = %e, "the log endpoint stopped");
        }
    });
    let selector = format!("spec.agent={}", config.name);
    context.run(Some(selector), shutdown).await;
    heartbeat.abort();
    serving.abort();
    collector.abort();
    image_collector.abort();
    Ok(())
}

impl crate::logs::TaskLogs for Executor<Containers> {
    fn sandbox(&self, uid: &str) -> PathBuf {
        shim::task_dir(&self.runtime().work_dir, uid).join("sandbox")
    }

    fn running(&self, uid: &str) -> bool {
        Executor::running(self, uid)
    }
}

/// The container runtime of a real agent: each task in a container of its own, owned by a [`shim`].
pub struct Containers {
    client: Client,
    agent: String,
    host: String,
    work_dir: PathBuf,
    images: ImageStore,
    puller: crate::pull::Puller,
    /// Wakes the image collector (after a pull).
    collect_images: tokio::sync::Notify,
    /// One pull decision at a time per image: tasks of one image launched together pull it once.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    runtime: ContainerRuntime,
    /// Containers this process started whose end is not yet taken: their configuration and shim.
    started: Mutex<HashMap<String, (ContainerConfig, tokio::process::Child)>>,
    /// Shared by the HTTP health checks.
    http: reqwest::Client,
    shim: PathBuf,
    /// A shim started ahead, waiting for its task (see [`shim`]).
    spare: Mutex<Option<tokio::process::Child>>,
    state_dir: PathBuf,
    allow_root_tasks: bool,
    /// What a host-filesystem task must not see.
    hidden_paths: Vec<PathBuf>,
    /// How this host mounts cgroups.
    cgroups: cgroups::CgroupLayout,
    /// The containers' init.
    init: Option<PathBuf>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn uid(task: &Task) -> String {
    task.metadata.uid.clone().unwrap_or_default()
}

/// How long a stop waits for the container's init to be able to take SIGTERM (see [`container::takes_signal`]).
const INIT_READY: Duration = Duration::from_secs(1);

impl TaskRuntime for Containers {
    const PREPARES: bool = true;

    async fn start(&self, task: &Task, starting: Starting<'_>) -> Result<(), Failure> {
        // From the pull until the task's directory names its image, the store keeps what this task needs.
        let mut hold = None;
        if task.spec.container.is_some() {
            let store = self.images.clone();
            match tokio::task::spawn_blocking(move || store.hold()).await {
                Ok(Ok(held)) => hold = Some(held),
                Ok(Err(e)) => return Err(Failure::new("ImageUnusable", e.to_string())),
                Err(_) => {}
            }
        }
        self.pull_image(task, &starting).await?;
        let prepared = self.prepare(task).await;
        drop(hold);
        let config = prepared?;
        let dir = shim::task_dir(&self.work_dir, &config.id);
        let spare = lock(&self.spare).take();
        let mut child = shim::start_with(spare, &self.shim, &config, &dir, &self.state_dir)
            .await
            .map_err(|e| Failure::new("StartFailed", format!("starting the task's shim: {e}")))?;
        // The shim says the container started (its pid) or why it did not; its stdout wakes the agent when it has.
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        shim::started(&mut child, START_LIMIT).await;
        child.stdout = None;
        let pid = loop {
            match shim::outcome(&dir) {
                Some(shim::Outcome::StartFailed(message)) => {
                    let reason = if message.contains("No such file") { "CommandNotFound" } else { "StartFailed" };
                    return Err(Failure::new(reason, message));
                }
                Some(shim::Outcome::Exited(_)) => break shim::container_pid(&dir).unwrap_or(0),
                None => {}
            }
            if let Some(pid) = shim::container_pid(&dir) {
                break pid;
            }
            if tokio::time::Instant::now() > deadline {
                let message = format!("the shim did not start the container in {} s", START_LIMIT.as_secs());
                return Err(Failure::new("StartFailed", message));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        tracing::debug!(task = %task.metadata.display_name(), pid, "container started");
        lock(&self.started).insert(config.id.clone(), (config, child));
        // The next task's shim, started now that this one runs (not while it starts, on the same cores).
        let mut spare = lock(&self.spare);
        if spare.is_none() {
            *spare = shim::spawn_spare(&self.shim, &self.state_dir).ok();
        }
        Ok(())
    }

    async fn kill(&self, task: &Task, force: bool) {
        let id = uid(task);
        let signal = if force { Signal::SIGKILL } else { Signal::SIGTERM };
        // A kill asked for just after the start must not be lost to an init still being set up.
        if !force && let Some(pid) = self.runtime.pid(&id) {
            let deadline = tokio::time::Instant::now() + INIT_READY;
            while !container::takes_signal(pid, signal)
                && tokio::time::Instant::now() < deadline
                && std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if let Err(e) = self.runtime.kill(&id, signal) {
            tracing::warn!(task = %task.metadata.display_name(), error = %e, %signal, "signalling the task failed");
        }
    }

    /// Waits for the container to end, then removes it (the sandbox, with its logs, stays).
    async fn outcome(&self, task: &Task) -> End {
        let id = uid(task);
        let dir = shim::task_dir(&self.work_dir, &id);
        let (config, shim_process) = match lock(&self.started).remove(&id) {
            Some((config, child)) => (Some(config), Some(child)),
            None => (shim::config(&dir), None),
        };
        if let Some(mut shim_process) = shim_process {
            let _ = shim_process.wait().await;
        }
        // The shim records the outcome before it exits; a reattached agent looks until it does (or the shim is gone).
        let outcome = loop {
            if let Some(outcome) = shim::outcome(&dir) {
                break Some(outcome);
            }
            if !shim::shim_alive(&dir) {
                break shim::outcome(&dir);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let oom_killed = cgroups::counter(&id, "memory", "memory.oom_control", "oom_kill") > 0
            || cgroups::counter(&id, "memory", "memory.events", "oom_kill") > 0;
        let forks_refused = cgroups::counter(&id, "pids", "pids.events", "max");
        let pids_limit = config.as_ref().and_then(|c| c.pids_limit);
        let bundle = config.map_or_else(|| dir.join("bundle"), |c| c.bundle);
        let runtime = self.runtime.clone();
        let removing = id.clone();
        match tokio::task::spawn_blocking(move || runtime.delete(&removing, &bundle)).await {
            Ok(Err(e)) => {
                tracing::warn!(task = %task.metadata.display_name(), error = %e, "removing the container failed");
            }
            // Its root file system is unmounted: the image is free for the collector.
            _ => {
                let _ = std::fs::remove_file(dir.join(crate::image_gc::TASK_IMAGE_FILE));
            }
        }
        End {
            outcome: outcome.map(|o| match o {
                shim::Outcome::Exited(exit) => Ok(exit),
                shim::Outcome::StartFailed(message) => Err(message),
            }),
            oom_killed,
            forks_refused,
            pids_limit,
            ..End::default()
        }
    }

    async fn usage(&self, task: &Task) -> Option<Usage> {
        let id = uid(task);
        let cgroup = tokio::task::spawn_blocking(move || cgroups::usage(&id)).await.ok()?.ok()?;
        let disk_bytes = if task.spec.disk > 0.0 {
            let written = crate::disk::written_by(&shim::task_dir(&self.work_dir, &uid(task)));
            Some(tokio::task::spawn_blocking(move || crate::disk::usage(&written)).await.unwrap_or(0))
        } else {
            None
        };
        Some(Usage { cgroup, disk_bytes })
    }

    async fn probe(&self, task: &Task, check: &HealthCheck) -> (bool, String) {
        let ports: Vec<u16> = task.spec.ports.iter().map(|p| p.port).collect();
        match crate::health::probe(check, &ports, &self.http).await {
            Ok(result) => result,
            Err(()) => self.command_check(&uid(task), check).await,
        }
    }

    /// Takes over a task an earlier run of this agent started, if its shim still runs or recorded how it ended.
    fn reattach(&self, task: &Task) -> Option<bool> {
        let dir = shim::task_dir(&self.work_dir, &uid(task));
        let alive = shim::shim_alive(&dir);
        shim::config(&dir).filter(|_| alive || shim::outcome(&dir).is_some()).map(|_| alive)
    }

    async fn release(&self, task: &Task) {
        let id = uid(task);
        let bundle = shim::task_dir(&self.work_dir, &id).join("bundle");
        let runtime = self.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || runtime.delete(&id, &bundle)).await;
    }

    /// The container's file system goes; the sandbox, with its logs, stays for the retention time.
    async fn delete(&self, task: &Task) {
        let dir = shim::task_dir(&self.work_dir, &uid(task));
        let _ = tokio::task::spawn_blocking(move || {
            for part in ["bundle", "upper", "work", "tmp", "mount-points"] {
                let _ = container::remove_task_dir(&dir.join(part));
            }
            if !dir.join("bundle").exists() {
                let _ = std::fs::remove_file(dir.join(crate::image_gc::TASK_IMAGE_FILE));
            }
        })
        .await;
    }
}

impl Containers {
    /// Makes sure the store has `task`'s image, as its pull policy says: an image of the name as written (or in its full
    /// form) is used as it is unless the policy is `Always`; otherwise the agent pulls it, showing its progress in the
    /// task's status message (at most once a second).
    async fn pull_image(&self, task: &Task, starting: &Starting<'_>) -> Result<(), Failure> {
        let Some(container) = &task.spec.container else { return Ok(()) };
        // Another task's pull of this image runs to its end first: then it is present, and IfNotPresent pulls nothing.
        let lock = self
            .pulls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(container.image.clone())
            .or_default()
            .clone();
        let image = container.image.clone();
        let _one_at_a_time = unless_killed(lock.lock(), starting, &image, None).await?;
        let policy = container.image_pull_policy.unwrap_or_default();
        let full = image.parse::<oci_client::Reference>().ok().map(|r| r.whole());
        let present = [Some(image.clone()), full.clone()]
            .into_iter()
            .flatten()
            .any(|name| self.images.lookup(&name).ok().flatten().is_some());
        match policy {
            PullPolicy::Never if present => return Ok(()),
            PullPolicy::Never => {
                return Err(Failure::new(
                    "ImageNotFound",
                    format!("image {image} is not in the agent's store, and imagePullPolicy is Never"),
                ));
            }
            PullPolicy::IfNotPresent if present => return Ok(()),
            _ => {}
        }
        let secrets = self.pull_secrets(task).await?;
        let shown = Arc::new(Mutex::new(crate::pull::Progress::default()));
        let progress = {
            let shown = shown.clone();
            move |p: crate::pull::Progress| *shown.lock().unwrap_or_else(PoisonError::into_inner) = p
        };
        let pulled =
            unless_killed(self.puller.pull(&image, &secrets, &progress), starting, &image, Some(&shown)).await?;
        match pulled {
            Ok(summary) => {
                tracing::info!(task = %task.metadata.display_name(), image = %summary.reference, digest = %summary.digest, "image pulled");
                self.collect_images.notify_one();
                // The store now has it under its full name; the container is made from that.
                Ok(())
            }
            Err(e) => Err(Failure::new(e.reason(), e.to_string())),
        }
    }

    /// The registry credentials `task`'s container names (`imagePullSecrets`), read from its namespace.
    async fn pull_secrets(&self, task: &Task) -> Result<Vec<crate::pull::PullSecret>, Failure> {
        let Some(container) = &task.spec.container else { return Ok(Vec::new()) };
        let namespace = task.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let mut secrets = Vec::new();
        for reference in &container.image_pull_secrets {
            let name = format!("{namespace}/{}", reference.name);
            let secret = match api.get(&reference.name).await {
                Ok(secret) => secret,
                Err(e) if e.is_not_found() => {
                    return Err(Failure::new("ImagePullFailed", format!("the pull secret {name} does not exist")));
                }
                Err(e) => return Err(Failure::new("ImagePullFailed", format!("reading the pull secret {name}: {e}"))),
            };
            if secret.spec.type_() != SecretType::DockerConfigJson {
                return Err(Failure::new(
                    "ImagePullFailed",
                    format!(
                        "the pull secret {name} is of type {:?}; registry credentials are DockerConfigJson",
                        secret.spec.type_()
                    ),
                ));
            }
            let config = secret
                .spec
                .bytes(DOCKER_CONFIG_KEY)
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .ok_or_else(|| {
                    Failure::new(
                        "ImagePullFailed",
                        format!("the pull secret {name} holds no readable {DOCKER_CONFIG_KEY}"),
                    )
                })?;
            secrets.push(crate::pull::PullSecret { name, config });
        }
        Ok(secrets)
    }

    /// The container for `task`, or why it cannot run (a reason and a message).
    async fn prepare(&self, task: &Task) -> Result<ContainerConfig, Failure> {
        let id = uid(task);
        let dir = self.work_dir.join("tasks").join(&id);
        // With an image: its layers and configuration. Without: the host's root, read-only, as Mesos runs such tasks.
        let (rootfs, config) = match task.spec.container.as_ref().map(|c| c.image.clone()) {
            Some(image) => {
                let store = self.images.clone();
                let resolved = tokio::task::spawn_blocking(move || match store.resolve(&image) {
                    // Pulled images are named in full (`docker.io/library/busybox:latest`).
                    Err(images::Error::NotFound(_))
                        if image.parse::<oci_client::Reference>().is_ok_and(|r| r.whole() != image) =>
                    {
                        let full = image.parse::<oci_client::Reference>().map(|r| r.whole()).unwrap_or_default();
                        store.resolve(&full)
                    }
                    other => other,
                })
                .await
                .map_err(|e| ("ImageNotFound", e.to_string()))?;
                let resolved = resolved.map_err(|e| match e {
                    images::Error::NotFound(_) => ("ImageNotFound", e.to_string()),
                    other => ("ImageUnusable", other.to_string()),
                })?;
                // The task's directory names its image for as long as it exists: the collector leaves it alone.
                std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(dir.join(crate::image_gc::TASK_IMAGE_FILE), &resolved.digest))
                    .map_err(|e| ("StartFailed", format!("recording the task's image in {}: {e}", dir.display())))?;
                let rootfs =
                    RootFs::Image { layers: resolved.layers, upper: dir.join("upper"), work: dir.join("work") };
                (rootfs, resolved.config.config().clone().unwrap_or_default())
            }
            None => {
                let host = oci_spec::image::ConfigBuilder::default()
                    .env(vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()])
                    .build()
                    .unwrap_or_default();
                (RootFs::Host { mount_points: dir.join("mount-points") }, host)
            }
        };
        let accounts = match &rootfs {
            RootFs::Image { layers, .. } => crate::users::Accounts::image(layers),
            RootFs::Host { .. } => crate::users::Accounts::host(),
        };
        let user = crate::users::resolve(
            task.spec.user.as_deref(),
            config.user().as_deref(),
            self.allow_root_tasks,
            &accounts,
        )
        .map_err(|e| match e {
            crate::users::Error::RootNotAllowed(_) => ("RootNotAllowed", e.to_string()),
            crate::users::Error::GroupNotAllowed { .. } => ("GroupNotAllowed", e.to_string()),
            _ => ("UnknownUser", e.to_string()),
        })?;
        let hidden_paths = match &rootfs {
            RootFs::Host { .. } => self.hidden_paths.clone(),
            RootFs::Image { .. } => Vec::new(),
        };
        let args: Vec<String> = match (&task.spec.args, &task.spec.cmd) {
            (Some(args), _) if !args.is_empty() => args.clone(),
            (_, Some(cmd)) => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            _ => config
                .entrypoint()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .chain(config.cmd().clone().unwrap_or_default())
                .collect(),
        };
        if args.is_empty() {
            return Err(Failure::new(
                "CommandNotFound",
                "the task has no cmd or args (and no image with an entrypoint)",
            ));
        }
        let mut env: BTreeMap<String, String> = config
            .env()
            .clone()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let ports: Vec<String> = task.spec.ports.iter().map(|p| p.port.to_string()).collect();
        for (i, port) in task.spec.ports.iter().enumerate() {
            env.insert(format!("PORT{i}"), port.port.to_string());
            if let Some(name) = &port.name {
                env.insert(format!("PORT_{}", name.to_ascii_uppercase().replace('-', "_")), port.port.to_string());
            }
        }
        if let Some(first) = ports.first() {
            env.insert("PORT".into(), first.clone());
        }
        env.insert("PORTS".into(), ports.join(","));
        env.insert("HOST".into(), self.host.clone());
        env.insert("TASK_ID".into(), task.metadata.name.clone().unwrap_or_default());
        env.insert("AGORA_NAMESPACE".into(), task.metadata.namespace.clone().unwrap_or_default());
        env.insert("AGORA_AGENT".into(), self.agent.clone());
        env.insert("MESOS_SANDBOX".into(), container::SANDBOX_MOUNT.into());
        env.insert("HOME".into(), container::SANDBOX_MOUNT.into());
        env.extend(task.spec.env.clone());
        let sandbox = dir.join("sandbox");
        Ok(ContainerConfig {
            id: id.clone(),
            bundle: dir.join("bundle"),
            rootfs,
            sandbox: sandbox.clone(),
            tmp: dir.join("tmp"),
            args,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: container::SANDBOX_MOUNT.into(),
            hostname: task.metadata.name.clone().unwrap_or_else(|| id.clone()),
            memory_bytes: Some((task.spec.mem.max(4.0) * 1_048_576.0) as i64),
            cpus: Some(task.spec.cpus),
            stdout: sandbox.join("stdout"),
            stderr: sandbox.join("stderr"),
            user,
            pids_limit: Some(agora_schemas::Limits::pids(task.spec.limits.as_ref())),
            cgroups: self.cgroups.clone(),
            hidden_paths,
            init: self.init.clone(),
        })
    }

    /// A COMMAND check: the command in the task's container, passing when it exits 0 within the timeout.
    async fn command_check(&self, id: &str, check: &HealthCheck) -> (bool, String) {
        let Some(command) = check.command.clone() else { return (false, "a COMMAND check needs a command".into()) };
        let output = self.work_dir.join("tasks").join(id).join("health-check.out");
        let timeout = Duration::from_secs(u64::from(check.timeout_seconds().max(1)));
        // Entering the container takes a fork, which a multithreaded process must not do: a separate, single-threaded
        // process (`<shim> container-exec`) does it, kills the check's processes when it times out, keeps the tail of
        // its output, and exits with the command's status.
        let mut child = match tokio::process::Command::new(&self.shim)
            .arg("container-exec")
            .arg(&self.state_dir)
            .arg(id)
            .arg(&output)
            .args(["--timeout-seconds", &timeout.as_secs().to_string()])
            .args(["--", "/bin/sh", "-c", &command])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return (false, format!("starting the check: {e}")),
        };
        // The helper ends the check at its timeout; this one only guards against the helper itself hanging.
        let waited = tokio::time::timeout(timeout + Duration::from_secs(5), child.wait()).await;
        let text = read_check_output(&output);
        match waited {
            Ok(Ok(status)) if status.success() => (true, text),
            Ok(Ok(status)) if status.code() == Some(shim::CHECK_TIMED_OUT) => {
                (false, format!("no answer within {}s (its processes were killed): {text}", timeout.as_secs()))
            }
            Ok(Ok(status)) => (false, format!("exit {}: {text}", status.code().unwrap_or(-1))),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => {
                let _ = child.kill().await;
                (false, format!("no answer within {}s", timeout.as_secs()))
            }
        }
    }
}

/// Runs `work` (waiting for a pull's turn, or the pull) to its end unless the task is killed or deleted meanwhile —
/// asked once a second; then `work` is dropped, since the task will never need the image. With `shown`, the pull's
/// progress goes into the task's status message whenever it changed.
///
/// # Errors
/// `KillRequested`, saying what happened while the image was being pulled.
async fn unless_killed<T>(
    work: impl std::future::Future<Output = T>,
    starting: &Starting<'_>,
    image: &str,
    shown: Option<&Mutex<crate::pull::Progress>>,
) -> Result<T, Failure> {
    tokio::pin!(work);
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    let mut last_written = None;
    loop {
        tokio::select! {
            done = &mut work => return Ok(done),
            _ = tick.tick() => {
                if let Some(why) = starting.stop_asked().await {
                    return Err(Failure::new("KillRequested", format!("{why} while its image {image} was being pulled")));
                }
                let Some(shown) = shown else { continue };
                let p = *shown.lock().unwrap_or_else(PoisonError::into_inner);
                if last_written != Some(p) {
                    last_written = Some(p);
                    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                    let message = format!("pulling image {image}: {:.1} of {:.1} MiB", mib(p.done), mib(p.total));
                    starting.say(message).await;
                }
            }
        }
    }
}

/// The end of a COMMAND check's output (the helper keeps at most [`shim::MAX_CHECK_OUTPUT`] bytes; a file that holds
/// more, left by an older agent, is not read whole): its last 512 characters.
fn read_check_output(path: &std::path::Path) -> String {
    let bytes = crate::logs::file_tail(path, shim::MAX_CHECK_OUTPUT as u64);
    let text = String::from_utf8_lossy(&bytes);
    text.chars().rev().take(512).collect::<Vec<_>>().into_iter().rev().collect()
}

/// Keeps the image store within its policy: after pulls (woken), and every five minutes. A store busy with a pull is
/// tried again a little later.
async fn collect_images(executor: Arc<Executor<Containers>>, policy: crate::image_gc::GcPolicy) {
    let containers = executor.runtime();
    loop {
        let store = containers.images.clone();
        let work_dir = containers.work_dir.clone();
        let collected = tokio::task::spawn_blocking(move || crate::image_gc::collect(&store, &policy, &work_dir)).await;
        let wait = match collected {
            Ok(Ok(Some(report))) => {
                if !report.removed.is_empty() || report.blobs_deleted > 0 {
                    tracing::info!(removed = ?report.removed, blobs = report.blobs_deleted, before = report.before,
                                   after = report.after, budget = report.budget, "image garbage collected");
                }
                if report.after > report.budget {
                    tracing::warn!(
                        held = report.after,
                        budget = report.budget,
                        "the image store is over its budget with only images in use left"
                    );
                }
                Duration::from_secs(300)
            }
            Ok(Ok(None)) => Duration::from_secs(5),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "image garbage collection failed");
                Duration::from_secs(60)
            }
            Err(_) => Duration::from_secs(60),
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = containers.collect_images.notified() => {}
        }
    }
}

/// Deletes task directories (sandboxes and logs included) once their task has ended more than `retention` ago.
async fn collect_sandboxes(executor: Arc<Executor<Containers>>, retention: Duration) {
    let every = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::time::sleep(every).await;
        let tasks_dir = executor.runtime().work_dir.join("tasks");
        let Ok(entries) = std::fs::read_dir(&tasks_dir) else { continue };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            if executor.live(&id) || shim::shim_alive(&dir) {
                continue;
            }
            // Ended when the exit was recorded (or, for a task that never started, when its directory last changed).
            let ended = std::fs::metadata(dir.join("exit.json"))
                .or_else(|_| std::fs::metadata(&dir))
                .and_then(|m| m.modified());
            let old = ended.ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= retention);
            if old {
                tracing::debug!(task = %id, "removing a sandbox past its retention");
                let _ = tokio::task::spawn_blocking(move || container::remove_task_dir(&dir)).await;
            }
        }
    }
}

/// Stops and removes containers whose Task no longer exists (deleted while the agent was down, finalizer and all).
async fn remove_orphans(executor: Arc<Executor<Containers>>) {
    let containers = executor.runtime();
    let tasks: Api<Task> = Api::all(containers.client.clone());
    let params = agora_client::ListParams::default().fields(&format!("spec.agent={}", containers.agent));
    let known: std::collections::HashSet<String> = match tasks.list(&params).await {
        Ok(list) => list.items.iter().map(uid).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list tasks; orphaned containers stay until the next start");
            return;
        }
    };
    for id in containers.runtime.ids().into_iter().filter(|id| !known.contains(id)) {
        tracing::info!(container = %id, "removing a container whose task no longer exists");
        let (runtime, dir) = (containers.runtime.clone(), shim::task_dir(&containers.work_dir, &id));
        let _ = tokio::task::spawn_blocking(move || {
            let _ = runtime.kill(&id, Signal::SIGKILL);
            let _ = runtime.delete(&id, &dir.join("bundle"));
            container::remove_task_dir(&dir)
        })
        .await;
    }
}
