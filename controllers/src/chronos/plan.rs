//! What one CronJob does next, as a pure function: from the job, its run Tasks, its parents' completions and the
//! time, to a [`Plan`] — the runs to launch (named so that creating the Task is the claim), the tasks to kill and
//! why, the old runs to delete, the triggers claimed, the new status, the Events and the next wake-up.
//!
//! Chronos' semantics (docs/chronos.md), and where they hurt users, better:
//! - every scheduled instant is accounted for: run (once: its Task is named from job, instant and attempt), skipped
//!   while the previous run is active (`Forbid`, counted in `skippedRuns`), or missed by more than `epsilon`
//!   (counted in `missedRuns`) — each with an Event, never silently;
//! - instants missed but still within `epsilon` collapse into one run, for the latest of them (Chronos 3); its Task
//!   says which instants it covers;
//! - `Rn` is the first n instants of the schedule: the position is derived from the runs and
//!   `status.lastScheduleTime`, the spec is never rewritten, and nothing runs after the last repetition;
//! - a run is counted once, when it finishes for good (its retries spent, or a success): it then enters
//!   `status.runs`, which is also the record of what ran. Old runs' Tasks are deleted only once counted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use agora_schemas::iso8601::{Schedule, parse_duration};
use agora_schemas::{
    ATTEMPT_LABEL, ConcurrencyPolicy, Condition, ConditionStatus, CronJob, CronJobStatus, INSTANT_ANNOTATION,
    RUN_LABEL, RunRecord, RunResult, TRIGGER_ANNOTATION_PREFIX, Task, TaskState,
};
use jiff::{SignedDuration, Timestamp};

pub use crate::marathon::plan::KILL_REASON_ANNOTATION;
use crate::runtime::events::Record;

/// A finished run's record outlives its Task this long (a new leader's Task cache may briefly lag its CronJobs').
pub const RECORD_GRACE: SignedDuration = SignedDuration::from_mins(1);

/// Why chronos kills a run's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillReason {
    /// It ran past `activeDeadlineSeconds`.
    DeadlineExceeded,
    /// The next instant is due and the policy is `Replace`.
    Replaced,
}

impl KillReason {
    /// The word recorded on the task (the kill annotation) and in Events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::Replaced => "Replaced",
        }
    }
}

/// One kill.
#[derive(Clone, Debug, PartialEq)]
pub struct Kill {
    /// The task.
    pub task: String,
    /// Why.
    pub reason: KillReason,
}

/// One run (or retry) to start: a Task of this name, created by accepting an offer.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    /// The Task's name: `<job>-<run>-<attempt>`.
    pub name: String,
    /// The run: the instant as [`run_key`], or `manual-<id>`.
    pub run: String,
    /// The instant it runs for (the parents' completion, for a dependent job; none for a manual trigger).
    pub instant: Option<Timestamp>,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// The earliest instant it also covers, when several within epsilon collapsed into it.
    pub covers_from: Option<Timestamp>,
    /// The Event to publish once it is launched.
    pub event: Record,
}

/// What a job's parents have done, as the caller sees their objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parents {
    /// A dependency cycle through the job, in words (`a → b → a`).
    pub cycle: Option<String>,
    /// Each parent and its latest completion: a success, or a failure after its retries when it has `softError`
    /// (`Err(why)` when it has none, or does not exist).
    pub completions: Vec<(String, Result<Timestamp, String>)>,
}

/// What to do for one CronJob.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Runs to start now.
    pub launch: Vec<NewRun>,
    /// Tasks to kill.
    pub kills: Vec<Kill>,
    /// Tasks of old runs to delete (runs already counted in the status the plan started from).
    pub delete: Vec<String>,
    /// Trigger ids whose run exists: their annotations can go.
    pub triggers_claimed: Vec<String>,
    /// The new status.
    pub status: CronJobStatus,
    /// What a person would ask about.
    pub events: Vec<Record>,
    /// When to decide again even if nothing changes.
    pub wake: Option<Timestamp>,
}

/// An instant as it appears in run and task names: `20261201t020000z`, with a fraction when it has one
/// (`20261201t020000.25z`).
#[must_use]
pub fn run_key(t: Timestamp) -> String {
    let utc = t.to_zoned(jiff::tz::TimeZone::UTC);
    let mut key = utc.strftime("%Y%m%dt%H%M%S").to_string();
    let nanos = utc.subsec_nanosecond();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        key.push('.');
        key.push_str(fraction.trim_end_matches('0'));
    }
    key.push('z');
    key
}

