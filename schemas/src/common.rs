//! Spec pieces several kinds share: resources and port ranges, containers, port definitions, health checks and
//! Marathon placement constraints (with their parser, used by validation and by the scheduler alike).

use std::collections::BTreeMap;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{Path, Validator};

/// An amount of each resource kind: what an agent has, what an offer gives, what a task uses.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU shares (1.0 = one core).
    #[serde(default)]
    pub cpus: f64,
    /// Memory in MiB.
    #[serde(default)]
    pub mem: f64,
    /// Disk in MiB.
    #[serde(default)]
    pub disk: f64,
    /// Host port ranges, inclusive: `[[31000, 32000]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
}

/// Rounding slack in every "does it fit": amounts that add up to exactly the whole fit.
pub const FIT_SLACK: f64 = 1e-9;

/// A resource that does not fit: which (`cpus`, `mem`, `disk`), how much is needed, how much there is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shortfall {
    /// `cpus`, `mem` or `disk`.
    pub kind: &'static str,
    /// How much is needed.
    pub needed: f64,
    /// How much there is.
    pub available: f64,
}

/// The first of cpus, mem and disk for which `needed` is more than `available` (beyond [`FIT_SLACK`]); `None` when
/// all fit. The one comparison behind the allocator's minimum offer, the frameworks' placement, the apiserver's
/// offer acceptance and the agent's admission.
#[must_use]
pub fn shortfall(needed: [f64; 3], available: [f64; 3]) -> Option<Shortfall> {
    ["cpus", "mem", "disk"]
        .into_iter()
        .zip(needed)
        .zip(available)
        .find(|((_, needed), available)| *needed > *available + FIT_SLACK)
        .map(|((kind, needed), available)| Shortfall { kind, needed, available })
}

impl Resources {
    /// Its cpus, mem and disk, in [`shortfall`]'s order.
    #[must_use]
    pub fn scalars(&self) -> [f64; 3] {
        [self.cpus, self.mem, self.disk]
    }

    /// Checks amounts are non-negative and port ranges well-formed and disjoint.
    pub fn validate(&self, v: &mut Validator, path: &Path) {
        v.machine_resources(path, self.cpus, self.mem, self.disk);
        validate_port_ranges(v, &path.field("ports"), &self.ports);
    }

    /// How many ports the ranges hold.
    #[must_use]
    pub fn port_count(&self) -> u64 {
        self.ports.iter().map(|r| u64::from(r.1.saturating_sub(r.0)) + 1).sum()
    }
}

/// An inclusive range of host ports, written `[from, to]`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange(pub u16, pub u16);

impl PortRange {
    /// True when `port` lies in the range.
    #[must_use]
    pub fn contains(self, port: u16) -> bool {
        (self.0..=self.1).contains(&port)
    }
}

/// Port ranges must be `1 <= from <= to` and must not overlap.
pub fn validate_port_ranges(v: &mut Validator, path: &Path, ranges: &[PortRange]) {
    for (i, r) in ranges.iter().enumerate() {
        if r.0 == 0 || r.0 > r.1 {
            v.invalid(&path.index(i), format!("[{}, {}] is not a port range: need 1 <= from <= to", r.0, r.1));
        }
    }
    let mut sorted: Vec<(usize, PortRange)> = ranges.iter().copied().enumerate().collect();
    sorted.sort_by_key(|(_, r)| *r);
    for pair in sorted.windows(2) {
        let ((_, a), (j, b)) = (pair[0], pair[1]);
        if b.0 <= a.1 {
            v.invalid(&path.index(j), format!("[{}, {}] overlaps [{}, {}]", b.0, b.1, a.0, a.1));
        }
    }
}

