//! The allocator's I/O: reflectors over Agents, Frameworks, Offers, Tasks and the two kinds of lease, and a loop
//! that — when something that can matter changes, or a timer from [`next_wakeup`] fires — runs [`housekeeping`]
//! and one [`allocate`] round and writes what they decided. A burst of changes coalesces into one round; lease
//! renewals alone wake nothing (their lapses are timers).
//!
//! Offers the allocator created are counted as held until its Offer watch shows them, so a round never offers
//! resources a previous round offered a moment ago. Rescinds are guarded by the offer's resourceVersion: an
//! acceptance that got there first wins.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agora_client::{Api, Client, DeleteParams, Patch, PatchParams, PostParams};
use agora_schemas::cluster::OfferSpec;
use agora_schemas::{Agent, Framework, Lease, ObjectMeta, Offer, Resources, Task};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::json;
use tokio::sync::Notify;

use super::round::{OfferPlan, allocate};
use super::state::{Action, Observed, Timing, housekeeping, next_wakeup, observe};
use crate::runtime::reflector::{self, Store};
use crate::runtime::watcher;

/// The field manager of the allocator's writes.
pub const FIELD_MANAGER: &str = "agora-allocator";
/// Where frameworks renew the leases that say they are connected.
pub const FRAMEWORK_LEASE_NAMESPACE: &str = "agora-frameworks";
/// Where agents renew their heartbeat leases.
pub const AGENT_LEASE_NAMESPACE: &str = "agora-agents";

/// How the allocator runs.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Offer lifetimes, liveness timeouts.
    pub timing: Timing,
    /// How long a burst of changes is gathered into one round.
    pub coalesce: Duration,
    /// How many writes are in flight at once.
    pub concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { timing: Timing::default(), coalesce: Duration::from_millis(5), concurrency: 32 }
    }
}

struct Caches {
    agents: Store<Agent>,
    frameworks: Store<Framework>,
    offers: Store<Offer>,
    tasks: Store<Task>,
    agent_leases: Store<Lease>,
    framework_leases: Store<Lease>,
    /// The watch tasks, stopped when the allocator stops (or loses its leadership).
    watches: Vec<tokio::task::AbortHandle>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        self.watches.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// Watches `api` into a cache, waking `changed` on every change that can matter.
fn cache<K: agora_schemas::Resource + Clone + Send + Sync + 'static>(
    api: Api<K>,
    changed: Arc<Notify>,
    watches: &mut Vec<tokio::task::AbortHandle>,
) -> Store<K> {
    let (store, writer) = reflector::store();
    let events = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()));
    let handle = tokio::spawn(events.for_each(move |event| {
        let changed = changed.clone();
        async move {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::InitDone | watcher::Event::Delete(_)) => {
                    changed.notify_one();
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "allocator watch"),
            }
        }
    }));
    watches.push(handle.abort_handle());
    store
}

/// As [`cache`], for leases: a renewal of a lease that was fresh changes nothing (its lapse is a timer), so only a
/// new lease, a lapsed one renewed, or one deleted wakes the allocator.
fn lease_cache(api: Api<Lease>, changed: Arc<Notify>, watches: &mut Vec<tokio::task::AbortHandle>) -> Store<Lease> {
    let (store, writer) = reflector::store();
    let events = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()));
    let mut expiries: BTreeMap<String, Timestamp> = BTreeMap::new();
    let handle = tokio::spawn(events.for_each(move |event| {
        let wake = match &event {
            Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => {
                let name = lease.metadata.name.clone().unwrap_or_default();
                let previous = expiries.insert(name, super::state::lease_expiry(Some(lease)));
                matches!(event, Ok(watcher::Event::Apply(_))) && previous.is_none_or(|t| t <= Timestamp::now())
            }
            Ok(watcher::Event::Delete(lease)) => {
                expiries.remove(lease.metadata.name.as_deref().unwrap_or_default());
                true
            }
            Ok(watcher::Event::InitDone) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(error = %e, "allocator watch");
                false
            }
        };
        if wake {
            changed.notify_one();
        }
        async {}
    }));
    watches.push(handle.abort_handle());
    store
}