/// The run of a manual trigger.
#[must_use]
pub fn trigger_run(id: &str) -> String {
    format!("manual-{id}")
}

/// The Task of attempt `attempt` of `run` of job `job`.
#[must_use]
pub fn task_name(job: &str, run: &str, attempt: u32) -> String {
    format!("{job}-{run}-{attempt}")
}

/// The trigger ids a job's annotations ask for, with when each was requested.
#[must_use]
pub fn triggers(job: &CronJob) -> Vec<(String, Option<Timestamp>)> {
    job.metadata
        .annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(TRIGGER_ANNOTATION_PREFIX)?.to_owned(), v.parse().ok())))
        .filter(|(id, _)| !id.is_empty())
        .collect()
}

/// `epsilon` as a duration (calendar units measured from `now`); Chronos' PT60S when unset or unreadable.
fn epsilon(text: Option<&str>, now: Timestamp) -> SignedDuration {
    let span = text.and_then(|e| parse_duration(e).ok()).and_then(|d| d.to_span().ok());
    let from = now.to_zoned(jiff::tz::TimeZone::UTC);
    span.and_then(|s| from.checked_add(s).ok())
        .map_or(SignedDuration::from_mins(1), |to| to.timestamp().duration_since(now))
}

/// A run as the plan sees it: its attempts, newest last.
struct RunView<'a> {
    key: &'a str,
    instant: Option<Timestamp>,
    attempts: BTreeMap<u32, &'a Task>,
}

impl RunView<'_> {
    fn trigger(&self) -> Option<&str> {
        self.key.strip_prefix("manual-")
    }

    fn latest(&self) -> (u32, &Task) {
        let (attempt, task) = self.attempts.last_key_value().map(|(a, t)| (*a, *t)).unwrap_or_else(|| unreachable!());
        (attempt, task)
    }

    fn created(&self) -> Option<Timestamp> {
        self.attempts.values().next().and_then(|t| t.metadata.creation_timestamp)
    }
}

fn state(task: &Task) -> TaskState {
    task.status.as_ref().map_or(TaskState::Staging, |s| s.state)
}

fn name(task: &Task) -> &str {
    task.metadata.name.as_deref().unwrap_or_default()
}

fn secs(d: SignedDuration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{s:.0} s") } else { format!("{s:.1} s") }
}

