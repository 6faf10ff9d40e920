//! The controller runtime: what every Agora controller — the built-in allocator, marathon and chronos, and the
//! frameworks users write — is made of. Modelled on kube-rs' `kube-runtime`.
//!
//! - [`watcher`]: list then watch one kind, forever, through restarts, 410s and errors.
//! - [`reflector`]: an in-memory [`Store`](reflector::Store) kept current by a watcher, as compact JSON;
//!   [`cache`]: the same, decoded, for controllers that read whole caches often.
//! - [`Controller`]: a work queue of objects to reconcile, fed by watches of the kind itself, the kinds it
//!   [`owns`](Controller::owns) and any it [`watches`](Controller::watches); it never reconciles one object twice at
//!   once, backs off per object on errors, and shuts down gracefully.
//! - [`finalizer`](finalizer::finalizer): run cleanup exactly when an object is being deleted, before it goes.
//! - [`leader`]: one active replica per controller, elected on a `Lease`.
//! - [`events`]: an [`events::Recorder`] writing `Event` objects that explain what a controller did.
//!
//! The runtime talks to the apiserver only through [`agora_client`]; it knows nothing of any particular kind's
//! meaning.

pub mod backoff;
pub mod cache;
pub mod controller;
pub mod events;
pub mod finalizer;
pub mod leader;
pub mod reflector;
pub mod watcher;

use std::fmt;

use agora_schemas::Resource;

pub use controller::{Action, Controller};

/// Which object: namespace (for namespaced kinds) and name. The kind is known from context (the store or controller
/// it belongs to).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectRef {
    /// `namespace/name` (or just `name` for cluster-scoped kinds).
    #[must_use]
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        Self { namespace: namespace.map(str::to_owned), name: name.to_owned() }
    }

    /// The reference to `object`.
    #[must_use]
    pub fn from_object<K: Resource>(object: &K) -> Self {
        let meta = object.metadata();
        Self { namespace: meta.namespace.clone(), name: meta.name.clone().unwrap_or_default() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Aborts a spawned task when dropped: a watch or helper that must not outlive the work that started it.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes on SIGINT or SIGTERM (never, if the signals cannot be watched).
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
