//! [`reflector`] and [`Store`]: an in-memory cache of one kind, kept current by a [`watcher`](super::watcher) stream.
//!
//! A [`Writer`] applies events; any number of [`Store`] handles read. A (re)list is built off to the side and swapped
//! in whole at `InitDone`, so readers never see half a list, and objects deleted while the watch was broken vanish.
//! The store is ready once the first list is complete; [`Store::wait_until_ready`] waits for that.
//!
//! Memory: the cache keeps each object as its compact JSON and decodes it when read. A typed object costs several
//! times its JSON size in memory (every `Option` field inline, a B-tree node per small map, managedFields as a tree
//! of maps: about 6× for an App, measured by the runtime benchmark), which for 100,000 objects is the difference
//! between 150 MiB and 900 MiB per cache. A read costs one decode (microseconds per object), so code that scans all
//! objects often should keep its own index from the events instead of calling [`Store::state`] in a loop.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock};

use agora_schemas::Resource;
use futures::{Stream, StreamExt};
use tokio::sync::watch;

use super::ObjectRef;
use super::watcher::Event;

/// Each object as its compact JSON.
type Map = HashMap<ObjectRef, Box<[u8]>>;

/// Reads the cache. Cheap to clone; every clone sees the same objects.
pub struct Store<K> {
    objects: Arc<RwLock<Map>>,
    ready: watch::Receiver<bool>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self { objects: self.objects.clone(), ready: self.ready.clone(), kind: PhantomData }
    }
}

impl<K: Resource> std::fmt::Debug for Store<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("len", &self.len()).field("ready", &self.is_ready()).finish()
    }
}

/// Applies watcher events to the cache its [`Store`]s read.
pub struct Writer<K> {
    objects: Arc<RwLock<Map>>,
    /// The list being built since `Init`, swapped in at `InitDone`.
    building: Option<Map>,
    ready: watch::Sender<bool>,
    kind: PhantomData<fn() -> K>,
}

/// A new, empty cache: the writer to feed it and a store to read it.
#[must_use]
pub fn store<K>() -> (Store<K>, Writer<K>) {
    let objects = Arc::new(RwLock::new(HashMap::new()));
    let (ready_tx, ready_rx) = watch::channel(false);
    let store = Store { objects: objects.clone(), ready: ready_rx, kind: PhantomData };
    (store, Writer { objects, building: None, ready: ready_tx, kind: PhantomData })
}

impl<K: Resource> Writer<K> {
    /// Applies one event.
    pub fn apply(&mut self, event: &Event<K>) {
        match event {
            Event::Init => self.building = Some(HashMap::new()),
            Event::InitApply(object) => {
                let building = self.building.get_or_insert_with(HashMap::new);
                building.insert(ObjectRef::from_object(object), encode(object));
            }
            Event::InitDone => {
                let fresh = self.building.take().unwrap_or_default();
                *self.objects.write().unwrap_or_else(PoisonError::into_inner) = fresh;
                self.ready.send_replace(true);
            }
            Event::Apply(object) => {
                let key = ObjectRef::from_object(object);
                let value = encode(object);
                let mut guard = self.objects.write().unwrap_or_else(PoisonError::into_inner);
                guard.insert(key, value);
            }
            Event::Delete(object) => {
                let key = ObjectRef::from_object(object);
                let mut guard = self.objects.write().unwrap_or_else(PoisonError::into_inner);
                guard.remove(&key);
            }
        }
    }

    /// A reader of this cache.
    #[must_use]
    pub fn as_reader(&self) -> Store<K> {
        Store { objects: self.objects.clone(), ready: self.ready.subscribe(), kind: PhantomData }
    }
}

/// `object` as compact JSON. Encoding plain data cannot fail; an empty entry would read as absent.
fn encode<K: Resource>(object: &K) -> Box<[u8]> {
    serde_json::to_vec(object).unwrap_or_default().into_boxed_slice()
}

