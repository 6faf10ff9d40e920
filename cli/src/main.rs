//! The `agora` command: `apiserver` runs the API server; `agent` runs an agent (or `--hollow` simulated ones);
//! `image` manages the agent's image store; `validate` checks manifests locally, as the apiserver will admit them;
//! `controllers` runs the allocator, marathon and chronos; `up` runs all of them as one cluster on this machine,
//! and `kubeconfig` prints its kubeconfig; the client verbs (`apply`, `get`, `describe`, `delete`, `logs`, `scale`,
//! `rollback`, `trigger`, `events`, `top`, `cordon`/`uncordon`/`drain`, `graph`) talk to a cluster; `version`,
//! `completion`.
//!
//! `args` is the command line as clap parses it, `serve` wires the long-running commands, `files` reads manifest
//! files; the client verbs live in their own modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

mod apply;
mod args;
mod describe;
mod files;
mod get;
mod serve;
mod style;
mod token;
mod up;
mod verbs;
mod wait;

use args::*;
use files::{expand, read, validate};
use serve::{agent, apiserver, controllers};

/// mimalloc: the apiserver allocates many small JSON values from many threads, where glibc's allocator spent a third
/// of the CPU time of a create benchmark and held on to fragmented memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            audit_log,
            audit_log_max_size_mib,
            audit_log_max_files,
        } => {
            let audit = audit_log.map(|path| agora_apiserver::audit::AuditConfig {
                path,
                max_bytes: audit_log_max_size_mib * 1024 * 1024,
                max_files: audit_log_max_files,
            });
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
            let store = match store {
                Some(url) => agora_apiserver::store::StoreConfig::parse_etcd(&url).map_err(anyhow::Error::msg),
                None => Ok(agora_apiserver::store::StoreConfig::Embedded(data_dir)),
            };
            store.and_then(|store| {
                apiserver(agora_apiserver::server::ServerConfig {
                    listen,
                    store,
                    prefix: store_prefix,
                    security,
                    audit,
                })
            })
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
        Command::Token { what } => match what {
            TokenCommand::Create { name, ttl, groups, cluster } => {
                cluster.client().and_then(|client| token::create(&client, &name, &groups, ttl.as_deref()))
            }
            TokenCommand::List { cluster } => cluster.client().and_then(|client| token::list(&client)),
            TokenCommand::Revoke { name, cluster } => cluster.client().and_then(|client| token::revoke(&client, &name)),
        },
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
pub(crate) fn default_work_dir() -> PathBuf {
    let up = default_data_dir().join("agent");
    if up.is_dir() { up } else { PathBuf::from("/var/lib/agora/agent") }
}

/// `agora up`'s data dir unless told: `~/.agora` (or `.agora` here without a home).
pub(crate) fn default_data_dir() -> PathBuf {
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
                kind: match document.object.info() {
                    info if info.is_agoras() => info.plural.to_owned(),
                    info => info.qualified(),
                },
                name,
            });
        }
    }
    Ok(targets)
}

fn image(command: ImageCommand, work_dir: &Path) -> Result<bool> {
    let store = agora_agent::images::ImageStore::open(work_dir)?;
    let short = |digest: &str| digest.trim_start_matches("sha256:").chars().take(12).collect::<String>();
    match command {
        ImageCommand::Import { file, tag } => {
            let _hold = store.hold()?; // the agent's collector leaves the import's blobs alone until they are named
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
            let _hold = store.hold()?;
            let image = store.build(&rootfs, &tag)?;
            println!("built {} ({}, {} bytes)", image.reference, short(&image.digest), image.size);
        }
        ImageCommand::Rm { references } => {
            let report = agora_agent::image_gc::remove(&store, &references, work_dir)?;
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
