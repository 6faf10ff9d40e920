//! `CronJob`: a Chronos-style scheduled job — a command run on an ISO 8601 repeating schedule or after its parent
//! jobs succeed, with retries, a lateness window (`epsilon`) and a concurrency policy. Field names and defaults are
//! Chronos'.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Constraint, ContainerSpec, Limits, validate_command, validate_constraints, validate_env, validate_role,
    validate_user,
};
use crate::iso8601::{ScheduleExpr, parse_duration, time_zone};
use crate::meta::{Condition, ObjectMeta};
use crate::validation::{FieldErrorKind, Path, Validator, check_dns_label};

/// How CronJobs are printed: when they run next and how the last run went.
pub const CRONJOB_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new(
            "Schedule",
            "string",
            "The ISO 8601 schedule, or the parents it runs after.",
            Cell::With(|job, _| match job.pointer("/spec/schedule").and_then(serde_json::Value::as_str) {
                Some(schedule) => serde_json::json!(schedule),
                None => crate::columns::joined(job.pointer("/spec/parents"), None)
                    .as_str()
                    .map_or(serde_json::Value::Null, |p| serde_json::json!(format!("after {p}"))),
            }),
        ),
        Column::new(
            "Next Run",
            "string",
            "When the next scheduled run is due.",
            Cell::With(|job, now| crate::columns::until(job, "/status/nextScheduleTime", now)),
        ),
        Column::new(
            "Last Result",
            "string",
            "The result of the newest finished run.",
            Cell::With(|job, _| {
                job.pointer("/status/runs")
                    .and_then(serde_json::Value::as_array)
                    .and_then(|runs| {
                        runs.iter().max_by_key(|r| r["finishedAt"].as_str().unwrap_or_default().to_owned())
                    })
                    .map_or(serde_json::Value::Null, |run| run["result"].clone())
            }),
        ),
        Column::new(
            "Active",
            "integer",
            "Runs under way.",
            Cell::With(|job, _| {
                serde_json::json!(
                    job.pointer("/status/active").and_then(serde_json::Value::as_array).map_or(0, Vec::len)
                )
            }),
        ),
        Column::new(
            "Last Schedule",
            "string",
            "How long ago the newest scheduled instant was.",
            Cell::Age("/status/lastScheduleTime"),
        )
        .wide(),
        Column::new("Successes", "integer", "Runs that succeeded.", Cell::Path("/status/successCount")).wide(),
        Column::new("Errors", "integer", "Runs that failed.", Cell::Path("/status/errorCount")).wide(),
        Column::new("Missed", "integer", "Instants missed past their epsilon.", Cell::Path("/status/missedRuns"))
            .wide(),
        Column::new(
            "Skipped",
            "integer",
            "Instants skipped by the concurrency policy.",
            Cell::Path("/status/skippedRuns"),
        )
        .wide(),
        Column::new("Disabled", "boolean", "Whether scheduled runs are off.", Cell::Path("/spec/disabled")).wide(),
    ]
};

crate::object! {
    /// A scheduled job: runs `command` on `schedule`, or after all of its `parents` succeeded.
    CronJob {
        spec: CronJobSpec,
        status: CronJobStatus,
        plural: "cronjobs",
        singular: "cronjob",
        short_names: ["cj"],
        namespaced: true,
        subresources: ["status", "trigger"],
        field_selectors: [],
        name_rule: Label,
        columns: CRONJOB_COLUMNS,
    }
}

/// The desired state of a [`CronJob`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = CronJobSpec::schema_defaults)]
pub struct CronJobSpec {
    /// ISO 8601 repeating interval `R[n]/<start>/<period>`, e.g. `R/2026-01-01T02:00:00/P1D`. Exclusive with
    /// `parents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Jobs (same namespace) that must all succeed before this one runs. Exclusive with `schedule`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<String>,
    /// IANA time zone of the schedule's calendar arithmetic and of a start without offset (UTC when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_time_zone: Option<String>,
    /// A shell command, run with `/bin/sh -c`. Exclusive with `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A command as an argument vector, run without a shell. Exclusive with `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The image to run in; without one the job sees the host filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    /// CPU shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory, MiB; the hard limit of its cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<f64>,
    /// Disk, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<f64>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Placement constraints, as for apps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// How many times a failed run is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Time before a retry, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_seconds: Option<u32>,
    /// How late a run may still start (an ISO 8601 duration); a run missed by more is skipped and recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<String>,
    /// A run due while the previous is still running: `Forbid` skips it (and says so), `Allow` starts it too,
    /// `Replace` kills the running one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    /// After its retries fail, let dependent jobs run anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_error: Option<bool>,
    /// A disabled job is never scheduled (a manual trigger still runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// A run taking longer is killed and counts as failed, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
    /// Who to tell about failures (an e-mail address or team name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The role whose resources the job runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Who its tasks run as: a name or a uid, with a group or not (`1000:1000`, `www-data:staff`; see `Task.spec.user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Limits on each task beyond cpus and mem (processes: `pids`, default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Successful runs whose Tasks are kept (older ones are deleted), as Kubernetes' CronJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_runs_history_limit: Option<u32>,
    /// Failed runs whose Tasks are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_runs_history_limit: Option<u32>,
}

