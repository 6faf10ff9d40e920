//! The allocator: Mesos' master as a controller — it offers agents' free resources to frameworks by hierarchical
//! Dominant Resource Fairness.
//!
//! What is built so far is its pure core, separate from watches and writes (the shape of Mesos' `Sorter` and of
//! Nomad's scheduler, STYLE.md):
//!
//! - [`sorter`]: hierarchical DRF over clients (a framework in a role), weights and allocations.
//! - [`round`]: one allocation round over a snapshot of agents, frameworks and roles — reservations, quota
//!   guarantees and limits, filters, suppression, the minimum offer.
//!
//! The controller around them (reflectors over Agents, Frameworks, Roles, Offers and Tasks, offer writes, liveness,
//! housekeeping) comes next.

pub mod controller;
pub mod round;
pub mod sorter;
pub mod state;
