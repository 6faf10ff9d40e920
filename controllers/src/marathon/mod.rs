//! Marathon: Apps kept running — placed by constraints, health-checked, restarted with backoff, rolled out and
//! rolled back — as one framework (`marathon`) on the [`framework`](crate::framework) SDK, run by
//! `agora controllers`.
//!
//! - [`plan`]: the reconcile of one App as a pure function (instances, kills, backoff, the rolling upgrade, health,
//!   unreachable tasks, history, status and its explanations, Events).
//! - [`offers`]: which offers pending launches go to, and the Task each launch creates.
//! - [`controller`]: the I/O — caches, the scheduler half (offers) and the companion (everything else), versions.
//!
//! Versions: an App's version is a hash of its spec without `instances` ([`agora_schemas::AppSpec::version`]), so
//! scaling is not a restart. Each version is recorded as an `AppVersion` object owned by the App (the latest
//! [`controller::VERSIONS_KEPT`] are kept); re-applying an old spec — or `agora rollback` — goes back to it
//! through the same rolling upgrade.

pub mod controller;
pub mod offers;
pub mod plan;

#[cfg(test)]
mod tests;
