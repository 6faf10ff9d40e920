//! `Task`: one process on one agent, created by a framework when it accepts an offer, run by that agent, and
//! reported through its status. The task states are Mesos', partition-aware ones included.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    ContainerSpec, HealthCheck, Limits, Protocol, validate_command, validate_env, validate_role, validate_user,
};
use crate::meta::{Condition, ObjectMeta};
use crate::validation::{FieldErrorKind, Path, Validator};

/// How Tasks are printed: where each runs, for what, and on which ports.
pub const TASK_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new("State", "string", "The task's state.", Cell::Path("/status/state")),
        Column::new("Agent", "string", "The agent it runs on.", Cell::Path("/spec/agent")),
        Column::new(
            "Owner",
            "string",
            "The app or cronjob it runs for.",
            Cell::With(|task, _| {
                let label = |key: &str| {
                    task.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(serde_json::Value::as_str)
                };
                match (label(crate::app::APP_LABEL), label(crate::cronjob::CRONJOB_LABEL)) {
                    (Some(app), _) => serde_json::json!(format!("app/{app}")),
                    (None, Some(job)) => serde_json::json!(format!("cronjob/{job}")),
                    (None, None) => serde_json::Value::Null,
                }
            }),
        ),
        Column::new(
            "Ports",
            "string",
            "The host ports it was given.",
            Cell::With(|task, _| crate::columns::joined(task.pointer("/spec/ports"), Some("port"))),
        ),
        Column::new("Host", "string", "The agent's hostname.", Cell::Path("/status/host")).wide(),
        Column::new("Framework", "string", "The framework that launched it.", Cell::Path("/spec/framework")).wide(),
        Column::new("Healthy", "boolean", "Whether its health checks pass.", Cell::Path("/status/healthy")).wide(),
        Column::new("Exit Code", "integer", "How its process exited.", Cell::Path("/status/exitCode")).wide(),
        Column::new("Reason", "string", "Why it is in its state.", Cell::Path("/status/reason")).wide(),
    ]
};

crate::object! {
    /// One process on one agent. Created (bound to its agent) by accepting an offer; never rescheduled — a
    /// replacement is a new Task.
    Task {
        spec: TaskSpec,
        status: TaskStatus,
        plural: "tasks",
        singular: "task",
        short_names: ["tk"],
        namespaced: true,
        subresources: ["status", "log"],
        field_selectors: ["spec.agent", "spec.framework", "status.state"],
        name_rule: Subdomain,
        columns: TASK_COLUMNS,
    }
}

/// What to run, where, with what.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = TaskSpec::schema_defaults)]
pub struct TaskSpec {
    /// The agent the task is bound to.
    #[serde(default)]
    pub agent: String,
    /// The framework that launched it.
    #[serde(default)]
    pub framework: String,
    /// The offer it was launched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// A shell command, run with `/bin/sh -c`. Exclusive with `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// A command as an argument vector. Exclusive with `cmd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The image to run in; without one the task sees the host filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    /// CPU shares: the cgroup's CPU quota.
    pub cpus: f64,
    /// Memory, MiB: the cgroup's hard limit (no swap).
    pub mem: f64,
    /// Disk, MiB.
    #[serde(default)]
    pub disk: f64,
    /// Host ports assigned from the offer, in order: `$PORT0`, `$PORT1`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<TaskPort>,
    /// Environment variables (besides the ones the agent sets: `PORT*`, `HOST`, `TASK_ID`, `AGORA_NAMESPACE`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Health checks the agent runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    /// Time between SIGTERM and SIGKILL when the task is killed, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_period_seconds: Option<u32>,
    /// Set by the framework to have the agent kill the task (the object stays, with its final status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_requested: Option<bool>,
    /// The role whose resources the task uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Who the task runs as: a name or a uid, with a group (a name or a gid) or not. Unset: its framework's `user` (filled in when the offer is
    /// accepted), else the image's non-root user, else the agent's unprivileged task user (uid 65532). Root only
    /// where the agent runs with `--allow-root-tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Limits beyond cpus and mem (processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

crate::defaults!(TaskSpec {
    kill_grace_period_seconds: u32 = 5,
    kill_requested: bool = false,
    role: String = "*".to_owned(),
});

impl TaskSpec {
    /// Sets every unset field to its default.
    pub fn apply_defaults(&mut self) {
        self.fill_defaults();
        self.health_checks.iter_mut().for_each(HealthCheck::apply_defaults);
    }

