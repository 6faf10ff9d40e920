//! Containers through youki's `libcontainer`, in process: the only module that calls it (or mounts anything).
//!
//! A [`ContainerConfig`] says what to run and with what limits; [`ContainerRuntime::start`] writes the OCI runtime
//! spec into the task's bundle and starts the container: pid, mount, ipc and uts namespaces (the host's network, as
//! Marathon on Mesos), a cgroup at `/agora/<id>` with the memory limit (swap off: memory+swap = memory), a CPU
//! quota and a pids limit; the task's own cgroup visible read-only at `/sys/fs/cgroup` (so it can read its limits but
//! never change them or make child cgroups); its [`User`] (unprivileged unless the agent allowed root), with no
//! capabilities at all unless it is root, and `noNewPrivileges`; masked and read-only `/proc` paths and the host
//! paths the agent hides (its own work dir, credentials); a seccomp filter blocking what Docker's default profile
//! blocks; stdout and stderr appended to files in the sandbox, which the task owns. The container's init is a child
//! of the agent: [`wait`] reaps it.
//!
//! Root filesystems ([`RootFs`]): an image's layers stacked with overlayfs under a per-task upper directory; or, for a
//! task without an image, the host's root read-only — an overlay without an upper layer, so nothing can write to the
//! host (or delete from it) through it.
//!
//! Safety: a failed start unmounts what it mounted before returning, and [`remove_task_dir`] refuses to delete a
//! directory with anything still mounted below it — a recursive delete through a mount deletes the mounted file
//! system's files.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::cgroups::{self, CgroupLayout};

/// Where a task's sandbox appears inside its container (Mesos' path).
pub const SANDBOX_MOUNT: &str = "/mnt/mesos/sandbox";
/// CFS period for CPU quotas, µs.
const CPU_PERIOD: u64 = 100_000;

/// What went wrong starting or managing a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or mount of the bundle.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// libcontainer refused or failed.
    #[error("container {id}: {message}")]
    Runtime {
        /// The container.
        id: String,
        /// libcontainer's error.
        message: String,
    },
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The container's root filesystem.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RootFs {
    /// An image's layers (bottom first) under a writable per-task upper directory, stacked with overlayfs.
    Image {
        /// Unpacked layers, bottom first.
        layers: Vec<PathBuf>,
        /// Where the task's changes go.
        upper: PathBuf,
        /// overlayfs' work directory (same file system as `upper`).
        work: PathBuf,
    },
    /// The host's root file system, read-only: an overlay with no upper layer over `/` (its root mount only) and a
    /// directory holding the mount points the container needs (created there, never on the host).
    Host {
        /// A directory the agent prepares (for `/mnt/mesos/sandbox`); it lies above `/` in the overlay.
        mount_points: PathBuf,
    },
}

/// Who a container's processes run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    /// The user id.
    pub uid: u32,
    /// The group id (no supplementary groups are given).
    pub gid: u32,
}

impl User {
    /// The unprivileged user tasks run as unless they name another (distroless' `nonroot`, 65532:65532).
    pub const TASK_DEFAULT: Self = Self { uid: 65532, gid: 65532 };

    /// Whether this is root.
    #[must_use]
    pub fn is_root(self) -> bool {
        self.uid == 0
    }
}

impl Default for User {
    fn default() -> Self {
        Self::TASK_DEFAULT
    }
}

