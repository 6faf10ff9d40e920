//! `App`: a Marathon-style long-running application — N instances of a command, kept running, placed by
//! constraints, health-checked, restarted with backoff and upgraded by rolling restart. Field names and defaults are
//! Marathon's.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Constraint, ContainerSpec, HealthCheck, Limits, PortDefinition, validate_command, validate_constraints,
    validate_env, validate_port_definitions, validate_role, validate_user,
};
use crate::meta::{Condition, ObjectMeta};
use crate::validation::{Path, Validator, check_dns_label};

/// How Apps are printed: what a Marathon user looks at first.
pub const APP_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new("Instances", "integer", "Instances wanted.", Cell::Path("/spec/instances")),
        Column::new("Running", "integer", "Tasks running.", Cell::Path("/status/tasksRunning")),
        Column::new(
            "Healthy",
            "integer",
            "Running tasks whose health checks pass.",
            Cell::Path("/status/tasksHealthy"),
        ),
        Column::new(
            "Deployment",
            "string",
            "The step of the rolling upgrade under way.",
            Cell::Path("/status/deployment/step"),
        ),
        Column::new("Version", "string", "The version the app runs or is deployed to.", Cell::Path("/status/version")),
        Column::new("Staged", "integer", "Tasks staged or starting.", Cell::Path("/status/tasksStaged")).wide(),
        Column::new(
            "Unhealthy",
            "integer",
            "Running tasks whose health checks fail.",
            Cell::Path("/status/tasksUnhealthy"),
        )
        .wide(),
        Column::new("Role", "string", "The role its resources are offered under.", Cell::Path("/spec/role")).wide(),
        Column::new(
            "Last Failure",
            "string",
            "Why the last task failed.",
            Cell::Path("/status/lastTaskFailure/message"),
        )
        .wide(),
    ]
};

crate::object! {
    /// A long-running application: `spec.instances` copies of a command, kept running by the marathon framework.
    App {
        spec: AppSpec,
        status: AppStatus,
        plural: "apps",
        singular: "app",
        short_names: ["app"],
        namespaced: true,
        subresources: ["status", "scale"],
        field_selectors: [],
        name_rule: Label,
        columns: APP_COLUMNS,
    }
}

/// The desired state of an [`App`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = AppSpec::schema_defaults)]
pub struct AppSpec {
    /// How many copies to keep running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    /// A shell command, run with `/bin/sh -c`. Exclusive with `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// A command as an argument vector, run without a shell. Exclusive with `cmd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The image to run in; without one the task sees the host filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    /// CPU shares per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory per instance, MiB; the hard limit of its cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<f64>,
    /// Disk per instance, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<f64>,
    /// Host ports each instance gets. Unset means one port (so `$PORT0` exists); `[]` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    /// Use the ports of `portDefinitions` literally instead of picking free ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_ports: Option<bool>,
    /// Environment variables of each instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Placement constraints: `[["hostname", "UNIQUE"], ["rack", "GROUP_BY", "3"]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Health checks run by the agent on each instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    /// How a spec change is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<UpgradeStrategy>,
    /// The first delay before relaunching a failed instance, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_seconds: Option<u32>,
    /// Each further failure multiplies the delay by this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_factor: Option<f64>,
    /// The delay never exceeds this, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_launch_delay_seconds: Option<u32>,
    /// Which instances go first when scaling down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_selection: Option<KillSelection>,
    /// What to do with instances on an agent that stopped reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_strategy: Option<UnreachableStrategy>,
    /// Time between SIGTERM and SIGKILL when an instance is killed, seconds (the agent's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<u32>,
    /// The role whose resources (and reservations) the app runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Apps (in the same namespace) that must be running and healthy before this one starts or upgrades.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
    /// Who its tasks run as: a name or a uid, with a group or not (`1000:1000`, `www-data:staff`; see `Task.spec.user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Limits on each task beyond cpus and mem (processes: `pids`, default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

crate::defaults!(AppSpec {
    instances: i32 = 1,
    cpus: f64 = 1.0,
    mem: f64 = 128.0,
    disk: f64 = 0.0,
    require_ports: bool = false,
    backoff_seconds: u32 = 1,
    backoff_factor: f64 = 1.15,
    max_launch_delay_seconds: u32 = 300,
    kill_selection: KillSelection = KillSelection::YoungestFirst,
    role: String = "*".to_owned(),
});

impl AppSpec {
    /// The ports each instance gets: the declared ones, or one "any" port when none are declared.
    #[must_use]
    pub fn ports(&self) -> Vec<PortDefinition> {
        self.port_definitions
            .clone()
            .unwrap_or_else(|| vec![PortDefinition { port: Some(0), ..PortDefinition::default() }])
    }

    /// Sets every unset field to Marathon's default.
    pub fn apply_defaults(&mut self) {
        self.fill_defaults();
        let ports = self.port_definitions.get_or_insert_with(|| vec![PortDefinition::default()]);
        ports.iter_mut().for_each(PortDefinition::fill_defaults);
        self.health_checks.iter_mut().for_each(HealthCheck::apply_defaults);
        self.upgrade_strategy.get_or_insert_with(UpgradeStrategy::default).fill_defaults();
        self.unreachable_strategy.get_or_insert_with(UnreachableStrategy::default).fill_defaults();
    }

