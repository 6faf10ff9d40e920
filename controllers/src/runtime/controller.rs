//! [`Controller`]: calls a reconcile function for every object of one kind whenever it — or something it owns or
//! watches — changes, and again when the reconciler asks.
//!
//! How the work queue behaves:
//! - Keys, not events, are queued: any number of changes to an object waiting in the queue make one reconcile, and the
//!   reconciler always gets the object's latest cached state.
//! - An object is never reconciled twice at once. A change during its reconcile queues one more run after it.
//! - At most [`Config::concurrency`] reconciles run at a time.
//! - [`Action::requeue`] runs the object again after a while; [`Action::await_change`] waits for a change.
//! - A failed reconcile is retried with per-object exponential backoff (reset by a success); the error policy is told
//!   first and may ask for a longer delay or none.
//! - Nothing is reconciled until every watch has completed its first list (a fresh leader acts on a full picture).
//! - On shutdown (SIGTERM/SIGINT with [`Controller::shutdown_on_signal`]), no new reconcile starts and the running ones
//!   are awaited.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agora_client::Api;
use agora_schemas::Resource;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::ObjectRef;
use super::backoff::{Backoff, BackoffConfig};
use super::reflector::{self, Store, Writer};
use super::watcher::{self, Event};

/// What the reconciler wants next for the object it reconciled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `duration` (or sooner, if the object changes).
    pub fn requeue(duration: Duration) -> Self {
        Self { requeue_after: Some(duration) }
    }

    /// Reconcile again only when the object (or something it owns or watches) changes.
    pub fn await_change() -> Self {
        Self { requeue_after: None }
    }

    /// When the object is reconciled again regardless of changes.
    #[must_use]
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// How the controller schedules work.
#[derive(Clone, Debug)]
#[must_use]
pub struct Config {
    /// Reconciles running at once.
    pub concurrency: usize,
    /// How long a change waits in the queue before its reconcile starts, so a burst of changes to one object makes
    /// one reconcile. Zero reconciles at once.
    pub debounce: Duration,
    /// Delays before retrying an object whose reconcile failed.
    pub backoff: BackoffConfig,
    /// Skip changes of the main kind that leave `metadata.generation` (and uid and deletion) as they were: status,
    /// label and annotation updates. Changes of owned and watched objects always count.
    pub skip_status_changes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            concurrency: 16,
            debounce: Duration::ZERO,
            backoff: BackoffConfig::RECONCILE,
            skip_status_changes: false,
        }
    }
}

impl Config {
    /// Run at most `concurrency` reconciles at once (at least one).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Let changes settle for `debounce` before reconciling.
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Back off this way after failed reconciles.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Ignore changes of the main kind that do not change its `generation` (status-only changes).
    pub fn skip_status_changes(mut self) -> Self {
        self.skip_status_changes = true;
        self
    }
}

/// What the controller's stream reports.
#[derive(Debug, thiserror::Error)]
pub enum Error<E: std::error::Error + 'static> {
    /// The reconciler failed for this object; it will be retried after a backoff.
    #[error("reconciling {object} failed: {source}")]
    ReconcileFailed {
        /// The object.
        object: ObjectRef,
        /// The reconciler's error.
        #[source]
        source: E,
    },
    /// The reconciler panicked for this object; it will be retried after a backoff.
    #[error("reconciling {object} panicked: {message}")]
    ReconcilePanicked {
        /// The object.
        object: ObjectRef,
        /// The panic's message.
        message: String,
    },
    /// A watch failed; it is retried by itself.
    #[error("watching {kind} failed (retrying): {source}")]
    Watch {
        /// The plural of the watched kind.
        kind: &'static str,
        /// What failed.
        #[source]
        source: watcher::Error,
    },
}

