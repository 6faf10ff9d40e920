//! The container shim: one small process per task that starts its container (so the container's init is the
//! shim's child, not the agent's), waits for it, and writes how it ended into the task's directory. The agent can
//! then die — even by `kill -9` — and be restarted without touching running tasks: a restarted agent finds each
//! task's shim by its pid file and learns of exits that happened while it was down, exit code included, from the
//! exit file. Run as the hidden `agora container-shim TASK_DIR STATE_DIR`.
//!
//! Files in the task's directory: `container.json` (the [`ContainerConfig`], written by the agent), `shim.pid`
//! (the shim's pid), `container.pid` (the container's init), `exit.json` (the [`Outcome`], written last, by rename).
//!
//! Starting a process of the `agora` binary takes milliseconds (loading it, starting its runtime), so the agent keeps
//! one *spare* shim started ahead (`container-shim - STATE_DIR`), which waits for its task directory on stdin: a task
//! start then costs a line written to a pipe. A spare whose agent is gone reads end-of-file and exits.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use crate::container::{self, ContainerConfig, ContainerRuntime, Exit};

const CONFIG_FILE: &str = "container.json";
const SHIM_PID_FILE: &str = "shim.pid";
const CONTAINER_PID_FILE: &str = "container.pid";
const EXIT_FILE: &str = "exit.json";

/// How a task's container ended, as its shim saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It ran and ended so.
    Exited(Exit),
    /// It never started; why.
    StartFailed(String),
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}

/// The task directory a spare shim is given as its `TASK_DIR`: the real one arrives on stdin.
pub const FROM_STDIN: &str = "-";

/// The shim itself: start, wait, record. Returns the process's exit status (0 unless the task dir is unusable). A
/// spare (`task_dir` is [`FROM_STDIN`]) first waits for its task directory on stdin and sends its stderr to the
/// task's `shim.log`; it exits with 0 at end-of-file.
#[must_use]
pub fn run(task_dir: &Path, state_dir: &Path) -> i32 {
    if task_dir == Path::new(FROM_STDIN) {
        use std::io::BufRead;
        use std::os::unix::ffi::OsStrExt;
        let mut line = Vec::new();
        if std::io::stdin().lock().read_until(b'\n', &mut line).map_or(true, |read| read == 0) {
            return 0; // the agent is gone, or stopped without using this spare
        }
        let task_dir = PathBuf::from(std::ffi::OsStr::from_bytes(line.strip_suffix(b"\n").unwrap_or(&line)));
        if let Ok(log) = std::fs::File::options().create(true).append(true).open(task_dir.join("shim.log")) {
            use std::os::fd::AsRawFd;
            let _ = nix::unistd::dup2(log.as_raw_fd(), 2);
        }
        return run(&task_dir, state_dir);
    }
    let record = |outcome: Outcome| {
        let bytes = serde_json::to_vec(&outcome).unwrap_or_default();
        write_atomically(&task_dir.join(EXIT_FILE), &bytes).map_or(1, |()| 0)
    };
    let config: ContainerConfig = match std::fs::read(task_dir.join(CONFIG_FILE))
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(e) => return record(Outcome::StartFailed(format!("reading {CONFIG_FILE}: {e}"))),
    };
    let _ = write_atomically(&task_dir.join(SHIM_PID_FILE), std::process::id().to_string().as_bytes());
    let runtime = match ContainerRuntime::new(state_dir) {
        Ok(runtime) => runtime,
        Err(e) => return record(Outcome::StartFailed(e.to_string())),
    };
    match runtime.start(&config) {
        Ok(pid) => {
            let _ = write_atomically(&task_dir.join(CONTAINER_PID_FILE), pid.to_string().as_bytes());
            // A line on stdout (a pipe to the agent that started the shim) says the pid is there; the agent may be
            // gone, and then the write fails, which is fine: the file is what counts.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), b"started\n");
            match container::wait(pid) {
                Ok(exit) => record(Outcome::Exited(exit)),
                Err(e) => record(Outcome::StartFailed(format!("waiting for the container: {e}"))),
            }
        }
        Err(e) => record(Outcome::StartFailed(e.to_string())),
    }
}

