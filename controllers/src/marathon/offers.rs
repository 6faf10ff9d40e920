//! Which offers marathon's pending launches go to, and what the tasks look like: pure functions over the SDK's
//! placement helpers (feasibility with [`Remaining::fits`], ranking with [`rank`]).
//!
//! Apps without constraints are placed first-fit over the offers (each offer packed while tasks fit, exhausted
//! offers dropped), which is linear in offers and launches; an app with constraints ranks the offers per task (so
//! `GROUP_BY` spreads and `CLUSTER` sticks). Every offer a task could not use is counted by reason for the app's
//! `status.offerRejections`.

use std::collections::BTreeMap;
use std::sync::Arc;

use agora_schemas::{
    APP_LABEL, APP_VERSION_LABEL, App, ObjectMeta, Offer, OwnerReference, Resource, TaskPort, TaskSpec, TaskTemplate,
};

use super::plan::OfferSummary;
use crate::framework::placement::{Demand, Remaining, Spread, rank};

/// An offer with less than this left is dropped from placement (Mesos' minimum offer).
const MIN_CPUS: f64 = 0.01;
/// As [`MIN_CPUS`], MiB.
const MIN_MEM: f64 = 32.0;
/// Misfits counted per app and placement before giving up on it for this batch of offers.
const MISFITS_PER_APP: usize = 1000;

/// Launches one app wants now.
#[derive(Clone, Debug)]
pub struct Need<'a> {
    /// The app (its spec with defaults applied).
    pub app: &'a App,
    /// The version to launch.
    pub version: String,
    /// How many tasks.
    pub count: usize,
    /// Its live tasks per value of each constraint field.
    pub spread: Spread,
}

/// One task placed.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    /// The index of the need.
    pub need: usize,
    /// The offer.
    pub offer: String,
    /// The host ports given.
    pub ports: Vec<u16>,
}

/// What an app's tasks need of an offer.
#[must_use]
pub fn demand(app: &App) -> Demand {
    let spec = &app.spec;
    let require = spec.require_ports();
    Demand {
        cpus: spec.cpus(),
        mem: spec.mem(),
        disk: spec.disk(),
        ports: spec.ports().iter().map(|p| if require { p.port() } else { 0 }).collect(),
        role: Some(spec.role()),
        constraints: spec.constraints.clone(),
    }
}

/// Places `needs` onto `offers`, in order; returns the placements and, per need, what the offers showed.
#[must_use]
pub fn place(offers: &[Arc<Offer>], needs: &[Need<'_>]) -> (Vec<Placed>, Vec<OfferSummary>) {
    let mut remaining: Vec<Remaining> = offers.iter().map(|o| Remaining::of(o)).collect();
    let largest = remaining
        .iter()
        .max_by(|a, b| a.cpus.total_cmp(&b.cpus).then(a.mem.total_cmp(&b.mem)))
        .map(|r| (r.cpus, r.mem, r.agent.clone()));
    let mut placed = Vec::new();
    let mut summaries = Vec::with_capacity(needs.len());
    for (index, need) in needs.iter().enumerate() {
        let demand = demand(need.app);
        let mut spread = need.spread.clone();
        let mut summary = OfferSummary { largest: largest.clone(), ..OfferSummary::default() };
        let mut misfits = 0;
        let mut start = 0;
        for _ in 0..need.count {
            let chosen = if demand.constraints.is_empty() {
                // First fit from where the last task of this app went: offers before it did not fit.
                let mut found = None;
                while start < remaining.len() && misfits < MISFITS_PER_APP {
                    match remaining[start].fits(&demand, &spread) {
                        Ok(ports) => {
                            found = Some((start, ports));
                            break;
                        }
                        Err(misfit) => {
                            misfits += 1;
                            *summary.rejections.entry(misfit.reason.as_str().to_owned()).or_default() += 1;
                            summary.last_misfit = Some(misfit.message);
                            start += 1;
                        }
                    }
                }
                found
            } else {
                let ranked = rank(&remaining, &demand, &spread);
                let mut found = None;
                for r in ranked {
                    match r.fits(&demand, &spread) {
                        Ok(ports) => {
                            found = remaining.iter().position(|x| x.offer == r.offer).map(|i| (i, ports));
                            break;
                        }
                        Err(misfit) => {
                            *summary.rejections.entry(misfit.reason.as_str().to_owned()).or_default() += 1;
                            summary.last_misfit = Some(misfit.message);
                        }
                    }
                }
                found
            };
            let Some((at, ports)) = chosen else { break };
            let target = &mut remaining[at];
            target.take(&demand, &ports);
            for constraint in &demand.constraints {
                if let Some(value) = target.fields.get(constraint.field()) {
                    *spread.entry(constraint.field().to_owned()).or_default().entry(value.clone()).or_default() += 1;
                }
            }
            placed.push(Placed { need: index, offer: target.offer.clone(), ports });
            if target.cpus < MIN_CPUS || target.mem < MIN_MEM {
                remaining.remove(at);
            }
        }
        summaries.push(summary);
    }
    (placed, summaries)
}

/// The task of `app` at `version` with these host ports: the app's command, container, resources, env, ports and
/// health checks, labelled with app and version, owned by the app (deleting the App deletes it).
#[must_use]
pub fn task_template(app: &App, version: &str, ports: &[u16]) -> TaskTemplate {
    let spec = &app.spec;
    let meta = &app.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let mut labels = BTreeMap::new();
    labels.insert(APP_LABEL.to_owned(), name.clone());
    labels.insert(APP_VERSION_LABEL.to_owned(), version.to_owned());
    let owner = OwnerReference {
        api_version: agora_schemas::API_VERSION.to_owned(),
        kind: App::KIND.to_owned(),
        name: name.clone(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let metadata = ObjectMeta {
        generate_name: Some(format!("{name}-{version}-")),
        namespace: meta.namespace.clone(),
        labels,
        owner_references: vec![owner],
        ..ObjectMeta::default()
    };
    let definitions = spec.ports();
    let ports = ports
        .iter()
        .zip(&definitions)
        .map(|(port, def)| TaskPort { port: *port, name: def.name.clone(), protocol: def.protocol })
        .collect();
    let task = TaskSpec {
        cmd: spec.cmd.clone(),
        args: spec.args.clone(),
        container: spec.container.clone(),
        cpus: spec.cpus(),
        mem: spec.mem(),
        disk: spec.disk(),
        ports,
        env: spec.env.clone(),
        health_checks: spec.health_checks.clone(),
        kill_grace_period_seconds: spec.task_kill_grace_period_seconds,
        role: Some(spec.role()),
        user: spec.user.clone(),
        limits: spec.limits.clone(),
        ..TaskSpec::default()
    };
    TaskTemplate { metadata, spec: task }
}
