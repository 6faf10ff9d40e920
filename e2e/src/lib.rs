//! # agora-e2e
//!
//! Will own the end-to-end tests: real `agora` processes on both stores (embedded and a real etcd started by the
//! tests), driven through the HTTP API, the `agora` CLI and the real `/usr/bin/kubectl`.
//!
//! Nothing is implemented yet: this crate exists so the workspace has its final shape.