/// The container image a task runs in. Without one, a task sees the host filesystem read-only (as on Mesos).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    /// The image: a Docker reference, `[registry[:port]/]repo[:tag][@sha256:digest]` (Docker Hub's defaults:
    /// `docker.io`, `library/`, `latest`). An image of that name in the agent's store is used as it is; otherwise
    /// the agent pulls it, as `imagePullPolicy` says.
    pub image: String,
    /// `IfNotPresent` (default): pull only when the agent's store lacks it. `Always` (Marathon's `forcePullImage`):
    /// pull at every launch (unchanged layers are not fetched again). `Never`: only the store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets of type `DockerConfigJson` in the task's namespace with credentials for the image's registry, tried
    /// in order before the agent's own (Kubernetes' `imagePullSecrets`). Only their names are in the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// An object of a known kind in the same namespace, by name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// Its name.
    pub name: String,
}

/// When the agent pulls a task's image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull only when the store lacks the image.
    #[default]
    IfNotPresent,
    /// Pull at every launch.
    Always,
    /// Never pull.
    Never,
}

impl ContainerSpec {
    /// The image reference must be non-empty and free of whitespace.
    pub fn validate(&self, v: &mut Validator, path: &Path) {
        let image = &self.image;
        if image.is_empty() {
            v.required(&path.field("image"), "an image name is required (e.g. \"busybox:latest\")");
        } else if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            v.invalid(&path.field("image"), format!("\"{image}\" must not contain whitespace"));
        }
        for (i, secret) in self.image_pull_secrets.iter().enumerate() {
            v.dns_subdomain(&path.field("imagePullSecrets").index(i).field("name"), &secret.name);
        }
    }
}

/// Limits on a task beyond its cpus and mem, enforced through its cgroup.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// The most processes and threads the task may have at once (the pids cgroup's `pids.max`); a fork past it
    /// fails. Unset: the agent's default, [`DEFAULT_PIDS_LIMIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

/// The pids limit a task gets when its spec sets none.
pub const DEFAULT_PIDS_LIMIT: u32 = 4096;
/// The largest pids limit a spec may ask for (Linux's largest `pid_max`).
pub const MAX_PIDS_LIMIT: u32 = 4_194_304;

impl Limits {
    /// The pids limit in force: the spec's, or [`DEFAULT_PIDS_LIMIT`].
    #[must_use]
    pub fn pids(limits: Option<&Self>) -> u32 {
        limits.and_then(|l| l.pids).unwrap_or(DEFAULT_PIDS_LIMIT)
    }

    /// `pids` must be between 1 and [`MAX_PIDS_LIMIT`].
    pub fn validate(&self, v: &mut Validator, path: &Path) {
        if let Some(pids) = self.pids
            && (pids == 0 || pids > MAX_PIDS_LIMIT)
        {
            v.invalid(&path.field("pids"), format!("must be between 1 and {MAX_PIDS_LIMIT} (got {pids})"));
        }
    }
}

