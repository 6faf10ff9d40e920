//! What the agent knows of cgroups, in one place: where a task's cgroup is ([`path`]), how this host mounts them
//! ([`CgroupLayout`]) and so what a container sees of its own ([`CgroupLayout::container_mounts`]), what a task has
//! used ([`usage`], through libcgroups' manager), the events libcgroups' statistics do not carry ([`counter`]: OOM
//! kills, forks refused at the pids limit), and removing what a container left ([`remove`]).
//!
//! libcontainer creates, limits and deletes a container's cgroups itself, from the OCI spec's `cgroupsPath` and
//! resources ([`crate::container`] writes them); this module is what the agent reads and cleans up around that.

use std::fs;
use std::path::{Path, PathBuf};

use libcgroups::common::{AnyCgroupManager, CgroupConfig, CgroupManager, create_cgroup_manager};
use serde_json::{Value, json};

/// Where cgroup hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";
/// The parent cgroup of every task.
pub const PARENT: &str = "/agora";

/// Container `id`'s cgroup path (`/agora/<id>`), as the OCI spec names it.
#[must_use]
pub fn path(id: &str) -> String {
    format!("{PARENT}/{id}")
}

/// libcgroups' manager of container `id`'s cgroup (v1, hybrid or unified, as this host has them).
fn manager(id: &str) -> Result<AnyCgroupManager, String> {
    let config =
        CgroupConfig { cgroup_path: PathBuf::from(path(id)), systemd_cgroup: false, container_name: id.to_owned() };
    create_cgroup_manager(config).map_err(|e| format!("the cgroup of {id}: {e}"))
}

/// How the host mounts cgroups, which decides how a container sees its own cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupLayout {
    /// cgroup v1 (a legacy or hybrid host): one hierarchy per controller, mounted at `/sys/fs/cgroup/<name>` (a
    /// name such as `memory` or `cpu,cpuacct`). The container gets each of its own cgroups bind-mounted there
    /// read-only.
    V1 {
        /// The mount points' names under `/sys/fs/cgroup`.
        controllers: Vec<String>,
    },
    /// cgroup v2 only: the container gets a cgroup namespace and a read-only cgroup2 mount of its own cgroup.
    #[default]
    Unified,
}

/// The v1 controllers libcgroups puts every container into (so each has a cgroup directory per task).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_cls",
    "net_prio",
    "freezer",
];

impl CgroupLayout {
    /// This host's layout, from `/proc/self/mountinfo`.
    #[must_use]
    pub fn of_host() -> Self {
        Self::from_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    /// The layout a `mountinfo` text describes: the cgroup v1 hierarchies under `/sys/fs/cgroup` that hold one of
    /// the controllers containers are put into.
    #[must_use]
    pub fn from_mountinfo(mountinfo: &str) -> Self {
        let mut controllers: Vec<String> = mountinfo
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let point = left.split(' ').nth(4)?;
                let mut right = right.split(' ');
                let (fstype, options) = (right.next()?, right.nth(1)?);
                let name = point.strip_prefix("/sys/fs/cgroup/")?;
                let managed = options.split(',').any(|o| V1_CONTROLLERS.contains(&o));
                (fstype == "cgroup" && managed && !name.contains('/')).then(|| name.to_owned())
            })
            .collect();
        controllers.sort();
        controllers.dedup();
        if controllers.is_empty() { Self::Unified } else { Self::V1 { controllers } }
    }
}

