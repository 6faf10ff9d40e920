//! Marathon's I/O: a framework on the SDK. The [`Scheduler`] half answers offers — for each app that wants
//! launches it re-plans against the tasks the SDK holds (so a launch is never decided on a stale count) and places
//! them ([`super::offers`]). The companion half runs while leading, after every cache is listed: it re-plans each
//! app whose App, Tasks or agents changed (or whose timer fired) and carries out the plan — versions recorded,
//! kills requested (with the reason on the task), status written on change at a bounded rate, finished tasks
//! forgotten once counted, Events published.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::{Api, Client, PostParams};
use agora_schemas::{
    APP_LABEL, Agent, App, AppStatus, AppVersion, AppVersionSpec, ConditionStatus, ObjectMeta, Offer, OwnerReference,
    Task,
};
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::offers::{Need, place, task_template};
use super::plan::{self, Agents, KILL_REASON_ANNOTATION, OfferSummary, Plan};
use crate::framework::companion::{self, Kit, Parts, Plans, Turn, watch_owners};
use crate::framework::placement::Spread;
use crate::framework::writes::{self, Backlog, InFlight, TokenBucket, Written};
use crate::framework::{Framework, Launch, Leading, Registration, Scheduler, TaskChange};
use crate::runtime::AbortOnDrop;
use crate::runtime::cache::{Cache, Seen, cache, key};
use crate::runtime::events::Record;
use crate::runtime::watcher;

/// The framework's name (and its Lease's).
pub const FRAMEWORK: &str = "marathon";
/// The field manager of everything marathon writes.
const MANAGER: &str = "marathon";
/// Versions kept per app.
pub const VERSIONS_KEPT: usize = 10;
/// Writes in flight at once.
const WRITES_IN_FLIGHT: usize = 32;
/// How often a status whose only change is its offer-rejection counts is written.
const REJECTIONS_INTERVAL: Duration = Duration::from_secs(30);
/// A kill requested but not yet seen in the watch is assumed requested for this long.
const PENDING_KILL: Duration = Duration::from_secs(30);

/// How marathon runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Identity, roles (apps name one of them in `spec.role`) and lease.
    pub registration: Registration,
    /// At most this often per app is its status written.
    pub status_interval: Duration,
    /// Health kills per second across all apps (the burst is the same number).
    pub health_kills_per_second: f64,
    /// App status writes per second across all apps (the burst is the same number).
    pub status_writes_per_second: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            registration: Registration::default(),
            status_interval: Duration::from_secs(1),
            health_kills_per_second: 10.0,
            status_writes_per_second: 100.0,
        }
    }
}

/// Why marathon stopped.
pub type Error = crate::framework::Error;

/// What the scheduler half and the companion share.
struct SharedState {
    /// The companion's caches are listed: decisions may be made.
    ready: bool,
    /// Apps by `namespace/name`, their specs with defaults applied and their status the last one decided.
    apps: HashMap<String, Arc<App>>,
    /// Each app's version (a hash of its spec: worth computing once per spec).
    versions: HashMap<String, String>,
    /// Apps that want launches, as of their last plan.
    wanting: BTreeSet<String>,
    /// Hostname and attributes of each agent, for constraints on running tasks.
    fields: HashMap<String, BTreeMap<String, String>>,
    /// Unreachable agents and distinct values, for the plans.
    agents: Agents,
    /// Whether each app's dependencies run healthy.
    dependencies: HashMap<String, Result<(), String>>,
    /// What the latest offers showed, per app.
    summaries: HashMap<String, OfferSummary>,
    /// Kills requested the watch has not shown yet.
    pending_kills: InFlight,
}

impl Default for SharedState {
    fn default() -> Self {
        Self {
            ready: false,
            apps: HashMap::new(),
            versions: HashMap::new(),
            wanting: BTreeSet::new(),
            fields: HashMap::new(),
            agents: Agents::default(),
            dependencies: HashMap::new(),
            summaries: HashMap::new(),
            pending_kills: InFlight::new(PENDING_KILL),
        }
    }
}