impl<K: Resource> Store<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        self.objects.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn decode(bytes: &[u8]) -> Option<Arc<K>> {
        serde_json::from_slice(bytes).ok().map(Arc::new)
    }

    /// The cached object `key`.
    #[must_use]
    pub fn get(&self, key: &ObjectRef) -> Option<Arc<K>> {
        self.read().get(key).and_then(|bytes| Self::decode(bytes))
    }

    /// Whether `key` is cached (without decoding it).
    #[must_use]
    pub fn contains(&self, key: &ObjectRef) -> bool {
        self.read().contains_key(key)
    }

    /// The keys of every cached object (without decoding them).
    #[must_use]
    pub fn keys(&self) -> Vec<ObjectRef> {
        self.read().keys().cloned().collect()
    }

    /// Every cached object, in no particular order (each decoded).
    #[must_use]
    pub fn state(&self) -> Vec<Arc<K>> {
        self.read().values().filter_map(|bytes| Self::decode(bytes)).collect()
    }

    /// The first cached object `predicate` accepts.
    #[must_use]
    pub fn find(&self, predicate: impl Fn(&K) -> bool) -> Option<Arc<K>> {
        self.read().values().filter_map(|bytes| Self::decode(bytes)).find(|o| predicate(o))
    }

    /// Every cached object `predicate` accepts.
    #[must_use]
    pub fn filter(&self, predicate: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.read().values().filter_map(|bytes| Self::decode(bytes)).filter(|o| predicate(o)).collect()
    }

    /// How many objects are cached.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().len()
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

    /// Waits until the first list has completed; returns at once after that. Returns `false` if the writer was
    /// dropped before the store became ready.
    pub async fn wait_until_ready(&self) -> bool {
        let mut ready = self.ready.clone();
        ready.wait_for(|r| *r).await.is_ok()
    }
}

/// Passes `stream` through, applying each event to `writer` first: the cache is current when the event is seen.
///
/// ```no_run
/// # async fn run() -> agora_client::Result<()> {
/// use agora_client::{Api, Client};
/// use agora_controllers::runtime::{reflector, watcher};
/// use agora_schemas::App;
/// use futures::StreamExt;
///
/// let apps: Api<App> = Api::all(Client::try_default()?);
/// let (store, writer) = reflector::store();
/// tokio::spawn(reflector::reflector(writer, watcher::watcher(apps, watcher::Config::default())).for_each(|_| async {}));
/// store.wait_until_ready().await;
/// println!("{} apps", store.len());
/// # Ok(()) }
/// ```
pub fn reflector<K, S, E>(mut writer: Writer<K>, stream: S) -> impl Stream<Item = Result<Event<K>, E>>
where
    K: Resource,
    S: Stream<Item = Result<Event<K>, E>>,
{
    stream.map(move |event| {
        if let Ok(event) = &event {
            writer.apply(event);
        }
        event
    })
}

#[cfg(test)]
mod tests {
    use agora_schemas::{App, AppSpec, ObjectMeta};

    use super::*;

    fn app(name: &str, instances: i32) -> App {
        let spec = AppSpec { instances: Some(instances), ..AppSpec::default() };
        App::new(ObjectMeta::named(Some("default"), name), spec)
    }

    #[tokio::test]
    async fn a_relist_is_swapped_in_whole_and_drops_what_vanished() {
        let (store, mut writer) = store::<App>();
        assert!(!store.is_ready());
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(app("a", 1)));
        writer.apply(&Event::InitApply(app("b", 1)));
        assert!(store.is_empty(), "a list in progress is not visible");
        writer.apply(&Event::InitDone);
        assert!(store.wait_until_ready().await);
        assert_eq!(store.len(), 2);

        writer.apply(&Event::Apply(app("a", 3)));
        writer.apply(&Event::Delete(app("b", 1)));
        let a = store.get(&ObjectRef::new(Some("default"), "a")).unwrap();
        assert_eq!(a.spec.instances, Some(3));
        assert!(store.get(&ObjectRef::new(Some("default"), "b")).is_none());

        // A relist (after a 410) in which `a` is gone and `c` is new.
        let before = store.state();
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(app("c", 1)));
        assert_eq!(store.len(), 1, "readers keep the old cache until the list is complete");
        writer.apply(&Event::InitDone);
        assert_eq!(store.state().len(), 1);
        assert!(store.find(|o| o.metadata.name.as_deref() == Some("c")).is_some());
        assert_eq!(before.len(), 1, "objects taken earlier are unaffected");
    }
}
