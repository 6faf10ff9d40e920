//! The reconcile of one App as a pure function, as Nomad's `reconcile.go` is: from the App, its Tasks, what is known
//! of their agents and of recent offers, and the time, to a [`Plan`] — how many tasks of which version to launch,
//! which tasks to kill and why, which finished tasks to forget, the new status and the Events that explain it.
//!
//! Marathon's semantics (docs/marathon.md), and where they hurt, better:
//! - the rolling upgrade keeps `ceil(n × minimumHealthCapacity)` healthy and runs at most
//!   `floor(n × (1 + maximumOverCapacity))` (one more when the two are equal), killing an old task each time a new
//!   one is healthy — decided from the counts alone, so a changed spec mid-deployment simply re-targets it;
//! - health kills never take more at once than the upgrade strategy allows to be down (at least one), are rate
//!   limited across apps by the caller's budget, and "unknown" health (grace period, no result yet) never kills;
//! - backoff grows per failure of the current version (`FAILED`, `FINISHED`, `ERROR`, and health kills), capped,
//!   reset by a new version or a healthy spell; its state lives in the App's status, so a restart keeps it;
//! - every wait is explained in words (`status.deployment.waiting`, the `Scheduled` condition).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agora_schemas::app::{Deployment, TaskFailure};
use agora_schemas::{
    APP_VERSION_LABEL, App, AppSpec, AppStatus, Condition, ConditionStatus, ConstraintRule, KillSelection, Task,
    TaskState,
};
use jiff::{SignedDuration, Timestamp};

use crate::runtime::events::Record;

pub use agora_schemas::names::KILL_REASON_ANNOTATION;

/// Failed tasks kept (newest first) for `describe`; older terminal tasks are deleted.
pub const FAILURES_KEPT: usize = 3;

/// After this long healthy at full strength with no failure, the launch delay starts again from `backoffSeconds`.
pub const BACKOFF_RESET: SignedDuration = SignedDuration::from_mins(5);

/// Why marathon kills a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KillReason {
    /// More instances run than wanted.
    ScaleDown,
    /// Its health checks failed past `maxConsecutiveFailures`.
    Unhealthy,
    /// It runs an old version and the deployment replaces it.
    Upgrade,
    /// Unreachable past `expungeAfterSeconds`: forgotten, and killed should its agent return.
    Expunged,
}

impl KillReason {
    /// The word recorded in the task's kill annotation and in Events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleDown => "ScaleDown",
            Self::Unhealthy => "Unhealthy",
            Self::Upgrade => "Upgrade",
            Self::Expunged => "Expunged",
        }
    }
}

/// One kill.
#[derive(Clone, Debug, PartialEq)]
pub struct Kill {
    /// The task's name.
    pub task: String,
    /// Why.
    pub reason: KillReason,
    /// In words, for the Event.
    pub message: String,
}

/// What is known of the agents, for unreachable timing and explanations.
#[derive(Clone, Debug, Default)]
pub struct Agents {
    /// Since when each unreachable agent has been unreachable.
    pub unreachable_since: HashMap<String, Timestamp>,
    /// How many schedulable agents have each value of each field (`hostname` → 12 values).
    pub distinct: HashMap<String, usize>,
}

/// What the last offers showed about an app's pending launches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OfferSummary {
    /// Offers rejected, per reason (`InsufficientCpus`, `UnfulfilledConstraint`, ...).
    pub rejections: BTreeMap<String, u64>,
    /// The last reason in words.
    pub last_misfit: Option<String>,
    /// The most cpus and mem any recent offer had, and on which agent.
    pub largest: Option<(f64, f64, String)>,
}

/// The reconcile's inputs besides the App.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// The time of the decision.
    pub now: Timestamp,
    /// The app's version when the caller knows it ([`AppSpec::version`] of its spec, worth computing once).
    pub version: Option<&'a str>,
    /// The agents.
    pub agents: &'a Agents,
    /// `Err(why)` while a dependency is not running healthy.
    pub dependencies: Result<(), String>,
    /// Health kills the caller allows now (its rate limit across apps).
    pub health_kill_budget: usize,
    /// What recent offers showed.
    pub offers: Option<&'a OfferSummary>,
}

/// What to do for one App.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The version its tasks are built from now.
    pub version: String,
    /// How many tasks of `version` to launch now.
    pub launch: usize,
    /// Tasks to kill.
    pub kills: Vec<Kill>,
    /// Finished tasks to delete (already counted in the status).
    pub delete: Vec<String>,
    /// The new status.
    pub status: AppStatus,
    /// What a person would ask about.
    pub events: Vec<Record>,
    /// When to decide again even if nothing changes.
    pub wake: Option<Timestamp>,
}