/// A task's `user`: a user name (`www-data`) or a uid (`1000`), with a group (a name or a gid: `1000:1000`,
/// `www-data:staff`) or not. Names are looked up in the
/// image's `/etc/passwd`, or the host's for a task without an image.
pub fn validate_user(v: &mut Validator, path: &Path, user: Option<&String>) {
    let Some(user) = user else { return };
    let numeric =
        |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok();
    let name = |s: &str| {
        !s.is_empty()
            && s.len() <= 32
            && !s.starts_with('-')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    // A name or a number, each side: the agent resolves names in the task's own /etc/passwd and /etc/group.
    let one = |s: &str| numeric(s) || (name(s) && !s.bytes().all(|b| b.is_ascii_digit()));
    let valid = match user.split_once(':') {
        Some((user, group)) => one(user) && one(group),
        None => one(user),
    };
    if !valid {
        v.invalid(
            path,
            format!(
                "\"{user}\" is not a user: use a name (\"www-data\"), a uid (\"1000\"), or either with a group \
                 (\"1000:1000\", \"www-data:staff\")"
            ),
        );
    }
}

/// Network protocol of a port.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One port an app wants on its host: `$PORT0`, `$PORT1`, ... in order, and `$PORT_<NAME>` when named.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = PortDefinition::schema_defaults)]
pub struct PortDefinition {
    /// The host port; 0 lets Agora pick one from the offer. Taken literally only with `requirePorts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A name, exported as `$PORT_<NAME>` (upper case, `-` as `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Free-form metadata for service discovery.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

crate::defaults!(PortDefinition { port: u16 = 0, protocol: Protocol = Protocol::Tcp });

/// Validates a list of port definitions: names valid and unique, fixed ports unique.
pub fn validate_port_definitions(v: &mut Validator, path: &Path, ports: &[PortDefinition]) {
    let mut names = BTreeMap::new();
    let mut fixed = BTreeMap::new();
    for (i, port) in ports.iter().enumerate() {
        let at = path.index(i);
        if let Some(name) = &port.name {
            v.dns_label(&at.field("name"), name);
            if let Some(first) = names.insert(name.clone(), i) {
                v.push(
                    &at.field("name"),
                    crate::FieldErrorKind::Duplicate,
                    format!("\"{name}\" is already the name of port {first}"),
                );
            }
        }
        if let Some(number) = port.port.filter(|p| *p != 0)
            && let Some(first) = fixed.insert(number, i)
        {
            v.push(
                &at.field("port"),
                crate::FieldErrorKind::Duplicate,
                format!("{number} is already requested by port {first}"),
            );
        }
    }
}

/// The kind of health check.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthCheckProtocol {
    /// GET `path` on the port; healthy on 2xx/3xx within the timeout.
    Http,
    /// A TCP connect to the port succeeds within the timeout.
    Tcp,
    /// `command` run in the task's namespaces exits 0 within the timeout.
    Command,
}

impl HealthCheckProtocol {
    /// The name as written in manifests.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Tcp => "TCP",
            Self::Command => "COMMAND",
        }
    }
}

/// A health check run by the agent against one task (Marathon's fields and defaults).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = HealthCheck::schema_defaults)]
pub struct HealthCheck {
    /// `HTTP`, `TCP` or `COMMAND`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<HealthCheckProtocol>,
    /// HTTP only: the path to GET (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP and TCP: which of the task's ports to check (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    /// COMMAND only: a shell command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Failures in this time after the task starts are not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<u32>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
    /// A check taking longer fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// After this many failures in a row the task is killed; 0 never kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_consecutive_failures: Option<u32>,
}

crate::defaults!(HealthCheck {
    protocol: HealthCheckProtocol = HealthCheckProtocol::Http,
    grace_period_seconds: u32 = 300,
    interval_seconds: u32 = 60,
    timeout_seconds: u32 = 20,
    max_consecutive_failures: u32 = 3,
});

impl HealthCheck {
    /// Fills unset fields; `path` and `portIndex` only where the protocol uses them.
    pub fn apply_defaults(&mut self) {
        self.fill_defaults();
        match self.protocol() {
            HealthCheckProtocol::Http => {
                self.path.get_or_insert_with(|| "/".to_owned());
                self.port_index.get_or_insert(0);
            }
            HealthCheckProtocol::Tcp => {
                self.port_index.get_or_insert(0);
            }
            HealthCheckProtocol::Command => {}
        }
    }

    /// Checks the fields fit the protocol and the port index is one of `port_count` ports.
    pub fn validate(&self, v: &mut Validator, path: &Path, port_count: usize) {
        let protocol = self.protocol();
        match protocol {
            HealthCheckProtocol::Command => {
                if self.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    v.required(&path.field("command"), "a COMMAND health check needs a command");
                }
                if self.port_index.is_some() {
                    v.forbidden(&path.field("portIndex"), "a COMMAND health check uses no port");
                }
            }
            HealthCheckProtocol::Http | HealthCheckProtocol::Tcp => {
                if self.command.is_some() {
                    v.forbidden(
                        &path.field("command"),
                        format!("only COMMAND health checks run a command, this one is {}", protocol.as_str()),
                    );
                }
                let index = self.port_index.unwrap_or(0) as usize;
                if index >= port_count {
                    v.invalid(
                        &path.field("portIndex"),
                        format!("must be less than the number of ports ({port_count})"),
                    );
                }
            }
        }
        if protocol == HealthCheckProtocol::Http {
            if let Some(p) = self.path.as_deref().filter(|p| !p.starts_with('/')) {
                v.invalid(&path.field("path"), format!("\"{p}\" must start with '/'"));
            }
        } else if self.path.is_some() {
            v.forbidden(&path.field("path"), "only HTTP health checks have a path");
        }
        if self.interval_seconds == Some(0) {
            v.invalid(&path.field("intervalSeconds"), "must be greater than 0");
        }
        if self.timeout_seconds == Some(0) {
            v.invalid(&path.field("timeoutSeconds"), "must be greater than 0");
        }
    }
}