/// The failure of a task, in words.
fn failure(task: &Task) -> String {
    let status = task.status.as_ref();
    let mut words = format!("{:?}", state(task));
    if let Some(code) = status.and_then(|s| s.exit_code) {
        words.push_str(&format!(", exit code {code}"));
    }
    if let Some(reason) = status.and_then(|s| s.reason.as_deref()) {
        words.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = status.and_then(|s| s.message.as_deref()).filter(|m| !m.is_empty()) {
        let short: String = message.chars().take(200).collect();
        words.push_str(&format!(": {short}"));
    }
    words
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if status { ConditionStatus::True } else { ConditionStatus::False };
    let old = previous.iter().find(|c| c.type_ == type_);
    // The transition time moves only when the status does.
    let since = old.filter(|c| c.status == status).and_then(|c| c.last_transition_time).unwrap_or(now);
    Condition {
        type_: type_.to_owned(),
        status,
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: Some(since),
        observed_generation: None,
    }
}

/// Decides what `job` (its status the last one decided) does next, given its run `tasks` (those labelled with it,
/// and stand-ins without a `resourceVersion` for runs being launched), its `parents`, and `now` — stage by stage:
/// the `outcomes` of its runs (deadlines, results, retries), `manual_runs`, what is due `on_schedule` or
/// `after_parents`, the `concurrency` policy, `retries_due`, `count_finished` runs, the `history` kept,
/// and the conditions.
#[must_use]
pub fn plan(job: &CronJob, tasks: &[Arc<Task>], parents: &Parents, now: Timestamp) -> Plan {
    let prev = job.status.clone().unwrap_or_default();
    let given = Given { job, name: job.metadata.name.as_deref().unwrap_or_default(), prev: &prev, now };
    let mut plan = Plan { status: prev.clone(), ..Plan::default() };
    plan.status.observed_generation = job.metadata.generation;
    let mut wake: Vec<Timestamp> = Vec::new();

    let runs = runs_of(tasks);
    let mut outcomes = outcomes(&runs, &given, &mut plan, &mut wake);
    let pending_triggers = triggers(job);
    let manual = manual_runs(&runs, &pending_triggers, &given, &mut plan);
    let position = Position::of(&runs, &prev);
    // The position only moves past an instant once it is decided: its run's Task exists (or is being created), or
    // it was skipped or missed. A run planned but not launched yet stays due.
    plan.status.last_schedule_time = prev.last_schedule_time.into_iter().chain(position.confirmed_newest).max();
    plan.status.next_schedule_time = None;
    let (due, scheduled) = match &job.spec.schedule {
        Some(expr) => on_schedule(expr, &runs, &position, &given, &mut plan, &mut wake),
        None => after_parents(parents, &position, &given, &mut plan),
    };
    if let Some(due) = due {
        concurrency(&due, &runs, &mut outcomes, &given, &mut plan);
    }
    retries_due(&outcomes.due_retries, &given, &mut plan);
    plan.launch.extend(manual);
    count_finished(&mut outcomes.finals, &mut plan);
    history(outcomes.finals, tasks, &runs, &pending_triggers, &given, &mut plan, &mut wake);

    let mut active: Vec<String> = outcomes.live.iter().map(|t| name(t).to_owned()).collect();
    active.extend(plan.launch.iter().map(|l| l.name.clone()));
    active.sort();
    active.dedup();
    plan.status.active = active;
    let (running, failing) = (running_condition(&plan.status, &given), failing_condition(&plan.status, &given));
    plan.status.conditions = vec![scheduled, running, failing];
    plan.wake = wake.into_iter().filter(|t| *t > now).min();
    plan
}

/// What every stage reads: the job, its name, the status it was decided from, and the time.
struct Given<'a> {
    job: &'a CronJob,
    name: &'a str,
    prev: &'a CronJobStatus,
    now: Timestamp,
}

impl Given<'_> {
    fn condition(&self, type_: &str, status: bool, reason: &str, message: String) -> Condition {
        condition(type_, status, reason, message, &self.prev.conditions, self.now)
    }

    fn disabled(&self) -> Condition {
        let why = "spec.disabled is true: no run is scheduled (a manual trigger still runs)";
        self.condition("Scheduled", false, "Disabled", why.to_owned())
    }
}

/// The runs, from their tasks' labels.
fn runs_of(tasks: &[Arc<Task>]) -> BTreeMap<&str, RunView<'_>> {
    let mut runs: BTreeMap<&str, RunView<'_>> = BTreeMap::new();
    for task in tasks {
        let labels = &task.metadata.labels;
        let Some(key) = labels.get(RUN_LABEL) else { continue };
        let attempt = labels.get(ATTEMPT_LABEL).and_then(|a| a.parse().ok()).unwrap_or(0);
        let instant = task.metadata.annotations.get(INSTANT_ANNOTATION).and_then(|t| t.parse().ok());
        let run = runs.entry(key).or_insert_with(|| RunView { key, instant, attempts: BTreeMap::new() });
        run.instant = run.instant.or(instant);
        run.attempts.insert(attempt, task);
    }
    runs
}

/// A run attempt that failed with retries left: (run, attempt, its task).
type Retry<'r> = (&'r RunView<'r>, u32, &'r Task);

/// Where each run's latest attempt stands.
struct Outcomes<'r> {
    /// Running (or starting).
    live: Vec<&'r Task>,
    /// Failed with retries left, the delay passed: retried now.
    due_retries: Vec<Retry<'r>>,
    /// Failed with retries left, the delay not yet passed (the run is still active).
    waiting_retries: Vec<Retry<'r>>,
    /// Finished for good and not yet counted.
    finals: Vec<RunRecord>,
}

impl Outcomes<'_> {
    fn active(&self) -> bool {
        !self.live.is_empty() || !self.waiting_retries.is_empty() || !self.due_retries.is_empty()
    }

    /// "a, b (its retry pending) still active".
    fn active_words(&self) -> String {
        let mut names: Vec<String> = self.live.iter().map(|t| name(t).to_owned()).collect();
        let retries = self.waiting_retries.iter().chain(&self.due_retries);
        names.extend(retries.map(|(_, _, t)| format!("{} (its retry pending)", name(t))));
        format!("{} still active", names.join(", "))
    }
}