    /// Checks everything the schema cannot.
    pub fn validate(&self, v: &mut Validator, path: &Path, _meta: &ObjectMeta) {
        if self.agent.is_empty() {
            v.required(&path.field("agent"), "the agent the task is bound to is required");
        }
        if self.framework.is_empty() {
            v.required(&path.field("framework"), "the framework that launched the task is required");
        }
        validate_command(v, path, ("cmd", self.cmd.as_ref()), self.args.as_ref(), self.container.is_some());
        if let Some(container) = &self.container {
            container.validate(v, &path.field("container"));
        }
        v.task_resources(path, self.cpus, self.mem, self.disk);
        let mut seen = BTreeMap::new();
        for (i, port) in self.ports.iter().enumerate() {
            let at = path.field("ports").index(i);
            if port.port == 0 {
                v.invalid(&at.field("port"), "a task's port is a real host port, not 0");
            } else if let Some(first) = seen.insert(port.port, i) {
                v.push(&at.field("port"), FieldErrorKind::Duplicate, format!("{} is already port {first}", port.port));
            }
            if let Some(name) = &port.name {
                v.dns_label(&at.field("name"), name);
            }
        }
        validate_env(v, &path.field("env"), &self.env);
        for (i, check) in self.health_checks.iter().enumerate() {
            check.validate(v, &path.field("healthChecks").index(i), self.ports.len());
        }
        validate_role(v, &path.field("role"), &self.role());
        validate_user(v, &path.field("user"), self.user.as_ref());
        if let Some(limits) = &self.limits {
            limits.validate(v, &path.field("limits"));
        }
    }
}

/// A host port given to a task.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskPort {
    /// The host port.
    pub port: u16,
    /// The name from the app's port definition, exported as `$PORT_<NAME>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// The life cycle of a task (Mesos' states).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    /// Created; the agent has not started preparing it.
    Staging,
    /// The agent is preparing the sandbox, image and container.
    Starting,
    /// The process runs.
    Running,
    /// A kill was requested; waiting for the process to exit.
    Killing,
    /// Exited 0. Terminal.
    Finished,
    /// Exited non-zero or could not start. Terminal.
    Failed,
    /// Killed on request. Terminal.
    Killed,
    /// The task description was invalid. Terminal.
    Error,
    /// Never launched (the agent was gone before it started). Terminal.
    Dropped,
    /// The agent stopped reporting; the task may still run.
    Unreachable,
    /// The agent is gone for good (removed by an operator or expunged). Terminal.
    Gone,
    /// Lost without more information. Terminal.
    Lost,
}

impl TaskState {
    /// True for states a task never leaves. Its resources are free again from then on.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Finished | Self::Failed | Self::Killed | Self::Error | Self::Dropped | Self::Gone | Self::Lost
        )
    }

    /// True while the task holds (or may hold) resources on its agent.
    #[must_use]
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }
}

/// What the agent observes of a [`Task`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskStatus {
    /// Where the task is in its life cycle.
    pub state: TaskState,
    /// A PascalCase word: `OOMKilled`, `ImageNotFound`, `CommandNotFound`, `AgentRestarted`, `HealthCheckFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The process's exit code, once it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The agent's hostname, for service discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When the process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the task reached a terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The health checks' verdict; unset until the first check after the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Consecutive failed checks.
    #[serde(default)]
    pub health_check_failures: u32,
    /// The latest check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_health_check: Option<HealthCheckResult>,
    /// Resource usage measured from the task's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TaskUsage>,
    /// Extra detail (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl TaskStatus {
    /// A status in `state` with nothing else known.
    #[must_use]
    pub fn new(state: TaskState) -> Self {
        Self {
            state,
            reason: None,
            message: None,
            exit_code: None,
            host: None,
            started_at: None,
            finished_at: None,
            healthy: None,
            health_check_failures: 0,
            last_health_check: None,
            usage: None,
            conditions: Vec::new(),
        }
    }
}

/// The outcome of one health check.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckResult {
    /// When it ran.
    pub time: Timestamp,
    /// Whether it passed.
    pub passed: bool,
    /// What it saw (status code, error, command output), shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Resource usage of a task.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskUsage {
    /// CPU time used, seconds.
    pub cpu_seconds: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// The most memory ever used, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
}