/// Everything a container needs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerConfig {
    /// The container's id (the task's uid): names its state and its cgroup.
    pub id: String,
    /// The bundle directory (config.json and the rootfs mount point go here).
    pub bundle: PathBuf,
    /// The root filesystem.
    pub rootfs: RootFs,
    /// The task's sandbox: mounted writable at [`SANDBOX_MOUNT`].
    pub sandbox: PathBuf,
    /// A directory mounted writable at `/tmp`.
    pub tmp: PathBuf,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// The working directory inside the container.
    pub cwd: String,
    /// The hostname inside the container.
    pub hostname: String,
    /// Memory limit in bytes (swap off).
    pub memory_bytes: Option<i64>,
    /// CPU quota in cores.
    pub cpus: Option<f64>,
    /// Standard output is appended here.
    pub stdout: PathBuf,
    /// Standard error is appended here.
    pub stderr: PathBuf,
    /// Who its processes run as (the sandbox, `/tmp` and the output files are made theirs).
    #[serde(default)]
    pub user: User,
    /// The most processes (and threads) it may have at once.
    #[serde(default)]
    pub pids_limit: Option<u32>,
    /// How this host mounts cgroups.
    #[serde(default)]
    pub cgroups: CgroupLayout,
    /// Paths hidden inside the container (an empty read-only tmpfs over a directory, `/dev/null` over a file): what
    /// a task on the host's root file system must not see, such as the agent's work dir and credentials.
    #[serde(default)]
    pub hidden_paths: Vec<PathBuf>,
    /// A static init (tini) mounted read-only at [`INIT_MOUNT`] and run as the container's PID 1, with the task's
    /// command as its child: it forwards signals to the command's process group and reaps orphans, so a command
    /// that would ignore SIGTERM as PID 1 (`exec sleep`, `exec python3`) stops at once.
    #[serde(default)]
    pub init: Option<PathBuf>,
}

/// Where a container's init is mounted: in its own `/dev` (a tmpfs), so neither the image nor the host changes.
pub const INIT_MOUNT: &str = "/dev/init";

impl ContainerConfig {
    /// The cgroup path (`/agora/<id>`).
    #[must_use]
    pub fn cgroup_path(&self) -> String {
        cgroups::path(&self.id)
    }

    /// The OCI runtime spec for this container.
    ///
    /// # Errors
    /// When the spec does not describe a valid OCI configuration (a bug, reported rather than run).
    pub fn spec(&self) -> Result<Value> {
        let mut spec =
            serde_json::to_value(Spec::default()).map_err(|e| self.runtime_error(format!("default spec: {e}")))?;
        let root_path = self.bundle.join("rootfs");
        spec["hostname"] = json!(self.hostname);
        spec["root"] = json!({ "path": root_path, "readonly": matches!(self.rootfs, RootFs::Host { .. }) });
        spec["process"]["args"] = match &self.init {
            // `-g`: signals go to the command's whole process group (a shell and what it started).
            Some(_) => json!(
                [INIT_MOUNT, "-g", "--"].into_iter().map(str::to_owned).chain(self.args.clone()).collect::<Vec<_>>()
            ),
            None => json!(self.args),
        };
        spec["process"]["env"] = json!(self.env);
        spec["process"]["cwd"] = json!(self.cwd);
        spec["process"]["noNewPrivileges"] = json!(true);
        spec["process"]["terminal"] = json!(false);
        spec["process"]["user"] = json!({ "uid": self.user.uid, "gid": self.user.gid });
        spec["process"]["capabilities"] = capabilities(self.user);
        let mut mounts = spec["mounts"].as_array().cloned().unwrap_or_default();
        // The default cgroup mount is writable through libcontainer's v1 emulation: replaced by read-only mounts.
        mounts.retain(|m| m["type"] != "cgroup");
        mounts.extend(self.cgroups.container_mounts(&self.id));
        // The sandbox and /tmp, writable even on a read-only root.
        mounts.push(
            json!({ "destination": SANDBOX_MOUNT, "type": "bind", "source": self.sandbox, "options": ["rbind", "rw"] }),
        );
        mounts.push(json!({ "destination": "/tmp", "type": "bind", "source": self.tmp, "options": ["rbind", "rw"] }));
        if let Some(init) = &self.init {
            mounts.push(json!({ "destination": INIT_MOUNT, "type": "bind", "source": init,
                                "options": ["bind", "ro", "nosuid", "nodev"] }));
        }
        spec["mounts"] = json!(mounts);
        let linux = &mut spec["linux"];
        // The host's network: tasks listen on the agent's ports (PORT0...), as on Mesos.
        if let Some(namespaces) = linux["namespaces"].as_array_mut() {
            namespaces.retain(|n| n["type"] != "network");
            if self.cgroups == CgroupLayout::Unified {
                namespaces.push(json!({ "type": "cgroup" }));
            }
        }
        linux["cgroupsPath"] = json!(self.cgroup_path());
        let mut masked = libcontainer::oci_spec::runtime::get_default_maskedpaths();
        masked.extend(self.hidden_paths.iter().map(|p| p.display().to_string()));
        linux["maskedPaths"] = json!(masked);
        linux["readonlyPaths"] = json!(libcontainer::oci_spec::runtime::get_default_readonly_paths());
        let mut resources = json!({});
        if let Some(bytes) = self.memory_bytes {
            resources["memory"] = json!({ "limit": bytes, "swap": bytes });
        }
        if let Some(cpus) = self.cpus.filter(|c| *c > 0.0) {
            let quota = ((cpus * CPU_PERIOD as f64).round() as i64).max(1000);
            resources["cpu"] = json!({ "quota": quota, "period": CPU_PERIOD });
        }
        if let Some(pids) = self.pids_limit {
            resources["pids"] = json!({ "limit": pids });
        }
        linux["resources"] = resources;
        linux["seccomp"] = default_seccomp_profile();
        // Checked by decoding it as the OCI types libcontainer will read.
        serde_json::from_value::<Spec>(spec.clone()).map_err(|e| self.runtime_error(format!("invalid spec: {e}")))?;
        Ok(spec)
    }