/// Each run's latest attempt: running (killed past `activeDeadlineSeconds`), finished for good (a record to
/// count), or waiting for its retry (due after `retryDelaySeconds`).
fn outcomes<'r>(
    runs: &'r BTreeMap<&str, RunView<'r>>,
    given: &Given<'_>,
    plan: &mut Plan,
    wake: &mut Vec<Timestamp>,
) -> Outcomes<'r> {
    let (spec, now) = (&given.job.spec, given.now);
    let counted: BTreeSet<&str> = given.prev.runs.iter().map(|r| r.task.as_str()).collect();
    let retry_delay = SignedDuration::from_secs(i64::from(spec.retry_delay_seconds()));
    let mut out =
        Outcomes { live: Vec::new(), due_retries: Vec::new(), waiting_retries: Vec::new(), finals: Vec::new() };
    for run in runs.values() {
        let (attempt, task) = run.latest();
        let task_state = state(task);
        if !task_state.is_terminal() {
            out.live.push(task);
            deadline(task, given, plan, wake);
            continue;
        }
        if counted.contains(name(task)) {
            continue;
        }
        let finished = task.status.as_ref().and_then(|s| s.finished_at).unwrap_or(now);
        let succeeded =
            task_state == TaskState::Finished && task.status.as_ref().and_then(|s| s.exit_code).unwrap_or(0) == 0;
        let killed_for = task.metadata.annotations.get(KILL_REASON_ANNOTATION).map(String::as_str);
        let result = if succeeded {
            RunResult::Succeeded
        } else if killed_for == Some(KillReason::DeadlineExceeded.as_str()) {
            RunResult::DeadlineExceeded
        } else if killed_for == Some(KillReason::Replaced.as_str()) {
            RunResult::Replaced
        } else if attempt < spec.retries() {
            // Retries: due now, or later (a run waiting for its retry is still active).
            let due = finished.checked_add(retry_delay).unwrap_or(Timestamp::MAX);
            if now >= due {
                out.due_retries.push((run, attempt, task));
            } else {
                wake.push(due);
                out.waiting_retries.push((run, attempt, task));
            }
            continue;
        } else {
            RunResult::Failed
        };
        out.finals.push(RunRecord {
            task: name(task).to_owned(),
            instant: run.instant,
            trigger: run.trigger().map(str::to_owned),
            attempt,
            result,
            created_at: run.created(),
            finished_at: Some(finished),
            message: (!succeeded).then(|| failure(task)),
        });
    }
    out
}

/// Kills a running `task` past `activeDeadlineSeconds` (the run fails, not retried), or wakes at its deadline.
fn deadline(task: &Task, given: &Given<'_>, plan: &mut Plan, wake: &mut Vec<Timestamp>) {
    let Some(deadline) = given.job.spec.active_deadline_seconds else { return };
    let started = task.status.as_ref().and_then(|s| s.started_at).or(task.metadata.creation_timestamp);
    let Some(started) = started else { return };
    let limit = SignedDuration::from_secs(i64::try_from(deadline).unwrap_or(i64::MAX));
    let ends = started.checked_add(limit).unwrap_or(Timestamp::MAX);
    if given.now >= ends && task.spec.kill_requested != Some(true) {
        plan.kills.push(Kill { task: name(task).to_owned(), reason: KillReason::DeadlineExceeded });
        plan.events.push(Record::warning(
            "DeadlineExceeded",
            format!("{} ran longer than activeDeadlineSeconds ({deadline} s): killing it; the run fails", name(task)),
        ));
    } else if given.now < ends {
        wake.push(ends);
    }
}

/// Manual triggers: one run per id, whatever the schedule, even when disabled; an id whose run exists (or is
/// recorded) is claimed, so its annotation can go.
fn manual_runs(
    runs: &BTreeMap<&str, RunView<'_>>,
    pending_triggers: &[(String, Option<Timestamp>)],
    given: &Given<'_>,
    plan: &mut Plan,
) -> Vec<NewRun> {
    let mut manual = Vec::new();
    for (id, requested) in pending_triggers.iter().cloned() {
        let run = trigger_run(&id);
        let recorded = given.prev.runs.iter().any(|r| r.trigger.as_deref() == Some(&id));
        if runs.contains_key(run.as_str()) || recorded {
            plan.triggers_claimed.push(id);
            continue;
        }
        let when = requested.map_or_else(String::new, |t| format!(" (requested at {t})"));
        manual.push(NewRun {
            name: task_name(given.name, &run, 0),
            run,
            instant: None,
            attempt: 0,
            covers_from: None,
            event: Record::normal("Triggered", format!("manual run {id}{when} starting")),
        });
    }
    manual
}

