//! Watches, served from a per-kind cache that every client shares: one store watch per kind, however many clients.
//!
//! The cache keeps a window of recent events (to resume a watch from a resourceVersion) and broadcasts new ones. Every
//! kind's cache starts with the apiserver. A client resuming from before the window is served from the store's own
//! history ([`WatchCache::history`]) until it reaches the window, then joins the cache; only a revision the store has
//! compacted gets `410 Expired` (the client lists again, as with Kubernetes). A client that
//! cannot keep up with the broadcast is cut off with an `ERROR` event instead of slowing the others or growing memory.
//! The feeder publishes an event to the window and the broadcast under one lock, so a client that takes the lock to
//! replay and subscribe misses nothing and sees nothing twice.
//!
//! A change needs the object's previous state (a DELETED event carries the last one; a watcher with a selector sees
//! an object leave or enter it). Where the store's previous values are expensive (etcd reads each back per event and
//! watcher), the feeder watches without them and keeps the kind's current objects itself, as Kubernetes' watch cache
//! does: listed at the revision the watch starts from, then kept up by the events.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use agora_schemas::meta::INITIAL_EVENTS_END_ANNOTATION;
use agora_schemas::{KindInfo, StatusReason};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::store::{KeyLayout, KeyValue, RangeRequest, Revision, SharedStore, StoreError, WatchEvent};

/// The current stored value of every key of a kind, for stores whose watches do not carry previous values cheaply.
type Objects = HashMap<String, (bytes::Bytes, Revision)>;

/// Events kept per kind for resuming watches…
const WINDOW: usize = 10_000;
/// …and the most memory they may take (a large object rewritten again and again would otherwise hold gigabytes).
const WINDOW_BYTES: usize = 32 * 1024 * 1024;
/// Events a client may fall behind the broadcast before it is cut off, unless configured otherwise.
pub const CLIENT_BACKLOG: usize = 4_096;
/// How often a watch that asked for bookmarks gets one.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// One change of an object, as a watch event. The object is kept as JSON (what watchers send on as it is) and decoded
/// only when a watcher with a label or field selector needs to look into it — once for all of them.
#[derive(Debug)]
pub struct Change {
    /// The revision of the change.
    pub revision: Revision,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object's namespace, read off its key (so watchers of one namespace need not decode the object).
    pub namespace: Option<String>,
    /// The object after the change (for DELETED, its last state), with `resourceVersion` set to `revision`, as JSON.
    encoded: Vec<u8>,
    /// The event as a JSON line (`{"type":..,"object":..}\n`), framed once for every watcher that sends it as is.
    framed: OnceLock<bytes::Bytes>,
    object: OnceLock<Value>,
    /// For MODIFIED, the stored object before the change.
    previous: Option<(bytes::Bytes, OnceLock<Option<Value>>)>,
}

impl Change {
    /// The object as JSON.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The event as a JSON line, as every watcher without a selector sends it.
    pub fn framed(&self) -> bytes::Bytes {
        self.framed.get_or_init(|| super::watch_frame(self.kind, &self.encoded, false)).clone()
    }

    /// The object.
    pub fn object(&self) -> &Value {
        self.object.get_or_init(|| serde_json::from_slice(&self.encoded).unwrap_or(Value::Null))
    }

    /// About the memory the change holds: the object, its framed event once made, and the previous object.
    fn bytes(&self) -> usize {
        2 * self.encoded.len() + self.previous.as_ref().map_or(0, |(raw, _)| raw.len())
    }

    /// The object before a MODIFIED change.
    pub fn previous(&self) -> Option<&Value> {
        let (raw, decoded) = self.previous.as_ref()?;
        decoded.get_or_init(|| serde_json::from_slice(raw).ok()).as_ref()
    }
}

/// A kind's current objects as the cache knows them.
struct Current {
    /// As the feeder has seen them (the previous values of its events).
    seen: Objects,
    /// This server's own writes the feeder has not seen yet, so that an update right after one (a controller
    /// writing the same object again) does not read the state before it and lose its compare-and-swap.
    written: Objects,
}

impl Current {
    fn new(seen: Objects) -> Self {
        Self { seen, written: Objects::new() }
    }

    /// The newer of what was seen and what was written.
    fn get(&self, key: &str) -> Option<&(bytes::Bytes, Revision)> {
        match (self.seen.get(key), self.written.get(key)) {
            (Some(seen), Some(written)) => Some(if written.1 > seen.1 { written } else { seen }),
            (seen, written) => seen.or(written),
        }
    }

