//! `app_health_label`: keeps the label `example.agora.dev/health` on every App in sync with the App's status.
//!
//! | status                                   | label      |
//! |------------------------------------------|------------|
//! | no status yet                            | `Unknown`  |
//! | `spec.instances` is 0                    | `Idle`     |
//! | healthy tasks ≥ wanted instances         | `Healthy`  |
//! | some tasks running, fewer healthy        | `Degraded` |
//! | nothing running                          | `Down`     |
//!
//! So `kubectl get apps -l example.agora.dev/health=Down` lists what needs attention. Every change of the label is
//! explained by an Event on the App. Several replicas may run: one leads (Lease `app-health-label`), the others wait
//! to take over. SIGTERM or SIGINT shuts it down gracefully and releases the lease.
//!
//! ```text
//! cargo run -p agora-controllers --example app_health_label -- --server http://127.0.0.1:5050
//! ```

use std::sync::Arc;
use std::time::Duration;

use agora_client::{Api, Client, Config, Patch, PatchParams};
use agora_controllers::runtime::events::{Record, Recorder, Reporter, reference};
use agora_controllers::runtime::leader::{LeaderElector, LeaseConfig};
use agora_controllers::runtime::{Action, Controller, watcher};
use agora_schemas::{App, Lease};
use clap::Parser;
use futures::StreamExt;
use serde_json::json;

/// The label this controller owns.
const LABEL: &str = "example.agora.dev/health";
/// The field manager its patches are recorded under.
const MANAGER: &str = "app-health-label";

#[derive(Parser, Debug)]
#[command(about = "Keeps the example.agora.dev/health label of every App in sync with its status.")]
struct Args {
    /// The kubeconfig the apiserver wrote (default: KUBECONFIG, else /var/lib/agora/kubeconfig).
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The apiserver's URL instead of a kubeconfig (`http://...` for one run with --insecure-allow-unauthenticated).
    #[arg(long, env = "AGORA_SERVER", conflicts_with = "kubeconfig")]
    server: Option<String>,
    /// With --server: a file holding the apiserver's bearer token.
    #[arg(long, env = "AGORA_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Only Apps in this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// This replica's name in the leader election (default: hostname-pid).
    #[arg(long)]
    identity: Option<String>,
    /// Where the election's Lease lives.
    #[arg(long, default_value = "default")]
    lease_namespace: String,
    /// Seconds a leader's lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
}

/// What reconcile needs.
struct Context {
    client: Client,
    recorder: Recorder,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Error(#[from] agora_client::Error);

/// The label an App's status calls for.
fn health(app: &App) -> &'static str {
    let Some(status) = &app.status else { return "Unknown" };
    let wanted = app.spec.instances();
    if wanted == 0 {
        "Idle"
    } else if status.tasks_healthy >= wanted {
        "Healthy"
    } else if status.tasks_running > 0 {
        "Degraded"
    } else {
        "Down"
    }
}

async fn reconcile(app: Arc<App>, ctx: Arc<Context>) -> Result<Action, Error> {
    let want = health(&app);
    let have = app.metadata.labels.get(LABEL).map(String::as_str);
    if have == Some(want) {
        return Ok(Action::await_change());
    }
    let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
    let name = app.metadata.name.as_deref().unwrap_or_default();
    let apps: Api<App> = Api::namespaced(ctx.client.clone(), namespace);
    // A merge patch guarded by the resourceVersion we decided on: if the App changed meanwhile, the change brings
    // another reconcile that decides again.
    let patch = Patch::Merge(json!({
        "metadata": { "labels": { LABEL: want }, "resourceVersion": app.metadata.resource_version }
    }));
    match apps.patch(name, &PatchParams::default().manager(MANAGER), &patch).await {
        Ok(_) => {}
        Err(e) if e.is_conflict() || e.is_not_found() => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    }
    let message = match have {
        Some(old) => format!("health changed from {old} to {want}"),
        None => format!("health is {want}"),
    };
    if let Err(e) = ctx.recorder.publish(&reference(&*app), Record::normal("HealthChanged", message)).await {
        tracing::warn!(app = %format!("{namespace}/{name}"), error = %e, "could not record an event");
    }
    tracing::info!(app = %format!("{namespace}/{name}"), health = want, "labelled");
    Ok(Action::await_change())
}

fn error_policy(app: Arc<App>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(app = %app.metadata.display_name(), %error, "reconcile failed; backing off");
    Action::requeue(Duration::from_secs(1))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AGORA_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = match (&args.kubeconfig, &args.server) {
        (Some(path), _) => Config::from_kubeconfig(path, None)?,
        (None, Some(server)) => Config::new(server),
        (None, None) => Config::infer()?,
    }
    .user_agent(MANAGER);
    if let Some(file) = &args.token_file {
        config = config.token_file(file)?;
    }
    let client = Client::new(config)?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let recorder = Recorder::new(client.clone(), Reporter::new(MANAGER, Some(&identity)));
    let ctx = Arc::new(Context { client: client.clone(), recorder });
    let apps: Api<App> = match &args.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    tracing::info!(%identity, server = %client.server(), "starting; waiting to lead");
    LeaderElector::new(leases, MANAGER, &identity)
        .config(LeaseConfig::with_duration(Duration::from_secs(args.lease_seconds)))
        .shutdown_on_signal()
        .run(|| {
            // Built afresh on every win: its caches fill before it reconciles anything.
            Controller::new(apps.clone(), watcher::Config::default())
                .shutdown_on_signal()
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|result| async move {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "reconcile error");
                    }
                })
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use agora_schemas::{AppSpec, AppStatus, ObjectMeta};

    use super::*;

    fn app(instances: i32, status: Option<(i32, i32)>) -> App {
        let mut app = App::new(
            ObjectMeta::named(Some("default"), "web"),
            AppSpec { instances: Some(instances), ..AppSpec::default() },
        );
        app.status = status.map(|(running, healthy)| AppStatus {
            tasks_running: running,
            tasks_healthy: healthy,
            ..AppStatus::default()
        });
        app
    }

    #[test]
    fn health_follows_the_status() {
        assert_eq!(health(&app(3, None)), "Unknown");
        assert_eq!(health(&app(0, Some((0, 0)))), "Idle");
        assert_eq!(health(&app(3, Some((3, 3)))), "Healthy");
        assert_eq!(health(&app(3, Some((3, 1)))), "Degraded");
        assert_eq!(health(&app(3, Some((0, 0)))), "Down");
    }
}