/// How far the schedule has been decided.
struct Position {
    /// Instants up to this were decided (recorded, or a run exists or is being launched).
    floor: Option<Timestamp>,
    /// The newest instant with a stored run. Runs being launched (the caller's stand-ins, not yet stored: no
    /// `resourceVersion`) keep their instants from being due again, but do not move the recorded position: an
    /// acceptance that fails must leave its instants owed.
    confirmed_newest: Option<Timestamp>,
}

impl Position {
    fn of(runs: &BTreeMap<&str, RunView<'_>>, prev: &CronJobStatus) -> Self {
        let scheduled = || runs.values().filter(|r| r.trigger().is_none());
        let newest_instant = scheduled().filter_map(|r| r.instant).max();
        let confirmed_newest =
            scheduled().filter(|r| r.attempts.values().any(|t| stored(t))).filter_map(|r| r.instant).max();
        Self { floor: prev.last_schedule_time.into_iter().chain(newest_instant).max(), confirmed_newest }
    }
}

fn stored(task: &Task) -> bool {
    task.metadata.resource_version.is_some()
}

/// An instant due: (the latest instant, the earliest one it also covers when several collapsed, how many).
type Due = (Timestamp, Option<Timestamp>, u64);

/// What a scheduled job owes now: instants missed by more than `epsilon` are counted (with an Event), those still
/// within it collapse into one run for the latest; a disabled job lets instants pass uncounted. Returns the run due
/// and the `Scheduled` condition.
fn on_schedule(
    expr: &str,
    runs: &BTreeMap<&str, RunView<'_>>,
    position: &Position,
    given: &Given<'_>,
    plan: &mut Plan,
    wake: &mut Vec<Timestamp>,
) -> (Option<Due>, Condition) {
    let (job, spec, prev, now) = (given.job, &given.job.spec, given.prev, given.now);
    let created = job.metadata.creation_timestamp.unwrap_or(now);
    let epsilon = epsilon(spec.epsilon.as_deref(), now);
    let schedule = match Schedule::parse(expr, spec.schedule_time_zone.as_deref(), created) {
        Ok(schedule) => schedule,
        Err(e) => return (None, given.condition("Scheduled", false, "InvalidSchedule", e.to_string())),
    };
    let tick = SignedDuration::from_nanos(1);
    unrecorded_missed(&schedule, runs, position, given, plan);
    let was_disabled =
        prev.conditions.iter().any(|c| c.type_ == "Scheduled" && c.reason.as_deref() == Some("Disabled"));
    let regenerated = prev.observed_generation.is_some_and(|g| Some(g) != job.metadata.generation);
    // Instants before this were decided (or came before the job, or while it was disabled).
    let mut after = position.floor.unwrap_or_else(|| created - epsilon - tick);
    if was_disabled && !spec.disabled() {
        after = after.max(now);
    }
    if regenerated {
        after = after.max(now - epsilon - tick);
    }
    if spec.disabled() {
        // Instants pass unrun and uncounted; none is owed when the job is enabled again.
        if let Some(last) = schedule.latest_until(now).filter(|t| *t > after).or(position.floor) {
            plan.status.last_schedule_time = Some(last);
        }
        return (None, given.disabled());
    }
    let cut = now - epsilon;
    // A new job owes the instants within epsilon of its creation, but the ones before it that are late by now
    // were never its to miss.
    let missed_after = if position.floor.is_none() { after.max(created - tick) } else { after };
    let missed = schedule.count_between(missed_after, cut - tick);
    if missed > 0 {
        let last_missed = schedule.latest_until(cut - tick);
        let range = match (schedule.next_after(missed_after), missed) {
            (Some(first), 1) => format!("the instant {first} was"),
            (Some(first), n) => format!("{n} instants from {first} were"),
            (None, n) => format!("{n} instants were"),
        };
        plan.status.missed_runs += missed;
        plan.events.push(Record::warning(
            "Missed",
            format!(
                "{range} missed by more than epsilon ({}) and will not run (no leader, or no offer, at the time)",
                spec.epsilon()
            ),
        ));
        // A missed instant is decided; the later of it and what was decided before holds.
        plan.status.last_schedule_time = plan.status.last_schedule_time.max(last_missed);
        if let Some(last_missed) = last_missed {
            after = after.max(last_missed);
        }
    }
    after = after.max(cut - tick);
    // The instants still within epsilon, by arithmetic (a long epsilon may hold very many).
    let count = schedule.count_between(after, now);
    let mut due = None;
    if let (Some(latest), Some(first)) = (schedule.latest_until(now), schedule.next_after(after))
        && count > 0
    {
        due = Some((latest, (count > 1).then_some(first), count));
    }
    plan.status.next_schedule_time = schedule.next_after(now.max(after));
    let scheduled = match plan.status.next_schedule_time {
        Some(next) => {
            wake.push(next);
            given.condition("Scheduled", true, "Scheduled", format!("next run at {next}"))
        }
        None if due.is_none() => {
            given.condition("Scheduled", false, "Complete", format!("{expr}: every repetition has come"))
        }
        None => given.condition("Scheduled", true, "Scheduled", String::new()),
    };
    (due, scheduled)
}