    fn runtime_error(&self, message: String) -> Error {
        Error::Runtime { id: self.id.clone(), message }
    }
}

/// Root tasks (only where the agent allows them) keep what a root process in a container needs to manage files and
/// users — Docker's default set without the network ones (tasks share the host's network) and `MKNOD`. Everyone else
/// gets no capability at all.
const ROOT_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

fn capabilities(user: User) -> Value {
    let set: &[&str] = if user.is_root() { ROOT_CAPABILITIES } else { &[] };
    json!({ "bounding": set, "effective": set, "permitted": set, "inheritable": [], "ambient": [] })
}

/// The syscalls Docker's default seccomp profile blocks (its documentation's list): kernel modules, clocks,
/// accounting, keyrings, mounts and namespaces, tracing other processes, swap, reboot, and the like. They fail with
/// EPERM; everything else is allowed. (Names this kernel or architecture lacks are skipped by libcontainer.)
const BLOCKED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "personality",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapon",
    "swapoff",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// The seccomp section every task's spec gets.
fn default_seccomp_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{ "names": BLOCKED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }],
    })
}

/// Starts, signals and removes containers whose state lives under one directory.
#[derive(Clone, Debug)]
pub struct ContainerRuntime {
    state_dir: PathBuf,
}

impl ContainerRuntime {
    /// Containers with their state under `state_dir`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(state_dir: &Path) -> Result<Self> {
        fs::create_dir_all(state_dir).map_err(io(format!("creating {}", state_dir.display())))?;
        Ok(Self { state_dir: state_dir.to_path_buf() })
    }

    /// Prepares the bundle (config.json, the root filesystem) and starts the container; returns its init's pid.
    ///
    /// # Errors
    /// A mount or libcontainer failure (the command not existing surfaces later, as exit code 127 from the init).
    pub fn start(&self, config: &ContainerConfig) -> Result<i32> {
        let spec = config.spec()?;
        fs::create_dir_all(&config.bundle).map_err(io(format!("creating {}", config.bundle.display())))?;
        for dir in [&config.sandbox, &config.tmp] {
            fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            give(dir, config.user)?;
        }
        // Every process in the container runs as the one user; /tmp is world-writable with the sticky bit as usual.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&config.tmp, fs::Permissions::from_mode(0o1777))
            .map_err(io(format!("making {} writable", config.tmp.display())))?;
        let root = config.bundle.join("rootfs");
        fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
        unmount(&root); // a leftover of an earlier attempt
        match &config.rootfs {
            RootFs::Image { layers, upper, work } => mount_overlay(layers, upper, work, &root)?,
            RootFs::Host { mount_points } => mount_host_readonly(mount_points, &root)?,
        }
        let started = self.create_and_start(config, &spec);
        if started.is_err() {
            // Nothing stays mounted or registered after a failed start.
            if let Ok(mut container) = self.load(&config.id) {
                let _ = container.delete(true);
            }
            unmount(&root);
        }
        started
    }

    fn create_and_start(&self, config: &ContainerConfig, spec: &Value) -> Result<i32> {
        let config_json = config.bundle.join("config.json");
        fs::write(&config_json, spec.to_string()).map_err(io(format!("writing {}", config_json.display())))?;
        let output = |path: &Path| -> Result<File> {
            use std::os::unix::fs::OpenOptionsExt;
            // Never through a link the task may have left in its sandbox.
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)
                .map_err(io(format!("opening {}", path.display())))?;
            std::os::unix::fs::fchown(&file, Some(config.user.uid), Some(config.user.gid))
                .map_err(io(format!("giving {} to the task's user", path.display())))?;
            Ok(file)
        };
        let runtime_error = |e: libcontainer::error::LibcontainerError| config.runtime_error(e.to_string());
        let mut container = ContainerBuilder::new(config.id.clone(), SyscallType::default())
            .with_root_path(&self.state_dir)
            .map_err(runtime_error)?
            .with_stdout(output(&config.stdout)?)
            .with_stderr(output(&config.stderr)?)
            .as_init(&config.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(runtime_error)?;
        container.start().map_err(runtime_error)?;
        container.pid().map(Pid::as_raw).ok_or_else(|| config.runtime_error("started without a pid".into()))
    }

    /// Runs `args` inside the running container `id` (its namespaces and cgroup), output to `output`; returns the
    /// process's pid (a child of this process: [`wait`] for it). It forks: call it from a single-threaded process
    /// (the agent runs it through `agora container-exec`), never from the multithreaded agent.
    ///
    /// # Errors
    /// An unknown or stopped container, or a libcontainer failure.
    pub fn exec(&self, id: &str, args: Vec<String>, output: File) -> Result<i32> {
        let out = output;
        let err = out.try_clone().map_err(io("the command's output"))?;
        let runtime_error =
            |e: libcontainer::error::LibcontainerError| Error::Runtime { id: id.to_owned(), message: e.to_string() };
        // As the task's own user (libcontainer's tenant default is root).
        let container = self.load(id)?;
        let spec = Spec::load(container.bundle().join("config.json"))
            .map_err(|e| Error::Runtime { id: id.to_owned(), message: format!("reading its spec: {e}") })?;
        let user = spec.process().as_ref().map(|p| (p.user().uid(), p.user().gid()));
        let pid = ContainerBuilder::new(id.to_owned(), SyscallType::default())
            .with_root_path(&self.state_dir)
            .map_err(runtime_error)?
            .with_stdout(out)
            .with_stderr(err)
            .as_tenant()
            .with_user(Some(user.map_or(User::TASK_DEFAULT.uid, |u| u.0)))
            .with_group(Some(user.map_or(User::TASK_DEFAULT.gid, |u| u.1)))
            .with_container_args(args)
            .with_detach(true)
            .build()
            .map_err(runtime_error)?;
        Ok(pid.as_raw())
    }

    fn load(&self, id: &str) -> Result<Container> {
        Container::load(self.state_dir.join(id))
            .map_err(|e| Error::Runtime { id: id.to_owned(), message: e.to_string() })
    }

    /// Sends `signal` to the container's processes.
    ///
    /// # Errors
    /// An unknown container, or one that cannot be signalled (already stopped).
    pub fn kill(&self, id: &str, signal: Signal) -> Result<()> {
        let mut container = self.load(id)?;
        container.kill(signal, true).map_err(|e| Error::Runtime { id: id.to_owned(), message: e.to_string() })
    }

    /// Removes the container: its processes (killed), its cgroup and its state; then unmounts its root filesystem.
    ///
    /// # Errors
    /// When libcontainer cannot delete it.
    pub fn delete(&self, id: &str, bundle: &Path) -> Result<()> {
        let mut deleted = Ok(());
        if self.state_dir.join(id).exists() {
            deleted = self.load(id).and_then(|mut c| {
                c.delete(true).map_err(|e| Error::Runtime { id: id.to_owned(), message: e.to_string() })
            });
        }
        unmount(&bundle.join("rootfs"));
        cgroups::remove(id);
        deleted
    }

    /// The ids of the containers this runtime knows (for reattaching after a restart).
    #[must_use]
    pub fn ids(&self) -> Vec<String> {
        fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The pid of the container's init, if it is known.
    #[must_use]
    pub fn pid(&self, id: &str) -> Option<i32> {
        self.load(id).ok().and_then(|c| c.pid()).map(Pid::as_raw)
    }
}

