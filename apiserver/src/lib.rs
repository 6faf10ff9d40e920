//! # agora-apiserver
//!
//! The only component that touches the store. It owns:
//!
//! - [`store`] — the `Store` trait (etcd's v3 semantics: revisions, compare-and-swap transactions, paginated ranges
//!   pinned at a revision, watches with previous values, compaction) and its two backends: the embedded one (a
//!   single redb file, the default) and etcd.
//! - [`api`] — the Kubernetes-style REST API for every kind: get, list (label and field selectors, consistent
//!   pagination), create (`generateName`), replace with resourceVersion conflicts, merge and JSON patch, server-side
//!   apply with `managedFields`, delete with finalizers, the `/status` and `/scale` subresources, offer acceptance,
//!   watches from a shared cache; admission through [`agora_schemas::admit`]; errors as `Status` objects.
//! - [`discovery`] — `/version`, discovery (plain and aggregated), the core group's namespaces, `/openapi/v3`.
//! - [`gc`] — the garbage collector: dependents of deleted owners (Background, Foreground, Orphan propagation).
//! - [`metrics`] — Prometheus metrics: requests, latency, open watches, store latency.
//! - [`server`] — routes, bearer-token authentication, body limits; `agora apiserver`.
//! - [`ui`] — the dashboard at `/ui/`, embedded static modules that read the API like any client.

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod discovery;
pub mod gc;
pub mod kinds;
pub mod metrics;
pub mod server;
pub mod store;
pub mod ui;