    /// The feeder has seen `key` at `revision`: an own write at or before it is no longer needed.
    fn caught_up(&mut self, key: &str, revision: Revision) {
        if self.written.get(key).is_some_and(|(_, written)| *written <= revision) {
            self.written.remove(key);
        }
    }
}

/// What the broadcast carries.
#[derive(Debug, Clone)]
enum Signal {
    Change(Arc<Change>),
    /// The store moved to this revision without a change of this kind.
    Progress(Revision),
    /// The feeder restarted (the store compacted past it): every watch must end with 410.
    Reset,
}

/// The window and broadcast of one kind.
struct KindCache {
    window: RwLock<Window>,
    sender: broadcast::Sender<Signal>,
    /// The kind's current objects, where the cache keeps them (etcd): the read half of an update is answered from
    /// here, as Kubernetes' GuaranteedUpdate does, its compare-and-swap catching a stale one.
    objects: RwLock<Option<Current>>,
}

#[derive(Default)]
struct Window {
    /// Every change after `since` (up to `latest`) is in `events`.
    since: Revision,
    latest: Revision,
    events: VecDeque<Arc<Change>>,
    /// What `events` hold, in bytes.
    bytes: usize,
}

/// The watch caches of every kind, started on first use.
#[derive(Clone)]
pub struct WatchCache {
    store: SharedStore,
    keys: KeyLayout,
    backlog: usize,
    kinds: Arc<Mutex<HashMap<&'static str, Arc<KindCache>>>>,
}

/// A client's position: the replayed events, then a live receiver.
pub struct Subscription {
    /// Changes after the requested revision, already in the window.
    pub backlog: Vec<Arc<Change>>,
    receiver: broadcast::Receiver<Signal>,
    /// The revision the backlog reaches.
    pub revision: Revision,
}

/// What a subscription yields next.
pub enum Next {
    /// A change.
    Change(Arc<Change>),
    /// Progress to a revision (for bookmarks).
    Progress(Revision),
    /// The watch cannot go on; send this `Status` as an ERROR event.
    End(Box<agora_schemas::Status>),
}

impl Subscription {
    /// Waits for the next live signal.
    pub async fn next(&mut self) -> Next {
        match self.receiver.recv().await {
            Ok(Signal::Change(change)) => Next::Change(change),
            Ok(Signal::Progress(revision)) => Next::Progress(revision),
            Ok(Signal::Reset) | Err(broadcast::error::RecvError::Closed) => {
                Next::End(Box::new(agora_schemas::Status::failure(
                    StatusReason::Expired,
                    "the watch cache restarted; list again and watch from the new resourceVersion",
                )))
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => Next::End(Box::new(agora_schemas::Status::failure(
                StatusReason::Expired,
                format!(
                    "the client fell {missed} events behind and was cut off; list again and watch from the new resourceVersion"
                ),
            ))),
        }
    }
}

impl WatchCache {
    /// Caches over `store`, started lazily per kind; a client more than `backlog` events behind is cut off.
    #[must_use]
    pub fn new(store: SharedStore, keys: KeyLayout, backlog: usize) -> Self {
        Self { store, keys, backlog: backlog.max(1), kinds: Arc::default() }
    }

    /// Starts the cache of every kind in the background, so each holds the changes from now on before anyone asks.
    /// A cache that cannot start yet (the store is down) starts on its first use instead.
    pub fn start_all(&self) {
        for kind in agora_schemas::KINDS {
            let cache = self.clone();
            tokio::spawn(async move {
                if let Err(e) = cache.kind(kind).await {
                    tracing::warn!(kind = kind.plural, error = %e, "watch cache not started; it starts on first use");
                }
            });
        }
    }

    /// The store's changes of `kind` after `revision`, with previous values, straight from the store: for a watch
    /// resuming from before the cache's window, until it can join the cache.
    ///
    /// # Errors
    /// `Compacted` when the store no longer has `revision`.
    pub async fn history(&self, kind: &KindInfo, revision: Revision) -> Result<crate::store::WatchStream, StoreError> {
        self.store.watch(&self.keys.kind_prefix(kind.storage), revision + 1).await
    }

    /// The kind's key prefix.
    #[must_use]
    pub fn prefix(&self, kind: &KindInfo) -> String {
        self.keys.kind_prefix(kind.storage)
    }

