//! Real containers through libcontainer (the tests run as root, here and in CI): exit codes and output, a pid
//! namespace of its own, the memory and CPU limits read back from the task's cgroup, an OOM kill, and task
//! directories that are never deleted through a mount.

use std::fs;
use std::path::{Path, PathBuf};

use agora_agent::cgroups::CgroupLayout;
use agora_agent::container::{
    ContainerConfig, ContainerRuntime, Exit, RootFs, User, mount_overlay, mounts_below, remove_task_dir, wait,
};
use agora_agent::images::ImageStore;
use nix::sys::signal::Signal;

struct Fixture {
    dir: tempfile::TempDir,
    runtime: ContainerRuntime,
    busybox: Vec<PathBuf>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is installed (make deps)");
    for tool in ["sh", "sleep", "echo", "head", "tr", "cat", "grep", "unshare", "mkdir", "id"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
    }
    for empty in ["proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(empty)).unwrap();
    }
    let store = ImageStore::open(&dir.path().join("agent")).unwrap();
    store.build(&rootfs, "busybox").unwrap();
    let busybox = store.resolve("busybox").unwrap().layers;
    let runtime = ContainerRuntime::new(&dir.path().join("agent/containers")).unwrap();
    Fixture { dir, runtime, busybox }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Never let the temporary directory be deleted through a mount that outlived a failed test.
        remove_task_dir(self.dir.path()).expect("nothing stays mounted below the test's directory");
    }
}