    /// Checks everything the schema cannot.
    pub fn validate(&self, v: &mut Validator, path: &Path, meta: &ObjectMeta) {
        if let Some(n) = self.instances.filter(|n| *n < 0) {
            v.invalid(&path.field("instances"), format!("must be greater than or equal to 0 (got {n})"));
        }
        validate_command(v, path, ("cmd", self.cmd.as_ref()), self.args.as_ref(), self.container.is_some());
        if let Some(container) = &self.container {
            container.validate(v, &path.field("container"));
        }
        v.task_resources(path, self.cpus(), self.mem(), self.disk());
        let ports = self.ports();
        validate_port_definitions(v, &path.field("portDefinitions"), &ports);
        if self.require_ports() {
            for (i, p) in ports.iter().enumerate() {
                if p.port() == 0 {
                    v.invalid(
                        &path.field("portDefinitions").index(i).field("port"),
                        "requirePorts needs a fixed, non-zero port",
                    );
                }
            }
        }
        validate_env(v, &path.field("env"), &self.env);
        validate_constraints(v, &path.field("constraints"), &self.constraints);
        for (i, check) in self.health_checks.iter().enumerate() {
            check.validate(v, &path.field("healthChecks").index(i), ports.len());
        }
        if let Some(upgrade) = &self.upgrade_strategy {
            let at = path.field("upgradeStrategy");
            v.in_range(&at.field("minimumHealthCapacity"), upgrade.minimum_health_capacity(), 0.0, 1.0);
            v.in_range(&at.field("maximumOverCapacity"), upgrade.maximum_over_capacity(), 0.0, 1.0);
        }
        let factor = self.backoff_factor();
        if factor < 1.0 || !factor.is_finite() {
            v.invalid(&path.field("backoffFactor"), format!("must be at least 1.0 (got {factor})"));
        }
        if let Some(unreachable) = &self.unreachable_strategy {
            unreachable.validate(v, &path.field("unreachableStrategy"));
        }
        validate_user(v, &path.field("user"), self.user.as_ref());
        if let Some(limits) = &self.limits {
            limits.validate(v, &path.field("limits"));
        }
        validate_role(v, &path.field("role"), &self.role());
        for (i, dep) in self.dependencies.iter().enumerate() {
            let at = path.field("dependencies").index(i);
            if let Err(why) = check_dns_label(dep) {
                v.invalid(&at, format!("must name an App: {why}"));
            } else if meta.name.as_deref() == Some(dep.as_str()) {
                v.invalid(&at, format!("an App cannot depend on itself (\"{dep}\")"));
            }
        }
    }
}

impl AppSpec {
    /// The version of this spec: a hash of everything its tasks are built from (all but `instances`), with
    /// defaults applied, so scaling is not a new version and an omitted default is the same version as its value.
    #[must_use]
    pub fn version(&self) -> String {
        let mut template = self.clone();
        template.apply_defaults();
        template.instances = None;
        // Serializing plain data (maps with string keys) cannot fail.
        let bytes = serde_json::to_vec(&template).unwrap_or_default();
        // FNV-1a, 64 bits: stable across builds and platforms, unlike the standard library's hasher.
        let hash =
            bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
        format!("{:010x}", hash >> 24)
    }
}

/// How AppVersions are printed.
pub const APP_VERSION_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new("App", "string", "The app it is a version of.", Cell::Path("/spec/app")),
        Column::new("Version", "string", "The version hash.", Cell::Path("/spec/version")),
        Column::new("Cmd", "string", "The command its tasks run.", Cell::Path("/spec/template/cmd")).wide(),
    ]
};

crate::object! {
    /// One version of an App's task template (its spec but `instances`), kept by marathon — the latest 10 per app —
    /// for history and rollback, like Marathon's `/v2/apps/{id}/versions`. Named `<app>-<version>`, owned by the App.
    AppVersion {
        spec: AppVersionSpec,
        plural: "appversions",
        singular: "appversion",
        short_names: ["appver"],
        namespaced: true,
        subresources: [],
        field_selectors: [],
        name_rule: Subdomain,
        columns: APP_VERSION_COLUMNS,
    }
}

/// What an [`AppVersion`] records.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppVersionSpec {
    /// The App.
    pub app: String,
    /// The version ([`AppSpec::version`] of the template).
    pub version: String,
    /// The App's spec at this version (without `instances`).
    pub template: AppSpec,
}

impl AppVersionSpec {
    /// Applies the template's defaults.
    pub fn apply_defaults(&mut self) {
        self.template.apply_defaults();
        self.template.instances = None;
    }

    /// Checks the template as an App's spec.
    pub fn validate(&self, v: &mut Validator, path: &Path, meta: &ObjectMeta) {
        if let Err(why) = check_dns_label(&self.app) {
            v.invalid(&path.field("app"), format!("must name an App: {why}"));
        }
        let app_meta = ObjectMeta { name: Some(self.app.clone()), ..meta.clone() };
        self.template.validate(v, &path.field("template"), &app_meta);
    }
}