/// What the watch tasks tell the driver.
enum Signal {
    Trigger(ObjectRef),
    /// The watch with this index completed its first list.
    Ready(usize),
    Failed(&'static str, watcher::Error),
}

type Source = Box<dyn FnOnce(mpsc::Sender<Signal>, usize) -> BoxFuture<'static, ()> + Send>;

/// Reconciles objects of kind `K`.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use agora_client::{Api, Client};
/// use agora_controllers::runtime::{Action, Controller, watcher};
/// use agora_schemas::{App, Task};
/// use futures::StreamExt;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error(transparent)]
/// struct Error(#[from] agora_client::Error);
///
/// async fn reconcile(app: Arc<App>, client: Arc<Client>) -> Result<Action, Error> {
///     // Compare what the app wants with what exists; create, patch or delete to close the gap.
///     Ok(Action::requeue(Duration::from_secs(300)))
/// }
///
/// fn error_policy(_app: Arc<App>, _error: &Error, _client: Arc<Client>) -> Action {
///     Action::requeue(Duration::from_secs(5))
/// }
///
/// # async fn run() -> agora_client::Result<()> {
/// let client = Client::try_default()?;
/// Controller::new(Api::<App>::all(client.clone()), watcher::Config::default())
///     .owns(Api::<Task>::all(client.clone()), watcher::Config::default())
///     .shutdown_on_signal()
///     .run(reconcile, error_policy, Arc::new(client))
///     .for_each(|result| async move {
///         if let Err(e) = result {
///             tracing::warn!("{e}");
///         }
///     })
///     .await;
/// # Ok(()) }
/// ```
pub struct Controller<K: Resource> {
    api: Api<K>,
    watch: watcher::Config,
    config: Config,
    sources: Vec<Source>,
    store: Store<K>,
    writer: Writer<K>,
    shutdown: Option<BoxFuture<'static, ()>>,
}

impl<K: Resource> Controller<K> {
    /// A controller for the objects of `api` selected by `watch`.
    #[must_use]
    pub fn new(api: Api<K>, watch: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        Self { api, watch, config: Config::default(), sources: Vec::new(), store, writer, shutdown: None }
    }

    /// Schedules work this way.
    #[must_use]
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The cache of the main kind the controller keeps (ready once its first list completes).
    #[must_use]
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Also reconciles an object when a `C` it owns (by an `ownerReference` of kind `K`) changes.
    #[must_use]
    pub fn owns<C: Resource>(self, api: Api<C>, watch: watcher::Config) -> Self {
        self.watches(api, watch, owners_of::<K, C>)
    }