/// The shortest period a schedule may have, seconds.
pub const MIN_PERIOD_SECONDS: f64 = 1.0;

/// The most runs of either kind a job may keep (each kept run is a Task and a record in its status).
pub const MAX_HISTORY_LIMIT: u32 = 50;

pub use crate::names::{
    ATTEMPT_LABEL, COVERS_FROM_ANNOTATION, CRONJOB_LABEL, INSTANT_ANNOTATION, RUN_LABEL, TRIGGER_ANNOTATION_PREFIX,
};

crate::defaults!(CronJobSpec {
    cpus: f64 = 0.1,
    mem: f64 = 128.0,
    disk: f64 = 256.0,
    retries: u32 = 2,
    retry_delay_seconds: u32 = 60,
    epsilon: String = "PT60S".to_owned(),
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy::Forbid,
    soft_error: bool = false,
    disabled: bool = false,
    role: String = "*".to_owned(),
    successful_runs_history_limit: u32 = 3,
    failed_runs_history_limit: u32 = 1,
});

impl CronJobSpec {
    /// Sets every unset field to Chronos' default.
    pub fn apply_defaults(&mut self) {
        self.fill_defaults();
    }

    /// Checks everything the schema cannot.
    pub fn validate(&self, v: &mut Validator, path: &Path, meta: &ObjectMeta) {
        match (&self.schedule, self.parents.is_empty()) {
            (Some(_), false) => v.invalid(&path.field("schedule"), "set either schedule or parents, not both"),
            (None, true) => v.required(&path.field("schedule"), "one of schedule or parents is required"),
            (Some(schedule), true) => match ScheduleExpr::parse(schedule) {
                Err(e) => v.invalid(&path.field("schedule"), e.to_string()),
                // A run is a task on an agent: more than one a second per job is load, not a schedule.
                Ok(expr) if expr.period.exact_seconds().is_some_and(|s| s < MIN_PERIOD_SECONDS) => v.invalid(
                    &path.field("schedule"),
                    format!("the period {} is shorter than {MIN_PERIOD_SECONDS} s", expr.period),
                ),
                Ok(_) => {}
            },
            (None, false) => {
                if self.schedule_time_zone.is_some() {
                    v.forbidden(&path.field("scheduleTimeZone"), "only a job with a schedule has a time zone");
                }
            }
        }
        if let Some(tz) = &self.schedule_time_zone
            && let Err(e) = time_zone(Some(tz))
        {
            v.invalid(&path.field("scheduleTimeZone"), e.to_string());
        }
        let mut seen = BTreeSet::new();
        for (i, parent) in self.parents.iter().enumerate() {
            let at = path.field("parents").index(i);
            if let Err(why) = check_dns_label(parent) {
                v.invalid(&at, format!("must name a CronJob: {why}"));
            } else if meta.name.as_deref() == Some(parent.as_str()) {
                v.invalid(&at, format!("a job cannot be its own parent (\"{parent}\")"));
            } else if !seen.insert(parent) {
                v.push(&at, FieldErrorKind::Duplicate, format!("\"{parent}\" is listed twice"));
            }
        }
        validate_command(v, path, ("command", self.command.as_ref()), self.args.as_ref(), self.container.is_some());
        if let Some(container) = &self.container {
            container.validate(v, &path.field("container"));
        }
        v.task_resources(path, self.cpus(), self.mem(), self.disk());
        validate_env(v, &path.field("env"), &self.env);
        validate_constraints(v, &path.field("constraints"), &self.constraints);
        if let Some(epsilon) = &self.epsilon
            && let Err(e) = parse_duration(epsilon)
        {
            v.invalid(&path.field("epsilon"), e.to_string());
        }
        if self.active_deadline_seconds == Some(0) {
            v.invalid(&path.field("activeDeadlineSeconds"), "must be greater than 0");
        }
        validate_role(v, &path.field("role"), &self.role());
        validate_user(v, &path.field("user"), self.user.as_ref());
        if let Some(limits) = &self.limits {
            limits.validate(v, &path.field("limits"));
        }
        for (field, limit) in [
            ("successfulRunsHistoryLimit", self.successful_runs_history_limit),
            ("failedRunsHistoryLimit", self.failed_runs_history_limit),
        ] {
            if limit.is_some_and(|l| l > MAX_HISTORY_LIMIT) {
                v.invalid(&path.field(field), format!("must be at most {MAX_HISTORY_LIMIT}"));
            }
        }
    }
}