pub use crate::names::{APP_LABEL, APP_VERSION_LABEL};

/// How a new version replaces the old (Marathon's rolling restart).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = UpgradeStrategy::schema_defaults)]
pub struct UpgradeStrategy {
    /// The fraction of `instances` that must stay healthy during an upgrade, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_health_capacity: Option<f64>,
    /// The fraction of `instances` that may run in addition during an upgrade, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_over_capacity: Option<f64>,
}

crate::defaults!(UpgradeStrategy { minimum_health_capacity: f64 = 1.0, maximum_over_capacity: f64 = 1.0 });

/// Which instances to kill first when scaling down.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillSelection {
    /// The most recently started first.
    #[serde(alias = "YOUNGEST_FIRST")]
    YoungestFirst,
    /// The longest running first.
    #[serde(alias = "OLDEST_FIRST")]
    OldestFirst,
}

/// When instances on an unreachable agent are replaced and forgotten (Marathon's defaults: 300 s and 600 s).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = UnreachableStrategy::schema_defaults)]
pub struct UnreachableStrategy {
    /// After this long unreachable an instance is replaced (the old one is kept, in case it comes back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_after_seconds: Option<u32>,
    /// After this long unreachable an instance is forgotten (and killed if its agent returns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expunge_after_seconds: Option<u32>,
}

crate::defaults!(UnreachableStrategy { inactive_after_seconds: u32 = 300, expunge_after_seconds: u32 = 600 });

impl UnreachableStrategy {
    fn validate(&self, v: &mut Validator, path: &Path) {
        let (inactive, expunge) = (self.inactive_after_seconds(), self.expunge_after_seconds());
        if inactive == 0 {
            v.invalid(&path.field("inactiveAfterSeconds"), "must be at least 1");
        }
        if expunge <= inactive {
            v.invalid(
                &path.field("expungeAfterSeconds"),
                format!("must be greater than inactiveAfterSeconds ({inactive}), got {expunge}"),
            );
        }
    }
}

/// What marathon observes of an [`App`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Instances wanted (mirrors `spec.instances`, for the scale subresource).
    #[serde(default)]
    pub instances: i32,
    /// Tasks staged or starting.
    #[serde(default)]
    pub tasks_staged: i32,
    /// Tasks running.
    #[serde(default)]
    pub tasks_running: i32,
    /// Running tasks whose health checks pass (all running tasks, for an app without checks).
    #[serde(default)]
    pub tasks_healthy: i32,
    /// Running tasks whose health checks fail.
    #[serde(default)]
    pub tasks_unhealthy: i32,
    /// No launch before this time (backoff after failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delayed_until: Option<Timestamp>,
    /// The last task that failed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_failure: Option<TaskFailure>,
    /// Why recent offers were not used, counted per reason (`InsufficientCpus`, `UnfulfilledConstraint`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub offer_rejections: BTreeMap<String, u64>,
    /// The version the app runs (or is being deployed to): a hash of everything its tasks are built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Failures of this version since it last ran healthy, feeding the launch delay.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The rolling upgrade under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Deployment>,
    /// `Available` (at least the upgrade strategy's minimum is healthy), `Progressing` (a deployment is under way),
    /// `Degraded` (fewer healthy than wanted), `Scheduled` (no instance waits for an offer; when false, why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A rolling upgrade of an [`App`] from its old versions to `to`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    /// The versions being replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// The version being rolled out.
    pub to: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// `StartingNewTasks`, `ReplacingOldTasks`, `WaitingForHealth`, `WaitingForDependencies`.
    pub step: String,
    /// Tasks of the old versions still running.
    #[serde(default)]
    pub old: i32,
    /// Tasks of the new version launched and not yet ended.
    #[serde(default)]
    pub new: i32,
    /// Tasks of the new version that are healthy.
    #[serde(default)]
    pub healthy: i32,
    /// Why it is waiting, in words ("waiting for 1 of 3 new tasks to pass HTTP /health (last: 503 ...)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// A failed task of an app.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskFailure {
    /// The task's name.
    pub task: String,
    /// Its terminal state.
    pub state: crate::task::TaskState,
    /// The agent it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

/// The `autoscaling/v1` `Scale` object of the `apps/{name}/scale` subresource (what `kubectl scale` reads and
/// patches).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scale {
    /// `autoscaling/v1`.
    pub api_version: String,
    /// `Scale`.
    pub kind: String,
    /// The App's name, namespace and resourceVersion.
    pub metadata: crate::meta::ObjectMeta,
    /// `replicas`: the App's `spec.instances`.
    #[serde(default)]
    pub spec: ScaleSpec,
    /// `replicas`: the running instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ScaleStatus>,
}

/// Desired replicas of a [`Scale`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSpec {
    /// Desired instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// Observed replicas of a [`Scale`].
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStatus {
    /// Running instances.
    pub replicas: i32,
    /// A label selector matching the app's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}