/// The key of the app a task belongs to (`namespace/app`), if it is an app's.
fn app_of(task: &Task) -> Option<String> {
    let app = task.metadata.labels.get(APP_LABEL)?;
    Some(format!("{}/{app}", task.metadata.namespace.as_deref().unwrap_or("default")))
}

/// The spread of `tasks` (live, not being killed) over the values of the fields `app`'s constraints name.
fn spread_of(app: &App, tasks: &[Arc<Task>], fields: &HashMap<String, BTreeMap<String, String>>) -> Spread {
    let mut spread = Spread::new();
    for constraint in &app.spec.constraints {
        let counts = spread.entry(constraint.field().to_owned()).or_default();
        for task in tasks {
            let live =
                task.status.as_ref().is_none_or(|s| !s.state.is_terminal()) && task.spec.kill_requested != Some(true);
            if let Some(value) = fields.get(&task.spec.agent).and_then(|f| f.get(constraint.field()))
                && live
            {
                *counts.entry(value.clone()).or_default() += 1;
            }
        }
    }
    spread
}

/// Drops what marathon never reads of a Task before it is cached (the App has what to run).
fn trim(task: &mut Task) {
    writes::trim_to_state(task, &[KILL_REASON_ANNOTATION]);
    task.spec.offer = None;
}

/// The scheduler half.
struct Marathon {
    parts: Parts<SharedState>,
}

impl Scheduler for Marathon {
    fn offers(&mut self, offers: &[Arc<Offer>], tasks: &[Arc<Task>]) -> Vec<Launch> {
        let mut shared = self.parts.shared.lock();
        if !shared.ready || shared.wanting.is_empty() {
            return Vec::new();
        }
        // The wanting apps' tasks, found without allocating per task (this runs over every task of the framework).
        let mut by_app: HashMap<(&str, &str), Vec<Arc<Task>>> =
            shared.wanting.iter().filter_map(|k| k.split_once('/')).map(|k| (k, Vec::new())).collect();
        for task in tasks {
            let namespace = task.metadata.namespace.as_deref().unwrap_or("default");
            if let Some(app) = task.metadata.labels.get(APP_LABEL)
                && let Some(list) = by_app.get_mut(&(namespace, app.as_str()))
            {
                list.push(task.clone());
            }
        }
        let now = Timestamp::now();
        let mut keys = Vec::new();
        let mut apps = Vec::new();
        let mut needs_meta = Vec::new();
        for key in &shared.wanting {
            let Some(app) = shared.apps.get(key) else { continue };
            let found = key.split_once('/').and_then(|k| by_app.remove(&k)).unwrap_or_default();
            let app_tasks = shared.pending_kills.assume_killed(found);
            let ctx = plan::Context {
                now,
                version: shared.versions.get(key).map(String::as_str),
                agents: &shared.agents,
                dependencies: shared.dependencies.get(key).cloned().unwrap_or(Ok(())),
                health_kill_budget: 0,
                offers: shared.summaries.get(key),
            };
            let planned = plan::plan(app, &app_tasks, &ctx);
            if planned.launch > 0 {
                let spread = spread_of(app, &app_tasks, &shared.fields);
                needs_meta.push((planned.version, planned.launch, spread));
                keys.push(key.clone());
                apps.push(app.clone());
            }
        }
        let needs: Vec<Need<'_>> = apps
            .iter()
            .zip(needs_meta)
            .map(|(app, (version, count, spread))| Need { app, version, count, spread })
            .collect();
        let (placed, summaries) = place(offers, &needs);
        let mut launches: Vec<Launch> = Vec::new();
        let mut per_app: BTreeMap<usize, (usize, BTreeSet<String>)> = BTreeMap::new();
        let agent_of: HashMap<&str, &str> =
            offers.iter().map(|o| (o.metadata.name.as_deref().unwrap_or_default(), o.spec.agent.as_str())).collect();
        for p in placed {
            let need = &needs[p.need];
            Launch::add(&mut launches, &p.offer, task_template(need.app, &need.version, &p.ports));
            let entry = per_app.entry(p.need).or_default();
            entry.0 += 1;
            entry.1.insert(agent_of.get(p.offer.as_str()).copied().unwrap_or_default().to_owned());
        }
        for (index, (count, agents)) in &per_app {
            let need = &needs[*index];
            let mut on: Vec<&str> = agents.iter().map(String::as_str).take(5).collect();
            if agents.len() > 5 {
                on.push("…");
            }
            let record = Record::normal(
                "Launched",
                format!("launching {count} task(s) of version {} on {}", need.version, on.join(", ")),
            );
            self.parts.events.send(need.app, record);
        }
        for (key, summary) in keys.iter().zip(summaries) {
            shared.summaries.insert(key.clone(), summary);
            self.parts.marks.touch(key.clone());
        }
        launches
    }