    /// The stored value and modification revision of `key` (an object of `kind`) as the cache last saw it, when the
    /// cache keeps the kind's objects (etcd) and has this one: possibly stale, so only for a read followed by a
    /// compare-and-swap. `None`: read the store.
    #[must_use]
    pub fn cached(&self, kind: &KindInfo, key: &str) -> Option<KeyValue> {
        let cache = self.kinds.lock().unwrap_or_else(PoisonError::into_inner).get(kind.plural)?.clone();
        let current = cache.objects.read().unwrap_or_else(PoisonError::into_inner);
        let (value, mod_revision) = current.as_ref()?.get(key)?;
        Some(KeyValue {
            key: key.to_owned(),
            value: value.clone(),
            create_revision: 0,
            mod_revision: *mod_revision,
            version: 0,
        })
    }

    /// Records this server's write of `key` (an object of `kind`) at `revision` (`None`: deleted), for [`Self::cached`]
    /// to answer until the feeder sees it.
    pub fn wrote(&self, kind: &KindInfo, key: &str, value: Option<bytes::Bytes>, revision: Revision) {
        let Some(cache) = self.kinds.lock().unwrap_or_else(PoisonError::into_inner).get(kind.plural).cloned() else {
            return;
        };
        let mut current = cache.objects.write().unwrap_or_else(PoisonError::into_inner);
        let Some(current) = current.as_mut() else { return };
        if current.seen.get(key).is_some_and(|(_, seen)| *seen >= revision) {
            return; // the feeder is already past it
        }
        match value {
            Some(value) => {
                current.written.insert(key.to_owned(), (value, revision));
            }
            None => {
                current.written.remove(key);
            }
        }
    }

    /// Subscribes to changes of `kind` after `revision` (`None`: after the cache's latest).
    ///
    /// # Errors
    /// `Compacted` when `revision` is older than the window; a store error when the cache cannot start.
    pub async fn subscribe(
        &self,
        kind: &'static KindInfo,
        revision: Option<Revision>,
    ) -> Result<Subscription, StoreError> {
        let cache = self.kind(kind).await?;
        let window = cache.window.read().unwrap_or_else(PoisonError::into_inner);
        let from = revision.unwrap_or(window.latest);
        if from < window.since {
            return Err(StoreError::Compacted { requested: from, compacted: window.since });
        }
        let receiver = cache.sender.subscribe();
        let backlog: Vec<Arc<Change>> = window.events.iter().filter(|c| c.revision > from).cloned().collect();
        Ok(Subscription { backlog, receiver, revision: window.latest.max(from) })
    }

