//! # agora-agent
//!
//! Will own the node agent: registering its `Agent` object and renewing its heartbeat `Lease`, watching the Tasks
//! bound to it, the local OCI image store, running tasks as containers through youki's `libcontainer` with one
//! cgroup each, health checks, serving task logs, surviving its own restarts, and hollow mode (N simulated agents
//! in one process, for scale tests). Run as `agora agent`.
//!
//! Nothing is implemented yet: this crate exists so the workspace has its final shape. See DESIGN.md §5.
