//! The kit a framework's companion (see [`Framework::run_with`](super::Framework::run_with)) is written on.
//!
//! A companion re-plans each of its owners (an App, a CronJob: whatever its tasks run for) when the owner, one of
//! its tasks or something its plan reads has changed, or a timer it set has fired, and carries out the plan. The
//! loop that turns the watches, the SDK's task changes and the timers into "these owners, now" is [`lead`]; what a
//! framework supplies is [`Plans`]: which owner a task belongs to, what a task change settles, and one turn of
//! planning and acting. Marathon and chronos are both written on it: each has only its plan and its I/O.
//!
//! ```text
//! watches ──mark(owner)──▶ Marks ─┐
//! SDK task changes ──owner_of────▶├─▶ owners to re-plan ─▶ Plans::turn(kit, owners, all) ─▶ next wake-up
//! Timers (set by plans) ──fired──▶┘
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use agora_client::{Api, Client};
use agora_schemas::{Resource, Task};
use tokio::sync::Notify;

use super::timers::Timers;
use super::{Error, Framework, Leading, Scheduler, TaskChange};
use crate::runtime::AbortOnDrop;
use crate::runtime::cache::{Cache, Seen, cache, key};
use crate::runtime::events::{Events, Reporter};
use crate::runtime::watcher;

/// With no timer set and nothing marked, the loop still turns this often.
const IDLE: Duration = Duration::from_secs(30);

/// What a framework's companion decides with, on the kit.
pub trait Plans: Send {
    /// The key (`namespace/name`) of the owner whose plan `task` feeds, if any.
    fn owner_of(&self, task: &Task) -> Option<String>;

    /// A change to one of the framework's tasks, after the owner index has it: what it settles (a request the watch
    /// now shows). The owner is re-planned on this turn.
    fn seen(&mut self, _change: &TaskChange) {}

    /// One turn: re-plan the owners [`Turn`] names and act. Returns when the next turn must come at the latest,
    /// besides the kit's timers (writes waiting for their turn).
    fn turn(&mut self, kit: &mut Kit, turn: Turn) -> impl Future<Output = Option<Instant>> + Send;
}

/// The owners one turn is for.
#[derive(Debug, Default)]
pub struct Turn {
    /// Owners whose objects changed (the watches marked them): read them again.
    pub changed: BTreeSet<String>,
    /// Every owner to re-plan: the changed ones, those whose tasks changed, those touched, those whose timers fired.
    pub owners: BTreeSet<String>,
    /// Anything may have changed (the first turn, a relist): read and re-plan every owner.
    pub all: bool,
}

/// What the loop keeps for a companion: the framework's tasks, which of them each owner has, and the timers.
pub struct Kit {
    /// The framework's Tasks (the SDK's cache).
    pub tasks: Cache<Task>,
    /// Task keys per owner key.
    owners: HashMap<String, HashSet<String>>,
    /// When to re-plan which owners.
    pub timers: Timers,
}

impl Kit {
    /// The tasks of `owner`, as cached.
    #[must_use]
    pub fn tasks_of(&self, owner: &str) -> Vec<Arc<Task>> {
        self.owners.get(owner).into_iter().flatten().filter_map(|k| self.tasks.get(k)).collect()
    }

    fn reindex(&mut self, plans: &impl Plans) {
        self.owners.clear();
        for task in self.tasks.state() {
            if let Some(owner) = plans.owner_of(&task) {
                self.owners.entry(owner).or_default().insert(key(&*task));
            }
        }
    }

    /// Applies a task change to the owner index; returns the owner to re-plan (`Err(())`: re-plan all).
    fn apply(&mut self, plans: &impl Plans, change: &TaskChange) -> Result<Option<String>, ()> {
        match change {
            TaskChange::Applied(task) => Ok(plans.owner_of(task).inspect(|owner| {
                self.owners.entry(owner.clone()).or_default().insert(key(&**task));
            })),
            TaskChange::Deleted(task) => Ok(plans.owner_of(task).inspect(|owner| {
                if let Some(keys) = self.owners.get_mut(owner) {
                    keys.remove(&key(&**task));
                }
            })),
            TaskChange::Relisted => {
                self.reindex(plans);
                Err(())
            }
        }
    }
}

/// Owners marked for another look, and the signal that wakes the loop: the companion's watches and the scheduler
/// half mark; the loop takes the marks each turn.
#[derive(Clone, Default)]
pub struct Marks {
    inner: Arc<(Mutex<Marked>, Notify)>,
}

/// What was marked since the last turn.
#[derive(Debug, Default)]
struct Marked {
    changed: BTreeSet<String>,
    touched: BTreeSet<String>,
    all: bool,
}

impl Marks {
    /// Marks `owner` as changed: it is read again and re-planned.
    pub fn mark(&self, owner: String) {
        self.marked().changed.insert(owner);
        self.inner.1.notify_one();
    }

