//! [`cache`]: a decoded in-memory cache of one kind — objects kept as `Arc`s, their managed fields dropped — for
//! controllers that read whole caches often (the allocator each round, a framework on every offer). The
//! [`reflector`](super::reflector) keeps compact JSON instead and decodes on each read: less memory, more CPU per
//! read. A (re)list is built off to the side and swapped in whole, as the reflector does.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use agora_client::Api;
use agora_schemas::Resource;
use futures::StreamExt;

use super::watcher;

/// What a cache's watch brought, told to its `seen` callback once the cache has applied it.
#[derive(Debug)]
pub enum Seen<'a, K> {
    /// An object of a (re)list in progress (not yet visible in the cache).
    Listing(&'a Arc<K>),
    /// A (re)list completed and is now the cache: anything may have changed.
    Listed,
    /// An object was created or changed: its new state, as cached.
    Applied(&'a Arc<K>),
    /// An object was deleted: its last state.
    Deleted(&'a K),
}

/// Reads a cache. Cheap to clone; every clone sees the same objects.
pub struct Cache<K> {
    objects: Arc<RwLock<HashMap<String, Arc<K>>>>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self { objects: self.objects.clone(), ready: self.ready.clone() }
    }
}

impl<K: Resource> Cache<K> {
    /// A cache that holds `objects` and is ready, with no watch behind it (for tests of what reads a cache).
    #[cfg(test)]
    pub(crate) fn of(objects: Vec<K>) -> Self {
        let objects = objects.into_iter().map(|o| (key(&o), Arc::new(o))).collect();
        let (_, ready) = tokio::sync::watch::channel(true);
        Self { objects: Arc::new(RwLock::new(objects)), ready }
    }

    /// Puts `object` in, as a watch event would (for tests).
    #[cfg(test)]
    pub(crate) fn put(&self, object: K) {
        self.objects.write().unwrap_or_else(PoisonError::into_inner).insert(key(&object), Arc::new(object));
    }
}

impl<K> Cache<K> {
    /// Every object, in no particular order.
    #[must_use]
    pub fn state(&self) -> Vec<Arc<K>> {
        self.objects.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// The object whose [`key`] is `key` (`namespace/name`, or `name` for cluster-scoped kinds).
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.objects.read().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }

    /// How many objects are cached.
    #[must_use]
    pub fn len(&self) -> usize {
        self.objects.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has completed.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits for the first complete list; false if the watch ended first.
    pub async fn wait_until_ready(&self) -> bool {
        self.ready.clone().wait_for(|r| *r).await.is_ok()
    }
}

/// An object's key in a [`Cache`]: `namespace/name`, or `name` for cluster-scoped kinds.
#[must_use]
pub fn key<K: Resource>(object: &K) -> String {
    let meta = object.metadata();
    match &meta.namespace {
        Some(namespace) => format!("{namespace}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

/// Watches `api` (narrowed by `config`) into a cache, telling `seen` of every change once the cache has applied it.
/// The watch runs until the returned handle is aborted.
pub fn cache<K: Resource + Clone + Send + Sync + 'static>(
    api: Api<K>,
    config: watcher::Config,
    seen: impl FnMut(Seen<'_, K>) + Send + 'static,
) -> (Cache<K>, tokio::task::AbortHandle) {
    cache_trimmed(api, config, |_| {}, seen)
}

/// As [`cache`], with `trim` applied to each object before it is kept (to drop fields nothing reads: memory).
pub fn cache_trimmed<K: Resource + Clone + Send + Sync + 'static>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    mut seen: impl FnMut(Seen<'_, K>) + Send + 'static,
) -> (Cache<K>, tokio::task::AbortHandle) {
    let objects: Arc<RwLock<HashMap<String, Arc<K>>>> = Arc::default();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let shared = objects.clone();
    let mut building: Option<HashMap<String, Arc<K>>> = None;
    let events = watcher::watcher(api, config);
    let handle = tokio::spawn(events.for_each(move |event| {
        let keep = |mut object: K| {
            object.metadata_mut().managed_fields.clear();
            trim(&mut object);
            (key(&object), Arc::new(object))
        };
        match event {
            Ok(watcher::Event::Init) => building = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(object)) => {
                let (name, object) = keep(object);
                seen(Seen::Listing(&object));
                building.get_or_insert_with(HashMap::new).insert(name, object);
            }
            Ok(watcher::Event::InitDone) => {
                *shared.write().unwrap_or_else(PoisonError::into_inner) = building.take().unwrap_or_default();
                ready_tx.send_replace(true);
                seen(Seen::Listed);
            }
            Ok(watcher::Event::Apply(object)) => {
                let (name, object) = keep(object);
                shared.write().unwrap_or_else(PoisonError::into_inner).insert(name, object.clone());
                seen(Seen::Applied(&object));
            }
            Ok(watcher::Event::Delete(object)) => {
                shared.write().unwrap_or_else(PoisonError::into_inner).remove(&key(&object));
                seen(Seen::Deleted(&object));
            }
            Err(e) => tracing::debug!(kind = K::KIND, error = %e, "cache watch"),
        }
        async {}
    }));
    (Cache { objects, ready }, handle.abort_handle())
}
