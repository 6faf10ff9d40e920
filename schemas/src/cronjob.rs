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
    /// Who its tasks run as: a name, a uid or `uid:gid` (see `Task.spec.user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Limits on each task beyond cpus and mem (processes: `pids`, default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

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
            (Some(schedule), true) => {
                if let Err(e) = ScheduleExpr::parse(schedule) {
                    v.invalid(&path.field("schedule"), e.to_string());
                }
            }
            (None, false) => {
                if self.schedule_time_zone.is_some() {
                    v.forbidden(&path.field("scheduleTimeZone"), "only a job with a schedule has a time zone");
                }
            }
        }
        if let Some(tz) = &self.schedule_time_zone {
            if let Err(e) = time_zone(Some(tz)) {
                v.invalid(&path.field("scheduleTimeZone"), e.to_string());
            }
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
        if let Some(epsilon) = &self.epsilon {
            if let Err(e) = parse_duration(epsilon) {
                v.invalid(&path.field("epsilon"), e.to_string());
            }
        }
        if self.active_deadline_seconds == Some(0) {
            v.invalid(&path.field("activeDeadlineSeconds"), "must be greater than 0");
        }
        validate_role(v, &path.field("role"), &self.role());
        validate_user(v, &path.field("user"), self.user.as_ref());
        if let Some(limits) = &self.limits {
            limits.validate(v, &path.field("limits"));
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

/// What chronos observes of a [`CronJob`] (Chronos' counters, plus the claimed schedule position).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronJobStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The scheduled instant of the latest run started: a run is claimed by writing this, so each instant runs once.
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
    /// Runs skipped (missed by more than epsilon, or overlapping under Forbid).
    #[serde(default)]
    pub skipped_count: u64,
    /// When the last successful run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    /// When the last failed run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Timestamp>,
    /// `Scheduled`, `Running`, `Failing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
