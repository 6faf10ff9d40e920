//! An agent's presence in the cluster: its `Agent` object (what it offers, where it is) and its heartbeat — a
//! `Lease` named after it in the [`LEASE_NAMESPACE`] namespace, renewed every few seconds, that the allocator watches
//! to tell a live agent from a lost one.
//!
//! The spec is written with server-side apply (field manager [`FIELD_MANAGER`]), so an operator's own fields — say
//! `spec.unschedulable` — survive the agent's restarts; the status (hostname, address, version, the Ready condition)
//! through `/status`.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_client::{Api, Client, Patch, PatchParams, PostParams};
use agora_schemas::{Agent, Lease, LeaseSpec, ObjectMeta, Resources};
use jiff::Timestamp;
use serde_json::json;

pub use agora_schemas::names::AGENT_LEASE_NAMESPACE as LEASE_NAMESPACE;
/// The field manager the agent writes with.
pub const FIELD_MANAGER: &str = "agora-agent";

/// What an agent tells the cluster about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    /// The Agent object's name (unique in the cluster).
    pub name: String,
    /// What it offers.
    pub resources: Resources,
    /// Labels for placement constraints.
    pub attributes: BTreeMap<String, String>,
    /// The machine's hostname.
    pub hostname: String,
    /// The agent's own HTTP endpoint, when it serves one.
    pub address: Option<String>,
    /// The CA (PEM) of the endpoint's certificate, when it serves HTTPS.
    pub certificate_authority: Option<String>,
}

/// How often the heartbeat lease is renewed, and how long it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Time between renewals.
    pub interval: Duration,
    /// How long a renewal holds (`leaseDurationSeconds`).
    pub lease_duration: Duration,
}

impl Default for HeartbeatConfig {
    /// Every 5 s, holding 15 s.
    fn default() -> Self {
        Self { interval: Duration::from_secs(5), lease_duration: Duration::from_secs(15) }
    }
}

/// Creates or updates the Agent object and marks it Ready.
///
/// # Errors
/// The apiserver's refusal (an invalid resource amount is a 422 naming the field) or absence.
pub async fn register(client: &Client, registration: &Registration) -> agora_client::Result<Agent> {
    let agents: Api<Agent> = Api::all(client.clone());
    let intent = json!({
        "apiVersion": agora_schemas::API_VERSION,
        "kind": "Agent",
        "metadata": { "name": registration.name },
        "spec": { "resources": registration.resources, "attributes": registration.attributes },
    });
    // The agent is the authority on what its machine has: it takes these fields even if someone edited them.
    agents.patch(&registration.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&intent)).await?;
    let now = Timestamp::now();
    let status = json!({ "status": {
        "hostname": registration.hostname,
        "address": registration.address,
        "certificateAuthority": registration.certificate_authority,
        "version": env!("CARGO_PKG_VERSION"),
        "conditions": [{ "type": "Ready", "status": "True", "reason": "Registered",
                         "message": "the agent registered and is heartbeating", "lastTransitionTime": now }],
    }});
    agents.patch_status(&registration.name, &PatchParams::default().manager(FIELD_MANAGER), &Patch::Merge(status)).await
}

/// Renews `name`'s heartbeat lease once (creating it the first time).
///
/// # Errors
/// The apiserver's refusal or absence.
pub async fn renew(client: &Client, name: &str, config: HeartbeatConfig) -> agora_client::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = Timestamp::now();
    let seconds = i32::try_from(config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let patch = Patch::Merge(json!({ "spec": {
        "holderIdentity": name, "leaseDurationSeconds": seconds, "renewTime": now,
    }}));
    match leases.patch(name, &PatchParams::default().manager(FIELD_MANAGER), &patch).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            let spec = LeaseSpec {
                holder_identity: Some(name.to_owned()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now),
                renew_time: Some(now),
                lease_transitions: Some(0),
            };
            let lease = Lease::new(ObjectMeta::named(Some(LEASE_NAMESPACE), name), spec);
            match leases.create(&PostParams::default().manager(FIELD_MANAGER), &lease).await {
                Ok(_) => Ok(()),
                // Created meanwhile by another renewal of ours (a restart overlapping the old process).
                Err(e) if e.is_already_exists() => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Renews `name`'s lease every interval, forever; a failed renewal is logged and tried again a second later (the
/// lease holds for three intervals, so one failure costs nothing).
pub async fn heartbeat(client: Client, name: String, config: HeartbeatConfig) {
    loop {
        let next = match renew(&client, &name, config).await {
            Ok(()) => config.interval,
            Err(e) => {
                tracing::warn!(agent = %name, error = %e, "heartbeat failed; retrying");
                config.interval.min(Duration::from_secs(1))
            }
        };
        tokio::time::sleep(next).await;
    }
}
