//! The `agora` command: `apiserver` runs the API server; `agent` runs an agent (or `--hollow` simulated ones);
//! `image` manages the agent's image store; `validate` checks manifests locally, as the apiserver will admit them;
//! `controllers` runs the allocator, marathon and chronos; `up` runs all of them as one cluster on this machine,
//! and `kubeconfig` prints its kubeconfig; the client verbs (`apply`, `get`, `describe`, `delete`, `logs`, `scale`,
//! `rollback`, `trigger`, `events`, `top`, `cordon`/`uncordon`/`drain`, `graph`) talk to a cluster; `version`,
//! `completion`.
// The doc comments below are clap's help text (`[REGISTRY[:PORT]/]REPO[:TAG]`, `<name-prefix>-<i>`), not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

mod apply;
mod describe;
mod get;
mod style;
mod up;
mod verbs;
mod wait;

/// mimalloc: the apiserver allocates many small JSON values from many threads, where glibc's allocator spent a third
/// of the CPU time of a create benchmark and held on to fragmented memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora: a cluster manager with Mesos' two-level scheduling, Marathon's apps and Chronos' jobs, driven by a
/// Kubernetes-style declarative API.
#[derive(Parser, Debug)]
#[command(
    name = "agora",
    version,
    about,
    long_about = None,
    arg_required_else_help = true,
    after_help = "Exit codes: 0 done; 1 not done (an object not applied or not found, a wait that failed or timed \
                  out, an invalid manifest); 2 an error (bad usage, a request that failed, no cluster reached).\n\
                  The client verbs find the cluster by --kubeconfig, --server, $KUBECONFIG, $AGORA_SERVER, then \
                  ~/.agora/kubeconfig (agora up's) and /var/lib/agora/kubeconfig (agora apiserver's)."
)]
struct Cli {
    #[command(flatten)]
    before: Before,
    /// Internal: this process is a part of the `agora up` with this pid, and ends with it.
    #[arg(long, hide = true, value_name = "PID")]
    parent: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

/// The cluster options a kubectl user gives before the verb (`agora -n shop get apps`, `agora --kubeconfig K -A get
/// tasks`); after it they mean the same. One given in both places is the one after the verb.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Cluster options (before or after the verb)")]
struct Before {
    /// A kubeconfig naming the cluster.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    context: Option<String>,
    /// The apiserver's URL, instead of a kubeconfig.
    #[arg(long, conflicts_with = "kubeconfig")]
    server: Option<String>,
    /// With --server: a file holding the cluster's bearer token.
    #[arg(long, requires = "server")]
    token_file: Option<PathBuf>,
    /// With --server: a file holding the CA certificate(s).
    #[arg(long, requires = "server")]
    ca_file: Option<PathBuf>,
    /// The namespace.
    #[arg(short, long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
}

impl Before {
    fn is_empty(&self) -> bool {
        self.cluster_given().is_none() && self.namespace.is_none() && !self.all_namespaces
    }