    fn wants_offers(&self, _tasks: &[Arc<Task>]) -> bool {
        let shared = self.parts.shared.lock();
        shared.ready && !shared.wanting.is_empty()
    }
}

/// Runs marathon until `shutdown`: registers the framework, competes for its lease, and while leading keeps every
/// App's tasks as its spec says.
///
/// # Errors
/// When the framework cannot register or the lease timing is invalid.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    Framework::registered(client, FRAMEWORK, &config.registration)
        .refuse(Duration::from_secs(5))
        .trim_tasks(trim)
        .run_on_kit(
            |parts| Marathon { parts },
            move |parts, leading| Companion::lead(parts, config.clone(), leading),
            shutdown,
        )
        .await
}

/// The leader's companion: plans and acts until its leadership ends (the SDK then drops it).
struct Companion {
    parts: Parts<SharedState>,
    config: Config,
    /// Wakes the SDK's loop, to ask the scheduler half again.
    sdk: Arc<tokio::sync::Notify>,
    apps: Cache<App>,
    agents: Cache<Agent>,
    versions: Cache<AppVersion>,
    /// The watches behind the caches (they end with the companion).
    _watches: [AbortOnDrop; 3],
    /// When each app's status was last written, and what was written.
    written: HashMap<String, (Instant, AppStatus)>,
    /// Health kills across apps.
    health_kills: TokenBucket,
    /// Status writes across apps.
    status_writes: TokenBucket,
    /// Apps whose decided status waits to be written (its turn in the budget, or its per-app interval).
    unwritten: Backlog,
}

impl Companion {
    /// Lists apps, agents and versions, then plans and acts on the kit until the leadership ends.
    async fn lead(parts: Parts<SharedState>, config: Config, leading: Leading) {
        let (apps, apps_watch) = watch_owners::<App>(&parts.client, &parts.marks);
        let marks = parts.marks.clone();
        let mut readiness: HashMap<String, bool> = HashMap::new();
        // Only a change of an agent's readiness (or a new or gone agent) changes a plan: every app's.
        let (agents, agents_watch) =
            cache(Api::<Agent>::all(parts.client.clone()), watcher::Config::default(), move |seen| match seen {
                Seen::Applied(agent) | Seen::Listing(agent) => {
                    let name = agent.metadata.name.clone().unwrap_or_default();
                    if readiness.insert(name, ready(agent)) != Some(ready(agent)) {
                        marks.mark_all();
                    }
                }
                Seen::Deleted(agent) => {
                    readiness.remove(agent.metadata.name.as_deref().unwrap_or_default());
                    marks.mark_all();
                }
                Seen::Listed => marks.mark_all(),
            });
        let (versions, versions_watch) =
            cache(Api::<AppVersion>::all(parts.client.clone()), watcher::Config::default(), |_| {});
        let watches = [apps_watch, AbortOnDrop(agents_watch), AbortOnDrop(versions_watch)];
        for ready in [apps.wait_until_ready().await, agents.wait_until_ready().await, versions.wait_until_ready().await]
        {
            if !ready {
                return;
            }
        }
        let health_kills = TokenBucket::new(config.health_kills_per_second, config.health_kills_per_second.max(1.0));
        let status_writes = TokenBucket::new(config.status_writes_per_second, config.status_writes_per_second);
        let this = Companion {
            parts,
            config,
            sdk: leading.wake.clone(),
            apps,
            agents,
            versions,
            _watches: watches,
            written: HashMap::new(),
            health_kills,
            status_writes,
            unwritten: Backlog::default(),
        };
        // What a previous leadership left is forgotten; the first turn (all) reads everything and sets `ready`.
        *this.parts.shared.lock() = SharedState::default();
        tracing::info!(apps = this.apps.len(), tasks = leading.tasks.len(), "marathon leading");
        let marks = this.parts.marks.clone();
        companion::lead(this, leading, marks).await;
    }
}

