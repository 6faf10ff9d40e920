//! # agora-controllers
//!
//! The controller runtime every Agora controller is built on ([`runtime`]: watcher, reflector, `Controller`,
//! finalizers, leader election, event recorder), and — as later issues add them — the built-in controllers: the
//! allocator (agents, offers, Dominant Resource Fairness), marathon (Apps) and chronos (CronJobs).
//!
//! `examples/` holds complete custom controllers; its README indexes them. See DESIGN.md §1.

pub mod allocator;
pub mod runtime;