/// A task as the reconcile sees it.
struct View<'a> {
    task: &'a Task,
    name: &'a str,
    version: &'a str,
    state: TaskState,
    started: Timestamp,
    kill_reason: Option<&'a str>,
}

impl View<'_> {
    fn dying(&self) -> bool {
        self.task.spec.kill_requested == Some(true) || self.state == TaskState::Killing
    }

    fn healthy(&self) -> bool {
        self.state == TaskState::Running
            && (self.task.spec.health_checks.is_empty()
                || self.task.status.as_ref().and_then(|s| s.healthy) == Some(true))
    }

    fn unhealthy(&self) -> bool {
        self.state == TaskState::Running && self.task.status.as_ref().and_then(|s| s.healthy) == Some(false)
    }

    /// Failing past its checks' limit (a limit of 0 never kills).
    fn failing(&self) -> bool {
        let limit = self.task.spec.health_checks.iter().map(|c| c.max_consecutive_failures()).min().unwrap_or(0);
        let failures = self.task.status.as_ref().map_or(0, |s| s.health_check_failures);
        self.unhealthy() && limit > 0 && failures >= limit
    }

    /// A failure that feeds the backoff.
    fn failure(&self) -> bool {
        matches!(self.state, TaskState::Failed | TaskState::Finished | TaskState::Error)
            || self.state == TaskState::Killed && self.kill_reason == Some(KillReason::Unhealthy.as_str())
    }

    fn finished(&self) -> Timestamp {
        self.task.status.as_ref().and_then(|s| s.finished_at).unwrap_or(self.started)
    }
}

fn view(task: &Task) -> View<'_> {
    let meta = &task.metadata;
    let status = task.status.as_ref();
    View {
        task,
        name: meta.name.as_deref().unwrap_or_default(),
        version: meta.labels.get(APP_VERSION_LABEL).map_or("", String::as_str),
        state: status.map_or(TaskState::Staging, |s| s.state),
        started: status.and_then(|s| s.started_at).or(meta.creation_timestamp).unwrap_or(Timestamp::UNIX_EPOCH),
        kill_reason: meta.annotations.get(KILL_REASON_ANNOTATION).map(String::as_str),
    }
}

/// Whether `app`'s dependencies (apps of its namespace, found with `lookup`) run healthy with no deployment under
/// way; else why not, in words — including a dependency cycle, which would otherwise wait forever.
///
/// # Errors
/// The first dependency that is missing, not yet healthy, or part of a cycle.
pub fn dependencies<'a>(app: &'a App, lookup: impl Fn(&str) -> Option<&'a App>) -> Result<(), String> {
    let own = app.metadata.name.as_deref().unwrap_or_default();
    // A cycle through this app: walk the dependency graph from its dependencies.
    let mut stack: Vec<(Vec<&str>, &App)> = Vec::new();
    for dep in &app.spec.dependencies {
        if let Some(other) = lookup(dep) {
            stack.push((vec![own, dep.as_str()], other));
        }
    }
    let mut seen = std::collections::HashSet::new();
    while let Some((path, current)) = stack.pop() {
        for next in &current.spec.dependencies {
            if next == own {
                return Err(format!("dependency cycle: {} → {own}: none of them can start", path.join(" → ")));
            }
            if seen.insert(next.clone())
                && let Some(other) = lookup(next)
            {
                let mut longer = path.clone();
                longer.push(next);
                stack.push((longer, other));
            }
        }
    }
    for dep in &app.spec.dependencies {
        let Some(other) = lookup(dep) else {
            return Err(format!("waiting for app {dep}, which does not exist"));
        };
        let status = other.status.clone().unwrap_or_default();
        let wanted = other.spec.instances();
        if status.tasks_healthy < wanted || status.deployment.is_some() {
            return Err(format!(
                "waiting for app {dep} to run healthy ({} of {wanted} healthy{})",
                status.tasks_healthy,
                if status.deployment.is_some() { ", deploying" } else { "" }
            ));
        }
    }
    Ok(())
}

/// The upgrade strategy's bounds for `n` instances: (minimum healthy, maximum running).
#[must_use]
pub fn capacity(spec: &AppSpec, n: usize, deploying: bool) -> (usize, usize) {
    let strategy = spec.upgrade_strategy.clone().unwrap_or_default();
    let count = n as f64;
    let min_healthy = (count * strategy.minimum_health_capacity()).ceil() as usize;
    let mut max_capacity = (count * (1.0 + strategy.maximum_over_capacity())).floor() as usize;
    if deploying && min_healthy == max_capacity {
        // Marathon: with no room above the minimum, one extra task may start, or nothing could ever be replaced.
        max_capacity += 1;
    }
    (min_healthy, max_capacity)
}