impl Fixture {
    fn config(&self, id: &str, rootfs: RootFs, args: &[&str]) -> ContainerConfig {
        let task = self.dir.path().join("agent/tasks").join(id);
        ContainerConfig {
            id: id.to_owned(),
            bundle: task.join("bundle"),
            rootfs,
            sandbox: task.join("sandbox"),
            tmp: task.join("tmp"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec!["PATH=/bin:/usr/bin".into(), format!("TASK_ID={id}")],
            cwd: agora_agent::container::SANDBOX_MOUNT.into(),
            hostname: id.to_owned(),
            memory_bytes: Some(64 << 20),
            cpus: Some(0.5),
            stdout: task.join("stdout"),
            stderr: task.join("stderr"),
            user: User::TASK_DEFAULT,
            pids_limit: Some(agora_schemas::DEFAULT_PIDS_LIMIT),
            cgroups: CgroupLayout::of_host(),
            hidden_paths: Vec::new(),
            init: None,
        }
    }

    fn image(&self, id: &str) -> RootFs {
        let task = self.dir.path().join("agent/tasks").join(id);
        RootFs::Image { layers: self.busybox.clone(), upper: task.join("upper"), work: task.join("work") }
    }

    fn run(&self, config: &ContainerConfig) -> Exit {
        let pid = self.runtime.start(config).unwrap();
        let exit = wait(pid).unwrap();
        self.runtime.delete(&config.id, &config.bundle).unwrap();
        exit
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().elapsed().map_or(0, |d| d.as_nanos()) % 1000
    )
}

fn cgroup(controller: &str, id: &str, file: &str) -> PathBuf {
    // This host mounts cgroup v1 controllers at /sys/fs/cgroup/<controller> (see host-facts).
    Path::new("/sys/fs/cgroup").join(controller).join("agora").join(id).join(file)
}

#[test]
fn an_image_task_reports_its_exit_code_and_output() {
    let f = fixture();
    let id = unique("exit");
    let config = f.config(&id, f.image(&id), &["sh", "-c", "echo hello $TASK_ID; echo pid $$; echo oops >&2; exit 3"]);
    assert_eq!(f.run(&config), Exit::Code(3));
    assert_eq!(fs::read_to_string(&config.stdout).unwrap(), format!("hello {id}\npid 1\n"), "its own pid namespace");
    assert_eq!(fs::read_to_string(&config.stderr).unwrap(), "oops\n");
    assert!(!config.bundle.join("rootfs/bin").exists(), "the root file system is unmounted on delete");

    // A command that does not exist: the init cannot exec it.
    let missing = f.config(&format!("{id}-x"), f.image(&format!("{id}-x")), &["/bin/no-such-command"]);
    let exit = f.runtime.start(&missing).map(|pid| wait(pid).unwrap());
    let _ = f.runtime.delete(&missing.id, &missing.bundle);
    assert!(!matches!(exit, Ok(Exit::Code(0))), "{exit:?}");
}

#[test]
fn a_host_filesystem_task_writes_only_to_its_sandbox_and_tmp() {
    let f = fixture();
    let id = unique("host");
    let script = "touch /etc/agora-escape 2>/dev/null && echo wrote-etc; \
        touch /agora-escape 2>/dev/null && echo wrote-root; \
        touch /tmp/mine && echo wrote-tmp; \
        echo data > file && echo wrote-sandbox; \
        echo pid $$; cat /etc/debian_version >/dev/null && echo reads-host";
    let mount_points = f.dir.path().join("agent/tasks").join(&id).join("mount-points");
    let config = f.config(&id, RootFs::Host { mount_points }, &["/bin/sh", "-c", script]);
    assert_eq!(f.run(&config), Exit::Code(0));
    let out = fs::read_to_string(&config.stdout).unwrap();
    assert!(out.contains("wrote-tmp") && out.contains("wrote-sandbox") && out.contains("reads-host"), "{out}");
    assert!(!out.contains("wrote-etc") && !out.contains("wrote-root"), "{out}");
    assert!(out.contains("pid 1\n"), "{out}");
    assert!(!Path::new("/etc/agora-escape").exists() && !Path::new("/agora-escape").exists());
    assert_eq!(fs::read_to_string(config.sandbox.join("file")).unwrap(), "data\n");
    assert!(config.tmp.join("mine").exists(), "its /tmp is its own directory");
}

#[test]
fn tasks_run_under_a_seccomp_filter() {
    let f = fixture();
    let id = unique("seccomp");
    let script = "grep Seccomp: /proc/self/status; unshare -u true 2>/dev/null && echo unshared || echo blocked";
    let config = f.config(&id, f.image(&id), &["sh", "-c", script]);
    assert_eq!(f.run(&config), Exit::Code(0));
    let out = fs::read_to_string(&config.stdout).unwrap();
    assert!(out.contains("Seccomp:\t2"), "a filter is in force: {out}");
    assert!(out.contains("blocked") && !out.contains("unshared"), "{out}");
}

#[test]
fn limits_land_in_the_tasks_cgroup_and_are_removed_with_it() {
    let f = fixture();
    let id = unique("limits");
    let config = f.config(&id, f.image(&id), &["sleep", "30"]);
    let pid = f.runtime.start(&config).unwrap();
    let read =
        |controller: &str, file: &str| fs::read_to_string(cgroup(controller, &id, file)).unwrap().trim().to_owned();
    assert_eq!(read("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), (64u64 << 20).to_string(), "no swap");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
    assert!(read("memory", "cgroup.procs").lines().any(|p| p == pid.to_string()));
    assert_eq!(f.runtime.pid(&id), Some(pid));
    assert!(f.runtime.ids().contains(&id));

    f.runtime.kill(&id, Signal::SIGKILL).unwrap();
    assert_eq!(wait(pid).unwrap(), Exit::Signal(9));
    f.runtime.delete(&id, &config.bundle).unwrap();
    assert!(!cgroup("memory", &id, "").exists(), "the cgroup is removed");
    assert!(!f.runtime.ids().contains(&id));
}

#[test]
fn with_an_init_as_pid_1_a_command_that_ignores_sigterm_stops_at_once() {
    let f = fixture();
    let init = agora_agent::runner::default_init().expect("Debian's tini is installed (make deps)");
    // As PID 1 of its namespace, `sleep` has no handler for SIGTERM, so the kernel drops it.
    let alone = unique("no-init");
    let config = f.config(&alone, f.image(&alone), &["sleep", "30"]);
    let pid = f.runtime.start(&config).unwrap();
    f.runtime.kill(&alone, Signal::SIGTERM).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(fs::metadata(format!("/proc/{pid}")).is_ok(), "PID 1 ignored SIGTERM");
    f.runtime.kill(&alone, Signal::SIGKILL).unwrap();
    assert_eq!(wait(pid).unwrap(), Exit::Signal(9));
    f.runtime.delete(&alone, &config.bundle).unwrap();
    // Under tini the same command is its child, and the forwarded SIGTERM ends it (tini exits 128 + 15).
    let id = unique("init");
    let mut config = f.config(&id, f.image(&id), &["sh", "-c", "exec sleep 30"]);
    config.init = Some(init);
    let pid = f.runtime.start(&config).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let asked = std::time::Instant::now();
    f.runtime.kill(&id, Signal::SIGTERM).unwrap();
    assert_eq!(wait(pid).unwrap(), Exit::Code(143));
    assert!(asked.elapsed() < std::time::Duration::from_secs(5), "stopped in {:?}", asked.elapsed());
    f.runtime.delete(&id, &config.bundle).unwrap();
}

/// Tries to write every file of every cgroup the task sees; prints `WROTE f` for a write that worked and `OTHER f:
/// why` for a refusal other than a read-only file system.
const CGROUP_ATTACK: &str = "n=0; for f in /sys/fs/cgroup/*/*; do [ -f \"$f\" ] || continue; n=$((n+1)); \
    if (echo 1 > \"$f\") 2>/tmp/err; then echo \"WROTE $f\"; \
    elif ! grep -q 'Read-only' /tmp/err; then echo \"OTHER $f: $(cat /tmp/err)\"; fi; done; echo \"files $n\"; \
    mkdir /sys/fs/cgroup/memory/child 2>/dev/null && echo made-child; \
    echo -1 > /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null && echo lifted-memory; \
    echo -1 > /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null && echo lifted-cpu; \
    echo pids $(cat /sys/fs/cgroup/pids/pids.max); echo uid $(id -u)";

#[test]
fn a_task_sees_its_cgroup_read_only_and_cannot_lift_its_limits_even_as_root() {
    let f = fixture();
    for user in [User { uid: 0, gid: 0 }, User::TASK_DEFAULT] {
        let id = unique(&format!("cg{}", user.uid));
        let mut config = f.config(&id, f.image(&id), &["sh", "-c", CGROUP_ATTACK]);
        config.user = user;
        config.pids_limit = Some(100);
        let pid = f.runtime.start(&config).unwrap();
        let exit = wait(pid).unwrap();
        let read =
            |controller: &str, file: &str| fs::read_to_string(cgroup(controller, &id, file)).unwrap().trim().to_owned();
        // Read back from the host after every write was tried.
        assert_eq!(read("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("pids", "pids.max"), "100");
        assert!(!cgroup("memory", &id, "child").exists());
        f.runtime.delete(&id, &config.bundle).unwrap();
        let out = fs::read_to_string(&config.stdout).unwrap();
        assert_eq!(exit, Exit::Code(0), "{out}");
        assert!(!out.contains("WROTE") && !out.contains("made-child") && !out.contains("lifted"), "{out}");
        let files: usize = out.lines().find_map(|l| l.strip_prefix("files ")).unwrap().parse().unwrap();
        assert!(files > 50, "it saw its cgroups ({files} files): {out}");
        if user.is_root() {
            assert!(!out.contains("OTHER"), "every write failed because the mount is read-only: {out}");
        }
        assert!(out.contains("pids 100\n") && out.contains(&format!("uid {}\n", user.uid)), "{out}");
        for controller in ["memory", "cpu", "pids", "cpuacct", "devices", "freezer", "blkio", "cpuset"] {
            assert!(!cgroup(controller, &id, "").exists(), "{controller} cgroup removed");
        }
    }
}

#[test]
fn a_fork_loop_stops_at_the_pids_limit() {
    let f = fixture();
    let id = unique("forks");
    let mut config = f.config(&id, f.image(&id), &["sh", "-c", "while true; do sleep 30 & done"]);
    config.pids_limit = Some(32);
    let pid = f.runtime.start(&config).unwrap();
    let exit = wait(pid).unwrap();
    let refused = agora_agent::cgroups::counter(&id, "pids", "pids.events", "max");
    let peak = fs::read_to_string(cgroup("pids", &id, "pids.max")).unwrap();
    f.runtime.delete(&id, &config.bundle).unwrap();
    assert_ne!(exit, Exit::Code(0), "the shell gave up when it could not fork");
    assert!(refused > 0, "forks were refused at the limit");
    assert_eq!(peak.trim(), "32");
    assert!(!cgroup("pids", &id, "").exists());
}

#[test]
fn the_memory_cgroup_kills_a_task_over_its_limit() {
    let f = fixture();
    let id = unique("oom");
    let mut config =
        f.config(&id, f.image(&id), &["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}"]);
    config.memory_bytes = Some(16 << 20);
    let pid = f.runtime.start(&config).unwrap();
    let exit = wait(pid).unwrap();
    let oom = fs::read_to_string(cgroup("memory", &id, "memory.oom_control")).unwrap();
    f.runtime.delete(&id, &config.bundle).unwrap();
    assert!(matches!(exit, Exit::Signal(9) | Exit::Code(137)), "{exit:?}");
    let kills = oom.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse::<u64>().ok());
    assert!(kills.is_some_and(|n| n >= 1), "{oom}");
}

#[test]
fn a_task_directory_is_never_deleted_through_a_mount() {
    let f = fixture();
    let task = f.dir.path().join("agent/tasks/leftover");
    let root = task.join("bundle/rootfs");
    mount_overlay(&f.busybox, &task.join("upper"), &task.join("work"), &root).unwrap();
    assert_eq!(mounts_below(&task), std::slice::from_ref(&root));
    assert!(root.join("bin/busybox").is_file());
    remove_task_dir(&task).unwrap();
    assert!(!task.exists());
    assert!(f.busybox[0].join("bin/busybox").is_file(), "the image layer below the mount is untouched");
}
