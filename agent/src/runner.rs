//! The agent proper: runs the Tasks bound to it (`fieldSelector=spec.agent=<name>`) as containers and reports each
//! transition through `/status` — Staging → Starting → Running → Finished (exit 0), Failed (exit code; `OOMKilled`
//! when the memory cgroup killed it; `ImageNotFound`, `StartFailed`), or Killed.
//!
//! Every task the agent has seen carries its finalizer [`FINALIZER`], so deleting a Task lets the agent stop its
//! container first (SIGTERM, then SIGKILL after `killGracePeriodSeconds`, default 5 s). `spec.killRequested` stops it
//! the same way and reports Killed.
//!
//! A task without an image sees the host's file system read-only, with its sandbox and its own `/tmp` writable. Each
//! container is owned by a [`shim`], so a restarted agent reattaches to running tasks and learns of exits
//! that happened while it was down; health checks, usage and logs are served while tasks run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agora_client::{Api, Client, Patch, PatchParams};
use agora_controllers::runtime::finalizer::{self, finalizer};
use agora_controllers::runtime::{Action, Controller, watcher};
use agora_schemas::{DOCKER_CONFIG_KEY, PullPolicy, Resources, Secret, SecretType, Task, TaskState};
use futures::StreamExt;
use jiff::Timestamp;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::admission::Claim;
use crate::cgroups;
use crate::container::{self, ContainerConfig, ContainerRuntime, RootFs};
use crate::images::{self, ImageStore};
use crate::lifecycle::{self, Facts, Process, Step};
use crate::registration::{self, FIELD_MANAGER, HeartbeatConfig, Registration};
use crate::shim;

pub use agora_schemas::names::AGENT_FINALIZER as FINALIZER;
/// How long a task gets between SIGTERM and SIGKILL unless it says otherwise.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

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

/// A task this agent started: from its start until its terminal state is written.
struct Live {
    killing: bool,
    exited: bool,
    /// Why the agent stopped it for its disk use, when it did.
    disk_exceeded: Option<String>,
}

struct Context {
    client: Client,
    /// What the agent offers: no one task may ask for more.
    resources: Resources,
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
    live: Mutex<HashMap<String, Live>>,
    /// What each admitted task holds, from its admission until its end is recorded (see [`crate::admission`]).
    claims: Mutex<HashMap<String, Claim>>,
    /// Tasks this process has tried to start (so a stale cached state is never taken for one left by an earlier run);
    /// a task leaves it when its deletion is cleaned up.
    handled: Mutex<std::collections::HashSet<String>>,
    metrics: crate::metrics::Metrics,
    /// Shared by the HTTP health checks.
    http: reqwest::Client,
    usage_every: Duration,
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

impl Context {
    /// Whether the task with this uid still runs (started by this process, exit not yet seen).
    fn running(&self, uid: &str) -> bool {
        self.live().get(uid).is_some_and(|l| !l.exited)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits `task` if it fits beside the tasks held, and records its claim — one decision under one lock.
    fn admit(&self, task: &Task) -> Result<(), String> {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        let asked = Claim::of(&task.spec);
        crate::admission::admit(&self.agent, &self.resources, claims.values(), &asked)?;
        claims.insert(uid(task), asked);
        Ok(())
    }

    /// Records a task this agent holds whatever fits (one it reattached to).
    fn hold(&self, task: &Task) {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner).insert(uid(task), Claim::of(&task.spec));
    }