    /// Also reconciles the objects `mapper` names whenever a `C` changes.
    #[must_use]
    pub fn watches<C, I>(
        mut self,
        api: Api<C>,
        watch: watcher::Config,
        mapper: impl Fn(&C) -> I + Send + Sync + 'static,
    ) -> Self
    where
        C: Resource,
        I: IntoIterator<Item = ObjectRef>,
    {
        let source: Source = Box::new(move |signals, index| {
            async move {
                let mut events = std::pin::pin!(watcher::watcher(api, watch));
                while let Some(event) = events.next().await {
                    let keys: Vec<ObjectRef> = match event {
                        Ok(Event::Apply(o) | Event::Delete(o) | Event::InitApply(o)) => {
                            mapper(&o).into_iter().collect()
                        }
                        Ok(Event::Init) => Vec::new(),
                        Ok(Event::InitDone) => {
                            if signals.send(Signal::Ready(index)).await.is_err() {
                                return;
                            }
                            Vec::new()
                        }
                        Err(e) => {
                            if signals.send(Signal::Failed(C::PLURAL, e)).await.is_err() {
                                return;
                            }
                            Vec::new()
                        }
                    };
                    for key in keys {
                        if signals.send(Signal::Trigger(key)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            .boxed()
        });
        self.sources.push(source);
        self
    }

    /// Shuts down gracefully when `signal` completes: no new reconcile starts, running ones finish, the stream ends.
    #[must_use]
    pub fn graceful_shutdown_on(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(signal.boxed());
        self
    }

    /// Shuts down gracefully on SIGTERM or SIGINT.
    #[must_use]
    pub fn shutdown_on_signal(self) -> Self {
        self.graceful_shutdown_on(super::shutdown_signal())
    }

    /// Runs the controller: a stream of each reconcile's outcome. Poll it to completion (it ends only on shutdown);
    /// dropping it stops the controller at once, aborting running reconciles.
    pub fn run<R, RFut, P, E, Ctx>(
        self,
        reconcile: R,
        error_policy: P,
        ctx: Arc<Ctx>,
    ) -> impl Stream<Item = Result<(ObjectRef, Action), Error<E>>> + Send + use<K, R, RFut, P, E, Ctx>
    where
        R: Fn(Arc<K>, Arc<Ctx>) -> RFut + Send + Sync + 'static,
        RFut: Future<Output = Result<Action, E>> + Send + 'static,
        P: Fn(Arc<K>, &E, Arc<Ctx>) -> Action + Send + Sync + 'static,
        E: std::error::Error + Send + Sync + 'static,
        Ctx: Send + Sync + 'static,
    {
        let (out, results) = mpsc::channel(1024);
        let driver = Driver {
            store: self.store,
            config: self.config,
            reconcile: Arc::new(reconcile),
            error_policy: Arc::new(error_policy),
            ctx,
            out,
        };
        let (signals, inbox) = mpsc::channel(4096);
        let mut watches = Vec::with_capacity(self.sources.len() + 1);
        watches.push(tokio::spawn(main_watch(
            self.api,
            self.watch,
            self.writer,
            driver.config.skip_status_changes,
            signals.clone(),
        )));
        let sources = self.sources.len();
        for (i, source) in self.sources.into_iter().enumerate() {
            watches.push(tokio::spawn(source(signals.clone(), i + 1)));
        }
        drop(signals);
        let shutdown = self.shutdown.unwrap_or_else(|| std::future::pending().boxed());
        tokio::spawn(driver.drive(inbox, sources + 1, AbortOnDrop(watches), shutdown));
        ReceiverStream::new(results)
    }
}

/// The objects of kind `K` that own `child`.
fn owners_of<K: Resource, C: Resource>(child: &C) -> Vec<ObjectRef> {
    let meta = child.metadata();
    meta.owner_references
        .iter()
        .filter(|owner| owner.kind == K::KIND && owner.api_version == agora_schemas::API_VERSION)
        .map(|owner| ObjectRef {
            namespace: if K::NAMESPACED { meta.namespace.clone() } else { None },
            name: owner.name.clone(),
        })
        .collect()
}

/// What a change must alter for [`Config::skip_status_changes`] to let it through.
#[derive(PartialEq)]
struct Generation {
    uid: Option<String>,
    generation: Option<i64>,
    deleting: bool,
}

impl Generation {
    fn of<K: Resource>(object: &K) -> Self {
        let meta = object.metadata();
        Self { uid: meta.uid.clone(), generation: meta.generation, deleting: meta.deletion_timestamp.is_some() }
    }
}

/// Watches the main kind into the store and turns its changes into triggers.
async fn main_watch<K: Resource>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    skip_status_changes: bool,
    signals: mpsc::Sender<Signal>,
) {
    let mut seen: HashMap<ObjectRef, Generation> = HashMap::new();
    let changed = |object: &K, seen: &mut HashMap<ObjectRef, Generation>| -> Option<ObjectRef> {
        let key = ObjectRef::from_object(object);
        if skip_status_changes {
            let generation = Generation::of(object);
            if seen.get(&key) == Some(&generation) {
                return None;
            }
            seen.insert(key.clone(), generation);
        }
        Some(key)
    };
    // What a (re)list found, handled at its end: changes during a broken watch were not seen, so every object is
    // looked at again.
    let mut listed: Vec<(ObjectRef, Generation)> = Vec::new();
    let mut events = std::pin::pin!(reflector::reflector(writer, watcher::watcher(api, config)));
    while let Some(event) = events.next().await {
        let keys = match event {
            Ok(Event::Apply(object)) => changed(&object, &mut seen).into_iter().collect(),
            Ok(Event::Delete(object)) => {
                let key = ObjectRef::from_object(&object);
                seen.remove(&key);
                vec![key]
            }
            Ok(Event::Init) => {
                listed.clear();
                Vec::new()
            }
            Ok(Event::InitApply(object)) => {
                listed.push((ObjectRef::from_object(&object), Generation::of(&object)));
                Vec::new()
            }
            Ok(Event::InitDone) => {
                let found = std::mem::take(&mut listed);
                let keys: Vec<ObjectRef> = if skip_status_changes {
                    let mut fresh = HashMap::with_capacity(found.len());
                    let mut keys = Vec::new();
                    for (key, generation) in found {
                        if seen.get(&key) != Some(&generation) {
                            keys.push(key.clone());
                        }
                        fresh.insert(key, generation);
                    }
                    seen = fresh;
                    keys
                } else {
                    found.into_iter().map(|(key, _)| key).collect()
                };
                if signals.send(Signal::Ready(0)).await.is_err() {
                    return;
                }
                keys
            }
            Err(e) => {
                if signals.send(Signal::Failed(K::PLURAL, e)).await.is_err() {
                    return;
                }
                Vec::new()
            }
        };
        for key in keys {
            if signals.send(Signal::Trigger(key)).await.is_err() {
                return;
            }
        }
    }
}

/// Aborts the watch tasks when the driver ends.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The queue of keys: when each is due, which are running, and which changed while running.
#[derive(Default)]
pub(crate) struct Queue {
    due: BTreeMap<(Instant, u64), ObjectRef>,
    scheduled: HashMap<ObjectRef, (Instant, u64)>,
    running: HashSet<ObjectRef>,
    /// Keys triggered while running: scheduled again (at this time) when their reconcile ends.
    dirty: HashMap<ObjectRef, Instant>,
    sequence: u64,
}

impl Queue {
    /// Schedules `key` at `at`, unless it is already due sooner.
    pub(crate) fn schedule(&mut self, key: ObjectRef, at: Instant) {
        if self.running.contains(&key) {
            let entry = self.dirty.entry(key).or_insert(at);
            *entry = (*entry).min(at);
            return;
        }
        if let Some(&(existing, sequence)) = self.scheduled.get(&key) {
            if existing <= at {
                return;
            }
            self.due.remove(&(existing, sequence));
        }
        self.sequence += 1;
        self.due.insert((at, self.sequence), key.clone());
        self.scheduled.insert(key, (at, self.sequence));
    }

    /// When the next key is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.keys().next().map(|(at, _)| *at)
    }

    /// Takes a key that is due at `now` and marks it running.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<ObjectRef> {
        let (&(at, sequence), _) = self.due.iter().next()?;
        if at > now {
            return None;
        }
        let key = self.due.remove(&(at, sequence))?;
        self.scheduled.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// Marks `key` finished; if it changed meanwhile it is scheduled again.
    pub(crate) fn finish(&mut self, key: &ObjectRef) {
        self.running.remove(key);
        if let Some(at) = self.dirty.remove(key) {
            self.schedule(key.clone(), at);
        }
    }
}

struct Driver<K, R, P, Ctx, E: std::error::Error + 'static> {
    store: Store<K>,
    config: Config,
    reconcile: Arc<R>,
    error_policy: Arc<P>,
    ctx: Arc<Ctx>,
    out: mpsc::Sender<Result<(ObjectRef, Action), Error<E>>>,
}

impl<K, R, RFut, P, E, Ctx> Driver<K, R, P, Ctx, E>
where
    K: Resource,
    R: Fn(Arc<K>, Arc<Ctx>) -> RFut + Send + Sync + 'static,
    RFut: Future<Output = Result<Action, E>> + Send + 'static,
    P: Fn(Arc<K>, &E, Arc<Ctx>) -> Action + Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
    Ctx: Send + Sync + 'static,
{
    async fn drive(
        self,
        mut inbox: mpsc::Receiver<Signal>,
        watches: usize,
        mut watch_tasks: AbortOnDrop,
        shutdown: BoxFuture<'static, ()>,
    ) {
        let mut queue = Queue::default();
        let mut ready = vec![false; watches];
        let mut backoffs: HashMap<ObjectRef, Backoff> = HashMap::new();
        let mut tasks: JoinSet<Result<Action, E>> = JoinSet::new();
        let mut running_objects: HashMap<tokio::task::Id, (ObjectRef, Arc<K>)> = HashMap::new();
        let mut shutdown = shutdown.fuse();
        let mut stopping = false;
        let mut inbox_open = true;
        loop {
            let all_ready = ready.iter().all(|r| *r);
            let can_start = all_ready && !stopping && tasks.len() < self.config.concurrency;
            let next_due = if can_start { queue.next_due() } else { None };
            let sleep = async {
                match next_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = self.out.closed() => {
                    tracing::debug!(kind = K::PLURAL, "controller stream dropped; stopping");
                    tasks.abort_all();
                    return;
                }
                () = &mut shutdown, if !stopping => {
                    tracing::info!(kind = K::PLURAL, running = tasks.len(), "shutting down: finishing running reconciles");
                    stopping = true;
                    for task in watch_tasks.0.drain(..) {
                        task.abort();
                    }
                }
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (id, outcome) = match joined {
                        Ok((id, outcome)) => (id, Ok(outcome)),
                        Err(e) => (e.id(), Err(panic_message(e))),
                    };
                    let Some((key, object)) = running_objects.remove(&id) else { continue };
                    queue.finish(&key);
                    let report = self.finished(&mut queue, &mut backoffs, key, object, outcome);
                    if self.out.send(report).await.is_err() {
                        tasks.abort_all();
                        return;
                    }
                }
                signal = inbox.recv(), if inbox_open && !stopping => match signal {
                    Some(Signal::Trigger(key)) => queue.schedule(key, Instant::now() + self.config.debounce),
                    Some(Signal::Ready(index)) => {
                        if let Some(flag) = ready.get_mut(index) {
                            *flag = true;
                        }
                    }
                    Some(Signal::Failed(kind, source)) => {
                        tracing::warn!(kind, error = %source, "watch failed; retrying");
                        if self.out.send(Err(Error::Watch { kind, source })).await.is_err() {
                            tasks.abort_all();
                            return;
                        }
                    }
                    None => inbox_open = false,
                },
                () = sleep => {
                    let now = Instant::now();
                    while tasks.len() < self.config.concurrency {
                        let Some(key) = queue.pop_due(now) else { break };
                        let Some(object) = self.store.get(&key) else {
                            // Deleted since it was queued: nothing to reconcile, nothing to remember.
                            queue.finish(&key);
                            backoffs.remove(&key);
                            continue;
                        };
                        let reconcile = self.reconcile.clone();
                        let ctx = self.ctx.clone();
                        let span = tracing::info_span!("reconcile", kind = K::KIND, object = %key);
                        let future = reconcile(object.clone(), ctx);
                        let handle = tasks.spawn(tracing::Instrument::instrument(future, span));
                        running_objects.insert(handle.id(), (key, object));
                    }
                }
            }
            if stopping && tasks.is_empty() {
                return;
            }
        }
    }