/// Instants between the recorded position and the newest run that no run covers were decided (missed or skipped)
/// by a leader whose status write was lost with it: they are counted now, as missed.
fn unrecorded_missed(
    schedule: &Schedule,
    runs: &BTreeMap<&str, RunView<'_>>,
    position: &Position,
    given: &Given<'_>,
    plan: &mut Plan,
) {
    let (Some(last), Some(newest)) = (given.prev.last_schedule_time, position.confirmed_newest) else { return };
    if newest <= last {
        return;
    }
    let tick = SignedDuration::from_nanos(1);
    let covered: u64 = runs
        .values()
        .filter(|r| r.trigger().is_none() && r.attempts.get(&0).is_some_and(|t| stored(t)))
        .filter_map(|r| {
            let instant = r.instant.filter(|t| *t > last && *t <= newest)?;
            let from = r.attempts[&0]
                .metadata
                .annotations
                .get(agora_schemas::COVERS_FROM_ANNOTATION)
                .and_then(|t| t.parse::<Timestamp>().ok())
                .unwrap_or(instant)
                .max(last + tick);
            Some(schedule.count_between(from - tick, instant))
        })
        .sum();
    let unrecorded = schedule.count_between(last, newest).saturating_sub(covered);
    if unrecorded > 0 {
        plan.status.missed_runs += unrecorded;
        plan.events.push(Record::warning(
            "Missed",
            format!(
                "{unrecorded} instant(s) between {last} and {newest} have no run: the previous leader decided them \
                 without recording it; counted as missed"
            ),
        ));
    }
}

/// What a dependent job owes now: one run once every parent has completed since its last run (a cycle never
/// runs). Returns the run due and the `Scheduled` condition.
fn after_parents(
    parents: &Parents,
    position: &Position,
    given: &Given<'_>,
    plan: &mut Plan,
) -> (Option<Due>, Condition) {
    if let Some(cycle) = &parents.cycle {
        let why = format!("its parents form a cycle: {cycle}");
        return (None, given.condition("Scheduled", false, "DependencyCycle", why));
    }
    let after = position.floor.unwrap_or(Timestamp::MIN);
    let mut waiting = Vec::new();
    let mut latest = Timestamp::MIN;
    for (parent, completion) in &parents.completions {
        match completion {
            Ok(t) if *t > after => latest = latest.max(*t),
            Ok(_) => waiting.push(format!("{parent} has not completed since the last run")),
            Err(why) => waiting.push(format!("{parent}: {why}")),
        }
    }
    let complete = waiting.is_empty() && latest > Timestamp::MIN;
    if given.job.spec.disabled() {
        if complete {
            plan.status.last_schedule_time = Some(latest);
        }
        return (None, given.disabled());
    }
    if complete {
        return (Some((latest, None, 1)), given.condition("Scheduled", true, "Scheduled", String::new()));
    }
    (None, given.condition("Scheduled", true, "WaitingForParents", waiting.join("; ")))
}