    /// The task no longer holds anything here.
    fn release(&self, uid: &str) {
        self.claims.lock().unwrap_or_else(PoisonError::into_inner).remove(uid);
    }
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
    let context = Arc::new(Context {
        client: client.clone(),
        resources: config.resources.clone(),
        agent: config.name.clone(),
        host,
        work_dir: config.work_dir.clone(),
        puller: crate::pull::Puller::new(images.clone(), config.registries.clone()),
        collect_images: tokio::sync::Notify::new(),
        pulls: Mutex::default(),
        images,
        runtime,
        live: Mutex::default(),
        claims: Mutex::default(),
        handled: Mutex::default(),
        metrics: crate::metrics::Metrics::default(),
        http: crate::health::http_client(),
        usage_every: config.usage_every,
        shim: config.shim.clone(),
        spare: Mutex::new(shim::spawn_spare(&config.shim, &state_dir).ok()),
        state_dir,
        allow_root_tasks: config.allow_root_tasks,
        hidden_paths: std::iter::once(config.work_dir.clone()).chain(config.hidden_paths.clone()).collect(),
        cgroups: cgroups::CgroupLayout::of_host(),
        init: config.init.clone(),
    });
    tokio::spawn(remove_orphans(context.clone()));
    let collector = tokio::spawn(collect_sandboxes(context.clone(), config.sandbox_retention));
    let image_collector = tokio::spawn(collect_images(context.clone(), config.image_gc));
    let metrics = context.metrics.clone();
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
    Controller::new(Api::<Task>::all(client), watcher::Config::default().fields(&selector))
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |task, error, _| {
                tracing::warn!(task = %task.metadata.display_name(), %error, "task update failed; retrying");
                Action::requeue(Duration::from_secs(1))
            },
            context,
        )
        .for_each(|_| async {})
        .await;
    heartbeat.abort();
    serving.abort();
    collector.abort();
    image_collector.abort();
    Ok(())
}

impl crate::logs::TaskLogs for Context {
    fn sandbox(&self, uid: &str) -> PathBuf {
        self.work_dir.join("tasks").join(uid).join("sandbox")
    }

    fn running(&self, uid: &str) -> bool {
        Context::running(self, uid)
    }
}

async fn reconcile(task: Arc<Task>, ctx: Arc<Context>) -> Result<Action, finalizer::Error<agora_client::Error>> {
    let tasks: Api<Task> = Api::namespaced(ctx.client.clone(), task.metadata.namespace.as_deref().unwrap_or("default"));
    let events = tasks.clone();
    finalizer(&tasks, FINALIZER, task, |event| async move {
        match event {
            finalizer::Event::Apply(task) => apply(&task, &events, &ctx).await,
            finalizer::Event::Cleanup(task) => cleanup(&task, &events, &ctx).await,
        }
    })
    .await
}

fn uid(task: &Task) -> String {
    task.metadata.uid.clone().unwrap_or_default()
}

