//! The command line, as clap parses it: every verb, its flags and their help text, and the options several verbs
//! share (`ClusterArgs` for finding the cluster, `Scope` for a namespace, `RegistryArgs` for pulls).
// The doc comments below are clap's help text (`[REGISTRY[:PORT]/]REPO[:TAG]`, `<name-prefix>-<i>`), not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::{default_data_dir, get, verbs};

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
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) before: Before,
    /// Internal: this process is a part of the `agora up` with this pid, and ends with it.
    #[arg(long, hide = true, value_name = "PID")]
    pub(crate) parent: Option<u32>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The cluster options a kubectl user gives before the verb (`agora -n shop get apps`, `agora --kubeconfig K -A get
/// tasks`); after it they mean the same. One given in both places is the one after the verb.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Cluster options (before or after the verb)")]
pub(crate) struct Before {
    /// A kubeconfig naming the cluster.
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub(crate) context: Option<String>,
    /// The apiserver's URL, instead of a kubeconfig.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub(crate) server: Option<String>,
    /// With --server: a file holding the cluster's bearer token.
    #[arg(long, requires = "server")]
    pub(crate) token_file: Option<PathBuf>,
    /// With --server: a file holding the CA certificate(s).
    #[arg(long, requires = "server")]
    pub(crate) ca_file: Option<PathBuf>,
    /// The namespace.
    #[arg(short, long)]
    pub(crate) namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub(crate) all_namespaces: bool,
}

impl Before {
    pub(crate) fn is_empty(&self) -> bool {
        self.cluster_given().is_none() && self.namespace.is_none() && !self.all_namespaces
    }

