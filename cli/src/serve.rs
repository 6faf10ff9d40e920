//! The long-running commands, wired from their flags: `agora apiserver`, `agora controllers`, `agora agent` — with
//! the logging and the shutdown signal they share.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::args::{AgentArgs, ControllersArgs};

pub(crate) fn apiserver(config: agora_apiserver::server::ServerConfig) -> Result<bool> {
    init_logging();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(agora_apiserver::server::serve(config, shutdown_signal()))?;
    Ok(true)
}

pub(crate) fn controllers(args: ControllersArgs) -> Result<bool> {
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
    let timing = agora_controllers::allocator::observed::Timing {
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
            agora_client::Api::namespaced(client.clone(), agora_schemas::names::CONTROLLER_LEASE_NAMESPACE);
        let registration = agora_controllers::framework::Registration {
            identity: Some(identity.clone()),
            lease,
            ..Default::default()
        };
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
                registration: registration.clone(),
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
            agora_controllers::chronos::controller::run(
                client.clone(),
                registration.clone(),
                signalled(stopped.clone()),
            )
            .await
            .context("chronos")
        };
        let (allocator, marathon, chronos) = tokio::join!(allocator, marathon, chronos);
        allocator.and(marathon).and(chronos)
    })?;
    Ok(true)
}

pub(crate) fn agent(mut args: AgentArgs) -> Result<bool> {
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

pub(crate) fn init_logging() {
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
pub(crate) async fn shutdown_signal() {
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