/// The most of a COMMAND check's output kept (its tail), as Kubernetes keeps 10 KiB of a probe's.
pub const MAX_CHECK_OUTPUT: usize = 10 * 1024;

/// The exit code of a check that did not end within its timeout (as `timeout(1)`'s).
pub const CHECK_TIMED_OUT: i32 = 124;

/// `container-exec`: runs `args` inside the running container `id` and exits with its status (125 when it could not
/// be started). A process of its own, because entering a container forks, which the multithreaded agent must not.
///
/// The command's output goes through a pipe of which only the last [`MAX_CHECK_OUTPUT`] bytes are kept and written
/// to `output`, however much it prints. After `timeout` its whole process group (the command starts a session of
/// its own inside the container, so everything it started is in it) is killed, and the exit is
/// [`CHECK_TIMED_OUT`]: a check that hangs leaves nothing running behind it.
#[must_use]
pub fn exec(state_dir: &Path, id: &str, output: &Path, timeout: Option<std::time::Duration>, args: Vec<String>) -> i32 {
    let Ok(runtime) = ContainerRuntime::new(state_dir) else { return 125 };
    let (reader, writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            let _ = std::fs::write(output, format!("making a pipe: {e}"));
            return 125;
        }
    };
    let pid = match runtime.exec(id, args, std::fs::File::from(std::os::fd::OwnedFd::from(writer))) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = std::fs::write(output, e.to_string());
            return 125;
        }
    };
    // Forked: threads are safe now. One keeps the tail of what the command writes.
    let (tail_sender, tail) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tail_sender.send(read_tail(reader, MAX_CHECK_OUTPUT));
    });
    let code = match container::wait_for(pid, timeout) {
        Ok(Some(exit)) => exit.code(),
        Ok(None) => CHECK_TIMED_OUT,
        Err(e) => {
            let _ = std::fs::write(output, e.to_string());
            return 125;
        }
    };
    // A process the command left (in another group) may hold the pipe open: the tail is what came so far.
    let kept = tail.recv_timeout(std::time::Duration::from_millis(200)).unwrap_or_default();
    let _ = std::fs::write(output, kept);
    code
}

/// The last `limit` bytes `reader` gives until its end.
fn read_tail(mut reader: impl std::io::Read, limit: usize) -> Vec<u8> {
    let mut tail = std::collections::VecDeque::with_capacity(limit);
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend(&chunk[..n]);
                let over = tail.len().saturating_sub(limit);
                tail.drain(..over);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    tail.into()
}

/// Starts a shim (`program container-shim TASK_DIR STATE_DIR`, in its own process group so it outlives the agent)
/// for the container `config`, whose directory is `task_dir`. The shim's stdout is a pipe that gets a line once the
/// container's pid is recorded, and ends when the shim does: [`started`] waits on it.
///
/// # Errors
/// When the config cannot be written or the shim cannot be started.
pub fn spawn(
    program: &Path,
    config: &ContainerConfig,
    task_dir: &Path,
    state_dir: &Path,
) -> std::io::Result<tokio::process::Child> {
    prepare_dir(config, task_dir)?;
    let log = std::fs::File::create(task_dir.join("shim.log"))?;
    start_shim(program, task_dir.as_os_str(), state_dir, Stdio::null(), log.into())
}

/// `program container-shim TASK_DIR STATE_DIR` in its own process group (so it outlives the agent), its stdout a pipe.
fn start_shim(
    program: &Path,
    task_dir: &std::ffi::OsStr,
    state_dir: &Path,
    stdin: Stdio,
    stderr: Stdio,
) -> std::io::Result<tokio::process::Child> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(program);
    command.arg("container-shim").arg(task_dir).arg(state_dir).stdin(stdin).stdout(Stdio::piped()).stderr(stderr);
    command.process_group(0);
    tokio::process::Command::from(command).kill_on_drop(false).spawn()
}