/// How a container's init ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// As a shell reports it: the code, or 128 + the signal.
    #[must_use]
    pub fn code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
        }
    }
}

/// Waits for child `pid` for at most `limit` (`None`: as long as it takes). When the limit passes, its process group
/// is killed (a container process leads a session of its own: everything it started is in it) and `None` returned.
///
/// # Errors
/// When `pid` is not a child of this process.
pub fn wait_for(pid: i32, limit: Option<std::time::Duration>) -> Result<Option<Exit>> {
    let Some(limit) = limit else { return wait(pid).map(Some) };
    let deadline = std::time::Instant::now() + limit;
    loop {
        match waitpid(Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(Exit::Code(code))),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(Some(Exit::Signal(signal as i32))),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Io { what: format!("waiting for pid {pid}"), source: e.into() }),
        }
        if std::time::Instant::now() >= deadline {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            wait(pid)?;
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits (blocking) for the container init `pid`, a child of this process, to end.
///
/// # Errors
/// When `pid` is not a child of this process (after an agent restart, for example).
pub fn wait(pid: i32) -> Result<Exit> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(Exit::Signal(signal as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Io { what: format!("waiting for pid {pid}"), source: e.into() }),
        }
    }
}

/// Stacks image `layers` (bottom first) under `upper` at `target` with overlayfs.
///
/// # Errors
/// When the mount fails.
pub fn mount_overlay(layers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    for dir in [upper, work, target] {
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let lower: Vec<String> = layers.iter().rev().map(|l| l.display().to_string()).collect();
    let options = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    let options = std::ffi::CString::new(options)
        .map_err(|_| Error::Io { what: "overlay options".into(), source: std::io::ErrorKind::InvalidInput.into() })?;
    rustix::mount::mount("overlay", target, "overlay", rustix::mount::MountFlags::empty(), options.as_c_str())
        .map_err(|e| Error::Io { what: format!("mounting the image at {}", target.display()), source: e.into() })
}

/// The host's root, read-only by construction (an overlay without an upper layer cannot be written, or deleted
/// through), with the directories of `mount_points` above it.
fn mount_host_readonly(mount_points: &Path, target: &Path) -> Result<()> {
    use rustix::mount::{MountFlags, UnmountFlags};
    // The mount points live on a tiny tmpfs: a layer on the host's root file system would overlap `/`.
    for dir in [mount_points, target] {
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    unmount(mount_points);
    let size = std::ffi::CString::new("size=64k,mode=0755").unwrap_or_default();
    rustix::mount::mount("tmpfs", mount_points, "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, size.as_c_str())
        .map_err(|e| Error::Io { what: format!("mounting a tmpfs at {}", mount_points.display()), source: e.into() })?;
    let sandbox_point = mount_points.join(SANDBOX_MOUNT.trim_start_matches('/'));
    let made = fs::create_dir_all(&sandbox_point).map_err(io(format!("creating {}", sandbox_point.display())));
    let options = std::ffi::CString::new(format!("lowerdir={}:/", mount_points.display()))
        .map_err(|_| Error::Io { what: "overlay options".into(), source: std::io::ErrorKind::InvalidInput.into() });
    let mounted = made.and(options).and_then(|options| {
        rustix::mount::mount("overlay", target, "overlay", MountFlags::RDONLY, options.as_c_str()).map_err(|e| {
            Error::Io { what: format!("mounting the host's root at {}", target.display()), source: e.into() }
        })
    });
    // The overlay holds on to its layer; the tmpfs need not stay visible.
    let _ = rustix::mount::unmount(mount_points, UnmountFlags::DETACH);
    mounted
}

/// Whether process `pid` would get `signal` now: it blocks or catches it. The init of a pid namespace loses every
/// signal it neither blocks nor catches (the kernel protects it), so a signal sent to a container while its init is
/// still being set up — before libcontainer's init has exec'd tini, or tini has blocked its signals — would be lost.
#[must_use]
pub fn takes_signal(pid: i32, signal: Signal) -> bool {
    signal_taken(&fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default(), signal)
}

/// Whether a `/proc/<pid>/status` text shows `signal` blocked (`SigBlk`) or caught (`SigCgt`).
fn signal_taken(status: &str, signal: Signal) -> bool {
    let bit = 1u64 << (signal as i32 - 1);
    let mask = |field: &str| {
        status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    ["SigBlk:", "SigCgt:"].into_iter().any(|field| mask(field).is_some_and(|m| m & bit != 0))
}

/// Detaches whatever is mounted at `target` (nothing, if nothing is).
pub fn unmount(target: &Path) {
    let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
}

/// Makes `path` (a directory the agent just made for the task) the task user's.
fn give(path: &Path, user: User) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io(format!(
        "giving {} to uid {}",
        path.display(),
        user.uid
    )))
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`.
#[must_use]
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| point.starts_with(dir))
        .collect()
}

/// Deletes a task's directory — after detaching anything still mounted below it, and only if nothing is.
///
/// # Errors
/// When something stays mounted below `dir` (nothing is deleted then), or the delete fails.
pub fn remove_task_dir(dir: &Path) -> Result<()> {
    let mut points = mounts_below(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in &points {
        unmount(point);
    }
    let left = mounts_below(dir);
    if !left.is_empty() {
        return Err(Error::Io {
            what: format!("refusing to delete {}: still mounted below it: {left:?}", dir.display()),
            source: std::io::ErrorKind::ResourceBusy.into(),
        });
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Io { what: format!("deleting {}", dir.display()), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_taken_when_blocked_or_caught() {
        let status =
            |blocked: &str, caught: &str| format!("Name:\ttini\nSigBlk:\t{blocked}\nSigIgn:\t0\nSigCgt:\t{caught}\n");
        assert!(signal_taken(&status("fffffffe7ffbfeff", "0000000000000000"), Signal::SIGTERM), "tini blocks it");
        assert!(signal_taken(&status("0000000000000000", "0000000000004000"), Signal::SIGTERM), "a handler");
        assert!(!signal_taken(&status("0000000000000000", "0000000000000000"), Signal::SIGTERM), "default: lost");
        assert!(!signal_taken(&status("0000000000000000", "0000000000000002"), Signal::SIGTERM), "SIGINT only");
        assert!(!signal_taken("", Signal::SIGTERM), "a process gone takes nothing");
    }
}