/// Allocates until `shutdown` completes. Call it only while leading (see `runtime::leader`).
pub async fn run(client: Client, config: Config, shutdown: impl Future<Output = ()>) {
    let changed = Arc::new(Notify::new());
    let mut watches = Vec::new();
    let caches = Caches {
        agents: cache(Api::all(client.clone()), changed.clone(), &mut watches),
        frameworks: cache(Api::all(client.clone()), changed.clone(), &mut watches),
        offers: cache(Api::all(client.clone()), changed.clone(), &mut watches),
        tasks: cache(Api::all(client.clone()), changed.clone(), &mut watches),
        agent_leases: lease_cache(
            Api::namespaced(client.clone(), AGENT_LEASE_NAMESPACE),
            changed.clone(),
            &mut watches,
        ),
        framework_leases: lease_cache(
            Api::namespaced(client.clone(), FRAMEWORK_LEASE_NAMESPACE),
            changed.clone(),
            &mut watches,
        ),
        watches: Vec::new(),
    };
    let mut caches = caches;
    caches.watches = watches;
    // A new leader acts only on complete caches.
    for ready in [
        caches.agents.wait_until_ready().await,
        caches.frameworks.wait_until_ready().await,
        caches.offers.wait_until_ready().await,
        caches.tasks.wait_until_ready().await,
        caches.agent_leases.wait_until_ready().await,
        caches.framework_leases.wait_until_ready().await,
    ] {
        if !ready {
            return;
        }
    }
    tracing::info!("allocator caches synced");
    let mut pending: BTreeMap<String, Offer> = BTreeMap::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let observed = observed(&caches, &mut pending);
        let now = Timestamp::now();
        apply(&client, &config, housekeeping(&observed, config.timing, now)).await;
        let snapshot = observe(&observed, &BTreeMap::new(), now);
        let mut order: Vec<usize> = (0..snapshot.agents.len()).collect();
        fastrand::shuffle(&mut order);
        let plans = allocate(&snapshot, &order, now);
        for offer in offer_all(&client, &config, &observed, plans, now).await {
            pending.insert(offer.metadata.name.clone().unwrap_or_default(), offer);
        }
        let wakeup = next_wakeup(&observed, config.timing, now)
            .map(|t| Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default());
        let timer = tokio::time::sleep(wakeup.unwrap_or(Duration::from_secs(3600)));
        tokio::select! {
            () = changed.notified() => {}
            () = timer => {}
            () = &mut shutdown => return,
        }
        // Gather the rest of a burst.
        tokio::time::sleep(config.coalesce).await;
    }
}

/// The caches' contents, with the offers this allocator created that its watch has not shown yet.
fn observed(caches: &Caches, pending: &mut BTreeMap<String, Offer>) -> Observed {
    let name = |lease: &Lease| lease.metadata.name.clone().unwrap_or_default();
    let mut offers: Vec<Offer> = caches.offers.state().iter().map(|o| (**o).clone()).collect();
    pending.retain(|name, _| !offers.iter().any(|o| o.metadata.name.as_deref() == Some(name.as_str())));
    offers.extend(pending.values().cloned());
    Observed {
        agents: caches.agents.state().iter().map(|a| (**a).clone()).collect(),
        frameworks: caches.frameworks.state().iter().map(|f| (**f).clone()).collect(),
        offers,
        tasks: caches.tasks.state().iter().map(|t| (**t).clone()).collect(),
        agent_leases: caches.agent_leases.state().iter().map(|l| (name(l), (**l).clone())).collect(),
        framework_leases: caches.framework_leases.state().iter().map(|l| (name(l), (**l).clone())).collect(),
    }
}