/// The task directory with `config` in it and nothing left of an earlier start.
fn prepare_dir(config: &ContainerConfig, task_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(task_dir)?;
    for stale in [EXIT_FILE, SHIM_PID_FILE, CONTAINER_PID_FILE] {
        let _ = std::fs::remove_file(task_dir.join(stale));
    }
    write_atomically(&task_dir.join(CONFIG_FILE), &serde_json::to_vec(config).map_err(std::io::Error::other)?)
}

/// Starts a spare shim, which waits on stdin for its task directory (see [`start_with`]).
///
/// # Errors
/// When the process cannot be started.
pub fn spawn_spare(program: &Path, state_dir: &Path) -> std::io::Result<tokio::process::Child> {
    start_shim(program, FROM_STDIN.as_ref(), state_dir, Stdio::piped(), Stdio::null())
}

/// Starts the container `config` through `spare` (from [`spawn_spare`]) when there is one and it takes the task,
/// otherwise through a new shim ([`spawn`]).
///
/// # Errors
/// When the config cannot be written or no shim can be started.
pub async fn start_with(
    spare: Option<tokio::process::Child>,
    program: &Path,
    config: &ContainerConfig,
    task_dir: &Path,
    state_dir: &Path,
) -> std::io::Result<tokio::process::Child> {
    use std::os::unix::ffi::OsStrExt;
    use tokio::io::AsyncWriteExt;
    let path = task_dir.as_os_str().as_bytes();
    let Some(mut spare) = spare.filter(|_| !path.contains(&b'\n')) else {
        return spawn(program, config, task_dir, state_dir);
    };
    prepare_dir(config, task_dir)?;
    let line = [path, b"\n"].concat();
    // The spare reads one line; its stdin is closed after it.
    let handed = match spare.stdin.take() {
        Some(mut stdin) => stdin.write_all(&line).await.is_ok(),
        None => false,
    };
    if handed {
        Ok(spare)
    } else {
        let _ = spare.start_kill();
        spawn(program, config, task_dir, state_dir)
    }
}

/// Waits until the shim started by [`spawn`] says something on its stdout (the container started) or ends, at most
/// `limit`; either way its files then tell what happened.
pub async fn started(child: &mut tokio::process::Child, limit: std::time::Duration) {
    use tokio::io::AsyncReadExt;
    let Some(stdout) = child.stdout.as_mut() else { return };
    let mut byte = [0u8; 1];
    let _ = tokio::time::timeout(limit, stdout.read(&mut byte)).await;
}

/// The outcome the shim recorded, once it has.
#[must_use]
pub fn outcome(task_dir: &Path) -> Option<Outcome> {
    std::fs::read(task_dir.join(EXIT_FILE)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// The container configuration the agent wrote for the task.
#[must_use]
pub fn config(task_dir: &Path) -> Option<ContainerConfig> {
    std::fs::read(task_dir.join(CONFIG_FILE)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// The container's init pid, once started.
#[must_use]
pub fn container_pid(task_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(task_dir.join(CONTAINER_PID_FILE)).ok().and_then(|p| p.trim().parse().ok())
}

/// Whether the task's shim process is still alive (not exited, not a zombie).
#[must_use]
pub fn shim_alive(task_dir: &Path) -> bool {
    let Some(pid) =
        std::fs::read_to_string(task_dir.join(SHIM_PID_FILE)).ok().and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return false;
    };
    // /proc/<pid>/stat: "pid (comm) state ..."; a zombie ('Z') has ended.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    let ours = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("container-shim"));
    ours && state.is_some_and(|s| s != "Z" && s != "X")
}

/// The directory of the task with this uid under the agent's work dir.
#[must_use]
pub fn task_dir(work_dir: &Path, uid: &str) -> PathBuf {
    work_dir.join("tasks").join(uid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_tail_of_a_checks_output_is_kept() {
        let written: Vec<u8> = (0..100_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
        let tail = super::read_tail(&written[..], 1024);
        assert_eq!(tail.len(), 1024);
        assert!(written.ends_with(&tail));
        assert_eq!(super::read_tail(&b"short"[..], 1024), b"short");
    }
}