    /// Marks `owner` to be re-planned (what its plan reads besides its object changed: a launch for it).
    pub fn touch(&self, owner: String) {
        self.marked().touched.insert(owner);
        self.inner.1.notify_one();
    }

    /// Marks every owner (a relist, or something every plan reads).
    pub fn mark_all(&self) {
        self.marked().all = true;
        self.inner.1.notify_one();
    }

    /// Wakes the loop without marking (what it reads besides marks changed).
    pub fn wake(&self) {
        self.inner.1.notify_one();
    }

    fn marked(&self) -> MutexGuard<'_, Marked> {
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Marked {
        std::mem::take(&mut *self.marked())
    }
}

/// State the scheduler half and the companion share (a poisoned lock is taken over: no decision is left half-made
/// across a panic that could not also happen without it).
pub struct Shared<W>(Arc<Mutex<W>>);

impl<W> Clone for Shared<W> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<W: Default> Default for Shared<W> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<W> Shared<W> {
    /// The shared state, locked.
    pub fn lock(&self) -> MutexGuard<'_, W> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a framework's two halves — the [`Scheduler`] answering offers and the companion — are
/// built with: the client, their shared state, the marks that wake the companion, and the Events sender.
pub struct Parts<W> {
    /// The apiserver.
    pub client: Client,
    /// State both halves read and write.
    pub shared: Shared<W>,
    /// The companion's marks (the scheduler half touches the owners it launched for).
    pub marks: Marks,
    /// Events, published as the framework's replica.
    pub events: Events,
}

impl<W> Clone for Parts<W> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            shared: self.shared.clone(),
            marks: self.marks.clone(),
            events: self.events.clone(),
        }
    }
}

impl Framework {
    /// Runs a framework written on the kit until `shutdown` (see [`run_with`](Framework::run_with)): `scheduler`
    /// makes the half that answers offers, `companion` the leader's companion (typically its caches, then
    /// [`lead`]), both from the same [`Parts`].
    ///
    /// # Errors
    /// When the Framework object cannot be written or the lease timing is invalid.
    pub async fn run_on_kit<W, S, C, F>(
        self,
        scheduler: impl FnOnce(Parts<W>) -> S,
        companion: C,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error>
    where
        W: Default + Send + 'static,
        S: Scheduler,
        C: Fn(Parts<W>, Leading) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let reporter = Reporter::new(&self.name, Some(&self.identity));
        let (events, _publisher) = Events::spawn(self.client.clone(), reporter);
        let parts = Parts { client: self.client.clone(), shared: Shared::default(), marks: Marks::default(), events };
        let scheduler = scheduler(parts.clone());
        self.run_with(scheduler, move |leading| companion(parts.clone(), leading), shutdown).await.map(|_| ())
    }
}

/// A cache of every `K`, each change marking the object's key (a relist marks all).
#[must_use]
pub fn watch_owners<K: Resource + Clone + Send + Sync + 'static>(
    client: &Client,
    marks: &Marks,
) -> (Cache<K>, AbortOnDrop) {
    let marks = marks.clone();
    let (cache, watch) = cache(Api::<K>::all(client.clone()), watcher::Config::default(), move |seen| match seen {
        Seen::Applied(object) => marks.mark(key(&**object)),
        Seen::Deleted(object) => marks.mark(key(object)),
        Seen::Listed => marks.mark_all(),
        Seen::Listing(_) => {}
    });
    (cache, AbortOnDrop(watch))
}

/// Runs `plans` while leading: each turn takes the task changes, the marks and the fired timers, and hands the
/// owners they name to [`Plans::turn`]; the first turn re-plans all. Returns when the leadership ends (the SDK's
/// task watch closes).
pub async fn lead<P: Plans>(mut plans: P, mut leading: Leading, marks: Marks) {
    let mut kit = Kit { tasks: leading.tasks.clone(), owners: HashMap::new(), timers: Timers::default() };
    kit.reindex(&plans);
    let mut all = true;
    let mut first: Option<TaskChange> = None;
    loop {
        let mut owners = BTreeSet::new();
        while let Some(change) = first.take().or_else(|| leading.changes.try_recv().ok()) {
            match kit.apply(&plans, &change) {
                Ok(owner) => owners.extend(owner),
                Err(()) => all = true,
            }
            plans.seen(&change);
        }
        let marked = marks.take();
        owners.extend(marked.changed.iter().cloned());
        owners.extend(marked.touched);
        owners.extend(kit.timers.fired(Instant::now()));
        let turn = Turn { changed: marked.changed, owners, all: std::mem::take(&mut all) || marked.all };
        let next = plans.turn(&mut kit, turn).await;
        let next = kit.timers.next().into_iter().chain(next).min();
        let wait = next.map_or(IDLE, |t| t.saturating_duration_since(Instant::now()));
        tokio::select! {
            () = marks.inner.1.notified() => {}
            () = tokio::time::sleep(wait) => {}
            change = leading.changes.recv() => match change {
                Some(change) => first = Some(change),
                // The SDK's watch ended: the leadership is ending too.
                None => return,
            },
        }
    }
}