/// The launch delay after `failures` consecutive failures.
#[must_use]
pub fn launch_delay(spec: &AppSpec, failures: u32) -> SignedDuration {
    if failures == 0 {
        return SignedDuration::ZERO;
    }
    let base = f64::from(spec.backoff_seconds());
    let cap = f64::from(spec.max_launch_delay_seconds());
    let exponent = i32::try_from(failures - 1).unwrap_or(i32::MAX);
    SignedDuration::from_secs_f64((base * spec.backoff_factor().powi(exponent)).min(cap))
}

/// Orders tasks for killing, first to go first: not yet running, unhealthy, health unknown, healthy; then by the
/// app's kill selection.
fn kill_order(tasks: &mut [&View<'_>], selection: KillSelection) {
    let rank = |v: &View<'_>| {
        if v.state != TaskState::Running {
            0
        } else if v.unhealthy() {
            1
        } else if !v.healthy() {
            2
        } else {
            3
        }
    };
    tasks.sort_by(|a, b| {
        rank(a).cmp(&rank(b)).then_with(|| match selection {
            KillSelection::YoungestFirst => b.started.cmp(&a.started),
            KillSelection::OldestFirst => a.started.cmp(&b.started),
        })
    });
}

/// Decides for `app` (its spec with defaults applied) given all its `tasks`, stage by stage: `classify` the live
/// tasks, `health_kills`, the `rollout` of a new version, `scale_down`, the `launch_budget`, the
/// `backoff` and what else holds launches back (`launch_gate`), finished tasks to `forget`, then the status
/// (`deployment`, `conditions`) and the Events.
#[must_use]
pub fn plan(app: &App, tasks: &[Arc<Task>], ctx: &Context<'_>) -> Plan {
    let prev = app.status.clone().unwrap_or_default();
    let version = ctx.version.map_or_else(|| app.spec.version(), str::to_owned);
    let n = usize::try_from(app.spec.instances()).unwrap_or(0);
    let given = Given { spec: &app.spec, n, version: &version, prev: &prev, now: ctx.now };
    let mut wake = Wake::default();
    let mut kills: Vec<Kill> = Vec::new();

    let views: Vec<View<'_>> = tasks.iter().map(|t| view(t)).collect();
    let mut live = classify(&views, &given, ctx, &mut kills, &mut wake);
    health_kills(&mut live, &given, ctx.health_kill_budget, &mut kills);
    let rollout = rollout(&live, &given, &mut kills);
    scale_down(&rollout, &given, &mut kills);
    let mut waiting: Vec<String> = Vec::new();
    let launch = launch_budget(&live, &rollout, n, &kills, &mut waiting);
    let backoff = backoff(&views, &given, rollout.new_healthy >= n);
    let gate = launch_gate(launch, &backoff, &given, ctx, &mut wake);
    let delete = forget(&views, &version, backoff.last_failed_at());

    let healthy = live.active.iter().filter(|v| v.healthy()).count();
    let deployment = deployment(&live, &rollout, &gate, waiting, &given);
    let conditions = conditions(&live, deployment.as_ref(), gate.held.as_ref(), &given);
    let launch = gate.launch;
    let status = AppStatus {
        observed_generation: app.metadata.generation,
        instances: count(n),
        tasks_staged: count(
            live.active.iter().filter(|v| matches!(v.state, TaskState::Staging | TaskState::Starting)).count(),
        ),
        tasks_running: count(live.active.iter().filter(|v| v.state == TaskState::Running).count()),
        tasks_healthy: count(healthy),
        tasks_unhealthy: count(live.active.iter().filter(|v| v.unhealthy()).count()),
        delayed_until: backoff.delayed_until,
        last_task_failure: backoff.last_failure,
        offer_rejections: if launch > 0 || gate.held.is_some() {
            ctx.offers.map(|o| o.rejections.clone()).unwrap_or_default()
        } else {
            BTreeMap::new()
        },
        version: Some(version.clone()),
        consecutive_failures: backoff.consecutive,
        deployment,
        conditions: conditions.into_iter().map(|c| carry_transition(c, &prev.conditions, ctx.now)).collect(),
    };
    let events = events(&prev, &status, &backoff.failures, &kills, &version);
    Plan { version, launch, kills, delete, status, events, wake: wake.0 }
}

/// What every stage reads: the spec (defaults applied), the instances wanted, the current version, the status the
/// plan starts from, and the time.
struct Given<'a> {
    spec: &'a AppSpec,
    n: usize,
    version: &'a str,
    prev: &'a AppStatus,
    now: Timestamp,
}

