//! # agora-agent
//!
//! The node agent: it tells the cluster what its machine offers and that it is alive, and turns the Tasks bound to
//! it into processes. Run as `agora agent`.
//!
//! - [`resources`]: `--resources` / `--attributes` in Mesos' text format, and the host's cores, memory and disk.
//! - [`registration`]: the `Agent` object (server-side applied) and the heartbeat `Lease`.
//! - [`hollow`]: N simulated agents in one process, on a task runtime that runs nothing, for scale tests (kubemark's
//!   hollow nodes).
//! - [`images`]: the local OCI image store.
//! - [`pull`]: pulling images from registries into it (digests checked, downloads shared and resumed).
//! - [`image_gc`]: keeping the store within its budget, never collecting an image a task uses.
//! - [`container`]: containers through libcontainer, with a cgroup per task (the only module that mounts anything).
//! - [`cgroups`]: what the agent knows of cgroups: paths, the host's layout, usage, OOM and pids events, clean-up.
//! - [`admission`]: whether a task fits beside the ones the agent runs (whatever created it).
//! - [`disk`]: how much disk a task uses (its sandbox, `/tmp`, writable layer), against its limit.
//! - [`lifecycle`]: a task's life on an agent as pure functions (what next, how it ended).
//! - [`executor`]: runs Tasks by those decisions — every status write, admission, health checks, usage — over a
//!   [`executor::TaskRuntime`]; one executor for real and hollow agents, as kubemark runs the real kubelet.
//! - [`runner`]: the agent proper: containers as its task runtime, and the process around it.
//! - [`health`]: HTTP, TCP and COMMAND health checks with Marathon's grace and failure counting.
//! - [`logs`]: the agent's HTTP endpoint serving tasks' stdout and stderr (the apiserver proxies `tasks/{name}/log`).
//!
//! - [`shim`]: the per-task process that owns a container, so the agent can restart without touching it.
//! - [`metrics`]: the agent's `/metrics`, with each running task's usage.
//! - [`users`]: who a task runs as (unprivileged unless the agent allows root).
//!
//! docs/agent.md is the user's guide to it.

pub mod admission;
pub mod cgroups;
pub mod container;
pub mod disk;
pub mod executor;
pub mod health;
pub mod hollow;
pub mod image_gc;
pub mod images;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod pull;
pub mod registration;
pub mod resources;
pub mod runner;
pub mod shim;
pub mod users;