impl Plans for Companion {
    fn owner_of(task: &Task) -> Option<String> {
        app_of(task)
    }

    fn seen(&mut self, change: &TaskChange) {
        if let TaskChange::Applied(task) = change
            && task.spec.kill_requested == Some(true)
        {
            self.parts.shared.lock().pending_kills.remove(&key(&**task));
        }
    }

    async fn turn(&mut self, kit: &mut Kit, turn: Turn) -> Option<Instant> {
        let mut apps = turn.owners;
        if turn.all {
            self.refresh_agents();
            self.load_apps(None);
            let mut shared = self.parts.shared.lock();
            shared.ready = true;
            apps.extend(shared.apps.keys().cloned());
        } else {
            self.load_apps(Some(&turn.changed));
        }
        if !apps.is_empty() {
            self.reconcile(kit, apps).await;
        }
        self.flush().await;
        // Queued statuses wait for tokens, which come at the budget's rate.
        self.unwritten.next().map(|t| t.max(Instant::now() + Duration::from_millis(50)))
    }
}

fn ready(agent: &Agent) -> bool {
    let conditions = agent.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    !conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::False)
}

impl Companion {
    fn refresh_agents(&mut self) {
        let mut fields = HashMap::new();
        let mut agents = Agents::default();
        let mut values: HashMap<String, HashSet<String>> = HashMap::new();
        for agent in self.agents.state() {
            let name = agent.metadata.name.clone().unwrap_or_default();
            let mut f = agent.spec.attributes.clone();
            let hostname = agent.status.as_ref().and_then(|s| s.hostname.clone()).unwrap_or_else(|| name.clone());
            f.insert("hostname".to_owned(), hostname);
            let conditions = agent.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
            if let Some(c) = conditions.iter().find(|c| c.type_ == "Ready" && c.status == ConditionStatus::False) {
                agents.unreachable_since.insert(name.clone(), c.last_transition_time.unwrap_or_else(Timestamp::now));
            } else if agent.spec.unschedulable != Some(true) {
                for (k, v) in &f {
                    values.entry(k.clone()).or_default().insert(v.clone());
                }
            }
            fields.insert(name, f);
        }
        agents.distinct = values.into_iter().map(|(k, v)| (k, v.len())).collect();
        let mut shared = self.parts.shared.lock();
        shared.fields = fields;
        shared.agents = agents;
    }

    /// Copies apps from the cache into the shared state (`only` these keys, or all): specs defaulted, status the last
    /// one decided when this leader decided one.
    fn load_apps(&mut self, only: Option<&BTreeSet<String>>) {
        let fresh: Vec<(String, Option<Arc<App>>)> = match only {
            None => self.apps.state().into_iter().map(|a| (key(&*a), Some(a))).collect(),
            Some(keys) => keys.iter().map(|k| (k.clone(), self.apps.get(k))).collect(),
        };
        let mut shared = self.parts.shared.lock();
        if only.is_none() {
            shared.apps.clear();
            shared.versions.clear();
        }
        for (k, app) in fresh {
            match app {
                Some(app) => {
                    let mut app = (*app).clone();
                    app.spec.apply_defaults();
                    if let Some((_, status)) = self.written.get(&k) {
                        app.status = Some(status.clone());
                    }
                    shared.versions.insert(k.clone(), app.spec.version());
                    shared.apps.insert(k, Arc::new(app));
                }
                None => {
                    shared.apps.remove(&k);
                    shared.versions.remove(&k);
                    shared.wanting.remove(&k);
                    shared.summaries.remove(&k);
                    self.written.remove(&k);
                }
            }
        }
    }

    fn dependencies(shared: &SharedState, app: &App) -> Result<(), String> {
        let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
        plan::dependencies(app, |name| shared.apps.get(&format!("{namespace}/{name}")).map(|a| &**a))
    }

