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
    /// The key (`namespace/name`) of the owner whose plan `task` feeds, if any (from the task alone: its labels, and
    /// whatever proves it the framework's).
    fn owner_of(task: &Task) -> Option<String>;

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
    /// Task keys per owner key (a task relabelled to another owner may linger under the old one until it goes:
    /// [`tasks_of`](Self::tasks_of) checks).
    owners: HashMap<String, HashSet<String>>,
    owner_of: fn(&Task) -> Option<String>,
    /// When to re-plan which owners.
    pub timers: Timers,
}

impl Kit {
    /// The tasks of `owner`, as cached — only those that name it now (labels are anyone's to change).
    #[must_use]
    pub fn tasks_of(&self, owner: &str) -> Vec<Arc<Task>> {
        let keys = self.owners.get(owner).into_iter().flatten();
        keys.filter_map(|k| self.tasks.get(k)).filter(|t| (self.owner_of)(t).as_deref() == Some(owner)).collect()
    }

    fn reindex(&mut self) {
        self.owners.clear();
        for task in self.tasks.state() {
            if let Some(owner) = (self.owner_of)(&task) {
                self.owners.entry(owner).or_default().insert(key(&*task));
            }
        }
    }

    /// Applies a task change to the owner index; returns the owner to re-plan (`Err(())`: re-plan all).
    fn apply(&mut self, change: &TaskChange) -> Result<Option<String>, ()> {
        match change {
            TaskChange::Applied(task) => Ok((self.owner_of)(task).inspect(|owner| {
                self.owners.entry(owner.clone()).or_default().insert(key(&**task));
            })),
            TaskChange::Deleted(task) => Ok((self.owner_of)(task).inspect(|owner| {
                if let Some(keys) = self.owners.get_mut(owner) {
                    keys.remove(&key(&**task));
                }
            })),
            TaskChange::Relisted => {
                self.reindex();
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
    let mut kit =
        Kit { tasks: leading.tasks.clone(), owners: HashMap::new(), owner_of: P::owner_of, timers: Timers::default() };
    kit.reindex();
    let mut all = true;
    let mut first: Option<TaskChange> = None;
    loop {
        let mut owners = BTreeSet::new();
        while let Some(change) = first.take().or_else(|| leading.changes.try_recv().ok()) {
            match kit.apply(&change) {
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

#[cfg(test)]
mod tests {
    use agora_schemas::{ObjectMeta, TaskSpec};
    use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

    use super::*;

    fn task(name: &str, owner: &str) -> Arc<Task> {
        let mut meta = ObjectMeta::named(Some("ns"), name);
        meta.labels.insert("owner".to_owned(), owner.to_owned());
        Arc::new(Task::new(meta, TaskSpec::default()))
    }

    /// Records each turn with the tasks the kit says its owners have; sets a timer when told to.
    struct Recorder {
        turns: UnboundedSender<(Turn, Vec<(String, usize)>)>,
        timer: Option<(String, Instant)>,
    }

    impl Plans for Recorder {
        fn owner_of(task: &Task) -> Option<String> {
            task.metadata.labels.get("owner").map(|o| format!("ns/{o}"))
        }

        async fn turn(&mut self, kit: &mut Kit, turn: Turn) -> Option<Instant> {
            if turn.owners.contains("ns/later")
                && let Some((owner, at)) = self.timer.take()
            {
                kit.timers.set(&owner, Some(at));
            }
            let counts = turn.owners.iter().map(|o| (o.clone(), kit.tasks_of(o).len())).collect();
            let _ = self.turns.send((turn, counts));
            None
        }
    }

    async fn next(turns: &mut UnboundedReceiver<(Turn, Vec<(String, usize)>)>) -> (Turn, Vec<(String, usize)>) {
        tokio::time::timeout(Duration::from_secs(10), turns.recv()).await.ok().flatten().expect("a turn")
    }

    fn set(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[tokio::test]
    async fn each_turn_names_the_owners_whose_tasks_changed_were_marked_or_touched_or_whose_timer_fired() {
        let (changes, receiver) = unbounded_channel();
        let cached = vec![(*task("t1", "a")).clone(), (*task("t2", "b")).clone()];
        let cache = Cache::of(cached);
        let leading = Leading { tasks: cache.clone(), changes: receiver, wake: Arc::default() };
        let (turns_tx, mut turns) = unbounded_channel();
        let marks = Marks::default();
        let timer = Some(("ns/timed".to_owned(), Instant::now() + Duration::from_millis(50)));
        let looping = tokio::spawn(lead(Recorder { turns: turns_tx, timer }, leading, marks.clone()));

        let (first, _) = next(&mut turns).await;
        assert!(first.all && first.owners.is_empty(), "the first turn re-plans all: {first:?}");

        // A task change names its owner, and the owner index follows it: t2 moves from b to a, then t1 goes.
        cache.put((*task("t2", "a")).clone()); // the SDK applies a change to its cache before telling
        changes.send(TaskChange::Applied(task("t2", "a"))).unwrap();
        let (turn, counts) = next(&mut turns).await;
        assert_eq!((turn.owners, turn.changed, turn.all), (set(&["ns/a"]), set(&[]), false));
        assert_eq!(counts, vec![("ns/a".to_owned(), 2)], "t1 and t2");
        marks.touch("ns/b".to_owned());
        let (_, counts) = next(&mut turns).await;
        assert_eq!(counts, vec![("ns/b".to_owned(), 0)], "b no longer counts the task relabelled away from it");
        changes.send(TaskChange::Deleted(task("t1", "a"))).unwrap();
        let (_, counts) = next(&mut turns).await;
        assert_eq!(counts, vec![("ns/a".to_owned(), 1)], "t2 alone");

        // A mark is a changed object (read again), a touch only a re-plan.
        marks.mark("ns/b".to_owned());
        let (turn, _) = next(&mut turns).await;
        assert_eq!((turn.owners, turn.changed), (set(&["ns/b"]), set(&["ns/b"])));
        marks.touch("ns/later".to_owned());
        let (turn, _) = next(&mut turns).await;
        assert_eq!((turn.owners, turn.changed), (set(&["ns/later"]), set(&[])));

        // The timer that turn set fires on its own.
        let (turn, _) = next(&mut turns).await;
        assert_eq!((turn.owners, turn.all), (set(&["ns/timed"]), false));

        // A relist re-plans all; the SDK's watch closing ends the leadership.
        changes.send(TaskChange::Relisted).unwrap();
        assert!(next(&mut turns).await.0.all);
        drop(changes);
        tokio::time::timeout(Duration::from_secs(10), looping).await.expect("the loop ends").unwrap();
    }
}