    /// The first cluster option given, for an error message.
    fn cluster_given(&self) -> Option<&'static str> {
        [
            (self.kubeconfig.is_some(), "--kubeconfig"),
            (self.context.is_some(), "--context"),
            (self.server.is_some(), "--server"),
            (self.token_file.is_some(), "--token-file"),
            (self.ca_file.is_some(), "--ca-file"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

    /// The first option given, for an error message.
    fn first(&self) -> Option<&'static str> {
        self.cluster_given()
            .or_else(|| self.namespace.is_some().then_some("--namespace"))
            .or_else(|| self.all_namespaces.then_some("--all-namespaces"))
    }

    /// `cluster` with what was given before the verb where it says nothing.
    fn cluster(&self, cluster: &mut ClusterArgs) {
        // A --server after the verb, not one that only $AGORA_SERVER filled in.
        let from_env = std::env::var("AGORA_SERVER").ok();
        let server_after = cluster.server.is_some() && cluster.server != from_env;
        if cluster.kubeconfig.is_none() && !server_after {
            cluster.kubeconfig.clone_from(&self.kubeconfig);
            if self.server.is_some() {
                cluster.server.clone_from(&self.server);
            }
        }
        cluster.context = cluster.context.take().or_else(|| self.context.clone());
        cluster.token_file = cluster.token_file.take().or_else(|| self.token_file.clone());
        cluster.ca_file = cluster.ca_file.take().or_else(|| self.ca_file.clone());
    }

    /// A namespace given after the verb, else before it; `-n` and `-A` together (in either place) are refused.
    fn namespace(&self, namespace: &mut Option<String>, all: &mut bool) -> Result<()> {
        *all |= self.all_namespaces;
        if namespace.is_none() {
            namespace.clone_from(&self.namespace);
        }
        anyhow::ensure!(!(*all && namespace.is_some()), "-n/--namespace and -A/--all-namespaces exclude each other");
        Ok(())
    }

    /// Moves what was given before the verb into the verb's own options; refused where the verb takes none.
    fn apply_to(&self, command: &mut Command) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let mut no_all = false;
        match command {
            Command::Apply { namespace, cluster, .. } => {
                self.cluster(cluster);
                self.namespace(namespace, &mut no_all)?;
            }
            Command::Get { namespace, all_namespaces, cluster, .. } => {
                self.cluster(cluster);
                self.namespace(namespace, all_namespaces)?;
            }
            Command::Describe { scope, .. }
            | Command::Delete { scope, .. }
            | Command::Logs { scope, .. }
            | Command::Scale { scope, .. }
            | Command::Rollback { scope, .. }
            | Command::Events { scope, .. }
            | Command::Create { what: CreateCommand::Secret { what: SecretCommand::DockerRegistry { scope, .. } } }
            | Command::Top { scope, .. } => {
                self.cluster(&mut scope.cluster);
                self.namespace(&mut scope.namespace, &mut scope.all_namespaces)?;
            }
            Command::Trigger { namespace, cluster, .. } | Command::Graph { namespace, cluster, .. } => {
                self.cluster(cluster);
                self.namespace(namespace, &mut no_all)?;
            }
            Command::Cordon(AgentName { cluster, .. })
            | Command::Uncordon(AgentName { cluster, .. })
            | Command::Drain { cluster, .. }
            | Command::Version { cluster }
            | Command::Controllers(ControllersArgs { cluster, .. })
            | Command::Store { command: StoreCommand::Snapshot { cluster, .. } } => {
                self.cluster(cluster);
                anyhow::ensure!(
                    self.namespace.is_none() && !self.all_namespaces,
                    "this verb takes no namespace (-n/-A)"
                );
            }
            Command::Agent(args) => {
                self.cluster(&mut args.cluster);
                anyhow::ensure!(
                    self.namespace.is_none() && !self.all_namespaces,
                    "this verb takes no namespace (-n/-A)"
                );
            }
            _ => anyhow::bail!("{} is not an option of this verb", self.first().unwrap_or("this option")),
        }
        anyhow::ensure!(!no_all, "-A/--all-namespaces is not an option of this verb");
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole cluster on this machine: the apiserver (embedded store), the controllers (allocator, marathon,
    /// chronos) and an agent, supervised by this one command until Ctrl-C or SIGTERM.
    ///
    /// On first start it makes DATA_DIR (private) with the store, a CA, a certificate, a token and DATA_DIR/kubeconfig
    /// for agora and kubectl. Stopping leaves everything in DATA_DIR: `agora up` on it again continues. Each part
    /// logs to DATA_DIR/logs. For a real cluster run the parts separately (`agora apiserver`, `agora controllers`,
    /// `agora agent`), against etcd.
    Up {
        /// Where the cluster keeps its state (default: ~/.agora).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The apiserver's address.
        #[arg(long, default_value = "127.0.0.1:5050")]
        listen: std::net::SocketAddr,
        /// The agent's address (task logs, health).
        #[arg(long, default_value = "127.0.0.1:5051")]
        agent_listen: std::net::SocketAddr,
        /// What the agent offers, e.g. `cpus:2;mem:2048;disk:10000;ports:[31000-32000]` (default: this machine).
        #[arg(long, default_value = "")]
        agent_resources: String,
        /// Run no agent (the apiserver and the controllers only).
        #[arg(long)]
        no_agent: bool,
        /// Apply these manifests (files or directories, repeatable) once the cluster is up, as `agora apply -f`.
        #[arg(long, value_name = "PATH")]
        apply: Vec<PathBuf>,
    },
    /// Apply manifests (server-side apply, field manager `agora`): each object created, configured or unchanged.
    ///
    /// Every document is validated first; if one is wrong, each problem is printed with its file, line and field
    /// and nothing is applied. Exit code 0 when everything was applied, 1 when something was not, 2 on an error.
    Apply {
        /// Manifest files or directories (`-` for standard input), repeatable.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// The namespace of objects that name none (default: the kubeconfig context's, else default).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Take the fields another manager set instead of failing with a conflict.
        #[arg(long)]
        force_conflicts: bool,
        /// Ask the server what would happen (dryRun=All); nothing changes.
        #[arg(long)]
        dry_run: bool,
        /// Then follow each App's deployment and each CronJob's first run (when due within --timeout) until done;
        /// exit 1 if one fails (a version whose tasks keep failing) or does not finish in time.
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
        /// How long --wait (and --prune's deletions) may take, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Delete the objects that match -l, were applied by agora, and are in none of the manifests (in the
        /// namespaces and kinds the manifests touch).
        #[arg(long, requires = "selector")]
        prune: bool,
        /// With --prune: which objects are this set's, e.g. `app.kubernetes.io/part-of=shop`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print objects: the kind's columns as the server prints them (the same kubectl shows), or YAML, JSON, names.
    ///
    /// KIND is a plural, singular or short name (apps, app, cj, ...). Exit code 0 also when nothing is found (it
    /// says so on stderr), 2 when the request fails.
    Get {
        /// apps, cronjobs, tasks, agents, frameworks, offers, ...
        kind: String,
        /// One object.
        name: Option<String>,
        /// The namespace (default: the kubeconfig context's, else default).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
        /// Only objects whose labels match, e.g. `tier=web,!canary`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// How to print.
        #[arg(short, long, value_enum, default_value = "table")]
        output: get::Format,
        /// After the list, print each change as it happens (until Ctrl-C).
        #[arg(short, long)]
        watch: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show one object in detail: its spec in short, its status and conditions, an App's deployment and why it
    /// waits, its tasks and versions, a CronJob's recent runs, and the recent Events about it.
    Describe {
        /// app, cronjob, task, agent, framework, ...
        kind: String,
        /// The object.
        name: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Delete objects: by name, every object of manifests (-f), or every one matching a label selector (-l).
    ///
    /// Exit code 1 when one was not found or --wait ran out.
    Delete {
        /// The kind (with NAME or -l).
        kind: Option<String>,
        /// The objects.
        names: Vec<String>,
        /// Delete the objects of these manifests.
        #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "selector"])]
        files: Vec<PathBuf>,
        /// Every object of KIND whose labels match.
        #[arg(short = 'l', long, conflicts_with = "names")]
        selector: Option<String>,
        /// Wait until each is gone (its finalizers done, an App's tasks killed).
        #[arg(long)]
        wait: bool,
        /// How long --wait may take, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[command(flatten)]
        scope: Scope,
    },
    /// Print a task's output (stdout, or --stderr); `app/NAME` or `cronjob/NAME` for its newest task's, or with
    /// --all every running task's, each line prefixed with the task's name.
    Logs {
        /// TASK, app/NAME or cronjob/NAME.
        target: String,
        /// Keep printing as the task writes.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
        /// The standard error stream.
        #[arg(long)]
        stderr: bool,
        /// With app/NAME or cronjob/NAME: every task not ended, interleaved.
        #[arg(long)]
        all: bool,
        /// Write the bytes as the task wrote them, also on a terminal (where control characters are otherwise
        /// shown escaped, so a task's output cannot drive the terminal).
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        scope: Scope,
    },
    /// Change how many instances an App runs (its scale subresource, as `kubectl scale`).
    Scale {
        /// `app`.
        #[arg(value_parser = ["app", "apps"])]
        kind: String,
        /// The App.
        name: String,
        /// How many instances.
        #[arg(long, alias = "replicas")]
        instances: i32,
        #[command(flatten)]
        wait: Waiting,
        #[command(flatten)]
        scope: Scope,
    },
    /// Go back to an App's previous version (or --to-version V, from `agora describe app NAME`'s Versions): its
    /// spec becomes that version's, instances kept, and marathon rolls it out like any change.
    Rollback {
        /// `app`.
        #[arg(value_parser = ["app", "apps"])]
        kind: String,
        /// The App.
        name: String,
        /// The version (or the start of it).
        #[arg(long)]
        to_version: Option<String>,
        #[command(flatten)]
        wait: Waiting,
        #[command(flatten)]
        scope: Scope,
    },
    /// Create an object from flags: `create secret docker-registry NAME` (registry credentials for
    /// `container.imagePullSecrets`, as kubectl's).
    Create {
        #[command(subcommand)]
        what: CreateCommand,
    },
    /// Print Events, oldest first: a namespace's, every namespace's (-A), or one object's (--for app/web).
    Events {
        /// Only those about this object: KIND/NAME.
        #[arg(long = "for", value_name = "KIND/NAME")]
        about: Option<String>,
        /// Then print each new one (until Ctrl-C).
        #[arg(short, long)]
        watch: bool,
        #[command(flatten)]
        scope: Scope,
    },
    /// Show what agents have allocated and what tasks use (CPU time, memory from their cgroups).
    Top {
        /// `agents` or `tasks`.
        #[arg(value_parser = ["agents", "agent", "tasks", "task"])]
        what: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Keep new tasks off an agent (running ones stay).
    Cordon(AgentName),
    /// Let new tasks onto a cordoned agent again.
    Uncordon(AgentName),
    /// Cordon an agent and kill its tasks, so their frameworks start them elsewhere; wait until none runs there.
    Drain {
        /// `agent`.
        #[arg(value_parser = ["agent", "agents"])]
        kind: String,
        /// The agent.
        name: String,
        /// How long to wait for its tasks to end, in seconds (exit 1 after).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print the kubeconfig `agora up` (or `agora apiserver`) wrote in DATA_DIR.
    Kubeconfig {
        /// The data dir (default: ~/.agora, as `agora up`'s).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run the API server on a store: the embedded one in --data-dir (default), or etcd with --store.
    ///
    /// Secure by default: HTTPS, and every request presents the cluster's bearer token. Without --tls-cert-file the
    /// apiserver makes a CA and a certificate in DATA_DIR/pki; without --token-file, a token in DATA_DIR/token; and
    /// it writes DATA_DIR/kubeconfig, which `agora`, the agents and kubectl use.
    Apiserver {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:5050")]
        listen: std::net::SocketAddr,
        /// The embedded store's directory, and where generated credentials and the kubeconfig are kept (also with
        /// --store).
        #[arg(long, default_value = "/var/lib/agora")]
        data_dir: PathBuf,
        /// An etcd cluster instead of the embedded store: etcd://host:port[,host:port...].
        #[arg(long)]
        store: Option<String>,
        /// The key prefix in the store, so several clusters can share one etcd.
        #[arg(long, default_value = agora_apiserver::store::DEFAULT_PREFIX)]
        store_prefix: String,
        /// A file holding the bearer token every request must present (default: DATA_DIR/token, made on first
        /// start).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A certificate (PEM, leaf first) to serve instead of the generated one.
        #[arg(long, requires = "tls_private_key_file")]
        tls_cert_file: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert-file.
        #[arg(long, requires = "tls_cert_file")]
        tls_private_key_file: Option<PathBuf>,
        /// Another DNS name or IP address the generated certificate covers (repeatable): the name clients use to
        /// reach this apiserver, when it is not the listen address or this host's name.
        #[arg(long = "tls-san", value_name = "NAME")]
        tls_sans: Vec<String>,
        /// DANGEROUS: serve plain HTTP with no authentication at all. Anything that can connect — any task on this
        /// machine, since tasks share the host's network — can then read and rewrite the whole cluster. Only for
        /// tests and throwaway experiments; refused on anything but a loopback address.
        #[arg(long, conflicts_with_all = ["token_file", "tls_cert_file", "tls_private_key_file", "tls_sans"])]
        insecure_allow_unauthenticated: bool,
    },
    /// Run an agent: register this machine's resources, heartbeat, and run the Tasks bound to it.
    ///
    /// With --hollow N, one process simulates N agents named <name-prefix><i> that run nothing (their Tasks are
    /// Running at once and finish after the seconds in the annotation hollow.agora.dev/run-seconds or the env
    /// HOLLOW_RUN_SECONDS, with the exit code in hollow.agora.dev/exit-code or HOLLOW_EXIT_CODE; their health
    /// checks pass, unless the task's env has HOLLOW_HEALTHY=false, or pass only HOLLOW_HEALTHY_AFTER seconds after
    /// they start): for scale tests.
    Agent(Box<AgentArgs>),
    /// Run the built-in controllers (the allocator, marathon and chronos), each leader-elected — the allocator on its
    /// Lease in agora-system, marathon and chronos on their framework leases — so several processes may run and one
    /// of each leads.
    Controllers(ControllersArgs),
    /// Manage the agent's local OCI image store.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
        /// The agent's work dir (the store is its images/ directory). Default: `agora up`'s (~/.agora/agent) when
        /// it exists, else `agora agent`'s (/var/lib/agora/agent).
        #[arg(long, global = true)]
        work_dir: Option<PathBuf>,
    },
    /// Internal: the process that owns one task's container for the agent (started by the agent, never by hand).
    #[command(hide = true)]
    ContainerShim {
        /// The task's directory.
        task_dir: PathBuf,
        /// The containers' state directory.
        state_dir: PathBuf,
    },
    /// Internal: runs a command inside a task's container (for COMMAND health checks) and exits with its status.
    #[command(hide = true)]
    ContainerExec {
        /// The containers' state directory.
        state_dir: PathBuf,
        /// The container (the task's uid).
        id: String,
        /// Where the tail of the command's output goes.
        output: PathBuf,
        /// Kill the command's process group after this many seconds (exit 124).
        #[arg(long)]
        timeout_seconds: Option<u64>,
        /// The command.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Check manifests without a server: parse strictly, apply the server's defaults, validate every rule.
    ///
    /// Errors name the file, line, column and field path. Exit status 1 when any manifest is invalid.
    Validate {
        /// Manifest files or directories (every *.yaml, *.yml and *.json below them); `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Print the defaulted objects instead of a summary.
        #[arg(short = 'o', long = "output")]
        output: Option<Output>,
    },
    /// Start one run of a CronJob now, whatever its schedule and even when it is disabled (`agora trigger cronjob
    /// NAME`). Each trigger id runs once; the run's Task is NAME-manual-ID-0.
    Trigger {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// What to trigger: `cronjob` (or `cronjobs`, `cj`).
        #[arg(value_parser = ["cronjob", "cronjobs", "cj"])]
        kind: String,
        /// The job.
        name: String,
        /// Its namespace (default: the kubeconfig context's, else default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The trigger's id (lowercase letters, digits, '-'; at most 20): the same id twice runs once. Made up when
        /// not given.
        #[arg(long)]
        id: Option<String>,
    },
    /// Print the dependency graph of a namespace's CronJobs as Graphviz DOT (`agora graph cronjobs | dot -Tsvg`),
    /// each job colored by its last result.
    Graph {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// What to draw: `cronjobs` (or `cronjob`, `cj`).
        #[arg(value_parser = ["cronjob", "cronjobs", "cj"])]
        kind: String,
        /// The namespace (default: the kubeconfig context's, else default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Back up and restore the store (docs/operations.md, "Backups and recovery").
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Print this client's version and, when a cluster is reachable (its kubeconfig, or --server), the server's.
    Version {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print a shell completion script: `source <(agora completion bash)`, or into your shell's completion dir.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// Whether this verb writes output for a person or a pipe (not a server, agent or shim, which run on).
    fn writes_for_a_reader(&self) -> bool {
        !matches!(
            self,
            Self::Up { .. }
                | Self::Apiserver { .. }
                | Self::Agent(_)
                | Self::Controllers(_)
                | Self::ContainerShim { .. }
                | Self::ContainerExec { .. }
        )
    }
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Save a consistent snapshot of the whole store while the apiserver runs (or of a stopped embedded store).
    ///
    /// With --data-dir: the embedded store in DIR, read directly when no apiserver holds it, otherwise through the
    /// apiserver that does (found by DIR/kubeconfig). Without: through the cluster the kubeconfig names; on etcd the
    /// file is etcd's own snapshot, for `etcdctl snapshot restore`.
    Snapshot {
        /// Where to write the snapshot (written whole, then renamed into place).
        out: PathBuf,
        /// The apiserver's data dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Make a new data dir from a snapshot of the embedded store; then start the apiserver with --data-dir DIR.
    ///
    /// The store comes back at the snapshot's revision; the new directory gets new credentials on first start
    /// (copy pki/ and token from the old directory to keep the kubeconfigs you handed out valid).
    Restore {
        /// The snapshot (from `agora store snapshot`).
        snapshot: PathBuf,
        /// The new data dir (must not hold a store).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum CreateCommand {
    /// A Secret.
    Secret {
        #[command(subcommand)]
        what: SecretCommand,
    },
}

#[derive(Subcommand, Debug)]
enum SecretCommand {
    /// Registry credentials (a DockerConfigJson Secret) for tasks to name in `container.imagePullSecrets`. The
    /// password is read from stdin (never a flag: flags are visible to every user of the machine in ps).
    DockerRegistry {
        /// The Secret's name.
        name: String,
        /// The registry, HOST[:PORT] (docker.io for Docker Hub).
        #[arg(long)]
        docker_server: String,
        /// The user name.
        #[arg(long)]
        docker_username: String,
        /// Read the password from stdin (required: the password is never taken from a flag).
        #[arg(long = "password-stdin", required = true)]
        password_stdin: bool,
        #[command(flatten)]
        scope: Scope,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Import the images of an OCI image layout tar (`skopeo copy docker://busybox oci-archive:busybox.tar`, or
    /// `docker save`).
    Import {
        /// The tar file.
        file: PathBuf,
        /// Name the image NAME[:TAG] (needed when the file names none).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Build a one-layer image from a root filesystem directory.
    Build {
        /// The directory to become the image's root filesystem.
        #[arg(long)]
        rootfs: PathBuf,
        /// The image's name, NAME[:TAG] (the tag defaults to latest).
        #[arg(long)]
        tag: String,
    },
    /// Pull an image from a registry into the store (what an agent does for a task that names one).
    Pull {
        /// A Docker reference: [REGISTRY[:PORT]/]REPO[:TAG][@sha256:DIGEST].
        reference: String,
        #[command(flatten)]
        registries: RegistryArgs,
    },
    /// List the images.
    List,
    /// Remove images by name (an image goes with its last name, its layers with the last image that uses them). An
    /// image a task on this agent uses is refused.
    Rm {
        /// The names, as `agora image list` shows them.
        #[arg(required = true)]
        references: Vec<String>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Output {
    /// One JSON document per object.
    Json,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(parent) = cli.parent
        && let Err(e) = up::die_with_parent(parent)
    {
        eprintln!("error: {}", error_chain(&e));
        return ExitCode::from(2);
    }
    if let Err(e) = cli.before.apply_to(&mut cli.command) {
        eprintln!("error: {}", error_chain(&e));
        return ExitCode::from(2);
    }
    if cli.command.writes_for_a_reader() {
        // Output into a pipe that closes (`agora get tasks -o yaml | head -1`) ends the command quietly, as it ends
        // any Unix tool, instead of a panic on the failed write. The servers keep Rust's default: a peer that goes
        // away is an error they handle, never a reason to die.
        sigpipe::reset();
    }
    let result = match cli.command {
        Command::Apiserver {
            listen,
            data_dir,
            store,
            store_prefix,
            token_file,
            tls_cert_file,
            tls_private_key_file,
            tls_sans,
            insecure_allow_unauthenticated,
        } => {
            let security = if insecure_allow_unauthenticated {
                agora_apiserver::server::Security::InsecureUnauthenticated
            } else {
                agora_apiserver::server::Security::Secure(agora_apiserver::server::SecureConfig {
                    data_dir: data_dir.clone(),
                    token_file,
                    tls_files: tls_cert_file.zip(tls_private_key_file),
                    names: tls_sans,
                })
            };
            apiserver(listen, data_dir, store, store_prefix, security)
        }
        Command::Up { data_dir, listen, agent_listen, agent_resources, no_agent, apply } => up::run(&up::UpConfig {
            default_dir: data_dir
                .as_ref()
                .is_none_or(|d| std::path::absolute(d).ok() == std::path::absolute(default_data_dir()).ok()),
            data_dir: data_dir.unwrap_or_else(default_data_dir),
            listen,
            agent_listen,
            agent_resources,
            no_agent,
            apply,
        }),
        Command::Kubeconfig { data_dir } => {
            let path = agora_client::kubeconfig_in(&data_dir.unwrap_or_else(default_data_dir));
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (has `agora up` run with this data dir?)", path.display()))
                .map(|text| {
                    print!("{text}");
                    true
                })
        }
        Command::Apply { files, namespace, force_conflicts, dry_run, wait, timeout, prune, selector, cluster } => {
            cluster.client().and_then(|client| {
                let apply = apply::Apply {
                    files,
                    namespace,
                    force_conflicts,
                    dry_run,
                    wait: wait.then(|| Duration::from_secs(timeout)),
                    prune: if prune { selector } else { None },
                    only_missing: false,
                };
                apply::run(&client, &apply)
            })
        }
        Command::Get { kind, name, namespace, all_namespaces, selector, output, watch, cluster } => {
            cluster.client().and_then(|client| {
                get::run(&client, &get::Get { kind, name, namespace, all_namespaces, selector, output, watch })
            })
        }
        Command::Describe { kind, name, scope } => {
            scope.ctx().and_then(|ctx| describe::run(&ctx.client, &kind, &name, &ctx.namespace, ctx.colour))
        }
        Command::Delete { kind, names, files, selector, wait, timeout, scope } => scope.ctx().and_then(|ctx| {
            let targets = delete_targets(kind.as_deref(), &names, &files, &ctx.namespace)?;
            let selector = match (kind, selector) {
                (Some(kind), Some(selector)) => Some((kind, selector)),
                (None, Some(_)) => anyhow::bail!("-l needs a KIND: agora delete apps -l tier=web"),
                _ => None,
            };
            anyhow::ensure!(
                !targets.is_empty() || selector.is_some(),
                "say what to delete: KIND NAME..., KIND -l SELECTOR, or -f FILE"
            );
            let wait = wait.then(|| Duration::from_secs(timeout));
            let selector = selector.as_ref().map(|(kind, selector)| (kind.as_str(), selector.as_str()));
            verbs::delete(&ctx, &targets, selector, wait)
        }),
        Command::Logs { target, follow, tail, stderr, all, raw, scope } => {
            scope.ctx().and_then(|ctx| verbs::logs(&ctx, &verbs::Logs { target, follow, tail, stderr, all, raw }))
        }
        Command::Scale { name, instances, wait, scope, .. } => {
            scope.ctx().and_then(|ctx| verbs::scale(&ctx, &name, instances, wait.limit()))
        }
        Command::Rollback { name, to_version, wait, scope, .. } => {
            scope.ctx().and_then(|ctx| verbs::rollback(&ctx, &name, to_version.as_deref(), wait.limit()))
        }
        Command::Create {
            what:
                CreateCommand::Secret {
                    what: SecretCommand::DockerRegistry { name, docker_server, docker_username, scope, .. },
                },
        } => {
            let mut password = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
                .context("reading the password from stdin")
                .and_then(|_| scope.ctx())
                .and_then(|ctx| {
                    let password = password.trim_end_matches(['\r', '\n']);
                    verbs::create_registry_secret(&ctx, &name, &docker_server, &docker_username, password)
                })
        }
        Command::Events { about, watch, scope } => {
            scope.ctx().and_then(|ctx| verbs::events(&ctx, scope.all_namespaces, about.as_deref(), watch))
        }
        Command::Top { what, scope } => {
            let what = if what.starts_with("agent") { "agents" } else { "tasks" };
            scope.ctx().and_then(|ctx| verbs::top(&ctx, what, scope.all_namespaces))
        }
        Command::Cordon(AgentName { name, cluster, .. }) => {
            cluster.ctx(None).and_then(|ctx| verbs::cordon(&ctx, &name, true))
        }
        Command::Uncordon(AgentName { name, cluster, .. }) => {
            cluster.ctx(None).and_then(|ctx| verbs::cordon(&ctx, &name, false))
        }
        Command::Drain { name, timeout, cluster, .. } => {
            cluster.ctx(None).and_then(|ctx| verbs::drain(&ctx, &name, Duration::from_secs(timeout)))
        }
        Command::Agent(args) => agent(*args),
        Command::Controllers(args) => controllers(args),
        Command::Image { command, work_dir } => image(command, &work_dir.unwrap_or_else(default_work_dir)),
        Command::ContainerExec { state_dir, id, output, timeout_seconds, args } => {
            let timeout = timeout_seconds.map(Duration::from_secs);
            let code = agora_agent::shim::exec(&state_dir, &id, &output, timeout, args);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Command::ContainerShim { task_dir, state_dir } => {
            return ExitCode::from(u8::try_from(agora_agent::shim::run(&task_dir, &state_dir)).unwrap_or(1));
        }
        Command::Validate { files, output } => validate(&files, output),
        Command::Store { command } => store(command),
        Command::Trigger { cluster, name, namespace, id, .. } => {
            cluster.ctx(namespace).and_then(|ctx| trigger(&ctx, &name, id.as_deref()))
        }
        Command::Graph { cluster, namespace, .. } => cluster.ctx(namespace).and_then(|ctx| graph(&ctx)),
        Command::Version { cluster } => version(&cluster),
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            use std::io::Write as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "agora", &mut script);
            std::io::stdout().write_all(&script).context("writing the completion script").map(|()| true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// `agora version`: the client's, then the server's when one answers (exit 1 when none does).
fn version(cluster: &ClusterArgs) -> Result<bool> {
    println!("client: agora {}", env!("CARGO_PKG_VERSION"));
    let server = cluster.config().and_then(|config| Ok(agora_client::Client::new(config.user_agent("agora"))?));
    let answer = server.and_then(|client| {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        let version = runtime.block_on(client.get_json("/version", "application/json"))?;
        Ok((client.server().to_owned(), version))
    });
    match answer {
        Ok((url, version)) => {
            let git = version.get("gitVersion").and_then(serde_json::Value::as_str).unwrap_or("unknown");
            println!("server: {git} at {url}");
            Ok(true)
        }
        Err(e) => {
            eprintln!("server: not reached: {}", error_chain(&e));
            Ok(false)
        }
    }
}

/// The agent work dir `agora image` uses unless told: `agora up`'s in the default data dir when there is one, else
/// `agora agent`'s default.
fn default_work_dir() -> PathBuf {
    let up = default_data_dir().join("agent");
    if up.is_dir() { up } else { PathBuf::from("/var/lib/agora/agent") }
}

/// `agora up`'s data dir unless told: `~/.agora` (or `.agora` here without a home).
fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".agora"), |home| PathBuf::from(home).join(".agora"))
}

/// `e` and its causes, each said once: many of Agora's errors already name their cause in their own message.
pub(crate) fn error_chain(e: &anyhow::Error) -> String {
    let mut message = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// `agora trigger cronjob NAME`.
fn trigger(ctx: &verbs::Ctx, name: &str, id: Option<&str>) -> Result<bool> {
    // An id from the time: readable, and unique enough for a person's triggers.
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let id = id.map_or_else(|| format!("{millis:x}"), str::to_owned);
    ctx.runtime.block_on(async {
        let jobs: agora_client::Api<agora_schemas::CronJob> =
            agora_client::Api::namespaced(ctx.client.clone(), &ctx.namespace);
        jobs.trigger(name, Some(&id)).await
    })?;
    println!("cronjob.agora/{name} triggered: run manual-{id} (task {name}-manual-{id}-0)");
    Ok(true)
}

/// `agora graph cronjobs`.
fn graph(ctx: &verbs::Ctx) -> Result<bool> {
    let namespace = &ctx.namespace;
    let jobs = ctx.runtime.block_on(async {
        let jobs: agora_client::Api<agora_schemas::CronJob> =
            agora_client::Api::namespaced(ctx.client.clone(), namespace);
        jobs.list(&agora_client::ListParams::default())
            .await
            .with_context(|| format!("listing cronjobs in {namespace}"))
    })?;
    let mut items = jobs.items;
    for job in &mut items {
        job.spec.apply_defaults();
    }
    let refs: Vec<&agora_schemas::CronJob> = items.iter().collect();
    print!("{}", agora_controllers::chronos::graph::dot(namespace, &refs));
    Ok(true)
}

/// What `agora delete` names, from KIND NAME... (in `namespace`) or from manifests (each object in its own namespace,
/// else `namespace`).
fn delete_targets(
    kind: Option<&str>,
    names: &[String],
    files: &[PathBuf],
    namespace: &str,
) -> Result<Vec<verbs::Target>> {
    let mut targets = Vec::new();
    if !names.is_empty() {
        let kind = kind.context("name the kind: agora delete app web")?;
        targets.extend(names.iter().map(|name| verbs::Target {
            namespace: namespace.to_owned(),
            kind: kind.to_owned(),
            name: name.clone(),
        }));
    }
    for file in expand(files)? {
        let (origin, source) = read(&file)?;
        let documents = agora_schemas::manifest::parse(&source, &origin).map_err(|e| anyhow::anyhow!("{e}"))?;
        for document in documents {
            let meta = document.object.metadata();
            let name =
                meta.name.clone().with_context(|| format!("{origin}:{}: the object has no name", document.line))?;
            targets.push(verbs::Target {
                namespace: meta.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
                kind: document.object.info().plural.to_owned(),
                name,
            });
        }
    }
    Ok(targets)
}

fn apiserver(
    listen: std::net::SocketAddr,
    data_dir: PathBuf,
    store: Option<String>,
    prefix: String,
    security: agora_apiserver::server::Security,
) -> Result<bool> {
    init_logging();
    let store = match store {
        Some(url) => agora_apiserver::store::StoreConfig::parse_etcd(&url).map_err(anyhow::Error::msg)?,
        None => agora_apiserver::store::StoreConfig::Embedded(data_dir),
    };
    let config = agora_apiserver::server::ServerConfig { listen, store, prefix, security };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(agora_apiserver::server::serve(config, shutdown_signal()))?;
    Ok(true)
}

/// How a client command finds the cluster: `--kubeconfig`, else `--server` (with `--token-file` and `--ca-file`),
/// else as kube-rs' `Config::infer` does (`KUBECONFIG`, `AGORA_SERVER`, the default data dir's kubeconfig).
#[derive(clap::Args, Debug, Clone)]
struct ClusterArgs {
    /// A kubeconfig naming the cluster (the apiserver writes DATA_DIR/kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    context: Option<String>,
    /// The apiserver's URL, instead of a kubeconfig.
    #[arg(long, env = "AGORA_SERVER", conflicts_with = "kubeconfig")]
    server: Option<String>,
    /// With --server: a file holding the cluster's bearer token.
    #[arg(long, env = "AGORA_TOKEN_FILE", requires = "server")]
    token_file: Option<PathBuf>,
    /// With --server: a file holding the CA certificate(s) that the apiserver's certificate chains to.
    #[arg(long, env = "AGORA_CA_FILE", requires = "server")]
    ca_file: Option<PathBuf>,
}

/// `--wait [--timeout S]` of scale and rollback.
#[derive(clap::Args, Debug)]
struct Waiting {
    /// Then follow the App until it runs healthy at its (new) version; exit 1 if it fails or does not get there
    /// within --timeout.
    #[arg(long)]
    wait: bool,
    /// How long --wait may take, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

impl Waiting {
    fn limit(&self) -> Option<Duration> {
        self.wait.then(|| Duration::from_secs(self.timeout))
    }
}

/// `agent NAME`, of cordon and uncordon.
#[derive(clap::Args, Debug)]
struct AgentName {
    /// `agent`.
    #[arg(value_parser = ["agent", "agents"])]
    kind: String,
    /// The agent.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// A client verb's cluster and namespace.
#[derive(clap::Args, Debug, Clone)]
struct Scope {
    /// The namespace (default: the kubeconfig context's, else default).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl Scope {
    fn ctx(&self) -> Result<verbs::Ctx> {
        self.cluster.ctx(self.namespace.clone())
    }
}

impl ClusterArgs {
    fn client(&self) -> Result<agora_client::Client> {
        Ok(agora_client::Client::new(self.config()?.user_agent("agora"))?)
    }

    fn ctx(&self, namespace: Option<String>) -> Result<verbs::Ctx> {
        verbs::Ctx::new(self.client()?, namespace)
    }

    fn config(&self) -> Result<agora_client::Config> {
        let context = self.context.as_deref();
        if let Some(path) = &self.kubeconfig {
            return Ok(agora_client::Config::from_kubeconfig(path, context)?);
        }
        let Some(server) = &self.server else {
            // `agora up`'s kubeconfig, when nothing else names a cluster.
            let named = std::env::var_os(agora_client::KUBECONFIG_ENV).is_some_and(|v| !v.is_empty())
                || std::env::var_os("AGORA_SERVER").is_some_and(|v| !v.is_empty());
            let up = agora_client::kubeconfig_in(&default_data_dir());
            if !named && up.is_file() {
                return Ok(agora_client::Config::from_kubeconfig(&up, context)?);
            }
            return Ok(agora_client::Config::infer_context(context)?);
        };
        anyhow::ensure!(context.is_none(), "--context names a kubeconfig's context; it does not go with --server");
        let mut config = agora_client::Config::new(server);
        if let Some(file) = &self.token_file {
            config = config.token_file(file)?;
        }
        if let Some(file) = &self.ca_file {
            config = config.ca_file(file)?;
        }
        Ok(config)
    }

    /// The credential files named, which tasks must not see.
    fn files(&self) -> Vec<PathBuf> {
        self.kubeconfig.iter().chain(&self.token_file).cloned().collect()
    }
}

/// `agora controllers`' flags.
#[derive(clap::Args, Debug)]
struct ControllersArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Which controllers to run (comma-separated): allocator, marathon, chronos.
    #[arg(long, value_delimiter = ',', default_value = "allocator,marathon,chronos")]
    only: Vec<String>,
    /// This process's name in the leader elections (default: hostname-pid).
    #[arg(long)]
    identity: Option<String>,
    /// Seconds an offer stands before it is rescinded.
    #[arg(long, default_value_t = 60.0)]
    offer_timeout_seconds: f64,
    /// Seconds an agent may be unreachable before its tasks are Gone.
    #[arg(long, default_value_t = 600.0)]
    agent_gone_after_seconds: f64,
    /// Seconds a decided offer that carries no filter is kept (to be looked at) before it is deleted.
    #[arg(long, default_value_t = 60.0)]
    keep_decided_seconds: f64,
    /// Seconds a leader's lease lasts without renewal.
    #[arg(long, default_value_t = 15.0)]
    lease_seconds: f64,
}

fn controllers(args: ControllersArgs) -> Result<bool> {
    use agora_controllers::runtime::leader::{LeaderElector, LeaseConfig};
    init_logging();
    const KNOWN: [&str; 3] = ["allocator", "marathon", "chronos"];
    for name in &args.only {
        anyhow::ensure!(
            KNOWN.contains(&name.as_str()),
            "--only: unknown controller {name:?} (known: {})",
            KNOWN.join(", ")
        );
    }
    let run_allocator = args.only.iter().any(|n| n == "allocator");
    let run_marathon = args.only.iter().any(|n| n == "marathon");
    let run_chronos = args.only.iter().any(|n| n == "chronos");
    let seconds = |value: f64, flag: &str| -> Result<std::time::Duration> {
        anyhow::ensure!(value.is_finite() && value > 0.0, "{flag} must be a positive number of seconds (got {value})");
        Ok(std::time::Duration::from_secs_f64(value))
    };
    let timing = agora_controllers::allocator::state::Timing {
        offer_timeout: seconds(args.offer_timeout_seconds, "--offer-timeout-seconds")?,
        agent_gone_after: seconds(args.agent_gone_after_seconds, "--agent-gone-after-seconds")?,
        keep_decided: seconds(args.keep_decided_seconds, "--keep-decided-seconds")?,
    };
    let lease = seconds(args.lease_seconds, "--lease-seconds")?;
    let lease = LeaseConfig { lease_duration: lease, renew_deadline: lease * 2 / 3, retry_period: lease * 2 / 15 };
    let client = agora_client::Client::new(args.cluster.config()?.user_agent("agora-controllers"))?;
    let identity =
        args.identity.unwrap_or_else(|| format!("{}-{}", agora_agent::resources::hostname(), std::process::id()));
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let leases: agora_client::Api<agora_schemas::Lease> =
            agora_client::Api::namespaced(client.clone(), "agora-system");
        let config = agora_controllers::allocator::controller::Config {
            timing,
            identity: identity.clone(),
            ..Default::default()
        };
        // One signal stops both the election (a candidate returns; a leader releases its lease) and the work (the
        // elector waits for a leader's work to end before it releases).
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let signalled = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let allocator = async {
            if !run_allocator {
                return Ok(());
            }
            LeaderElector::new(leases, "agora-allocator", &identity)
                .config(lease)
                .shutdown_on(signalled(stopped.clone()))
                .run(|| {
                    tracing::info!(%identity, "leading the allocator");
                    agora_controllers::allocator::controller::run(
                        client.clone(),
                        config.clone(),
                        signalled(stopped.clone()),
                    )
                })
                .await
                .context("the allocator")
        };
        let marathon = async {
            if !run_marathon {
                return Ok(());
            }
            let config = agora_controllers::marathon::controller::Config {
                identity: identity.clone(),
                lease,
                ..Default::default()
            };
            agora_controllers::marathon::controller::run(client.clone(), config, signalled(stopped.clone()))
                .await
                .context("marathon")
        };
        let chronos = async {
            if !run_chronos {
                return Ok(());
            }
            let config = agora_controllers::chronos::controller::Config {
                identity: identity.clone(),
                lease,
                ..Default::default()
            };
            agora_controllers::chronos::controller::run(client.clone(), config, signalled(stopped.clone()))
                .await
                .context("chronos")
        };
        let (allocator, marathon, chronos) = tokio::join!(allocator, marathon, chronos);
        allocator.and(marathon).and(chronos)
    })?;
    Ok(true)
}

/// `agora agent`'s flags.
#[derive(clap::Args, Debug)]
struct AgentArgs {
    /// The cluster. Its bearer token is presented to the apiserver and required of every request to the agent's own
    /// endpoint, which then serves HTTPS (the apiserver presents the token when it proxies logs).
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The Agent object's name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// What to offer, in Mesos' format: "cpus:4;mem:8192;disk:20000;ports:[31000-32000]". Unnamed resources
    /// are the host's (cores, memory, the work dir's free disk, ports 31000-32000).
    #[arg(long, default_value = "")]
    resources: String,
    /// Attributes for placement constraints: "rack:a;zone:z1".
    #[arg(long, default_value = "")]
    attributes: String,
    /// Where sandboxes, images and the agent's state live.
    #[arg(long, default_value = "/var/lib/agora/agent")]
    work_dir: PathBuf,
    /// Where the agent serves task logs (the apiserver proxies tasks/{name}/log here). Anything but loopback
    /// requires --token-file.
    #[arg(long, default_value = "127.0.0.1:5051")]
    listen: std::net::SocketAddr,
    /// Seconds between readings of each running task's usage (CPU, memory) into its status.
    #[arg(long, default_value_t = 10.0)]
    usage_seconds: f64,
    /// Seconds a finished task's sandbox (with its logs) is kept before it is deleted.
    #[arg(long, default_value_t = 3600.0)]
    sandbox_retention_seconds: f64,
    /// Simulate this many agents that run nothing.
    #[arg(long)]
    hollow: Option<usize>,
    /// With --hollow: agents are named <prefix><i>.
    #[arg(long, default_value = "hollow-")]
    name_prefix: String,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5.0)]
    heartbeat_seconds: f64,
    /// Seconds a heartbeat holds before the agent counts as unreachable.
    #[arg(long, default_value_t = 15.0)]
    lease_seconds: f64,
    /// Let tasks run as root when their spec (or framework) asks for it. Without it, such a task fails with reason
    /// RootNotAllowed, and every task runs as an unprivileged user (its own, its image's, or uid 65532). A root task
    /// without an image can read every host file its host-root view shows.
    #[arg(long)]
    allow_root_tasks: bool,
    /// Hide this host path from tasks that run on the host's root file system (repeatable). The agent's work dir,
    /// its credentials and /var/lib/agora are always hidden.
    #[arg(long = "hide-path", value_name = "PATH")]
    hidden_paths: Vec<PathBuf>,
    /// A static init to run as each container's PID 1, forwarding signals to the task and reaping its orphans
    /// (default: Debian's /usr/bin/tini-static when installed). `--init none` runs the command itself as PID 1,
    /// where a command that ignores SIGTERM is only stopped by SIGKILL after its grace period.
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    #[command(flatten)]
    registries: RegistryArgs,
    /// The most the image store may hold (blobs and unpacked layers), e.g. 20G or 512M: past it, the least recently
    /// used images no task uses are removed. Default: no fixed bound (the high and low marks still apply).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    image_gc_budget: Option<u64>,
    /// When the work dir's file system is fuller than this (percent), images no task uses are removed, least
    /// recently used first, …
    #[arg(long, default_value_t = 85.0, value_name = "PERCENT")]
    image_gc_high_percent: f64,
    /// … until it is back at this.
    #[arg(long, default_value_t = 80.0, value_name = "PERCENT")]
    image_gc_low_percent: f64,
}

/// `20G`, `512M`, `64K` or bytes (binary units: G is 1024³).
fn parse_size(given: &str) -> Result<u64, String> {
    let (digits, unit) = given.split_at(given.find(|c: char| !c.is_ascii_digit()).unwrap_or(given.len()));
    let shift = match unit.trim_end_matches(['i', 'B']) {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("{given:?} is not a size: a number with K, M, G or T (e.g. 20G)")),
    };
    let number: u64 = digits.parse().map_err(|_| format!("{given:?} is not a size: a number with K, M, G or T"))?;
    number.checked_mul(1 << shift).ok_or_else(|| format!("{given:?} is too large"))
}

/// How images are pulled from registries (the agent's, and `agora image pull`'s).
#[derive(clap::Args, Debug)]
struct RegistryArgs {
    /// A registry (HOST:PORT) to reach over plain HTTP (repeatable). Loopback registries always are, unless given a
    /// CA; every other one over TLS.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// A CA certificate (PEM) to trust for one registry, besides the system's roots (repeatable).
    #[arg(long = "registry-ca", value_name = "HOST:PORT=FILE")]
    registry_cas: Vec<String>,
    /// A Docker config.json whose `auths` give registry credentials (never shown in tasks, events or logs).
    #[arg(long, value_name = "FILE")]
    registry_config: Option<PathBuf>,
}

impl RegistryArgs {
    /// The options, with each `--registry-ca HOST:PORT=FILE` checked.
    fn options(&self) -> Result<agora_agent::pull::RegistryOptions> {
        let ca_files = self
            .registry_cas
            .iter()
            .map(|given| {
                let (registry, file) = given
                    .split_once('=')
                    .with_context(|| format!("--registry-ca {given}: give it as HOST:PORT=FILE"))?;
                anyhow::ensure!(Path::new(file).is_file(), "--registry-ca {given}: no such file {file}");
                Ok((registry.to_owned(), PathBuf::from(file)))
            })
            .collect::<Result<_>>()?;
        Ok(agora_agent::pull::RegistryOptions {
            insecure: self.insecure_registries.clone(),
            ca_files,
            docker_config: self.registry_config.clone(),
            max_image_bytes: 0,
        })
    }
}

fn agent(mut args: AgentArgs) -> Result<bool> {
    init_logging();
    // Containers' bundles and root file systems are named by path in their OCI configs: they must not depend on the
    // directory the agent (or a shim) runs in.
    args.work_dir = std::path::absolute(&args.work_dir)
        .with_context(|| format!("resolving the work dir {}", args.work_dir.display()))?;
    let seconds = |value: f64, flag: &str| -> Result<std::time::Duration> {
        anyhow::ensure!(value.is_finite() && value > 0.0, "{flag} must be a positive number of seconds (got {value})");
        Ok(std::time::Duration::from_secs_f64(value))
    };
    let heartbeat = agora_agent::registration::HeartbeatConfig {
        interval: seconds(args.heartbeat_seconds, "--heartbeat-seconds")?,
        lease_duration: seconds(args.lease_seconds, "--lease-seconds")?,
    };
    anyhow::ensure!(
        heartbeat.lease_duration > heartbeat.interval,
        "--lease-seconds ({}) must be longer than --heartbeat-seconds ({}), or every agent looks lost between beats",
        args.lease_seconds,
        args.heartbeat_seconds
    );
    let given = agora_agent::resources::parse_resources(&args.resources)?;
    let attributes = agora_agent::resources::parse_attributes(&args.attributes)?;
    let resources = agora_agent::resources::detect(given, &args.work_dir)
        .with_context(|| format!("reading the host's resources (work dir {})", args.work_dir.display()))?;
    let config = args.cluster.config()?.user_agent("agora-agent");
    // One token for both directions: presented to the apiserver, required of the agent's own endpoint.
    let token = config.token.clone();
    let client = agora_client::Client::new(config)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // What a task on the host's root file system must not see: credentials, and the apiserver's default data dir.
    let mut hidden_paths = args.cluster.files();
    if let Some(paths) = std::env::var_os(agora_client::KUBECONFIG_ENV) {
        hidden_paths.extend(std::env::split_paths(&paths));
    }
    hidden_paths.push(PathBuf::from("/var/lib/agora"));
    hidden_paths.extend(args.hidden_paths.iter().cloned());
    let hidden_paths: Vec<PathBuf> = hidden_paths
        .into_iter()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .filter(|p| p != Path::new("/"))
        .collect();
    let Some(count) = args.hollow else {
        let config = agora_agent::runner::AgentConfig {
            name: args.name.unwrap_or_else(agora_agent::resources::hostname),
            work_dir: args.work_dir,
            resources,
            attributes,
            heartbeat,
            listen: args.listen,
            usage_every: seconds(args.usage_seconds, "--usage-seconds")?,
            sandbox_retention: seconds(args.sandbox_retention_seconds, "--sandbox-retention-seconds")?,
            token,
            shim: std::env::current_exe().context("finding the agora binary to run as the tasks' shim")?,
            allow_root_tasks: args.allow_root_tasks,
            hidden_paths,
            registries: args.registries.options()?,
            image_gc: {
                let (high, low) = (args.image_gc_high_percent, args.image_gc_low_percent);
                anyhow::ensure!(
                    (0.0..=100.0).contains(&low) && low <= high && high <= 100.0,
                    "--image-gc-low-percent {low} and --image-gc-high-percent {high}: need 0 <= low <= high <= 100"
                );
                agora_agent::image_gc::GcPolicy { budget: args.image_gc_budget, high_percent: high, low_percent: low }
            },
            init: match args.init {
                Some(path) if path.as_os_str() == "none" => None,
                Some(path) => {
                    anyhow::ensure!(path.is_file(), "--init {}: no such file", path.display());
                    Some(std::path::absolute(&path).unwrap_or(path))
                }
                None => {
                    let found = agora_agent::runner::default_init();
                    if found.is_none() {
                        tracing::warn!(
                            "no init for containers ({} is missing; Debian's tini package has it): a task whose \
                             command ignores SIGTERM as PID 1 stops only at its grace period's SIGKILL",
                            agora_agent::runner::DEFAULT_INIT
                        );
                    }
                    found
                }
            },
        };
        let result = runtime.block_on(agora_agent::runner::run(client, config, shutdown_signal()));
        // Work still blocked in a system call must not keep the agent from exiting.
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        result?;
        return Ok(true);
    };
    anyhow::ensure!(count > 0, "--hollow must be at least 1");
    let config =
        agora_agent::hollow::HollowConfig { count, name_prefix: args.name_prefix, resources, attributes, heartbeat };
    runtime.block_on(agora_agent::hollow::run(client, config, shutdown_signal()))?;
    Ok(true)
}

fn image(command: ImageCommand, work_dir: &Path) -> Result<bool> {
    let store = agora_agent::images::ImageStore::open(work_dir)?;
    let short = |digest: &str| digest.trim_start_matches("sha256:").chars().take(12).collect::<String>();
    match command {
        ImageCommand::Import { file, tag } => {
            let opened = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let size = opened.metadata().map(|m| m.len()).unwrap_or(0);
            // Bytes read of the tar, on a terminal.
            let bar = style::bytes(size, &format!("importing {}", file.display()));
            let imported = store.import_from(bar.wrap_read(opened), &file, tag.as_deref());
            bar.finish_and_clear();
            for image in imported? {
                println!("imported {} ({})", image.reference, short(&image.digest));
            }
        }
        ImageCommand::Pull { reference, registries } => {
            let puller = agora_agent::pull::Puller::new(store.clone(), registries.options()?);
            let _hold = store.hold()?; // the agent's collector leaves the pull's blobs alone
            let bar = style::bytes(0, &format!("pulling {reference}"));
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let pulled = runtime.block_on(puller.pull(&reference, &[], &|p: agora_agent::pull::Progress| {
                bar.set_length(p.total);
                bar.set_position(p.done);
            }));
            bar.finish_and_clear();
            let image = pulled?;
            println!("pulled {} ({}, {} bytes)", image.reference, short(&image.digest), image.size);
        }
        ImageCommand::Build { rootfs, tag } => {
            let image = store.build(&rootfs, &tag)?;
            println!("built {} ({}, {} bytes)", image.reference, short(&image.digest), image.size);
        }
        ImageCommand::Rm { references } => {
            let in_use = agora_agent::image_gc::in_use(work_dir);
            let report = agora_agent::image_gc::remove(&store, &references, &in_use)?;
            for name in &report.removed {
                println!("removed {name}");
            }
            let freed = report.before.saturating_sub(report.after);
            println!("{} blobs deleted, {:.1} MiB freed", report.blobs_deleted, freed as f64 / 1_048_576.0);
        }
        ImageCommand::List => {
            let images = store.list()?;
            if images.is_empty() {
                eprintln!(
                    "No images in the store of {} (another agent's: --work-dir DIR; agora up's is DATA_DIR/agent).",
                    work_dir.display()
                );
                return Ok(true);
            }
            println!("{:<40} {:<14} {:>12}", "IMAGE", "DIGEST", "SIZE");
            for image in images {
                println!("{:<40} {:<14} {:>12}", image.reference, short(&image.digest), image.size);
            }
        }
    }
    Ok(true)
}

fn store(command: StoreCommand) -> Result<bool> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match command {
        StoreCommand::Snapshot { out, data_dir, cluster } => runtime.block_on(async {
            let mut through = None;
            if let Some(dir) = &data_dir {
                use agora_apiserver::store::{EmbeddedConfig, EmbeddedStore, Store};
                match EmbeddedStore::open(EmbeddedConfig::new(dir)).await {
                    Ok(store) => {
                        let revision = store.snapshot(&out).await?;
                        store.close().await?;
                        println!("snapshot of revision {revision} written to {}", out.display());
                        return Ok(true);
                    }
                    // Held by a running apiserver: ask it.
                    Err(e) if e.to_string().contains("already open") => {
                        through = Some(agora_client::Config::from_kubeconfig(&agora_client::kubeconfig_in(dir), None)?);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let config = match through {
                Some(config) => config,
                None => cluster.config()?,
            };
            let client = agora_client::Client::new(config.user_agent("agora-store"))?;
            let revision = client.snapshot_to(&out).await?;
            println!("snapshot of revision {revision} written to {} (through {})", out.display(), client.server());
            Ok(true)
        }),
        StoreCommand::Restore { snapshot, data_dir } => runtime.block_on(async {
            let revision = agora_apiserver::store::restore(&snapshot, &data_dir).await?;
            println!(
                "restored revision {revision} into {}; start the apiserver with --data-dir {}",
                data_dir.display(),
                data_dir.display()
            );
            Ok(true)
        }),
    }
}

fn init_logging() {
    use std::io::IsTerminal as _;
    // Colour only for a person at a terminal: a log file (agora up's parts) or NO_COLOR gets plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AGORA_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

/// Validates every manifest; returns whether all were valid.
fn validate(inputs: &[PathBuf], output: Option<Output>) -> Result<bool> {
    let mut all_valid = true;
    for file in expand(inputs)? {
        let (origin, source) = read(&file)?;
        match agora_schemas::manifest::parse_and_validate(&source, &origin) {
            Ok(documents) => {
                for document in documents {
                    match output {
                        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&document.object.to_json())?),
                        None => println!(
                            "{origin}: {} {} is valid",
                            document.object.info().kind,
                            document.object.metadata().display_name()
                        ),
                    }
                }
            }
            Err(errors) => {
                all_valid = false;
                for error in errors {
                    eprintln!("{error}");
                }
            }
        }
    }
    Ok(all_valid)
}

pub(crate) fn read(file: &Path) -> Result<(String, String)> {
    if file.as_os_str() == "-" {
        let source = std::io::read_to_string(std::io::stdin()).context("reading standard input")?;
        return Ok(("-".to_owned(), source));
    }
    let source = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok((file.display().to_string(), source))
}

/// Files as given, and the manifests below each directory, in name order.
pub(crate) fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            collect(input, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Command, error_chain};

    #[test]
    fn the_command_line_is_consistent_and_parses_as_documented() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("agora").chain(args.iter().copied()));
        let Command::Apply { wait, timeout, prune, selector, .. } =
            parse(&["apply", "-f", "m/", "--wait", "--timeout", "60", "--prune", "-l", "set=a"]).unwrap().command
        else {
            panic!("not apply")
        };
        assert!(wait && prune && timeout == 60 && selector.as_deref() == Some("set=a"));
        assert!(parse(&["apply", "-f", "m/", "--prune"]).is_err(), "--prune needs -l");
        assert!(parse(&["apply", "-f", "m/", "--wait", "--dry-run"]).is_err(), "a dry run has nothing to wait for");
        let Command::Scale { instances, wait, .. } =
            parse(&["scale", "app", "web", "--replicas", "3", "--wait"]).unwrap().command
        else {
            panic!("not scale")
        };
        assert!(instances == 3 && wait.limit() == Some(std::time::Duration::from_secs(300)));
        assert!(parse(&["scale", "cronjob", "x", "--instances", "1"]).is_err(), "only apps scale");
        let Command::Logs { target, follow, tail, stderr, all, .. } =
            parse(&["logs", "app/web", "-f", "--tail", "5", "--stderr", "--all"]).unwrap().command
        else {
            panic!("not logs")
        };
        assert!(target == "app/web" && follow && tail == Some(5) && stderr && all);
        assert!(parse(&["get", "apps", "-n", "shop", "-A"]).is_err(), "-n and -A exclude each other");
        assert!(parse(&["get", "apps", "-o", "wide", "-w"]).is_ok());
        assert!(parse(&["drain", "agent", "a1", "--timeout", "30"]).is_ok());
        assert!(parse(&["cordon", "app", "a1"]).is_err(), "only agents are cordoned");
        assert!(parse(&["delete", "-f", "m/", "-l", "x=y"]).is_err(), "-f or -l, not both");
        assert!(parse(&["events", "--for", "app/web", "-w"]).is_ok());
        assert!(parse(&["top", "pods"]).is_err());
        assert!(parse(&["up", "--apply", "manifests", "--no-agent"]).is_ok());
    }

    #[test]
    fn cluster_options_go_before_the_verb_as_kubectl_takes_them() {
        let parse = |args: &[&str]| {
            let mut cli = Cli::try_parse_from(std::iter::once("agora").chain(args.iter().copied()))?;
            cli.before
                .apply_to(&mut cli.command)
                .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, e))?;
            Ok::<_, clap::Error>(cli.command)
        };
        let Command::Get { namespace, all_namespaces, cluster, .. } =
            parse(&["--kubeconfig", "k", "-n", "shop", "--context", "c", "get", "apps"]).unwrap()
        else {
            panic!("not get")
        };
        assert_eq!((namespace.as_deref(), all_namespaces), (Some("shop"), false));
        assert_eq!((cluster.kubeconfig.as_deref(), cluster.context.as_deref()), (Some("k".as_ref()), Some("c")));
        let Command::Top { scope, .. } = parse(&["-A", "top", "tasks"]).unwrap() else { panic!("not top") };
        assert!(scope.all_namespaces);
        // After the verb wins over before it.
        let Command::Describe { scope, .. } = parse(&["-n", "a", "describe", "app", "web", "-n", "b"]).unwrap() else {
            panic!("not describe")
        };
        assert_eq!(scope.namespace.as_deref(), Some("b"));
        let Command::Trigger { namespace, .. } = parse(&["-n", "etl", "trigger", "cronjob", "x"]).unwrap() else {
            panic!("not trigger")
        };
        assert_eq!(namespace.as_deref(), Some("etl"));
        assert!(parse(&["-A", "get", "apps", "-n", "x"]).unwrap_err().to_string().contains("exclude each other"));
        assert!(parse(&["-A", "apply", "-f", "m/"]).unwrap_err().to_string().contains("not an option of this verb"));
        assert!(parse(&["--kubeconfig", "k", "up"]).unwrap_err().to_string().contains("--kubeconfig is not an option"));
        assert!(parse(&["-n", "x", "drain", "agent", "a"]).unwrap_err().to_string().contains("no namespace"));
        assert!(parse(&["--server", "https://h:1", "--token-file", "t", "version"]).is_ok());
    }

    #[test]
    fn each_cause_is_said_once() {
        let e =
            anyhow::Error::new(std::io::Error::other("connection refused")).context("connecting: connection refused");
        assert_eq!(error_chain(&e), "connecting: connection refused");
        let e = anyhow::anyhow!("no such file").context("reading the token file /x");
        assert_eq!(error_chain(&e), "reading the token file /x: no such file");
    }
}
