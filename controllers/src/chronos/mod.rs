//! Chronos: CronJobs run exactly once per scheduled instant — ISO 8601 schedules in a time zone, dependency chains,
//! retries, deadlines, concurrency policies, manual triggers — as one framework (`chronos`) on the
//! [`framework`](crate::framework) SDK, run by `agora controllers`.
//!
//! - [`plan`]: what one job does next, as a pure function (due, missed, skipped, retried, killed, counted, kept).
//! - [`graph`]: the namespace's dependency graph (cycles, DOT output).
//! - [`controller`]: the I/O — caches, a timer per job, the scheduler half (offers) and the companion.
//!
//! Exactly once: a run's Task is named `<job>-<instant>-<attempt>` (`<job>-manual-<id>-0` for a trigger) and is
//! created in the store transaction that accepts an offer, which fails if the name exists — so a second leader, a
//! restart or a retried request can never start an instant twice. `status.lastScheduleTime` carries the position
//! across the deletion of old runs: their Tasks are deleted only once the status that counted them is stored.

pub mod controller;
pub mod graph;
pub mod plan;

#[cfg(test)]
mod tests;