/// What happens to a run that is due while the previous one still runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConcurrencyPolicy {
    /// Skip the new run, recording an event and counting it in status.
    Forbid,
    /// Start the new run as well.
    Allow,
    /// Kill the running one, then start the new one.
    Replace,
}

/// What chronos observes of a [`CronJob`] (Chronos' counters, what became of every scheduled instant, the recent
/// runs).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronJobStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The latest scheduled instant decided: run, skipped or missed (for a job with parents, the completion of the
    /// parents it last ran after). No instant at or before it is run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Timestamp>,
    /// When the next run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Timestamp>,
    /// Tasks of runs in progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// Runs that succeeded.
    #[serde(default)]
    pub success_count: u64,
    /// Runs that failed after their retries.
    #[serde(default)]
    pub error_count: u64,
    /// Failures since the last success.
    #[serde(default)]
    pub errors_since_last_success: u64,
    /// Instants not run because they were missed by more than `epsilon` (the controller was down, or no resources).
    #[serde(default)]
    pub missed_runs: u64,
    /// Instants not run because the previous run was still active (`concurrencyPolicy: Forbid`).
    #[serde(default)]
    pub skipped_runs: u64,
    /// When the last successful run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    /// When the last failed run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Timestamp>,
    /// The recent finished runs, newest first, as long as their Tasks are kept: a run is counted once, when it
    /// enters this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunRecord>,
    /// `Scheduled`, `Running`, `Failing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One finished run of a [`CronJob`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRecord {
    /// The Task of its last attempt.
    pub task: String,
    /// The instant it ran for (none for a manual trigger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instant: Option<Timestamp>,
    /// The trigger id, for a manual run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Its last attempt (0 when it was not retried).
    #[serde(default)]
    pub attempt: u32,
    /// `Succeeded`, `Failed`, `DeadlineExceeded` or `Replaced`.
    pub result: RunResult,
    /// When its first attempt's Task was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// When its last attempt finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Why it failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a run ended.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunResult {
    /// Its task finished with exit code 0.
    #[default]
    Succeeded,
    /// Its last attempt failed (its retries spent).
    Failed,
    /// Killed for running past `activeDeadlineSeconds` (not retried).
    DeadlineExceeded,
    /// Killed because the next instant was due (`concurrencyPolicy: Replace`).
    Replaced,
}

impl RunResult {
    /// Whether it counts as a success (for the counters and for dependent jobs).
    #[must_use]
    pub fn succeeded(self) -> bool {
        self == Self::Succeeded
    }

    /// The word used in status and Events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::Replaced => "Replaced",
        }
    }
}

/// The dependency cycle through `job`, if there is one: `[job, parent, …, job]`. `parents` gives a job's parents
/// (`None` for a job that does not exist). Deterministic: parents are followed in the order listed.
pub fn find_cycle<F>(job: &str, parents: F) -> Option<Vec<String>>
where
    F: Fn(&str) -> Option<Vec<String>>,
{
    // Depth-first from `job`, remembering the path; a parent equal to `job` closes the cycle. Each job is expanded
    // once, so this is linear in the jobs and edges of the namespace.
    let mut expanded = BTreeSet::new();
    let mut path = vec![(job.to_owned(), parents(job).unwrap_or_default(), 0usize)];
    while let Some((_, next, at)) = path.last_mut() {
        let Some(parent) = next.get(*at).cloned() else {
            path.pop();
            continue;
        };
        *at += 1;
        if parent == job {
            let mut cycle: Vec<String> = path.iter().map(|(name, _, _)| name.clone()).collect();
            cycle.push(parent);
            return Some(cycle);
        }
        if expanded.insert(parent.clone())
            && let Some(grand) = parents(&parent)
        {
            path.push((parent, grand, 0));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn cycles_are_found_and_named_from_the_job() {
        let graph: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
            ("a", vec!["c"]),
            ("b", vec!["a"]),
            ("c", vec!["x", "b"]),
            ("x", vec![]),
            ("d", vec!["a"]),
        ]);
        let parents = |name: &str| graph.get(name).map(|p| p.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(find_cycle("a", parents).unwrap(), ["a", "c", "b", "a"]);
        assert_eq!(find_cycle("b", parents).unwrap(), ["b", "a", "c", "b"]);
        assert_eq!(find_cycle("d", parents), None, "d depends on a cycle but is not in one");
        assert_eq!(find_cycle("x", parents), None);
        assert_eq!(find_cycle("missing", parents), None);
    }
}
