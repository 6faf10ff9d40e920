//! # agora-apiserver
//!
//! The only component that touches the store. It owns:
//!
//! - [`store`] — the `Store` trait (etcd's v3 semantics: revisions, compare-and-swap transactions, paginated ranges
//!   pinned at a revision, watches with previous values, compaction) and its two backends: the embedded one (a
//!   single redb file, the default) and etcd.
//! - (next) the Kubernetes-style REST and watch API over axum: admission with the defaults and validation of
//!   [`agora_schemas`], server-side apply, garbage collection by owner references, the offer `accept` transaction,
//!   the shared per-kind watch cache, discovery, `/openapi/v3` (from [`agora_schemas::schema::openapi_v3`]), health
//!   endpoints and metrics. Run as `agora apiserver`.

pub mod store;