/// The earliest time to decide again.
#[derive(Default)]
struct Wake(Option<Timestamp>);

impl Wake {
    fn at(&mut self, t: Timestamp) {
        self.0 = Some(self.0.map_or(t, |w| w.min(t)));
    }
}

/// The live tasks: counted as instances (active), and being killed (dying, still holding resources).
struct Live<'v> {
    active: Vec<&'v View<'v>>,
    dying: Vec<&'v View<'v>>,
}

/// Splits the live tasks. A task unreachable past `inactiveAfterSeconds` is replaced (not counted); past
/// `expungeAfterSeconds` it is forgotten, and killed should its agent return.
fn classify<'v>(
    views: &'v [View<'v>],
    given: &Given<'_>,
    ctx: &Context<'_>,
    kills: &mut Vec<Kill>,
    wake: &mut Wake,
) -> Live<'v> {
    let unreachable = given.spec.unreachable_strategy.clone().unwrap_or_default();
    let inactive_after = SignedDuration::from_secs(i64::from(unreachable.inactive_after_seconds()));
    let expunge_after = SignedDuration::from_secs(i64::from(unreachable.expunge_after_seconds()));
    let mut live = Live { active: Vec::new(), dying: Vec::new() };
    for v in views.iter().filter(|v| !v.state.is_terminal()) {
        if v.dying() {
            live.dying.push(v);
            continue;
        }
        if v.state == TaskState::Unreachable
            && let Some(since) = ctx.agents.unreachable_since.get(&v.task.spec.agent)
        {
            let gone_for = since.duration_until(ctx.now);
            if gone_for >= expunge_after {
                let message = format!(
                    "task {} has been unreachable {} s, past expungeAfterSeconds ({} s): forgotten, and killed \
                     should its agent return",
                    v.name,
                    gone_for.as_secs(),
                    expunge_after.as_secs()
                );
                kills.push(Kill { task: v.name.to_owned(), reason: KillReason::Expunged, message });
                live.dying.push(v);
                continue;
            }
            wake.at(*since + expunge_after);
            if gone_for >= inactive_after {
                continue;
            }
            wake.at(*since + inactive_after);
        }
        live.active.push(v);
    }
    live
}

/// Kills tasks failing their health checks past the limit, worst first: never more at once than the upgrade
/// strategy lets be down (at least one), nor more than the caller's budget. The killed leave `live.active`.
fn health_kills(live: &mut Live<'_>, given: &Given<'_>, budget: usize, kills: &mut Vec<Kill>) {
    let (min_healthy, _) = capacity(given.spec, given.n, false);
    let down_allowed = given.n.saturating_sub(min_healthy).max(1);
    let health_dying = live.dying.iter().filter(|v| v.kill_reason == Some(KillReason::Unhealthy.as_str())).count();
    let mut room = down_allowed.saturating_sub(health_dying).min(budget);
    let mut failing: Vec<&View<'_>> = live.active.iter().copied().filter(|v| v.failing()).collect();
    failing.sort_by_key(|v| std::cmp::Reverse(v.task.status.as_ref().map_or(0, |s| s.health_check_failures)));
    for v in failing {
        if room == 0 {
            break;
        }
        room -= 1;
        let failures = v.task.status.as_ref().map_or(0, |s| s.health_check_failures);
        let last = last_check(v.task).unwrap_or_default();
        let message = format!("task {} failed {failures} health checks in a row{last}", v.name);
        kills.push(Kill { task: v.name.to_owned(), reason: KillReason::Unhealthy, message });
    }
    live.active.retain(|v| !killed(v, kills));
}

fn killed(v: &View<'_>, kills: &[Kill]) -> bool {
    kills.iter().any(|k| k.task == v.name)
}

/// Where a change of version stands.
struct Rollout<'v> {
    /// Active tasks of the current version, and of older ones.
    new: Vec<&'v View<'v>>,
    old: Vec<&'v View<'v>>,
    /// Old tasks being killed.
    old_dying: usize,
    /// Healthy tasks of the current version.
    new_healthy: usize,
    /// A deployment is under way.
    deploying: bool,
    /// The most tasks that may run at once (the strategy's bound).
    max_capacity: usize,
}