    /// Writes queued statuses whose turn has come, as far as the budget allows.
    async fn flush(&mut self) {
        if self.unwritten.is_empty() {
            return;
        }
        let mut budget = self.status_writes.take_all();
        let ready = self.unwritten.ready(Instant::now());
        let mut writes = Vec::new();
        {
            let shared = self.parts.shared.lock();
            for k in ready {
                if budget == 0 {
                    break;
                }
                self.unwritten.remove(&k);
                let Some(app) = shared.apps.get(&k) else { continue };
                let Some(status) = app.status.clone() else { continue };
                let stored = self.apps.get(&k).and_then(|a| a.status.clone());
                if stored.as_ref() == Some(&status) {
                    continue;
                }
                budget -= 1;
                self.written.insert(k.clone(), (Instant::now(), status.clone()));
                let namespace = app.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
                writes.push((k, namespace, app.metadata.name.clone().unwrap_or_default(), status, stored));
            }
        }
        let client = self.parts.client.clone();
        let failed: Vec<Option<String>> = futures::stream::iter(writes)
            .map(|(k, namespace, name, status, stored)| {
                let apps: Api<App> = Api::namespaced(client.clone(), &namespace);
                async move {
                    let patch = status_patch(&status, stored.as_ref());
                    (writes::patch_status(&apps, &name, patch, MANAGER).await == Written::Failed).then_some(k)
                }
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        for k in failed.into_iter().flatten() {
            self.written.remove(&k);
            self.unwritten.push(&k, Instant::now() + Duration::from_secs(1));
        }
    }

    async fn reconcile(&mut self, kit: &mut Kit, keys: BTreeSet<String>) {
        let now = Timestamp::now();
        let mut health_budget = self.health_kills.available();
        let mut work: Vec<(Arc<App>, Plan)> = Vec::new();
        let mut dependents_changed = false;
        {
            let mut shared = self.parts.shared.lock();
            shared.pending_kills.expire();
            for k in &keys {
                let Some(app) = shared.apps.get(k).cloned() else { continue };
                if app.metadata.deletion_timestamp.is_some() {
                    shared.wanting.remove(k);
                    continue;
                }
                let dependencies = Self::dependencies(&shared, &app);
                let tasks = shared.pending_kills.assume_killed(kit.tasks_of(k));
                let ctx = plan::Context {
                    now,
                    version: shared.versions.get(k).map(String::as_str),
                    agents: &shared.agents,
                    dependencies: dependencies.clone(),
                    health_kill_budget: health_budget,
                    offers: shared.summaries.get(k),
                };
                let planned = plan::plan(&app, &tasks, &ctx);
                let health_kills = planned.kills.iter().filter(|k| k.reason == plan::KillReason::Unhealthy).count();
                self.health_kills.spend(health_kills);
                health_budget = health_budget.saturating_sub(health_kills);
                shared.dependencies.insert(k.clone(), dependencies);
                if planned.launch > 0 {
                    shared.wanting.insert(k.clone());
                } else {
                    shared.wanting.remove(k);
                }
                for kill in &planned.kills {
                    let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
                    shared.pending_kills.insert(format!("{namespace}/{}", kill.task));
                }
                let before = app.status.clone().unwrap_or_default();
                if (before.tasks_healthy, before.deployment.is_some())
                    != (planned.status.tasks_healthy, planned.status.deployment.is_some())
                {
                    dependents_changed = true;
                }
                // The status decided becomes the one the next plan compares with (Events fire once).
                let mut decided = (*app).clone();
                decided.status = Some(planned.status.clone());
                shared.apps.insert(k.clone(), Arc::new(decided));
                work.push((app, planned));
            }
        }
        if dependents_changed {
            let shared = self.parts.shared.lock();
            let dependents: Vec<String> = shared
                .apps
                .iter()
                .filter(|(k, a)| !a.spec.dependencies.is_empty() && !keys.contains(*k))
                .map(|(k, _)| k.clone())
                .collect();
            drop(shared);
            kit.timers.add_all(dependents, Instant::now());
        }
        // The scheduler half decides on what was just planned.
        self.sdk.notify_one();
        for (app, planned) in &work {
            for record in &planned.events {
                self.parts.events.send(&**app, record.clone());
            }
            if let Some(at) = planned.wake {
                let instant = Instant::now() + now.duration_until(at).unsigned_abs() + Duration::from_millis(5);
                kit.timers.add(&key(&**app), instant);
            }
        }
        // The recorded versions per app, read once for every app that records a new one.
        let mut recorded: HashMap<(String, String), Vec<Arc<AppVersion>>> = HashMap::new();
        let recording = work.iter().any(|(app, planned)| {
            let name = format!("{}-{}", app.metadata.name.as_deref().unwrap_or_default(), planned.version);
            let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
            self.versions.get(&format!("{namespace}/{name}")).is_none()
        });
        if recording {
            for v in self.versions.state() {
                let namespace = v.metadata.namespace.clone().unwrap_or_default();
                recorded.entry((namespace, v.spec.app.clone())).or_default().push(v);
            }
        }
        let mut budget = self.status_writes.take_all();
        let mut ops = Vec::with_capacity(work.len());
        for (app, planned) in work {
            let namespace = app.metadata.namespace.clone().unwrap_or_default();
            let versions =
                recorded.remove(&(namespace, app.metadata.name.clone().unwrap_or_default())).unwrap_or_default();
            ops.push(self.act(kit, app, planned, versions, &mut budget));
        }
        let retries: Vec<Option<(String, Instant)>> =
            futures::stream::iter(ops).buffer_unordered(WRITES_IN_FLIGHT).collect().await;
        for (k, at) in retries.into_iter().flatten() {
            kit.timers.add(&k, at);
        }
    }

    /// Carries out one app's plan; returns when to look again if its status could not be written yet.
    fn act(
        &mut self,
        kit: &Kit,
        app: Arc<App>,
        planned: Plan,
        mut versions: Vec<Arc<AppVersion>>,
        budget: &mut usize,
    ) -> impl Future<Output = Option<(String, Instant)>> + use<> {
        let k = key(&*app);
        let namespace = app.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let name = app.metadata.name.clone().unwrap_or_default();
        let interval = self.config.status_interval;
        // The status: written when it changed, at most once per interval.
        let stored = self.apps.get(&k).and_then(|a| a.status.clone());
        let last = self.written.get(&k).map(|(at, s)| (*at, s.clone()));
        // Changed from what is stored — unless this very status was just written and the watch has not shown it yet
        // (a failed write is retried once that grace has passed).
        let grace = (interval * 2).max(Duration::from_secs(2));
        let just_written = last.as_ref().is_some_and(|(at, s)| *s == planned.status && at.elapsed() < grace);
        let changed = stored.as_ref() != Some(&planned.status) && !just_written;
        // Rejection counts alone grow with every batch of offers an unplaceable app sees: they are written at most
        // every 30 s, so a stuck app does not rewrite its status each second.
        let only_counts = stored.as_ref().is_some_and(|s| {
            let mut a = s.clone();
            a.offer_rejections.clone_from(&planned.status.offer_rejections);
            a == planned.status
        });
        let interval = if only_counts { interval.max(REJECTIONS_INTERVAL) } else { interval };
        let due = last.as_ref().is_none_or(|(at, _)| at.elapsed() >= interval);
        // Across apps, at most the budget per second. A status that must wait is queued, not re-planned: the queue
        // writes each app's latest decided status when its turn comes.
        let write_status = changed && due && *budget > 0;
        if write_status {
            *budget -= 1;
            self.written.insert(k.clone(), (Instant::now(), planned.status.clone()));
        } else if changed {
            let not_before = last.as_ref().map_or_else(Instant::now, |(at, _)| *at + interval).max(Instant::now());
            self.unwritten.push(&k, not_before);
        }
        let status_settled = stored.as_ref() == Some(&planned.status);
        // The version, recorded once; the oldest beyond the kept ones forgotten (never one still running).
        let version_name = format!("{name}-{}", planned.version);
        let version_key = format!("{namespace}/{version_name}");
        let record_version = self.versions.get(&version_key).is_none() && app.metadata.uid.is_some();
        let mut forget: Vec<String> = Vec::new();
        if record_version && versions.len() >= VERSIONS_KEPT {
            versions.sort_by_key(|v| std::cmp::Reverse(v.metadata.creation_timestamp));
            let live: HashSet<String> = kit
                .tasks_of(&k)
                .iter()
                .filter(|t| t.status.as_ref().is_none_or(|s| !s.state.is_terminal()))
                .filter_map(|t| t.metadata.labels.get(agora_schemas::APP_VERSION_LABEL).cloned())
                .collect();
            forget = versions
                .iter()
                .skip(VERSIONS_KEPT - 1)
                .filter(|v| v.spec.version != planned.version && !live.contains(&v.spec.version))
                .filter_map(|v| v.metadata.name.clone())
                .collect();
        }
        let client = self.parts.client.clone();
        async move {
            let apps: Api<App> = Api::namespaced(client.clone(), &namespace);
            let tasks = writes::tasks_in(&client, &namespace);
            let version_api: Api<AppVersion> = Api::namespaced(client.clone(), &namespace);
            if record_version {
                let mut template = app.spec.clone();
                template.instances = None;
                let mut meta = ObjectMeta::named(Some(&namespace), &version_name);
                meta.labels.insert(APP_LABEL.to_owned(), name.clone());
                meta.owner_references = vec![OwnerReference::controller(&*app, false)];
                let object = AppVersion::new(
                    meta,
                    AppVersionSpec { app: name.clone(), version: planned.version.clone(), template },
                );
                match version_api.create(&PostParams::default().manager(MANAGER), &object).await {
                    Ok(_) => {}
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => tracing::warn!(app = %k, error = %e, "recording the version failed"),
                }
            }
            for old in forget {
                if let Err(e) = version_api.delete(&old, &agora_client::DeleteParams::default()).await
                    && !e.is_not_found()
                {
                    tracing::debug!(version = %old, error = %e, "forgetting a version failed");
                }
            }
            for kill in &planned.kills {
                writes::request_kill(&tasks, &kill.task, kill.reason.as_str(), MANAGER).await;
            }
            let mut status_ok = status_settled;
            if write_status {
                match writes::patch_status(&apps, &name, status_patch(&planned.status, stored.as_ref()), MANAGER).await
                {
                    Written::Stored => status_ok = true,
                    Written::Gone => return None,
                    Written::Failed => return Some((k, Instant::now() + grace + Duration::from_millis(100))),
                }
            }
            // Finished tasks are forgotten only once the status that counted them is stored.
            if status_ok {
                for task in &planned.delete {
                    writes::delete_task(&tasks, task).await;
                }
            }
            None
        }
    }
}

/// The status as a merge patch over `stored`: fields now unset are removed explicitly (a merge patch keeps what it
/// omits), and so are rejection reasons no longer counted (a map is merged key by key).
fn status_patch(status: &AppStatus, stored: Option<&AppStatus>) -> Value {
    let nulls = ["delayedUntil", "lastTaskFailure", "offerRejections", "deployment", "conditions", "version"];
    let mut value = writes::merge_patch(status, &nulls, &[]);
    if let Value::Object(map) = &mut value {
        let gone: Vec<&String> = stored
            .into_iter()
            .flat_map(|s| s.offer_rejections.keys())
            .filter(|k| !status.offer_rejections.contains_key(*k))
            .collect();
        if !gone.is_empty() {
            let rejections = map.entry("offerRejections").or_insert(Value::Null);
            if !rejections.is_object() {
                *rejections = json!({});
            }
            for reason in gone {
                rejections[reason.as_str()] = Value::Null;
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_patch_removes_what_is_no_longer_set() {
        let patch = status_patch(&AppStatus::default(), None);
        assert_eq!(patch["deployment"], Value::Null);
        assert_eq!(patch["delayedUntil"], Value::Null);
        assert_eq!(patch["instances"], json!(0));
        let stored = AppStatus {
            offer_rejections: BTreeMap::from([("InsufficientCpus".to_owned(), 3)]),
            ..AppStatus::default()
        };
        let now =
            AppStatus { offer_rejections: BTreeMap::from([("InsufficientMem".to_owned(), 1)]), ..AppStatus::default() };
        let patch = status_patch(&now, Some(&stored));
        assert_eq!(patch["offerRejections"], json!({"InsufficientMem": 1, "InsufficientCpus": null}));
    }
}