    /// Records a finished reconcile: resets or grows the object's backoff and schedules what comes next.
    fn finished(
        &self,
        queue: &mut Queue,
        backoffs: &mut HashMap<ObjectRef, Backoff>,
        key: ObjectRef,
        object: Arc<K>,
        outcome: Result<Result<Action, E>, String>,
    ) -> Result<(ObjectRef, Action), Error<E>> {
        let now = Instant::now();
        match outcome {
            Ok(Ok(action)) => {
                backoffs.remove(&key);
                if let Some(after) = action.requeue_after() {
                    queue.schedule(key.clone(), now + after);
                }
                Ok((key, action))
            }
            Ok(Err(source)) => {
                let action = (self.error_policy)(object, &source, self.ctx.clone());
                let delay =
                    backoffs.entry(key.clone()).or_insert_with(|| Backoff::new(self.config.backoff)).next_delay();
                if let Some(after) = action.requeue_after() {
                    queue.schedule(key.clone(), now + after.max(delay));
                }
                Err(Error::ReconcileFailed { object: key, source })
            }
            Err(message) => {
                let delay =
                    backoffs.entry(key.clone()).or_insert_with(|| Backoff::new(self.config.backoff)).next_delay();
                queue.schedule(key.clone(), now + delay);
                Err(Error::ReconcilePanicked { object: key, message })
            }
        }
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectRef {
        ObjectRef::new(Some("default"), name)
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_merges_triggers_keeps_the_earliest_time_and_defers_running_keys() {
        let mut queue = Queue::default();
        let t0 = Instant::now();
        queue.schedule(key("a"), t0 + Duration::from_secs(5));
        queue.schedule(key("a"), t0 + Duration::from_secs(1));
        queue.schedule(key("a"), t0 + Duration::from_secs(9));
        queue.schedule(key("b"), t0 + Duration::from_secs(2));
        assert_eq!(queue.next_due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(queue.pop_due(t0), None, "nothing is due yet");

        let later = t0 + Duration::from_secs(3);
        assert_eq!(queue.pop_due(later), Some(key("a")), "one run for three triggers");
        assert_eq!(queue.pop_due(later), Some(key("b")));
        assert_eq!(queue.pop_due(later), None);

        // Triggers while `a` runs are held back, merged, and scheduled when it finishes.
        queue.schedule(key("a"), later + Duration::from_secs(4));
        queue.schedule(key("a"), later + Duration::from_secs(2));
        assert_eq!(queue.next_due(), None, "a running key is never due");
        queue.finish(&key("a"));
        assert_eq!(queue.next_due(), Some(later + Duration::from_secs(2)));
        queue.finish(&key("b"));
        assert_eq!(queue.pop_due(later + Duration::from_secs(10)), Some(key("a")));
        assert_eq!(queue.pop_due(later + Duration::from_secs(10)), None, "b finished without changes");
    }
}