/// The rolling upgrade: old tasks that are not healthy count for nothing and go first, freely; healthy old ones go
/// while the healthy count stays at or above the strategy's minimum — decided from the counts alone, so a spec
/// changed mid-deployment simply re-targets it.
fn rollout<'v>(live: &Live<'v>, given: &Given<'_>, kills: &mut Vec<Kill>) -> Rollout<'v> {
    let (spec, n, version) = (given.spec, given.n, given.version);
    let (new, old): (Vec<&View<'_>>, Vec<&View<'_>>) = live.active.iter().copied().partition(|v| v.version == version);
    let old_dying = live.dying.iter().filter(|v| v.version != version).count();
    let new_healthy = new.iter().filter(|v| v.healthy()).count();
    let prev_to = given.prev.deployment.as_ref().map(|d| d.to.as_str());
    let deploying = !old.is_empty() || old_dying > 0 || prev_to == Some(version) && new_healthy < n;
    let (min_healthy, max_capacity) = capacity(spec, n, deploying);
    if deploying {
        let mut old_sorted = old.clone();
        kill_order(&mut old_sorted, spec.kill_selection());
        let old_healthy = old.iter().filter(|v| v.healthy()).count();
        let mut may_kill_healthy = (old_healthy + new_healthy).saturating_sub(min_healthy);
        for v in old_sorted {
            let message = format!("task {} runs version {}, replaced by {version}", v.name, v.version);
            if v.healthy() {
                if may_kill_healthy == 0 {
                    continue;
                }
                may_kill_healthy -= 1;
            }
            kills.push(Kill { task: v.name.to_owned(), reason: KillReason::Upgrade, message });
        }
    }
    Rollout { new, old, old_dying, new_healthy, deploying, max_capacity }
}

/// Kills the surplus of the current version (scaled down, or an unreachable task back), by the kill selection.
fn scale_down(rollout: &Rollout<'_>, given: &Given<'_>, kills: &mut Vec<Kill>) {
    let n = given.n;
    if rollout.new.len() <= n {
        return;
    }
    let selection = given.spec.kill_selection();
    let mut surplus = rollout.new.clone();
    kill_order(&mut surplus, selection);
    for v in &surplus[..surplus.len() - n] {
        let message = format!("scaling to {n}: task {} is surplus ({selection:?})", v.name);
        kills.push(Kill { task: v.name.to_owned(), reason: KillReason::ScaleDown, message });
    }
}

/// How many tasks of the current version are missing, and — during a deployment — how many of them fit under the
/// strategy's maximum (what is being killed still counts until it stops).
fn launch_budget(live: &Live<'_>, rollout: &Rollout<'_>, n: usize, kills: &[Kill], waiting: &mut Vec<String>) -> usize {
    let new_kept = rollout.new.iter().filter(|v| !killed(v, kills)).count();
    let health_killed = kills.iter().filter(|k| k.reason == KillReason::Unhealthy).count();
    let occupying = live.active.len() + live.dying.len() + health_killed;
    let mut launch = n.saturating_sub(new_kept);
    if rollout.deploying {
        let room = rollout.max_capacity.saturating_sub(occupying);
        if room < launch && rollout.old_dying + live.dying.len() > 0 {
            waiting.push(format!("waiting for {} killed task(s) to stop before starting more", live.dying.len()));
        }
        launch = launch.min(room);
    }
    launch
}

/// The failures of the current version and the launch delay they feed.
struct Backoff<'v> {
    /// Failures since the last one counted, oldest first.
    failures: Vec<&'v View<'v>>,
    /// Failures in a row of this version.
    consecutive: u32,
    last_failure: Option<TaskFailure>,
    /// Launches wait until then.
    delayed_until: Option<Timestamp>,
}

impl Backoff<'_> {
    fn last_failed_at(&self) -> Option<Timestamp> {
        self.last_failure.as_ref().and_then(|f| f.timestamp)
    }
}

/// Counts the current version's new failures (`FAILED`, `FINISHED`, `ERROR`, health kills) on top of those the
/// status recorded; a new version starts from none, and a healthy spell of [`BACKOFF_RESET`] at full strength
/// forgives them.
fn backoff<'v>(views: &'v [View<'v>], given: &Given<'_>, all_healthy: bool) -> Backoff<'v> {
    let (prev, spec, version, now) = (given.prev, given.spec, given.version, given.now);
    let same_version = prev.version.as_deref() == Some(version);
    let counted_until = prev.last_task_failure.as_ref().and_then(|f| f.timestamp).filter(|_| same_version);
    let mut failures: Vec<&View<'_>> = views
        .iter()
        .filter(|v| v.failure() && v.version == version && counted_until.is_none_or(|t| v.finished() > t))
        .collect();
    failures.sort_by_key(|v| v.finished());
    let mut consecutive = if same_version { prev.consecutive_failures } else { 0 };
    consecutive += u32::try_from(failures.len()).unwrap_or(u32::MAX);
    let mut last_failure = if same_version { prev.last_task_failure.clone() } else { None };
    if let Some(latest) = failures.last() {
        last_failure = Some(failure_of(latest));
    }
    let last_failed_at = last_failure.as_ref().and_then(|f| f.timestamp);
    if consecutive > 0 && all_healthy && failures.is_empty() && last_failed_at.is_none_or(|t| t + BACKOFF_RESET <= now)
    {
        consecutive = 0;
    }
    let delayed_until = last_failed_at.map(|t| t + launch_delay(spec, consecutive)).filter(|t| *t > now);
    Backoff { failures, consecutive, last_failure, delayed_until }
}

