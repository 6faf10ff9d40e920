//! [`finalizer()`]: lets a reconciler clean up before an object goes.
//!
//! An object the reconciler has seen gets the finalizer (a JSON patch guarded by a `test` of its resourceVersion, so
//! it never overwrites a concurrent change). While it lives, the reconciler gets [`Event::Apply`]. Once it is being
//! deleted (`deletionTimestamp` set; the finalizer holds it), the reconciler gets [`Event::Cleanup`]; when that
//! succeeds the finalizer is removed (guarded by a `test` that it is still at its index) and the server deletes the
//! object. A failed cleanup keeps the finalizer, and is retried with the controller's backoff.
//!
//! Cleanup runs once per deletion unless it fails, or removing the finalizer fails after it succeeded; so, like every
//! reconcile, it must be safe to repeat.

use std::future::Future;
use std::sync::Arc;

use agora_client::{Api, Patch, PatchParams};
use agora_schemas::Resource;
use serde_json::json;

use super::Action;

/// What the reconciler is asked to do.
#[derive(Debug)]
pub enum Event<K> {
    /// The object lives and carries the finalizer: reconcile it.
    Apply(Arc<K>),
    /// The object is being deleted: release what it holds.
    Cleanup(Arc<K>),
}

/// Why [`finalizer()`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::error::Error + 'static> {
    /// The reconciler's `Apply` failed.
    #[error("reconcile failed: {0}")]
    ApplyFailed(#[source] E),
    /// The reconciler's `Cleanup` failed; the finalizer stays.
    #[error("cleanup failed: {0}")]
    CleanupFailed(#[source] E),
    /// Adding the finalizer failed (a conflict means the object changed; the change brings a new reconcile).
    #[error("adding the finalizer failed: {0}")]
    AddFinalizer(#[source] agora_client::Error),
    /// Removing the finalizer failed.
    #[error("removing the finalizer failed: {0}")]
    RemoveFinalizer(#[source] agora_client::Error),
    /// The object has no name or resourceVersion (it did not come from the server).
    #[error("the object has no name or resourceVersion")]
    UnnamedObject,
}

/// Runs `reconcile` for `object` with the finalizer `name` (`example.agora.dev/cleanup`) managed around it.
///
/// ```no_run
/// use std::sync::Arc;
/// use agora_client::Api;
/// use agora_controllers::runtime::{Action, finalizer::{self, finalizer}};
/// use agora_schemas::App;
///
/// # #[derive(Debug, thiserror::Error)] #[error("x")] struct MyError;
/// async fn reconcile(app: Arc<App>, apps: Arc<Api<App>>) -> Result<Action, finalizer::Error<MyError>> {
///     let apps = apps.for_object(&app);
///     finalizer(&apps, "example.agora.dev/dns", app, |event| async move {
///         match event {
///             finalizer::Event::Apply(app) => Ok(Action::await_change()), // publish a DNS name
///             finalizer::Event::Cleanup(app) => Ok(Action::await_change()), // withdraw it
///         }
///     })
///     .await
/// }
/// ```
///
/// # Errors
/// The reconciler's error (wrapped), or a failed patch of the finalizer list.
pub async fn finalizer<K, F, Fut, E>(api: &Api<K>, name: &str, object: Arc<K>, reconcile: F) -> Result<Action, Error<E>>
where
    K: Resource,
    F: FnOnce(Event<K>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
    E: std::error::Error + 'static,
{
    let meta = object.metadata();
    let object_name = meta.name.clone().ok_or(Error::UnnamedObject)?;
    let position = meta.finalizers.iter().position(|f| f == name);
    let deleting = meta.deletion_timestamp.is_some();
    match (position, deleting) {
        (Some(_), false) => reconcile(Event::Apply(object)).await.map_err(Error::ApplyFailed),
        (Some(index), true) => {
            let action = reconcile(Event::Cleanup(object)).await.map_err(Error::CleanupFailed)?;
            let path = format!("/metadata/finalizers/{index}");
            let patch = json_patch(json!([
                { "op": "test", "path": path, "value": name },
                { "op": "remove", "path": path },
            ]));
            match api.patch(&object_name, &PatchParams::default(), &patch).await {
                Ok(_) => Ok(action),
                // Already gone: someone (another replica's removal) finished the deletion.
                Err(e) if e.is_not_found() => Ok(action),
                Err(e) => Err(Error::RemoveFinalizer(e)),
            }
        }
        (None, false) => {
            let resource_version = meta.resource_version.clone().ok_or(Error::UnnamedObject)?;
            let patch = if meta.finalizers.is_empty() {
                json_patch(json!([
                    { "op": "test", "path": "/metadata/resourceVersion", "value": resource_version },
                    { "op": "add", "path": "/metadata/finalizers", "value": [name] },
                ]))
            } else {
                json_patch(json!([
                    { "op": "test", "path": "/metadata/resourceVersion", "value": resource_version },
                    { "op": "add", "path": "/metadata/finalizers/-", "value": name },
                ]))
            };
            api.patch(&object_name, &PatchParams::default(), &patch).await.map_err(Error::AddFinalizer)?;
            // The patch is a change: it brings the next reconcile, which sees the finalizer.
            Ok(Action::await_change())
        }
        // Being deleted and never finalized by us (or already cleaned up): nothing to do.
        (None, true) => Ok(Action::await_change()),
    }
}

fn json_patch(operations: serde_json::Value) -> Patch<()> {
    // These operation lists are literals of the right shape.
    Patch::Json(serde_json::from_value(operations).unwrap_or_default())
}