/// The run due, under the concurrency policy: skipped while a run is active (`Forbid`); the active runs killed
/// first, the instant staying due (`Replace`); else launched (`Allow`, or `Replace` with only retries left, which
/// are recorded as replaced and never start).
fn concurrency(
    due: &Due,
    runs: &BTreeMap<&str, RunView<'_>>,
    outcomes: &mut Outcomes<'_>,
    given: &Given<'_>,
    plan: &mut Plan,
) {
    let &(instant, covers_from, count) = due;
    let spec = &given.job.spec;
    let what = if count > 1 {
        format!("{count} instants from {} to {instant} (collapsed into one run)", covers_from.unwrap_or(instant))
    } else if spec.schedule.is_some() {
        format!("the instant {instant}")
    } else {
        format!("the completion of its parents at {instant}")
    };
    let policy = spec.concurrency_policy();
    let active = outcomes.active();
    if active && policy == ConcurrencyPolicy::Forbid {
        plan.status.skipped_runs += count;
        plan.status.last_schedule_time = Some(instant);
        plan.events.push(Record::warning(
            "Skipped",
            format!("{what} skipped: concurrencyPolicy is Forbid and {}", outcomes.active_words()),
        ));
        return;
    }
    if active && policy == ConcurrencyPolicy::Replace && !outcomes.live.is_empty() {
        // The running ones are killed first; the new run starts once they are gone (the instant stays due).
        for task in &outcomes.live {
            if task.spec.kill_requested != Some(true) {
                plan.kills.push(Kill { task: name(task).to_owned(), reason: KillReason::Replaced });
                plan.events.push(Record::normal(
                    "Replacing",
                    format!("{what} is due and concurrencyPolicy is Replace: killing {}", name(task)),
                ));
            }
        }
        outcomes.due_retries.clear();
        return;
    }
    if policy == ConcurrencyPolicy::Replace {
        // Retries not yet started are replaced too: recorded, so they never start.
        for (run, attempt, task) in outcomes.waiting_retries.drain(..).chain(outcomes.due_retries.drain(..)) {
            outcomes.finals.push(RunRecord {
                task: name(task).to_owned(),
                instant: run.instant,
                trigger: run.trigger().map(str::to_owned),
                attempt,
                result: RunResult::Replaced,
                created_at: run.created(),
                finished_at: task.status.as_ref().and_then(|s| s.finished_at),
                message: Some(format!("its retry was replaced by the run of {instant}")),
            });
        }
    }
    let run = run_key(instant);
    if !runs.contains_key(run.as_str()) {
        plan.launch.push(NewRun {
            name: task_name(given.name, &run, 0),
            run,
            instant: Some(instant),
            attempt: 0,
            covers_from,
            event: Record::normal("Started", format!("starting the run of {what}")),
        });
    }
}