/// The launches allowed, and what holds them back.
struct Gate {
    launch: usize,
    /// The `Scheduled` condition's reason and message while launches wait.
    held: Option<(&'static str, String)>,
}

/// What holds launches back: dependencies not running healthy and the backoff stop them; a constraint no agent set
/// can meet, a resource no offer has, or no offer yet only explain the wait.
fn launch_gate(launch: usize, backoff: &Backoff<'_>, given: &Given<'_>, ctx: &Context<'_>, wake: &mut Wake) -> Gate {
    let held = |launch: usize, reason: &'static str, why: String| Gate { launch, held: Some((reason, why)) };
    if launch == 0 {
        return Gate { launch: 0, held: None };
    }
    if let Err(why) = &ctx.dependencies {
        return held(0, "DependenciesNotReady", why.clone());
    }
    if let Some(until) = backoff.delayed_until {
        let last = backoff.last_failure.as_ref().map(describe_failure).unwrap_or_default();
        let message = format!(
            "launches delayed until {} ({} s) after {} failure(s){last}",
            until.strftime("%H:%M:%S UTC"),
            ctx.now.duration_until(until).as_secs().max(1),
            backoff.consecutive
        );
        wake.at(until);
        return held(0, "Backoff", message);
    }
    if let Some(why) = offer_explanation(given.spec, given.n, launch, ctx) {
        return held(launch, "NoMatchingOffer", why);
    }
    let why = format!("{launch} instance(s) of version {} wait for an offer", given.version);
    held(launch, "WaitingForOffers", why)
}

/// Finished tasks to delete: the newest few failures stay for `describe`; the rest go once counted.
fn forget(views: &[View<'_>], version: &str, last_failed_at: Option<Timestamp>) -> Vec<String> {
    let mut terminal: Vec<&View<'_>> = views.iter().filter(|v| v.state.is_terminal()).collect();
    terminal.sort_by_key(|v| std::cmp::Reverse(v.finished()));
    let mut kept = 0;
    let mut delete = Vec::new();
    for v in terminal {
        let counted = !v.failure() || v.version != version || last_failed_at.is_some_and(|t| v.finished() <= t);
        if v.failure() && kept < FAILURES_KEPT {
            kept += 1;
        } else if counted && v.task.metadata.deletion_timestamp.is_none() {
            delete.push(v.name.to_owned());
        }
    }
    delete
}

/// The deployment under way, if any: from and to which versions, its step, and what it waits for in words.
fn deployment(
    live: &Live<'_>,
    rollout: &Rollout<'_>,
    gate: &Gate,
    mut waiting: Vec<String>,
    given: &Given<'_>,
) -> Option<Deployment> {
    if !rollout.deploying {
        return None;
    }
    let (n, version, launch, held) = (given.n, given.version, gate.launch, gate.held.as_ref());
    let (new, old) = (&rollout.new, &rollout.old);
    let mut from: Vec<String> =
        old.iter().chain(live.dying.iter().filter(|v| v.version != version)).map(|v| v.version.to_owned()).collect();
    from.sort();
    from.dedup();
    let new_live = new.len();
    let step = if held.is_some_and(|(r, _)| *r == "DependenciesNotReady") {
        "WaitingForDependencies"
    } else if new_live < n || launch > 0 {
        "StartingNewTasks"
    } else if rollout.new_healthy < n {
        "WaitingForHealth"
    } else {
        "ReplacingOldTasks"
    };
    if rollout.new_healthy < new_live {
        waiting.insert(0, health_explanation(new, n));
    }
    if let Some((_, why)) = held {
        waiting.insert(0, why.clone());
    }
    if waiting.is_empty() && !old.is_empty() {
        waiting.push(format!("waiting for {} old task(s) to be replaced", old.len()));
    }
    let previous = given.prev.deployment.as_ref();
    let started_at = previous.filter(|d| d.to == version).and_then(|d| d.started_at).or(Some(given.now));
    Some(Deployment {
        from,
        to: version.to_owned(),
        started_at,
        step: step.to_owned(),
        old: count(old.len() + rollout.old_dying),
        new: count(new_live),
        healthy: count(rollout.new_healthy),
        waiting: (!waiting.is_empty()).then(|| waiting.join("; ")),
    })
}

/// `Available`, `Progressing`, `Degraded` and `Scheduled`, each with its reason in words.
fn conditions(
    live: &Live<'_>,
    deployment: Option<&Deployment>,
    held: Option<&(&str, String)>,
    given: &Given<'_>,
) -> [Condition; 4] {
    let (n, version) = (given.n, given.version);
    let (min_healthy, _) = capacity(given.spec, n, false);
    let healthy = live.active.iter().filter(|v| v.healthy()).count();
    let degraded_why = if healthy >= n {
        None
    } else if let Some((reason, why)) = held {
        Some(((*reason).to_owned(), why.clone()))
    } else if live.active.iter().any(|v| v.state == TaskState::Running && !v.healthy()) {
        Some(("Unhealthy".to_owned(), health_explanation(&live.active, n)))
    } else {
        Some(("Pending".to_owned(), format!("{healthy} of {n} instances healthy")))
    };
    [
        condition(
            "Available",
            healthy >= min_healthy,
            "MinimumHealthy",
            format!("{healthy} healthy, at least {min_healthy} wanted"),
        ),
        match deployment {
            Some(d) => condition(
                "Progressing",
                true,
                "DeploymentInProgress",
                format!("rolling out version {version}: {}", d.step),
            ),
            None => {
                condition("Progressing", false, "DeploymentComplete", format!("all instances run version {version}"))
            }
        },
        match &degraded_why {
            Some((reason, why)) => condition("Degraded", true, reason, why.clone()),
            None => condition("Degraded", false, "AllHealthy", format!("{healthy} of {n} instances healthy")),
        },
        match held {
            Some((reason, why)) => condition("Scheduled", false, reason, why.clone()),
            None => condition("Scheduled", true, "Scheduled", "no instance waits for an offer".to_owned()),
        },
    ]
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn condition(type_: &str, holds: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if holds { ConditionStatus::True } else { ConditionStatus::False },
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: None,
        observed_generation: None,
    }
}

/// Keeps a condition's transition time while its status stays the same.
fn carry_transition(mut c: Condition, previous: &[Condition], now: Timestamp) -> Condition {
    let before = previous.iter().find(|p| p.type_ == c.type_);
    c.last_transition_time = match before {
        Some(p) if p.status == c.status => p.last_transition_time.or(Some(now)),
        _ => Some(now),
    };
    c
}

fn failure_of(v: &View<'_>) -> TaskFailure {
    let status = v.task.status.as_ref();
    let mut message = status.and_then(|s| s.message.clone().or_else(|| s.reason.clone()));
    if let Some(code) = status.and_then(|s| s.exit_code) {
        message = Some(match message {
            Some(m) => format!("exit code {code}: {m}"),
            None => format!("exit code {code}"),
        });
    }
    if v.state == TaskState::Killed {
        message = Some(format!("killed after failing its health checks{}", last_check(v.task).unwrap_or_default()));
    }
    TaskFailure {
        task: v.name.to_owned(),
        state: v.state,
        agent: Some(v.task.spec.agent.clone()),
        message,
        timestamp: Some(v.finished()),
    }
}

fn describe_failure(f: &TaskFailure) -> String {
    let why = f.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
    format!(" (last: task {} {:?}{why})", f.task, f.state)
}

/// " (last: 503 after 20 ms)" from a task's latest health check.
fn last_check(task: &Task) -> Option<String> {
    let check = task.status.as_ref()?.last_health_check.as_ref()?;
    let output = check.output.as_deref().unwrap_or(if check.passed { "passed" } else { "failed" });
    Some(format!(" (last: {output})"))
}

/// "waiting for 1 of 3 new tasks to pass HTTP /health (last: 503 after 20 ms, 2 of 3 failures)".
fn health_explanation(tasks: &[&View<'_>], n: usize) -> String {
    let pending: Vec<&&View<'_>> = tasks.iter().filter(|v| !v.healthy()).collect();
    // The example: the running task furthest along in failing (the most telling last result), else the oldest.
    let failures_of = |v: &View<'_>| v.task.status.as_ref().map_or(0, |s| s.health_check_failures);
    let example = pending
        .iter()
        .filter(|v| v.state == TaskState::Running)
        .max_by(|a, b| failures_of(a).cmp(&failures_of(b)).then(b.started.cmp(&a.started)));
    let Some(example) = example.or(pending.first()) else {
        return format!("{n} instances healthy");
    };
    if example.state != TaskState::Running {
        return format!(
            "waiting for {} of {n} new task(s) to start (task {} is {:?} on agent {})",
            pending.len(),
            example.name,
            example.state,
            example.task.spec.agent
        );
    }
    let check = example.task.spec.health_checks.first();
    let what = check.map_or_else(String::new, |c| match c.protocol() {
        agora_schemas::HealthCheckProtocol::Command => {
            format!(" COMMAND {}", c.command.as_deref().unwrap_or_default())
        }
        agora_schemas::HealthCheckProtocol::Tcp => " TCP".to_owned(),
        p => format!(" {} {}", p.as_str(), c.path.as_deref().unwrap_or("/")),
    });
    let status = example.task.status.as_ref();
    let failures = status.map_or(0, |s| s.health_check_failures);
    let limit = check.map_or(0, agora_schemas::HealthCheck::max_consecutive_failures);
    let last = match status.and_then(|s| s.last_health_check.as_ref()) {
        Some(c) => format!(
            " (last: {}, {failures} of {limit} failures)",
            c.output.as_deref().unwrap_or(if c.passed { "passed" } else { "failed" })
        ),
        None => " (no check has run yet: in its grace period)".to_owned(),
    };
    format!("waiting for {} of {n} new task(s) to pass{what}{last}", pending.len())
}

/// Why pending launches find no offer: the constraint that cannot be met, or the resource no offer has.
fn offer_explanation(spec: &AppSpec, n: usize, launch: usize, ctx: &Context<'_>) -> Option<String> {
    for c in &spec.constraints {
        let values = ctx.agents.distinct.get(c.field()).copied().unwrap_or(0);
        match c.parse() {
            Ok(ConstraintRule::Unique) if values < n => {
                let agents = if values == 1 { "agent" } else { "agents" };
                return Some(format!("UNIQUE {}: {values} {agents} for {n} instances", c.field()));
            }
            Ok(ConstraintRule::MaxPer(k)) if values * (k as usize) < n => {
                return Some(format!("MAX_PER {} {k}: {values} values for {n} instances", c.field()));
            }
            _ => {}
        }
    }
    let summary = ctx.offers?;
    if summary.rejections.is_empty() {
        return None;
    }
    let cpus = spec.cpus();
    let mem = spec.mem();
    let largest = summary.largest.as_ref();
    let why = match largest {
        Some((c, _, agent)) if *c < cpus => format!("no offer can fit {cpus} cpus (largest free {c} on agent {agent})"),
        Some((_, m, agent)) if *m < mem => {
            format!("no offer can fit {mem} MiB of mem (largest free {m} on agent {agent})")
        }
        _ => format!(
            "{launch} instance(s) wait for a matching offer ({})",
            summary.last_misfit.as_deref().unwrap_or("no offer fits")
        ),
    };
    Some(why)
}

/// Events from the change between the last status and the new one, and from the decisions.
fn events(prev: &AppStatus, status: &AppStatus, failures: &[&View<'_>], kills: &[Kill], version: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for v in failures {
        let f = failure_of(v);
        let why = f.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        out.push(Record::warning(
            "TaskFailed",
            format!("task {} {:?} on agent {}{why}", f.task, f.state, v.task.spec.agent),
        ));
    }
    for k in kills {
        out.push(Record::normal("Killing", format!("{}: {}", k.reason.as_str(), k.message)));
    }
    if status.delayed_until.is_some() && status.delayed_until != prev.delayed_until {
        let until = status.delayed_until.map(|t| t.to_string()).unwrap_or_default();
        out.push(Record::warning(
            "Backoff",
            format!(
                "launches of version {version} delayed until {until} after {} failure(s)",
                status.consecutive_failures
            ),
        ));
    }
    match (&prev.deployment, &status.deployment) {
        (None, Some(d)) => out.push(Record::normal(
            "DeploymentStarted",
            format!("rolling out version {} (from {}) to {} instances", d.to, d.from.join(", "), status.instances),
        )),
        (Some(p), Some(d)) if p.to != d.to => out.push(Record::normal(
            "DeploymentRetargeted",
            format!("the deployment to version {} now goes to version {} (the spec changed)", p.to, d.to),
        )),
        (Some(p), Some(d)) if p.step != d.step => out.push(Record::normal(
            "DeploymentStep",
            format!("{}: {} of {} new tasks healthy, {} old left", d.step, d.healthy, status.instances, d.old),
        )),
        (Some(p), None) => out.push(Record::normal(
            "DeploymentSucceeded",
            format!("version {version} runs on all {} instances (was {})", status.instances, p.from.join(", ")),
        )),
        _ => {}
    }
    out
}
