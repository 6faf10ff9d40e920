//! # agora-controllers
//!
//! Will own the controller runtime (watcher, reflector, work queue, `Controller`, finalizers, leader election,
//! event recorder, the framework SDK) and the built-in controllers: the allocator (agents, offers, Dominant
//! Resource Fairness), marathon (Apps) and chronos (CronJobs, with the ISO 8601 schedules of
//! [`agora_schemas::iso8601`]). `examples/` will hold complete custom frameworks.
//!
//! Nothing is implemented yet: this crate exists so the workspace has its final shape. See DESIGN.md §1.