impl CgroupLayout {
    /// What container `id` sees at `/sys/fs/cgroup`: its own cgroups, read-only (so it can read its limits but
    /// never change them or make child cgroups).
    #[must_use]
    pub fn container_mounts(&self, id: &str) -> Vec<Value> {
        let flags = ["nosuid", "nodev", "noexec"];
        match self {
            Self::V1 { controllers } => {
                // A tiny tmpfs holds the mount points (created by libcontainer); root owns it, and it can hold
                // nothing that matters.
                let mut mounts = vec![json!({
                    "destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "noexec", "mode=755", "size=64k"],
                })];
                mounts.extend(controllers.iter().map(|name| {
                    json!({
                        "destination": format!("/sys/fs/cgroup/{name}"),
                        "type": "bind",
                        "source": format!("/sys/fs/cgroup/{name}{}", path(id)),
                        "options": ["bind", "ro", flags[0], flags[1], flags[2]],
                    })
                }));
                mounts
            }
            Self::Unified => vec![json!({
                "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["ro", flags[0], flags[1], flags[2], "relatime"],
            })],
        }
    }
}

/// What a container has used, from its cgroup.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// CPU time, all cores, in seconds.
    pub cpu_seconds: f64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// The most memory it has used, in bytes.
    pub memory_peak_bytes: u64,
}

/// Container `id`'s usage, read through libcgroups from its cgroup.
///
/// # Errors
/// When the cgroup does not exist (the container is gone) or cannot be read: what went wrong, in words.
pub fn usage(id: &str) -> Result<Usage, String> {
    let stats = manager(id)?.stats().map_err(|e| format!("reading the cgroup of {id}: {e}"))?;
    Ok(Usage {
        cpu_seconds: stats.cpu.usage.usage_total as f64 / 1e9,
        memory_bytes: stats.memory.memory.usage,
        memory_peak_bytes: stats.memory.memory.max_usage,
    })
}

/// Removes what is left of container `id`'s cgroups (libcontainer's delete removes them; this is for what a failed
/// start or a crash left), through libcgroups' manager, which also kills any process still in them. Cgroups below a
/// task's are removed first (the manager removes only the task's own): a container cannot make children (its cgroup
/// is read-only inside), but one left by anything else must not keep the task's cgroup alive. A cgroup just emptied
/// can refuse removal for a moment, so removal is tried for about a second.
pub fn remove(id: &str) {
    let Ok(hierarchies) = fs::read_dir(ROOT) else { return };
    let own = Path::new(PARENT.trim_start_matches('/')).join(id);
    let dirs = hierarchies.flatten().map(|h| h.path().join(&own)).chain([Path::new(ROOT).join(&own)]);
    let left: Vec<PathBuf> = dirs.filter(|d| d.is_dir()).collect();
    if left.is_empty() {
        // What a container's delete normally leaves: nothing (a manager is not worth making for it).
        return;
    }
    for dir in &left {
        remove_children(dir);
    }
    let manager = match manager(id) {
        Ok(manager) => manager,
        Err(e) => return tracing::warn!(cgroup = %path(id), error = %e, "cgroup not removed"),
    };
    for attempt in 0..10 {
        match manager.remove() {
            Ok(()) => break,
            Err(e) if attempt == 9 => tracing::warn!(cgroup = %path(id), error = %e, "cgroup not removed"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// Removes the cgroups below `dir`, deepest first.
fn remove_children(dir: &Path) {
    for child in fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            let child = child.path();
            remove_children(&child);
            for attempt in 0..50 {
                match fs::remove_dir(&child) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if attempt == 49 => {
                        tracing::warn!(cgroup = %child.display(), error = %e, "cgroup not removed");
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
    }
}

/// A counter from one of container `id`'s cgroup files, such as `max` in `pids.events` or `oom_kill` in
/// `memory.oom_control`: read from the cgroup v1 hierarchy of `controller`, or from the unified one. Read here
/// because libcgroups' statistics carry neither OOM kills nor forks refused.
#[must_use]
pub fn counter(id: &str, controller: &str, file: &str, key: &str) -> u64 {
    let parent = PARENT.trim_start_matches('/');
    [
        Path::new(ROOT).join(controller).join(parent).join(id).join(file),
        Path::new(ROOT).join(parent).join(id).join(file),
    ]
    .iter()
    .find_map(|path| fs::read_to_string(path).ok())
    .unwrap_or_default()
    .lines()
    .find_map(|line| line.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
    .unwrap_or(0)
}