/// Writes `status` (merged into the task's status), guarded by the version decided on when `guarded`.
async fn write_status(tasks: &Api<Task>, task: &Task, status: Value, guarded: bool) -> agora_client::Result<bool> {
    let name = task.metadata.name.as_deref().unwrap_or_default();
    let mut patch = json!({ "status": status });
    if guarded {
        patch["metadata"] = json!({ "resourceVersion": task.metadata.resource_version });
    }
    match tasks.patch_status(name, &PatchParams::default().manager(FIELD_MANAGER), &Patch::Merge(patch)).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

async fn apply(task: &Task, tasks: &Api<Task>, ctx: &Arc<Context>) -> agora_client::Result<Action> {
    match lifecycle::decide(task, facts(task, tasks, ctx), Timestamp::now()) {
        Step::Wait => {}
        Step::Launch => return launch(task, tasks, ctx).await,
        Step::Stop { announce } => {
            if announce {
                write_status(tasks, task, json!({ "state": "Killing" }), false).await?;
            }
            stop(task, ctx);
        }
        Step::Write { status, guarded } => {
            write_status(tasks, task, status, guarded).await?;
        }
        Step::Abandon { status } => {
            let id = uid(task);
            let bundle = ctx.work_dir.join("tasks").join(&id).join("bundle");
            let runtime = ctx.runtime.clone();
            let _ = tokio::task::spawn_blocking(move || runtime.delete(&id, &bundle)).await;
            write_status(tasks, task, status, true).await?;
        }
    }
    Ok(Action::await_change())
}

/// What this agent knows of `task`: whether this process has taken it on, and its process — taking over one an
/// earlier run of the agent left (its shim still runs, or recorded how it ended) when this process has not handled
/// the task yet and it is past `Staging`.
fn facts(task: &Task, tasks: &Api<Task>, ctx: &Arc<Context>) -> Facts {
    let id = uid(task);
    let state = task.status.as_ref().map_or(TaskState::Staging, |s| s.state);
    let handled = ctx.handled.lock().unwrap_or_else(PoisonError::into_inner).contains(&id);
    let known = || {
        ctx.live().get(&id).map(|l| if l.exited { Process::Exited } else { Process::Running { killing: l.killing } })
    };
    let mut process = known();
    if process.is_none()
        && !handled
        && !state.is_terminal()
        && state != TaskState::Staging
        && reattach(task, tasks, ctx)
    {
        process = known();
    }
    Facts { handled, process: process.unwrap_or(Process::Unknown) }
}

fn failed(reason: &str, message: impl Into<String>) -> Value {
    json!({ "state": "Failed", "reason": reason, "message": message.into(), "finishedAt": Timestamp::now() })
}

async fn launch(task: &Task, tasks: &Api<Task>, ctx: &Arc<Context>) -> agora_client::Result<Action> {
    if !write_status(tasks, task, json!({ "state": "Starting", "host": ctx.host }), true).await? {
        return Ok(Action::await_change()); // changed meanwhile: the change brings another reconcile
    }
    ctx.handled.lock().unwrap_or_else(PoisonError::into_inner).insert(uid(task));
    // Whatever created it, a task runs only in the room the tasks already here leave.
    if let Err(message) = ctx.admit(task) {
        write_status(tasks, task, failed("InsufficientResources", message), false).await?;
        return Ok(Action::await_change());
    }
    let started = start(task, tasks, ctx).await;
    // A task whose exit is watched for (it is live) releases its claim when its end is recorded; any other
    // outcome of the start releases it now.
    if !ctx.live().contains_key(&uid(task)) {
        ctx.release(&uid(task));
    }
    started.map(|()| Action::await_change())
}

/// Starts an admitted task: the container, then the watch for its exit, health and usage.
async fn start(task: &Task, tasks: &Api<Task>, ctx: &Arc<Context>) -> agora_client::Result<()> {
    // From the pull until the task's directory names its image, the store keeps what this task needs.
    let mut hold = None;
    if task.spec.container.is_some() {
        let store = ctx.images.clone();
        match tokio::task::spawn_blocking(move || store.hold()).await {
            Ok(Ok(held)) => hold = Some(held),
            Ok(Err(e)) => {
                write_status(tasks, task, failed("ImageUnusable", e.to_string()), false).await?;
                return Ok(());
            }
            Err(_) => {}
        }
    }
    if let Err((reason, message)) = pull_image(task, tasks, ctx).await {
        let status = if reason == "KillRequested" {
            json!({ "state": "Killed", "reason": reason, "message": message, "finishedAt": Timestamp::now() })
        } else {
            failed(reason, message)
        };
        write_status(tasks, task, status, false).await?;
        return Ok(());
    }
    let prepared = prepare(task, ctx).await;
    drop(hold);
    let config = match prepared {
        Ok(config) => config,
        Err((reason, message)) => {
            write_status(tasks, task, failed(reason, message), false).await?;
            return Ok(());
        }
    };
    let dir = shim::task_dir(&ctx.work_dir, &config.id);
    let spare = ctx.spare.lock().unwrap_or_else(PoisonError::into_inner).take();
    let mut child = match shim::start_with(spare, &ctx.shim, &config, &dir, &ctx.state_dir).await {
        Ok(child) => child,
        Err(e) => {
            write_status(tasks, task, failed("StartFailed", format!("starting the task's shim: {e}")), false).await?;
            return Ok(());
        }
    };
    // The shim says the container started (its pid) or why it did not; its stdout wakes the agent when it has.
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    shim::started(&mut child, START_LIMIT).await;
    child.stdout = None;
    let pid = loop {
        match shim::outcome(&dir) {
            Some(shim::Outcome::StartFailed(message)) => {
                let reason = if message.contains("No such file") { "CommandNotFound" } else { "StartFailed" };
                write_status(tasks, task, failed(reason, message), false).await?;
                return Ok(());
            }
            Some(shim::Outcome::Exited(_)) => break shim::container_pid(&dir).unwrap_or(0),
            None => {}
        }
        if let Some(pid) = shim::container_pid(&dir) {
            break pid;
        }
        if tokio::time::Instant::now() > deadline {
            let message = format!("the shim did not start the container in {} s", START_LIMIT.as_secs());
            write_status(tasks, task, failed("StartFailed", message), false).await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    ctx.live().insert(config.id.clone(), Live { killing: false, exited: false, disk_exceeded: None });
    tracing::info!(task = %task.metadata.display_name(), pid, "started");
    // Running is written before the exit is looked for, so a quick exit's terminal state always comes after it.
    let running = write_status(
        tasks,
        task,
        json!({ "state": "Running", "startedAt": Timestamp::now(), "host": ctx.host }),
        false,
    )
    .await;
    // The next task's shim, started now that this one runs (not while it starts, on the same cores).
    {
        let mut spare = ctx.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.is_none() {
            *spare = shim::spawn_spare(&ctx.shim, &ctx.state_dir).ok();
        }
    }
    tokio::spawn(watch_exit(task.clone(), tasks.clone(), ctx.clone(), config, Some(child)));
    if !task.spec.health_checks.is_empty() {
        tokio::spawn(monitor_health(task.clone(), tasks.clone(), ctx.clone()));
    }
    tokio::spawn(monitor_usage(task.clone(), tasks.clone(), ctx.clone()));
    running.map(drop)
}

/// Makes sure the store has `task`'s image, as its pull policy says: an image of the name as written (or in its full
/// form) is used as it is unless the policy is `Always`; otherwise the agent pulls it, showing its progress in the
/// task's status message (at most once a second).
async fn pull_image(task: &Task, tasks: &Api<Task>, ctx: &Arc<Context>) -> Result<(), (&'static str, String)> {
    let Some(container) = &task.spec.container else { return Ok(()) };
    // Another task's pull of this image runs to its end first: then it is present, and IfNotPresent pulls nothing.
    let lock =
        ctx.pulls.lock().unwrap_or_else(PoisonError::into_inner).entry(container.image.clone()).or_default().clone();
    let image = container.image.clone();
    let _one_at_a_time = unless_killed(lock.lock(), task, tasks, &image, None).await?;
    let policy = container.image_pull_policy.unwrap_or_default();
    let full = image.parse::<oci_client::Reference>().ok().map(|r| r.whole());
    let present = [Some(image.clone()), full.clone()]
        .into_iter()
        .flatten()
        .any(|name| ctx.images.lookup(&name).ok().flatten().is_some());
    match policy {
        PullPolicy::Never if present => return Ok(()),
        PullPolicy::Never => {
            return Err((
                "ImageNotFound",
                format!("image {image} is not in the agent's store, and imagePullPolicy is Never"),
            ));
        }
        PullPolicy::IfNotPresent if present => return Ok(()),
        _ => {}
    }
    let secrets = pull_secrets(task, ctx).await?;
    let shown = Arc::new(Mutex::new(crate::pull::Progress::default()));
    let progress = {
        let shown = shown.clone();
        move |p: crate::pull::Progress| *shown.lock().unwrap_or_else(PoisonError::into_inner) = p
    };
    let pulled = unless_killed(ctx.puller.pull(&image, &secrets, &progress), task, tasks, &image, Some(&shown)).await?;
    match pulled {
        Ok(summary) => {
            tracing::info!(task = %task.metadata.display_name(), image = %summary.reference, digest = %summary.digest, "image pulled");
            ctx.collect_images.notify_one();
            // The store now has it under its full name; the container is made from that.
            Ok(())
        }
        Err(e) => Err((e.reason(), e.to_string())),
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
    task: &Task,
    tasks: &Api<Task>,
    image: &str,
    shown: Option<&Mutex<crate::pull::Progress>>,
) -> Result<T, (&'static str, String)> {
    tokio::pin!(work);
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    let mut last_written = None;
    loop {
        tokio::select! {
            done = &mut work => return Ok(done),
            _ = tick.tick() => {
                if let Some(why) = kill_asked(task, tasks).await {
                    return Err(("KillRequested", format!("{why} while its image {image} was being pulled")));
                }
                let Some(shown) = shown else { continue };
                let p = *shown.lock().unwrap_or_else(PoisonError::into_inner);
                if last_written != Some(p) {
                    last_written = Some(p);
                    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                    let message = format!("pulling image {image}: {:.1} of {:.1} MiB", mib(p.done), mib(p.total));
                    let _ = write_status(tasks, task, json!({ "state": "Starting", "message": message }), false).await;
                }
            }
        }
    }
}

/// Whether the task has been asked to stop since it was read (killed, deleted or gone), and which.
async fn kill_asked(task: &Task, tasks: &Api<Task>) -> Option<&'static str> {
    let name = task.metadata.name.as_deref().unwrap_or_default();
    match tasks.get(name).await {
        Ok(now) if now.metadata.uid != task.metadata.uid => Some("the task was deleted"),
        Ok(now) if now.metadata.deletion_timestamp.is_some() => Some("the task was deleted"),
        Ok(now) if now.spec.kill_requested == Some(true) => Some("the task was killed"),
        Err(e) if e.is_not_found() => Some("the task was deleted"),
        _ => None,
    }
}

/// The registry credentials `task`'s container names (`imagePullSecrets`), read from its namespace.
async fn pull_secrets(task: &Task, ctx: &Arc<Context>) -> Result<Vec<crate::pull::PullSecret>, (&'static str, String)> {
    let Some(container) = &task.spec.container else { return Ok(Vec::new()) };
    let namespace = task.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut secrets = Vec::new();
    for reference in &container.image_pull_secrets {
        let name = format!("{namespace}/{}", reference.name);
        let secret = match api.get(&reference.name).await {
            Ok(secret) => secret,
            Err(e) if e.is_not_found() => {
                return Err(("ImagePullFailed", format!("the pull secret {name} does not exist")));
            }
            Err(e) => return Err(("ImagePullFailed", format!("reading the pull secret {name}: {e}"))),
        };
        if secret.spec.type_() != SecretType::DockerConfigJson {
            return Err((
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
                ("ImagePullFailed", format!("the pull secret {name} holds no readable {DOCKER_CONFIG_KEY}"))
            })?;
        secrets.push(crate::pull::PullSecret { name, config });
    }
    Ok(secrets)
}

/// Keeps the image store within its policy: after pulls (woken), and every five minutes. A store busy with a pull is
/// tried again a little later.
async fn collect_images(ctx: Arc<Context>, policy: crate::image_gc::GcPolicy) {
    loop {
        let store = ctx.images.clone();
        let work_dir = ctx.work_dir.clone();
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
            () = ctx.collect_images.notified() => {}
        }
    }
}

/// The container for `task`, or why it cannot run (a reason and a message).
async fn prepare(task: &Task, ctx: &Arc<Context>) -> Result<ContainerConfig, (&'static str, String)> {
    let id = uid(task);
    let dir = ctx.work_dir.join("tasks").join(&id);
    // With an image: its layers and configuration. Without: the host's root, read-only, as Mesos runs such tasks.
    let (rootfs, config) = match task.spec.container.as_ref().map(|c| c.image.clone()) {
        Some(image) => {
            let store = ctx.images.clone();
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
            let rootfs = RootFs::Image { layers: resolved.layers, upper: dir.join("upper"), work: dir.join("work") };
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
    let user =
        crate::users::resolve(task.spec.user.as_deref(), config.user().as_deref(), ctx.allow_root_tasks, &accounts)
            .map_err(|e| match e {
                crate::users::Error::RootNotAllowed(_) => ("RootNotAllowed", e.to_string()),
                crate::users::Error::GroupNotAllowed { .. } => ("GroupNotAllowed", e.to_string()),
                _ => ("UnknownUser", e.to_string()),
            })?;
    let hidden_paths = match &rootfs {
        RootFs::Host { .. } => ctx.hidden_paths.clone(),
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
        return Err(("CommandNotFound", "the task has no cmd or args (and no image with an entrypoint)".into()));
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
    env.insert("HOST".into(), ctx.host.clone());
    env.insert("TASK_ID".into(), task.metadata.name.clone().unwrap_or_default());
    env.insert("AGORA_NAMESPACE".into(), task.metadata.namespace.clone().unwrap_or_default());
    env.insert("AGORA_AGENT".into(), ctx.agent.clone());
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
        cgroups: ctx.cgroups.clone(),
        hidden_paths,
        init: ctx.init.clone(),
    })
}

/// Waits for the container to end, then reports how and removes it (the sandbox, with its logs, stays).
async fn watch_exit(
    task: Task,
    tasks: Api<Task>,
    ctx: Arc<Context>,
    config: ContainerConfig,
    shim_process: Option<tokio::process::Child>,
) {
    if let Some(mut shim_process) = shim_process {
        let _ = shim_process.wait().await;
    }
    // The shim records the outcome before it exits; a reattached agent looks until it does (or the shim is gone).
    let dir = shim::task_dir(&ctx.work_dir, &config.id);
    let outcome = loop {
        if let Some(outcome) = shim::outcome(&dir) {
            break Some(outcome);
        }
        if !shim::shim_alive(&dir) {
            break shim::outcome(&dir);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let oom_killed = cgroups::counter(&config.id, "memory", "memory.oom_control", "oom_kill") > 0
        || cgroups::counter(&config.id, "memory", "memory.events", "oom_kill") > 0;
    let forks_refused = cgroups::counter(&config.id, "pids", "pids.events", "max");
    let (killing, disk_exceeded) = ctx.live().get_mut(&config.id).map_or((false, None), |l| {
        l.exited = true;
        (l.killing, l.disk_exceeded.take())
    });
    let runtime = ctx.runtime.clone();
    let (id, bundle) = (config.id.clone(), config.bundle.clone());
    match tokio::task::spawn_blocking(move || runtime.delete(&id, &bundle)).await {
        Ok(Err(e)) => {
            tracing::warn!(task = %task.metadata.display_name(), error = %e, "removing the container failed");
        }
        // Its root file system is unmounted: the image is free for the collector.
        _ => {
            let _ =
                std::fs::remove_file(shim::task_dir(&ctx.work_dir, &config.id).join(crate::image_gc::TASK_IMAGE_FILE));
        }
    }
    let end = lifecycle::End {
        outcome: outcome.map(|o| match o {
            shim::Outcome::Exited(exit) => Ok(exit),
            shim::Outcome::StartFailed(message) => Err(message),
        }),
        killing,
        disk_exceeded,
        oom_killed,
        forks_refused,
        pids_limit: config.pids_limit,
        mem: task.spec.mem,
    };
    let status = lifecycle::ended(&end, Timestamp::now());
    tracing::info!(task = %task.metadata.display_name(), status = %status["state"], "ended");
    // The terminal state must not be lost: retry until it is written (or the task is gone).
    let mut delay = Duration::from_millis(100);
    loop {
        match write_status(&tasks, &task, status.clone(), false).await {
            Ok(_) => break,
            Err(e) if e.is_not_found() => break,
            Err(e) => {
                tracing::warn!(task = %task.metadata.display_name(), error = %e, "reporting the exit failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    // Released first: whoever sees the task no longer live (a deletion's cleanup) sees its room free.
    ctx.release(&config.id);
    ctx.live().remove(&config.id);
}

fn grace(task: &Task) -> Duration {
    task.spec.kill_grace_period_seconds.map_or(DEFAULT_KILL_GRACE, |s| Duration::from_secs(u64::from(s)))
}

/// How long a stop waits for the container's init to be able to take SIGTERM (see [`container::takes_signal`]).
const INIT_READY: Duration = Duration::from_secs(1);

/// SIGTERM now — once the container's init can take it, at most [`INIT_READY`] later — and SIGKILL after the grace
/// period if it is still there.
fn stop(task: &Task, ctx: &Arc<Context>) {
    let id = uid(task);
    {
        let mut live = ctx.live();
        let Some(entry) = live.get_mut(&id) else { return };
        if entry.killing || entry.exited {
            return;
        }
        entry.killing = true;
    }
    let (ctx, grace, name) = (ctx.clone(), grace(task), task.metadata.display_name());
    tokio::spawn(async move {
        // A kill asked for just after the start must not be lost to an init still being set up.
        if let Some(pid) = ctx.runtime.pid(&id) {
            let deadline = tokio::time::Instant::now() + INIT_READY;
            while !container::takes_signal(pid, Signal::SIGTERM)
                && tokio::time::Instant::now() < deadline
                && ctx.running(&id)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if let Err(e) = ctx.runtime.kill(&id, Signal::SIGTERM) {
            tracing::warn!(task = %name, error = %e, "sending SIGTERM failed");
        }
        tokio::time::sleep(grace).await;
        let running = ctx.live().get(&id).is_some_and(|l| !l.exited);
        if running && let Err(e) = ctx.runtime.kill(&id, Signal::SIGKILL) {
            tracing::warn!(task = %id, error = %e, "sending SIGKILL after the grace period failed");
        }
    });
}

/// The task is being deleted: stop its container (with its grace period) and wait until it is gone.
async fn cleanup(task: &Task, tasks: &Api<Task>, ctx: &Arc<Context>) -> agora_client::Result<Action> {
    if !ctx.live().contains_key(&uid(task)) {
        // Deleted while the agent was down: take the container over first, to stop it.
        reattach(task, tasks, ctx);
    }
    stop(task, ctx);
    let id = uid(task);
    while ctx.live().contains_key(&id) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The container's file system goes now; the sandbox, with its logs, stays for the retention time.
    let dir = ctx.work_dir.join("tasks").join(&id);
    let _ = tokio::task::spawn_blocking(move || {
        for part in ["bundle", "upper", "work", "tmp", "mount-points"] {
            let _ = container::remove_task_dir(&dir.join(part));
        }
        if !dir.join("bundle").exists() {
            let _ = std::fs::remove_file(dir.join(crate::image_gc::TASK_IMAGE_FILE));
        }
    })
    .await;
    // A deleting task only ever comes back here, never to a launch: the agent can forget it.
    ctx.handled.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    Ok(Action::await_change())
}

/// Deletes task directories (sandboxes and logs included) once their task has ended more than `retention` ago.
async fn collect_sandboxes(ctx: Arc<Context>, retention: Duration) {
    let every = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::time::sleep(every).await;
        let tasks_dir = ctx.work_dir.join("tasks");
        let Ok(entries) = std::fs::read_dir(&tasks_dir) else { continue };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            if ctx.live().contains_key(&id) || shim::shim_alive(&dir) {
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

/// Runs the task's health checks while it runs, writing each result into its status.
async fn monitor_health(task: Task, tasks: Api<Task>, ctx: Arc<Context>) {
    use crate::health::{Verdicts, in_grace, probe};
    let id = uid(&task);
    let started = tokio::time::Instant::now();
    let ports: Vec<u16> = task.spec.ports.iter().map(|p| p.port).collect();
    let verdicts = Arc::new(Mutex::new(Verdicts::new(task.spec.health_checks.len())));
    let mut checks = tokio::task::JoinSet::new();
    for (index, mut check) in task.spec.health_checks.clone().into_iter().enumerate() {
        check.apply_defaults();
        let (task, tasks, ctx, ports, verdicts, id) =
            (task.clone(), tasks.clone(), ctx.clone(), ports.clone(), verdicts.clone(), id.clone());
        checks.spawn(async move {
            let interval = Duration::from_secs(u64::from(check.interval_seconds().max(1)));
            loop {
                if !ctx.running(&id) {
                    return;
                }
                let (passed, output) = match probe(&check, &ports, &ctx.http).await {
                    Ok(result) => result,
                    Err(()) => command_check(&ctx, &id, &check).await,
                };
                let now = tokio::time::Instant::now();
                let (healthy, failures) = {
                    let mut v = verdicts.lock().unwrap_or_else(PoisonError::into_inner);
                    v.record(index, passed, in_grace(&check, started, now));
                    (v.healthy(), v.failures())
                };
                let mut status = json!({
                    "healthCheckFailures": failures,
                    "lastHealthCheck": { "time": Timestamp::now(), "passed": passed, "output": output },
                });
                if let Some(healthy) = healthy {
                    status["healthy"] = json!(healthy);
                }
                if ctx.running(&id)
                    && let Err(e) = write_status(&tasks, &task, status, false).await
                {
                    tracing::debug!(task = %task.metadata.display_name(), error = %e, "health status not written");
                }
                tokio::time::sleep(interval).await;
            }
        });
    }
    while checks.join_next().await.is_some() {}
}

/// A COMMAND check: the command in the task's container, passing when it exits 0 within the timeout.
async fn command_check(ctx: &Arc<Context>, id: &str, check: &agora_schemas::HealthCheck) -> (bool, String) {
    let Some(command) = check.command.clone() else { return (false, "a COMMAND check needs a command".into()) };
    let output = ctx.work_dir.join("tasks").join(id).join("health-check.out");
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds().max(1)));
    // Entering the container takes a fork, which a multithreaded process must not do: a separate, single-threaded
    // process (`<shim> container-exec`) does it, kills the check's processes when it times out, keeps the tail of
    // its output, and exits with the command's status.
    let mut child = match tokio::process::Command::new(&ctx.shim)
        .arg("container-exec")
        .arg(&ctx.state_dir)
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

/// The end of a COMMAND check's output (the helper keeps at most [`shim::MAX_CHECK_OUTPUT`] bytes; a file that holds
/// more, left by an older agent, is not read whole): its last 512 characters.
fn read_check_output(path: &std::path::Path) -> String {
    let bytes = crate::logs::file_tail(path, shim::MAX_CHECK_OUTPUT as u64);
    let text = String::from_utf8_lossy(&bytes);
    text.chars().rev().take(512).collect::<Vec<_>>().into_iter().rev().collect()
}

/// Reads the task's usage from its cgroup every `usage_every` while it runs: into its status and `/metrics`.
async fn monitor_usage(task: Task, tasks: Api<Task>, ctx: Arc<Context>) {
    let id = uid(&task);
    let labels = crate::metrics::TaskLabels { task: task.metadata.display_name(), uid: id.clone() };
    loop {
        tokio::time::sleep(ctx.usage_every).await;
        if !ctx.running(&id) {
            break;
        }
        let reading = id.clone();
        let Ok(Ok(usage)) = tokio::task::spawn_blocking(move || cgroups::usage(&reading)).await else { continue };
        ctx.metrics.record(&labels, &usage);
        let running = ctx.live().values().filter(|l| !l.exited).count();
        ctx.metrics.set_running(running);
        if task.spec.disk > 0.0 {
            let written = crate::disk::written_by(&ctx.work_dir.join("tasks").join(&id));
            let used = tokio::task::spawn_blocking(move || crate::disk::usage(&written)).await.unwrap_or(0);
            if let Some(why) = crate::disk::over_limit(used, task.spec.disk) {
                tracing::info!(task = %task.metadata.display_name(), used, "over its disk limit: stopping it");
                if let Some(live) = ctx.live().get_mut(&id) {
                    live.disk_exceeded = Some(why);
                }
                stop(&task, &ctx);
                break;
            }
        }
        let status = json!({ "usage": {
            "cpuSeconds": usage.cpu_seconds, "memoryBytes": usage.memory_bytes, "memoryPeakBytes": usage.memory_peak_bytes,
        }});
        if ctx.running(&id)
            && let Err(e) = write_status(&tasks, &task, status, false).await
        {
            tracing::debug!(task = %task.metadata.display_name(), error = %e, "usage not written");
        }
    }
    ctx.metrics.forget(&labels);
    let running = ctx.live().values().filter(|l| !l.exited).count();
    ctx.metrics.set_running(running);
}

/// Takes over a task an earlier run of this agent started, if its shim still runs or recorded how it ended.
fn reattach(task: &Task, tasks: &Api<Task>, ctx: &Arc<Context>) -> bool {
    let id = uid(task);
    let dir = shim::task_dir(&ctx.work_dir, &id);
    let alive = shim::shim_alive(&dir);
    let Some(config) = shim::config(&dir).filter(|_| alive || shim::outcome(&dir).is_some()) else { return false };
    ctx.handled.lock().unwrap_or_else(PoisonError::into_inner).insert(id.clone());
    ctx.live().insert(id, Live { killing: false, exited: false, disk_exceeded: None });
    ctx.hold(task);
    tracing::info!(task = %task.metadata.display_name(), running = alive, "reattached to a task started before a restart");
    if alive {
        if !task.spec.health_checks.is_empty() {
            tokio::spawn(monitor_health(task.clone(), tasks.clone(), ctx.clone()));
        }
        tokio::spawn(monitor_usage(task.clone(), tasks.clone(), ctx.clone()));
    }
    tokio::spawn(watch_exit(task.clone(), tasks.clone(), ctx.clone(), config, None));
    true
}

/// Stops and removes containers whose Task no longer exists (deleted while the agent was down, finalizer and all).
async fn remove_orphans(ctx: Arc<Context>) {
    let tasks: Api<Task> = Api::all(ctx.client.clone());
    let params = agora_client::ListParams::default().fields(&format!("spec.agent={}", ctx.agent));
    let known: std::collections::HashSet<String> = match tasks.list(&params).await {
        Ok(list) => list.items.iter().map(uid).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list tasks; orphaned containers stay until the next start");
            return;
        }
    };
    for id in ctx.runtime.ids().into_iter().filter(|id| !known.contains(id)) {
        tracing::info!(container = %id, "removing a container whose task no longer exists");
        let (runtime, dir) = (ctx.runtime.clone(), shim::task_dir(&ctx.work_dir, &id));
        let _ = tokio::task::spawn_blocking(move || {
            let _ = runtime.kill(&id, Signal::SIGKILL);
            let _ = runtime.delete(&id, &dir.join("bundle"));
            container::remove_task_dir(&dir)
        })
        .await;
    }
}