/// A Marathon placement constraint, written as an array: `[field, OPERATOR]` or `[field, OPERATOR, value]`.
///
/// `field` is `hostname` or an agent attribute. Kept as written; [`Constraint::parse`] turns it into a
/// [`ConstraintRule`] (validation and the scheduler both use it, so they can never disagree).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(transparent)]
pub struct Constraint(#[schemars(length(min = 2, max = 3))] pub Vec<String>);

/// A parsed [`Constraint`] operator with its value.
#[derive(Clone, Debug)]
pub enum ConstraintRule {
    /// At most one task per value of the field.
    Unique,
    /// All tasks on one value; without a value, the first placement fixes it.
    Cluster(Option<String>),
    /// Spread evenly over the field's values (over this many, when given).
    GroupBy(Option<u32>),
    /// At most this many tasks per value.
    MaxPer(u32),
    /// The value matches this (whole-value) regex.
    Like(Regex),
    /// The value does not match this (whole-value) regex; agents lacking the field pass.
    Unlike(Regex),
    /// The value equals this exactly.
    Is(String),
}

/// The operators, as written.
pub const CONSTRAINT_OPERATORS: [&str; 7] = ["UNIQUE", "CLUSTER", "GROUP_BY", "MAX_PER", "LIKE", "UNLIKE", "IS"];

impl Constraint {
    /// The field the constraint is on (`hostname` or an attribute name).
    #[must_use]
    pub fn field(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    /// Parses operator and value.
    ///
    /// # Errors
    /// A sentence saying what is wrong: arity, unknown operator, a value that is not an integer or regex.
    pub fn parse(&self) -> Result<ConstraintRule, String> {
        let parts = &self.0;
        if !(2..=3).contains(&parts.len()) {
            return Err(format!(
                "a constraint is [field, OPERATOR] or [field, OPERATOR, value], got {} element(s)",
                parts.len()
            ));
        }
        if parts[0].is_empty() {
            return Err("the field (first element) must not be empty".to_owned());
        }
        let op = parts[1].as_str();
        let value = parts.get(2).map(String::as_str);
        let integer = |v: &str| -> Result<u32, String> {
            v.parse::<u32>().map_err(|_| format!("{op} takes a non-negative integer, got \"{v}\""))
        };
        let regex = |v: &str| -> Result<Regex, String> {
            // Placement evaluates constraints per task and offer: compiled patterns are kept (a few hundred per
            // thread; a clone shares the compiled program).
            thread_local! {
                static COMPILED: std::cell::RefCell<std::collections::HashMap<String, Regex>> =
                    std::cell::RefCell::default();
            }
            if let Some(re) = COMPILED.with(|c| c.borrow().get(v).cloned()) {
                return Ok(re);
            }
            // Check the pattern as written (so the error is about what the user wrote), then anchor it: Marathon
            // matches the whole attribute value.
            let compiled = Regex::new(v).and_then(|_| Regex::new(&format!("^(?:{v})$")));
            if let Ok(re) = &compiled {
                COMPILED.with(|c| {
                    let mut c = c.borrow_mut();
                    if c.len() >= 256 {
                        c.clear();
                    }
                    c.insert(v.to_owned(), re.clone());
                });
            }
            compiled.map_err(|e| {
                // regex's syntax errors span several lines (pattern, caret, "error: ..."); keep the last.
                let text = e.to_string();
                let why = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
                format!("{op} takes a regular expression; \"{v}\" is not one ({})", why.trim_start_matches("error: "))
            })
        };
        match (op, value) {
            ("UNIQUE", None) => Ok(ConstraintRule::Unique),
            ("UNIQUE", Some(v)) => Err(format!("UNIQUE takes no value, got \"{v}\"")),
            ("CLUSTER", v) => Ok(ConstraintRule::Cluster(v.map(str::to_owned))),
            ("GROUP_BY", None) => Ok(ConstraintRule::GroupBy(None)),
            ("GROUP_BY", Some(v)) => integer(v).map(|n| ConstraintRule::GroupBy(Some(n))),
            ("MAX_PER", Some(v)) => match integer(v)? {
                0 => Err("MAX_PER must be at least 1".to_owned()),
                n => Ok(ConstraintRule::MaxPer(n)),
            },
            ("LIKE", Some(v)) => regex(v).map(ConstraintRule::Like),
            ("UNLIKE", Some(v)) => regex(v).map(ConstraintRule::Unlike),
            ("IS", Some(v)) => Ok(ConstraintRule::Is(v.to_owned())),
            ("MAX_PER" | "LIKE" | "UNLIKE" | "IS", None) => {
                Err(format!("{op} needs a value: [\"{}\", \"{op}\", value]", parts[0]))
            }
            (other, _) => {
                Err(format!("unknown operator \"{other}\", expected one of {}", CONSTRAINT_OPERATORS.join(", ")))
            }
        }
    }
}

/// Validates every constraint of a list.
pub fn validate_constraints(v: &mut Validator, path: &Path, constraints: &[Constraint]) {
    for (i, c) in constraints.iter().enumerate() {
        if let Err(why) = c.parse() {
            v.invalid(&path.index(i), why);
        }
    }
}

/// Validates environment variable names.
pub fn validate_env(v: &mut Validator, path: &Path, env: &BTreeMap<String, String>) {
    for name in env.keys() {
        v.env_name(&path.key(name), name);
    }
}

/// `cmd` xor `args`; with neither, a container image must supply the entrypoint.
pub fn validate_command(
    v: &mut Validator,
    spec: &Path,
    (cmd_field, cmd): (&str, Option<&String>),
    args: Option<&Vec<String>>,
    has_image: bool,
) {
    match (cmd, args) {
        (Some(_), Some(_)) => v.invalid(&spec.field(cmd_field), format!("set either {cmd_field} or args, not both")),
        (Some(c), None) if c.trim().is_empty() => v.required(&spec.field(cmd_field), "must not be empty"),
        (None, Some(a)) if a.is_empty() => v.required(&spec.field("args"), "must not be empty"),
        (None, None) if !has_image => v.required(
            &spec.field(cmd_field),
            format!("one of {cmd_field} or args is required (only a container image can supply the command)"),
        ),
        _ => {}
    }
}

/// A role name: not empty, `.` or `..`; no whitespace, no leading `-`, no leading or trailing `/`.
pub fn validate_role(v: &mut Validator, path: &Path, role: &str) {
    let bad = role.is_empty()
        || role == "."
        || role == ".."
        || role.starts_with('-')
        || role.starts_with('/')
        || role.ends_with('/')
        || role.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\' || c == '.')
        || role.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    if bad && role != "*" {
        v.invalid(
            path,
            format!(
                "\"{role}\" is not a valid role: use \"*\" or names like \"web\" or \"eng/web\" (no spaces or dots)"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_resource_short_is_named_and_exact_sums_fit() {
        assert_eq!(shortfall([1.0, 512.0, 0.0], [1.0, 512.0, 0.0]), None, "exactly enough fits");
        // Three tenths add up to a little more than 0.3 in floating point: still enough.
        assert_eq!(shortfall([0.1 + 0.1 + 0.1, 0.0, 0.0], [0.3, 0.0, 0.0]), None);
        assert_eq!(
            shortfall([1.0, 2048.0, 10.0], [2.0, 1024.0, 5.0]),
            Some(Shortfall { kind: "mem", needed: 2048.0, available: 1024.0 }),
            "mem before disk"
        );
        assert_eq!(shortfall([0.0, 0.0, 1.0], [0.0, 0.0, 0.5]).map(|s| s.kind), Some("disk"));
    }
}
