//! # agora-controllers
//!
//! The controller runtime every Agora controller is built on ([`runtime`]: watcher, reflector, `Controller`,
//! finalizers, leader election, event recorder), the [`allocator`] (Mesos' master: agents, offers, Dominant
//! Resource Fairness), the [`framework`] SDK frameworks are written with, [`marathon`] (Apps) and — as a later issue
//! adds it — chronos (CronJobs).
//!
//! `examples/` holds complete custom controllers; its README indexes them. docs/architecture.md shows where this crate sits.

pub mod allocator;
pub mod chronos;
pub mod framework;
pub mod marathon;
pub mod runtime;