    /// The first cluster option given, for an error message.
    pub(crate) fn cluster_given(&self) -> Option<&'static str> {
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
    pub(crate) fn first(&self) -> Option<&'static str> {
        self.cluster_given()
            .or_else(|| self.namespace.is_some().then_some("--namespace"))
            .or_else(|| self.all_namespaces.then_some("--all-namespaces"))
    }

    /// `cluster` with what was given before the verb where it says nothing.
    pub(crate) fn cluster(&self, cluster: &mut ClusterArgs) {
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
    pub(crate) fn namespace(&self, namespace: &mut Option<String>, all: &mut bool) -> Result<()> {
        *all |= self.all_namespaces;
        if namespace.is_none() {
            namespace.clone_from(&self.namespace);
        }
        anyhow::ensure!(!(*all && namespace.is_some()), "-n/--namespace and -A/--all-namespaces exclude each other");
        Ok(())
    }

    /// Moves what was given before the verb into the verb's own options; refused where the verb takes none.
    pub(crate) fn apply_to(&self, command: &mut Command) -> Result<()> {
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
pub(crate) enum Command {
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
    /// Bearer tokens of principals: create one (printed once; the cluster keeps only its digest), list them, revoke
    /// a principal's (at once, on every apiserver; their open watches end).
    Token {
        #[command(subcommand)]
        what: TokenCommand,
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
        /// Record every write and every refused request, one JSON line each, in this file (rotated by size).
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
        /// Rotate the audit log when it passes this many MiB.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..), requires = "audit_log")]
        audit_log_max_size_mib: u64,
        /// How many rotated audit logs to keep.
        #[arg(long, default_value_t = 5, requires = "audit_log")]
        audit_log_max_files: usize,
    },
    /// Run an agent: register this machine's resources, heartbeat, and run the Tasks bound to it.
    ///
    /// With --hollow N, one process simulates N agents named <name-prefix><i> that run nothing, through the real
    /// agent's executor (their Tasks start at once and finish after the seconds in the annotation
    /// hollow.agora.dev/run-seconds or the env HOLLOW_RUN_SECONDS, with the exit code in hollow.agora.dev/exit-code
    /// or HOLLOW_EXIT_CODE; their health checks pass, unless the task's env has HOLLOW_HEALTHY=false, or answer only
    /// HOLLOW_HEALTHY_AFTER seconds after they start): for scale tests.
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
    pub(crate) fn writes_for_a_reader(&self) -> bool {
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
pub(crate) enum StoreCommand {
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
pub(crate) enum TokenCommand {
    /// Make a bearer token for principal NAME and print it: stdout has the token alone, so it can be captured
    /// (`agora token create alice --ttl 30d > alice.token`).
    Create {
        /// The principal (the user name requests with the token act as).
        name: String,
        /// How long it lasts: 30d, 12h, 1h30m, P90D (default: until revoked).
        #[arg(long)]
        ttl: Option<String>,
        /// A group the principal belongs to with this token (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// List the tokens: principal, groups, expiry — never a token or its digest.
    List {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Revoke every token of principal NAME.
    Revoke {
        /// The principal.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CreateCommand {
    /// A Secret.
    Secret {
        #[command(subcommand)]
        what: SecretCommand,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SecretCommand {
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
pub(crate) enum ImageCommand {
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
pub(crate) enum Output {
    /// One JSON document per object.
    Json,
}

/// How a client command finds the cluster: `--kubeconfig`, else `--server` (with `--token-file` and `--ca-file`),
/// else as kube-rs' `Config::infer` does (`KUBECONFIG`, `AGORA_SERVER`, the default data dir's kubeconfig).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    /// A kubeconfig naming the cluster (the apiserver writes DATA_DIR/kubeconfig).
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub(crate) context: Option<String>,
    /// The apiserver's URL, instead of a kubeconfig.
    #[arg(long, env = "AGORA_SERVER", conflicts_with = "kubeconfig")]
    pub(crate) server: Option<String>,
    /// With --server: a file holding the cluster's bearer token.
    #[arg(long, env = "AGORA_TOKEN_FILE", requires = "server")]
    pub(crate) token_file: Option<PathBuf>,
    /// With --server: a file holding the CA certificate(s) that the apiserver's certificate chains to.
    #[arg(long, env = "AGORA_CA_FILE", requires = "server")]
    pub(crate) ca_file: Option<PathBuf>,
}

/// `--wait [--timeout S]` of scale and rollback.
#[derive(clap::Args, Debug)]
pub(crate) struct Waiting {
    /// Then follow the App until it runs healthy at its (new) version; exit 1 if it fails or does not get there
    /// within --timeout.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait may take, in seconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout: u64,
}

impl Waiting {
    pub(crate) fn limit(&self) -> Option<Duration> {
        self.wait.then(|| Duration::from_secs(self.timeout))
    }
}

/// `agent NAME`, of cordon and uncordon.
#[derive(clap::Args, Debug)]
pub(crate) struct AgentName {
    /// `agent`.
    #[arg(value_parser = ["agent", "agents"])]
    pub(crate) kind: String,
    /// The agent.
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
}

/// A client verb's cluster and namespace.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Scope {
    /// The namespace (default: the kubeconfig context's, else default).
    #[arg(short, long)]
    pub(crate) namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub(crate) all_namespaces: bool,
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
}

impl Scope {
    pub(crate) fn ctx(&self) -> Result<verbs::Ctx> {
        self.cluster.ctx(self.namespace.clone())
    }
}

impl ClusterArgs {
    pub(crate) fn client(&self) -> Result<agora_client::Client> {
        Ok(agora_client::Client::new(self.config()?.user_agent("agora"))?)
    }

    pub(crate) fn ctx(&self, namespace: Option<String>) -> Result<verbs::Ctx> {
        verbs::Ctx::new(self.client()?, namespace)
    }

    pub(crate) fn config(&self) -> Result<agora_client::Config> {
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
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        self.kubeconfig.iter().chain(&self.token_file).cloned().collect()
    }
}

/// `agora controllers`' flags.
#[derive(clap::Args, Debug)]
pub(crate) struct ControllersArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// Which controllers to run (comma-separated): allocator, marathon, chronos.
    #[arg(long, value_delimiter = ',', default_value = "allocator,marathon,chronos")]
    pub(crate) only: Vec<String>,
    /// This process's name in the leader elections (default: hostname-pid).
    #[arg(long)]
    pub(crate) identity: Option<String>,
    /// Seconds an offer stands before it is rescinded.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) offer_timeout_seconds: f64,
    /// Seconds an agent may be unreachable before its tasks are Gone.
    #[arg(long, default_value_t = 600.0)]
    pub(crate) agent_gone_after_seconds: f64,
    /// Seconds a decided offer that carries no filter is kept (to be looked at) before it is deleted.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) keep_decided_seconds: f64,
    /// Seconds a leader's lease lasts without renewal.
    #[arg(long, default_value_t = 15.0)]
    pub(crate) lease_seconds: f64,
}

/// `agora agent`'s flags.
#[derive(clap::Args, Debug)]
pub(crate) struct AgentArgs {
    /// The cluster. Its bearer token is presented to the apiserver and required of every request to the agent's own
    /// endpoint, which then serves HTTPS (the apiserver presents the token when it proxies logs).
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// The Agent object's name (default: the hostname).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// What to offer, in Mesos' format: "cpus:4;mem:8192;disk:20000;ports:[31000-32000]". Unnamed resources
    /// are the host's (cores, memory, the work dir's free disk, ports 31000-32000).
    #[arg(long, default_value = "")]
    pub(crate) resources: String,
    /// Attributes for placement constraints: "rack:a;zone:z1".
    #[arg(long, default_value = "")]
    pub(crate) attributes: String,
    /// Where sandboxes, images and the agent's state live.
    #[arg(long, default_value = "/var/lib/agora/agent")]
    pub(crate) work_dir: PathBuf,
    /// Where the agent serves task logs (the apiserver proxies tasks/{name}/log here). Anything but loopback
    /// requires --token-file.
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub(crate) listen: std::net::SocketAddr,
    /// Seconds between readings of each running task's usage (CPU, memory) into its status.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) usage_seconds: f64,
    /// Seconds a finished task's sandbox (with its logs) is kept before it is deleted.
    #[arg(long, default_value_t = 3600.0)]
    pub(crate) sandbox_retention_seconds: f64,
    /// Simulate this many agents that run nothing.
    #[arg(long)]
    pub(crate) hollow: Option<usize>,
    /// With --hollow: agents are named <prefix><i>.
    #[arg(long, default_value = "hollow-")]
    pub(crate) name_prefix: String,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) heartbeat_seconds: f64,
    /// Seconds a heartbeat holds before the agent counts as unreachable.
    #[arg(long, default_value_t = 15.0)]
    pub(crate) lease_seconds: f64,
    /// Let tasks run as root when their spec (or framework) asks for it. Without it, such a task fails with reason
    /// RootNotAllowed, and every task runs as an unprivileged user (its own, its image's, or uid 65532). A root task
    /// without an image can read every host file its host-root view shows.
    #[arg(long)]
    pub(crate) allow_root_tasks: bool,
    /// Hide this host path from tasks that run on the host's root file system (repeatable). The agent's work dir,
    /// its credentials and /var/lib/agora are always hidden.
    #[arg(long = "hide-path", value_name = "PATH")]
    pub(crate) hidden_paths: Vec<PathBuf>,
    /// A static init to run as each container's PID 1, forwarding signals to the task and reaping its orphans
    /// (default: Debian's /usr/bin/tini-static when installed). `--init none` runs the command itself as PID 1,
    /// where a command that ignores SIGTERM is only stopped by SIGKILL after its grace period.
    #[arg(long, value_name = "PATH")]
    pub(crate) init: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) registries: RegistryArgs,
    /// The most the image store may hold (blobs and unpacked layers), e.g. 20G or 512M: past it, the least recently
    /// used images no task uses are removed. Default: no fixed bound (the high and low marks still apply).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) image_gc_budget: Option<u64>,
    /// When the work dir's file system is fuller than this (percent), images no task uses are removed, least
    /// recently used first, …
    #[arg(long, default_value_t = 85.0, value_name = "PERCENT")]
    pub(crate) image_gc_high_percent: f64,
    /// … until it is back at this.
    #[arg(long, default_value_t = 80.0, value_name = "PERCENT")]
    pub(crate) image_gc_low_percent: f64,
}

/// `20G`, `512M`, `64K` or bytes (binary units: G is 1024³).
pub(crate) fn parse_size(given: &str) -> Result<u64, String> {
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
pub(crate) struct RegistryArgs {
    /// A registry (HOST:PORT) to reach over plain HTTP (repeatable). Loopback registries always are, unless given a
    /// CA; every other one over TLS.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub(crate) insecure_registries: Vec<String>,
    /// A CA certificate (PEM) to trust for one registry, besides the system's roots (repeatable).
    #[arg(long = "registry-ca", value_name = "HOST:PORT=FILE")]
    pub(crate) registry_cas: Vec<String>,
    /// A Docker config.json whose `auths` give registry credentials (never shown in tasks, events or logs).
    #[arg(long, value_name = "FILE")]
    pub(crate) registry_config: Option<PathBuf>,
}

impl RegistryArgs {
    /// The options, with each `--registry-ca HOST:PORT=FILE` checked.
    pub(crate) fn options(&self) -> Result<agora_agent::pull::RegistryOptions> {
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