    async fn kind(&self, kind: &'static KindInfo) -> Result<Arc<KindCache>, StoreError> {
        if let Some(cache) = self.kinds.lock().unwrap_or_else(PoisonError::into_inner).get(kind.plural) {
            return Ok(cache.clone());
        }
        let prefix = self.keys.kind_prefix(kind.storage);
        let (start, stream, objects) = open(&self.store, &prefix).await?;
        let (sender, _) = broadcast::channel(self.backlog);
        let cache = Arc::new(KindCache {
            window: RwLock::new(Window { since: start, latest: start, events: VecDeque::new(), bytes: 0 }),
            sender,
            objects: RwLock::new(objects.map(Current::new)),
        });
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = kinds.get(kind.plural) {
            return Ok(existing.clone()); // another request started it meanwhile; this stream is dropped
        }
        kinds.insert(kind.plural, cache.clone());
        drop(kinds);
        tokio::spawn(feed(self.store.clone(), prefix, cache.clone(), stream));
        Ok(cache)
    }
}

/// A store watch of `prefix` from the present: its start revision, the stream, and the objects at that revision when
/// the stream's events come without previous values.
async fn open(
    store: &SharedStore,
    prefix: &str,
) -> Result<(Revision, crate::store::WatchStream, Option<Objects>), StoreError> {
    let start = store.current_revision().await?;
    if store.previous_values_are_cheap() {
        return Ok((start, store.watch(prefix, start + 1).await?, None));
    }
    let listed = store
        .range(RangeRequest { prefix: prefix.to_owned(), start_after: None, limit: None, revision: Some(start) })
        .await?;
    let objects = listed.kvs.into_iter().map(|kv| (kv.key, (kv.value, kv.mod_revision))).collect();
    Ok((start, store.watch_changes(prefix, start + 1).await?, Some(objects)))
}

/// `event` with its previous value from `objects` (which it then updates), when the cache keeps the objects.
fn with_previous(event: WatchEvent, objects: Option<&mut Objects>) -> WatchEvent {
    let Some(objects) = objects else { return event };
    let value = |(value, _): (bytes::Bytes, Revision)| value;
    // Only the value is read from a previous state (its revisions are not kept).
    let previous = |key: &str, value: bytes::Bytes| KeyValue {
        key: key.to_owned(),
        value,
        create_revision: 0,
        mod_revision: 0,
        version: 0,
    };
    match event {
        WatchEvent::Put { kv, .. } => {
            let prev = objects
                .insert(kv.key.clone(), (kv.value.clone(), kv.mod_revision))
                .map(|stored| previous(&kv.key, value(stored)));
            WatchEvent::Put { kv, prev }
        }
        WatchEvent::Delete { key, mod_revision, .. } => {
            let prev = objects.remove(&key).map(|stored| previous(&key, value(stored)));
            WatchEvent::Delete { key, mod_revision, prev }
        }
        progress @ WatchEvent::Progress { .. } => progress,
    }
}

/// Tails the store for one kind, forever: events into the window and the broadcast.
async fn feed(store: SharedStore, prefix: String, cache: Arc<KindCache>, mut stream: crate::store::WatchStream) {
    loop {
        while let Some(item) = stream.next().await {
            let signal = match item {
                Ok(WatchEvent::Progress { revision }) => Signal::Progress(revision),
                Ok(event) => {
                    let event = {
                        let mut current = cache.objects.write().unwrap_or_else(PoisonError::into_inner);
                        if let (Some(current), Some(key)) = (current.as_mut(), event.key()) {
                            current.caught_up(key, event.revision());
                        }
                        with_previous(event, current.as_mut().map(|c| &mut c.seen))
                    };
                    match change_of(event, &prefix) {
                        Some(change) => Signal::Change(Arc::new(change)),
                        None => continue,
                    }
                }
                Err(e) => {
                    tracing::warn!(%prefix, error = %e, "watch cache feeder lost its store watch");
                    break;
                }
            };
            let mut window = cache.window.write().unwrap_or_else(PoisonError::into_inner);
            match &signal {
                Signal::Change(change) => {
                    window.latest = window.latest.max(change.revision);
                    window.events.push_back(change.clone());
                    window.bytes += change.bytes();
                    while window.events.len() > WINDOW || (window.bytes > WINDOW_BYTES && window.events.len() > 1) {
                        if let Some(dropped) = window.events.pop_front() {
                            window.since = dropped.revision;
                            window.bytes -= dropped.bytes();
                        }
                    }
                }
                Signal::Progress(revision) => window.latest = window.latest.max(*revision),
                Signal::Reset => {}
            }
            let _ = cache.sender.send(signal); // no receivers is fine
        }
        // Start over from the present; every current watch ends with 410 and its client lists again.
        match open(&store, &prefix).await {
            Ok((start, fresh, listed)) => {
                let mut window = cache.window.write().unwrap_or_else(PoisonError::into_inner);
                *window = Window { since: start, latest: start, events: VecDeque::new(), bytes: 0 };
                let _ = cache.sender.send(Signal::Reset);
                stream = fresh;
                *cache.objects.write().unwrap_or_else(PoisonError::into_inner) = listed.map(Current::new);
            }
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "watch cache feeder cannot restart yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
                stream = Box::pin(futures::stream::empty());
            }
        }
    }
}

/// The change a store event under the kind's `prefix` makes (keys are `<prefix>[<namespace>/]<name>`).
pub(super) fn change_of(event: WatchEvent, prefix: &str) -> Option<Change> {
    let (kind, key, value, revision, previous) = match event {
        WatchEvent::Put { kv, prev: None } => ("ADDED", kv.key, kv.value, kv.mod_revision, None),
        WatchEvent::Put { kv, prev: Some(prev) } => {
            ("MODIFIED", kv.key, kv.value, kv.mod_revision, Some((prev.value, OnceLock::new())))
        }
        WatchEvent::Delete { key, prev, mod_revision } => ("DELETED", key, prev?.value, mod_revision, None),
        WatchEvent::Progress { .. } => return None,
    };
    let namespace = key.strip_prefix(prefix).and_then(|rest| rest.split_once('/')).map(|(ns, _)| ns.to_owned());
    let encoded = super::with_resource_version(&value, revision)?;
    Some(Change { revision, kind, namespace, encoded, framed: OnceLock::new(), object: OnceLock::new(), previous })
}

/// A BOOKMARK event object at `revision`.
#[must_use]
pub fn bookmark(kind: &KindInfo, revision: Revision, initial_events_end: bool) -> Value {
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ INITIAL_EVENTS_END_ANNOTATION: "true" });
    }
    json!({ "type": "BOOKMARK", "object": { "apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata } })
}