/// The next attempt of each run whose retry is due.
fn retries_due(due_retries: &[Retry<'_>], given: &Given<'_>, plan: &mut Plan) {
    let retries = given.job.spec.retries();
    for (run, attempt, task) in due_retries {
        let next = attempt + 1;
        let what = run.instant.map_or_else(|| format!("run {}", run.key), |t| format!("the run of {t}"));
        plan.launch.push(NewRun {
            name: task_name(given.name, run.key, next),
            run: run.key.to_owned(),
            instant: run.instant,
            attempt: next,
            covers_from: None,
            event: Record::warning(
                "Retrying",
                format!(
                    "retrying {what}: attempt {next} of {retries} retries ({} failed: {})",
                    name(task),
                    failure(task)
                ),
            ),
        });
    }
}

/// Finished runs, counted once into the status, newest last so the counters end where the newest left them.
fn count_finished(finals: &mut [RunRecord], plan: &mut Plan) {
    finals.sort_by_key(|r| r.finished_at);
    let status = &mut plan.status;
    for record in finals.iter() {
        let what = record.instant.map_or_else(
            || format!("manual run {}", record.trigger.as_deref().unwrap_or_default()),
            |t| format!("the run of {t}"),
        );
        let took = match (record.created_at, record.finished_at) {
            (Some(a), Some(b)) if b >= a => format!(", {} after it was created", secs(b.duration_since(a))),
            _ => String::new(),
        };
        let attempts = if record.attempt > 0 { format!(" (attempt {})", record.attempt) } else { String::new() };
        match record.result {
            RunResult::Succeeded => {
                status.success_count += 1;
                status.errors_since_last_success = 0;
                status.last_success = record.finished_at;
                plan.events
                    .push(Record::normal("Succeeded", format!("{what} succeeded{attempts}{took} ({})", record.task)));
            }
            RunResult::Replaced => {
                plan.events
                    .push(Record::normal("Replaced", format!("{what} was replaced by a newer run ({})", record.task)));
            }
            RunResult::Failed | RunResult::DeadlineExceeded => {
                status.error_count += 1;
                status.errors_since_last_success += 1;
                status.last_error = record.finished_at;
                let spent = if record.result == RunResult::Failed {
                    format!(" after {} attempt(s)", record.attempt + 1)
                } else {
                    " (deadline exceeded, not retried)".to_owned()
                };
                plan.events.push(Record::warning(
                    "Failed",
                    format!("{what} failed{spent}: {}", record.message.as_deref().unwrap_or("no reason given")),
                ));
            }
        }
    }
}

/// The history: the newest successful and failed runs are kept; older ones are deleted once counted (every
/// attempt), and their records forgotten once their tasks are gone and [`RECORD_GRACE`] has passed.
fn history(
    finals: Vec<RunRecord>,
    tasks: &[Arc<Task>],
    runs: &BTreeMap<&str, RunView<'_>>,
    pending_triggers: &[(String, Option<Timestamp>)],
    given: &Given<'_>,
    plan: &mut Plan,
    wake: &mut Vec<Timestamp>,
) {
    let spec = &given.job.spec;
    let counted: BTreeSet<&str> = given.prev.runs.iter().map(|r| r.task.as_str()).collect();
    let mut records: Vec<RunRecord> = finals.into_iter().rev().chain(given.prev.runs.iter().cloned()).collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
    let existing: BTreeSet<&str> = tasks.iter().map(|t| name(t)).collect();
    let claimed: BTreeSet<&str> = plan.triggers_claimed.iter().map(String::as_str).collect();
    let (mut successes, mut failures) = (0u32, 0u32);
    let (keep_successes, keep_failures) = (spec.successful_runs_history_limit(), spec.failed_runs_history_limit());
    let mut delete = Vec::new();
    for record in &records {
        let kept = if record.result.succeeded() {
            successes += 1;
            successes <= keep_successes
        } else {
            failures += 1;
            failures <= keep_failures
        };
        let waiting_trigger = record
            .trigger
            .as_deref()
            .is_some_and(|id| !claimed.contains(id) && pending_triggers.iter().any(|(t, _)| t == id));
        if !kept && counted.contains(record.task.as_str()) && !waiting_trigger {
            let run = runs.values().find(|r| r.attempts.values().any(|t| name(t) == record.task));
            delete.extend(run.into_iter().flat_map(|r| r.attempts.values()).map(|t| name(t).to_owned()));
        }
    }
    plan.delete.extend(delete);
    let now = given.now;
    records.retain(|r| existing.contains(r.task.as_str()) || r.finished_at.is_some_and(|f| f > now - RECORD_GRACE));
    // Records of deleted tasks are forgotten after the grace: look again then.
    wake.extend(
        records
            .iter()
            .filter(|r| !existing.contains(r.task.as_str()))
            .filter_map(|r| r.finished_at)
            .map(|f| f + RECORD_GRACE),
    );
    plan.status.runs = records;
}

/// `Running`: which runs are active.
fn running_condition(status: &CronJobStatus, given: &Given<'_>) -> Condition {
    if status.active.is_empty() {
        given.condition("Running", false, "Idle", "no run is active".to_owned())
    } else {
        given.condition("Running", true, "Running", format!("{} active", status.active.join(", ")))
    }
}

/// `Failing`: runs failed since the last success, and the last one's failure.
fn failing_condition(status: &CronJobStatus, given: &Given<'_>) -> Condition {
    let message = match (status.errors_since_last_success, status.runs.iter().find(|r| !r.result.succeeded())) {
        (0, _) => "the last run succeeded, or none has failed".to_owned(),
        (n, Some(last)) => {
            format!("{n} failed run(s) since the last success; the last: {}", last.message.as_deref().unwrap_or(""))
        }
        (n, None) => format!("{n} failed run(s) since the last success"),
    };
    let failing = status.errors_since_last_success > 0;
    given.condition("Failing", failing, if failing { "RunsFailed" } else { "Healthy" }, message)
}