/// Creates the planned offers; returns those created.
async fn offer_all(
    client: &Client,
    config: &Config,
    observed: &Observed,
    plans: Vec<OfferPlan>,
    now: Timestamp,
) -> Vec<Offer> {
    let offers: Api<Offer> = Api::all(client.clone());
    let hostnames: BTreeMap<String, (Option<String>, BTreeMap<String, String>)> = observed
        .agents
        .iter()
        .map(|a| {
            let hostname = a.status.as_ref().and_then(|s| s.hostname.clone());
            (a.metadata.name.clone().unwrap_or_default(), (hostname, a.spec.attributes.clone()))
        })
        .collect();
    let expires = now + jiff::SignedDuration::try_from(config.timing.offer_timeout).unwrap_or_default();
    futures::stream::iter(plans)
        .map(|plan| {
            let offers = offers.clone();
            let (hostname, attributes) = hostnames.get(&plan.agent).cloned().unwrap_or_default();
            async move {
                let mut prefix: String = format!("{}-{}-", plan.agent, plan.framework).chars().take(40).collect();
                prefix = prefix.replace(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'), "-");
                let metadata = ObjectMeta { generate_name: Some(prefix.to_ascii_lowercase()), ..ObjectMeta::default() };
                let spec = OfferSpec {
                    framework: plan.framework.clone(),
                    agent: plan.agent.clone(),
                    hostname,
                    role: Some(plan.role.clone()),
                    resources: Resources {
                        cpus: round3(plan.resources.cpus),
                        mem: round3(plan.resources.mem),
                        disk: round3(plan.resources.disk),
                        ports: plan.ports.clone(),
                    },
                    attributes,
                    expires_at: Some(expires),
                };
                match offers.create(&PostParams::default().manager(FIELD_MANAGER), &Offer::new(metadata, spec)).await {
                    Ok(offer) => Some(offer),
                    Err(e) => {
                        tracing::warn!(agent = %plan.agent, framework = %plan.framework, error = %e, "offer not made");
                        None
                    }
                }
            }
        })
        .buffer_unordered(config.concurrency)
        .filter_map(|offer| async move { offer })
        .collect()
        .await
}

/// Offers carry amounts to a thousandth (DRF arithmetic leaves long fractions).
fn round3(value: f64) -> f64 {
    (value * 1000.0).floor() / 1000.0
}

/// Writes what housekeeping decided.
async fn apply(client: &Client, config: &Config, actions: Vec<Action>) {
    let params = PatchParams::default().manager(FIELD_MANAGER);
    futures::stream::iter(actions)
        .for_each_concurrent(config.concurrency, |action| {
            let (client, params) = (client.clone(), params.clone());
            async move {
                let now = Timestamp::now();
                let written = match &action {
                    Action::Rescind { offer, resource_version, reason, message } => {
                        let patch = json!({"metadata": {"resourceVersion": resource_version},
                            "status": {"phase": "Rescinded", "reason": reason, "message": message, "decidedAt": now}});
                        Api::<Offer>::all(client).patch_status(offer, &params, &Patch::Merge(patch)).await.map(drop)
                    }
                    Action::DeleteOffer { offer } => {
                        Api::<Offer>::all(client).delete(offer, &DeleteParams::default()).await.map(drop)
                    }
                    Action::AgentReady { agent, ready, reason, message } => {
                        let condition = json!({"type": "Ready", "status": if *ready { "True" } else { "False" },
                            "reason": reason, "message": message, "lastTransitionTime": now});
                        let patch = json!({"status": {"conditions": [condition]}});
                        Api::<Agent>::all(client).patch_status(agent, &params, &Patch::Merge(patch)).await.map(drop)
                    }
                    Action::TaskState { namespace, task, state, message } => {
                        let patch = json!({"status": {"state": state, "message": message}});
                        let tasks = Api::<Task>::namespaced(client, namespace);
                        tasks.patch_status(task, &params, &Patch::Merge(patch)).await.map(drop)
                    }
                    Action::KillTask { namespace, task, message } => {
                        tracing::info!(task = %format!("{namespace}/{task}"), %message, "killing");
                        let patch = json!({"spec": {"killRequested": true}});
                        Api::<Task>::namespaced(client, namespace)
                            .patch(task, &params, &Patch::Merge(patch))
                            .await
                            .map(drop)
                    }
                };
                match written {
                    Ok(()) => tracing::debug!(?action, "done"),
                    Err(e) if e.is_conflict() || e.is_not_found() => tracing::debug!(?action, error = %e, "overtaken"),
                    Err(e) => tracing::warn!(?action, error = %e, "not written; the next round tries again"),
                }
            }
        })
        .await;
}
