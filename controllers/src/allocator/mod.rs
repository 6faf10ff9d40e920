//! The allocator: Mesos' master as a controller — it offers agents' free resources to frameworks by hierarchical
//! Dominant Resource Fairness.
//!
//! Its decisions are pure functions over a snapshot, separate from watches and writes (the shape of Mesos' `Sorter`
//! and of Nomad's scheduler, STYLE.md):
//!
//! - [`sorter`]: hierarchical DRF over clients (a framework in a role), weights and allocations, kept in order
//!   incrementally.
//! - [`round`]: one allocation round over a snapshot of agents, frameworks and roles — reservations, quota
//!   guarantees and limits, filters, suppression, the minimum offer.
//! - [`observed`]: the snapshot made from the observed objects, liveness and expiry (housekeeping), status figures and
//!   the next timer.
//!
//! [`controller`] is the I/O around them: reflectors, rounds on change, offer and status writes, Events.

pub mod controller;
pub mod observed;
pub mod round;
pub mod sorter;
