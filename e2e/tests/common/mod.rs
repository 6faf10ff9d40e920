//! What the agent tests share: an `agora agent` process on a busybox image in a work dir that is cleaned up without
//! following a mount, tasks, and waits.
#![allow(dead_code, unreachable_pub)] // each test binary uses some of these

pub mod browser;
pub mod up;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_client::{Api, Client};
use agora_e2e::{ApiserverProcess, agora_binary, eventually};
use agora_schemas::{Agent, Task, TaskState, TaskStatus};
use serde_json::json;

/// `agora <args[0]> <the server's cluster flags> <args[1..]>`.
pub fn spawn(server: &ApiserverProcess, args: &[&str]) -> agora_e2e::Proc {
    let mut all: Vec<std::ffi::OsString> = vec![args[0].into()];
    all.extend(server.cluster_args());
    all.extend(args[1..].iter().map(Into::into));
    agora_e2e::Proc::quiet(&agora_binary(), all)
}

pub struct AgentProcess(pub Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `count` hollow agents `<prefix><i>` offering `resources`, with `attributes` (`key:value;...`, or empty),
/// heartbeating every second (3 s leases).
pub fn hollow(
    server: &ApiserverProcess,
    count: usize,
    prefix: &str,
    resources: &str,
    attributes: &str,
) -> agora_e2e::Proc {
    let count = count.to_string();
    let mut args = vec!["agent", "--hollow", &count, "--name-prefix", prefix, "--resources", resources];
    if !attributes.is_empty() {
        args.extend(["--attributes", attributes]);
    }
    args.extend(["--heartbeat-seconds", "1", "--lease-seconds", "3"]);
    spawn(server, &args)
}

/// A work dir that is always cleaned up without following a mount (tasks' root file systems live in it).
pub struct WorkDir(pub tempfile::TempDir);

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Containers outlive their agent by design; a test that failed halfway must not leave them running.
        let tasks = self.0.path().join("agent/tasks");
        for entry in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            let procs = Path::new("/sys/fs/cgroup/memory/agora").join(entry.file_name()).join("cgroup.procs");
            for pid in std::fs::read_to_string(procs).unwrap_or_default().lines() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        agora_agent::container::remove_task_dir(self.0.path()).expect("nothing stays mounted in the agent's work dir");
    }
}

pub fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static is installed (make deps)");
    for tool in ["sh", "sleep", "echo", "head", "tr", "true", "cat", "mkdir", "httpd", "test"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
    for empty in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(empty)).unwrap();
    }
}

pub fn task(name: &str, image: Option<&str>, cmd: &str, extra: serde_json::Value) -> Task {
    let mut value = json!({
        "apiVersion": "agora/v1", "kind": "Task", "metadata": {"name": name},
        "spec": {"agent": "a1", "framework": "test", "cmd": cmd, "cpus": 0.5, "mem": 64},
    });
    if let Some(image) = image {
        value["spec"]["container"] = json!({"image": image});
    }
    if let (Some(spec), Some(extra)) = (value["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(value).unwrap()
}

pub async fn terminal(tasks: &Api<Task>, name: &str) -> TaskStatus {
    eventually(Duration::from_secs(30), &format!("{name} ends"), || async {
        tasks.get(name).await.ok()?.status.filter(|s| s.state.is_terminal())
    })
    .await
}

/// Waits until task `name` runs, and returns it.
pub async fn running(tasks: &Api<Task>, name: &str) -> Task {
    eventually(Duration::from_secs(30), &format!("{name} runs"), || async {
        tasks.get(name).await.ok().filter(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running))
    })
    .await
}

pub fn sandbox(work: &Path, task: &Task) -> PathBuf {
    work.join("tasks").join(task.metadata.uid.as_deref().unwrap()).join("sandbox")
}

/// Builds the busybox image into a fresh agent work dir and starts `agora agent --name a1` on it; returns once the
/// agent has registered.
pub async fn start_agent(server: &ApiserverProcess, work: &WorkDir) -> (AgentProcess, PathBuf, Client) {
    start_agent_with(server, work, &[]).await
}

/// As [`start_agent`], with more flags.
pub async fn start_agent_with(
    server: &ApiserverProcess,
    work: &WorkDir,
    flags: &[&str],
) -> (AgentProcess, PathBuf, Client) {
    let rootfs = work.0.path().join("rootfs-src");
    busybox_rootfs(&rootfs);
    let agent_dir = work.0.path().join("agent");
    let built = Command::new(agora_binary())
        .args(["image", "build", "--rootfs"])
        .arg(&rootfs)
        .args(["--tag", "busybox", "--work-dir"])
        .arg(&agent_dir)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let agent = spawn_agent_with(server, &agent_dir, flags);
    let client = server.client();
    let agents: Api<Agent> = Api::all(client.clone());
    eventually(Duration::from_secs(20), "the agent registers", || async { agents.get_opt("a1").await.ok().flatten() })
        .await;
    (agent, agent_dir, client)
}

/// `agora agent --name a1` on `agent_dir`.
pub fn spawn_agent(server: &ApiserverProcess, agent_dir: &Path) -> AgentProcess {
    spawn_agent_with(server, agent_dir, &[])
}

pub fn spawn_agent_with(server: &ApiserverProcess, agent_dir: &Path, flags: &[&str]) -> AgentProcess {
    let mut command = Command::new(agora_binary());
    command.arg("agent").args(server.cluster_args());
    let child = command
        .args(["--name", "a1", "--work-dir"])
        .arg(agent_dir)
        .args(["--resources", "cpus:2;mem:1024;disk:1000;ports:[31000-31010]", "--heartbeat-seconds", "1"])
        .args(["--lease-seconds", "3", "--listen", "127.0.0.1:0", "--usage-seconds", "1"])
        .args(flags)
        .env("AGORA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    AgentProcess(child)
}

/// The pids in a task's memory cgroup.
pub fn cgroup_pids(task: &Task) -> String {
    let procs =
        Path::new("/sys/fs/cgroup/memory/agora").join(task.metadata.uid.as_deref().unwrap()).join("cgroup.procs");
    std::fs::read_to_string(procs).unwrap_or_default()
}
