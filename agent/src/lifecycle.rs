//! A task's life on an agent as pure functions — the decisions of the one [`executor`](crate::executor) that real
//! agents ([`crate::runner`]) and hollow ones ([`crate::hollow`]) share, so scale tests and benchmarks run the
//! decisions production runs.
//!
//! ```text
//! Staging ──Launch──▶ Starting ──(started)──▶ Running ──(exit)──▶ Finished | Failed
//!                        │                       │
//!                        └─(cannot start)──▶ Failed                 killRequested ──Stop──▶ Killing ──(exit)──▶ Killed
//! Unreachable (the allocator lost the agent) ──▶ Running again, if the agent still runs it; else Lost
//! ```
//!
//! [`decide`] is what to do next with a task, given the Task object and what the agent knows locally ([`Facts`]);
//! [`ended`] is the terminal status a finished process gets. The I/O — writing statuses, starting and signalling
//! processes — is the caller's.

use agora_schemas::{Task, TaskState};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::container::Exit;

/// What an agent knows of a task locally, besides the Task object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// This agent process has taken the task on (it wrote `Starting`, or took over a process an earlier run left):
    /// it never launches it again.
    pub handled: bool,
    /// The task's process, as far as this agent knows.
    pub process: Process,
}

/// A task's process, as far as its agent knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// This agent runs none for it (it never started one, and none an earlier run left could be taken over).
    Unknown,
    /// Running; `killing`: a stop has been sent.
    Running {
        /// A stop was sent.
        killing: bool,
    },
    /// It ended; its end is being recorded.
    Exited,
}

/// What to do next with a task.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing until the task (or its process) changes.
    Wait,
    /// Launch it: claim it with `Starting` (guarded by the version decided on), admit it, start its process.
    Launch,
    /// Stop its process: SIGTERM, then SIGKILL after its grace period; `announce`: write `Killing` first, so the
    /// exit's `Killed` always comes after it.
    Stop {
        /// Write `Killing` first.
        announce: bool,
    },
    /// Write this status; `guarded`: only over the version decided on (a stale cached state must not win).
    Write {
        /// The status fields to merge.
        status: Value,
        /// Guarded by the task's `resourceVersion`.
        guarded: bool,
    },
    /// An earlier run of this agent started it and nothing of it is left to take over: remove what remains of its
    /// container, then write this status (guarded).
    Abandon {
        /// The status fields to merge.
        status: Value,
    },
}

/// What to do next with `task`, given the agent's [`Facts`] and the time.
#[must_use]
pub fn decide(task: &Task, facts: Facts, now: Timestamp) -> Step {
    let state = task.status.as_ref().map_or(TaskState::Staging, |s| s.state);
    if state.is_terminal() {
        return Step::Wait;
    }
    if task.spec.kill_requested == Some(true) || task.metadata.deletion_timestamp.is_some() {
        return match facts.process {
            Process::Running { killing } => Step::Stop { announce: !killing },
            // Its end is being recorded: that is the answer.
            Process::Exited => Step::Wait,
            Process::Unknown => Step::Write {
                status: json!({ "state": "Killed", "reason": "KillRequested", "finishedAt": now }),
                guarded: true,
            },
        };
    }
    match (state, facts.process) {
        (TaskState::Staging, Process::Unknown) if !facts.handled => Step::Launch,
        // The allocator marked the task Unreachable while this agent was cut off; the agent is back and says how it
        // really is: still running, ending, or unknown here and so Lost.
        (TaskState::Unreachable, Process::Running { .. }) => Step::Write {
            status: json!({ "state": "Running", "reason": "Reachable",
                            "message": "the agent is reachable again and the task kept running" }),
            guarded: true,
        },
        (TaskState::Unreachable, Process::Unknown) => Step::Write {
            status: json!({ "state": "Lost", "reason": "UnknownToAgent", "finishedAt": now,
                            "message": "the agent is reachable again but does not run this task (it ended while the \
                                        agent was unreachable, or never started)" }),
            guarded: true,
        },
        (_, Process::Running { .. } | Process::Exited) => Step::Wait,
        (_, Process::Unknown) if facts.handled => Step::Wait,
        // Started by an earlier run of this agent, whose process is gone without a word: nothing is known of it.
        (_, Process::Unknown) => Step::Abandon {
            status: json!({ "state": "Failed", "reason": "AgentRestarted", "finishedAt": now,
                            "message": "the agent restarted and the task's shim was gone, without recording how the \
                                        task ended" }),
        },
    }
}

/// How a task's process ended, with what the agent saw around it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct End {
    /// How it ended: `Ok(exit)`, or `Err(why)` when it never started; `None` when nothing says.
    pub outcome: Option<Result<Exit, String>>,
    /// A stop had been sent (a kill requested, or the task deleted).
    pub killing: bool,
    /// The agent stopped it for its disk use: why.
    pub disk_exceeded: Option<String>,
    /// The memory cgroup killed a process of it.
    pub oom_killed: bool,
    /// Forks refused at its pids limit.
    pub forks_refused: u64,
    /// Its pids limit.
    pub pids_limit: Option<u32>,
    /// Its memory, MiB (for the OOM message).
    pub mem: f64,
}

/// The terminal status of a process that ended as `end` says.
#[must_use]
pub fn ended(end: &End, now: Timestamp) -> Value {
    let failed = |reason: &str, message: String| json!({ "state": "Failed", "reason": reason, "message": message, "finishedAt": now });
    let pids = || {
        let limit = end.pids_limit.map_or_else(|| "its".to_owned(), |l| l.to_string());
        format!("{limit} processes (spec.limits.pids): {} forks were refused", end.forks_refused)
    };
    match &end.outcome {
        Some(Ok(exit)) if end.disk_exceeded.is_some() => {
            json!({ "state": "Failed", "reason": "DiskLimitExceeded", "exitCode": exit.code(), "finishedAt": now,
                    "message": end.disk_exceeded })
        }
        Some(Ok(Exit::Code(0))) if !end.killing && end.forks_refused > 0 => {
            // It exited 0, but not everything it tried ran: said, so a fork loop that ends well is not taken for clean.
            json!({ "state": "Finished", "exitCode": 0, "finishedAt": now, "reason": "PidsLimitReached",
                    "message": format!("the task exited 0, but reached its limit of {}", pids()) })
        }
        Some(Ok(Exit::Code(0))) if !end.killing => json!({ "state": "Finished", "exitCode": 0, "finishedAt": now }),
        Some(Ok(exit)) => {
            let code = exit.code();
            if end.killing {
                json!({ "state": "Killed", "reason": "KillRequested", "exitCode": code, "finishedAt": now })
            } else if end.oom_killed {
                json!({ "state": "Failed", "reason": "OOMKilled", "exitCode": code, "finishedAt": now,
                        "message": format!("the task used more than its {} MiB of memory", end.mem) })
            } else if end.forks_refused > 0 {
                json!({ "state": "Failed", "reason": "PidsLimitReached", "exitCode": code, "finishedAt": now,
                        "message": format!("the task reached its limit of {}", pids()) })
            } else if code == 127 {
                // The shell's "command not found".
                json!({ "state": "Failed", "exitCode": code, "finishedAt": now, "reason": "CommandNotFound",
                        "message": "the command was not found (exit code 127); see the task's stderr" })
            } else {
                json!({ "state": "Failed", "exitCode": code, "finishedAt": now })
            }
        }
        Some(Err(message)) => failed("StartFailed", message.clone()),
        None => failed("Lost", "the task's shim ended without recording how the task ended".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use agora_schemas::{ObjectMeta, TaskSpec, TaskStatus};

    use super::*;

    fn task(state: Option<TaskState>) -> Task {
        let mut task = Task::new(ObjectMeta::named(Some("default"), "t"), TaskSpec::default());
        task.status = state.map(TaskStatus::new);
        task
    }

    const UNKNOWN: Facts = Facts { handled: false, process: Process::Unknown };
    const RUNNING: Facts = Facts { handled: true, process: Process::Running { killing: false } };

    fn written(step: &Step) -> (Option<&str>, Option<&str>, bool) {
        match step {
            Step::Write { status, guarded } => (status["state"].as_str(), status["reason"].as_str(), *guarded),
            Step::Abandon { status } => (status["state"].as_str(), status["reason"].as_str(), true),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_task_is_launched_once_and_a_finished_one_left_alone() {
        let now = Timestamp::now();
        assert_eq!(decide(&task(None), UNKNOWN, now), Step::Launch);
        assert_eq!(decide(&task(Some(TaskState::Staging)), UNKNOWN, now), Step::Launch);
        let handled = Facts { handled: true, process: Process::Unknown };
        assert_eq!(decide(&task(Some(TaskState::Staging)), handled, now), Step::Wait, "never launched twice");
        assert_eq!(decide(&task(Some(TaskState::Starting)), handled, now), Step::Wait, "its start is under way");
        assert_eq!(decide(&task(Some(TaskState::Running)), RUNNING, now), Step::Wait);
        for state in [TaskState::Finished, TaskState::Failed, TaskState::Killed, TaskState::Lost] {
            let mut done = task(Some(state));
            done.spec.kill_requested = Some(true);
            assert_eq!(decide(&done, RUNNING, now), Step::Wait, "{state:?} is final");
        }
    }

    #[test]
    fn a_kill_stops_a_running_process_once_and_marks_one_never_started_killed() {
        let now = Timestamp::now();
        let mut kill = task(Some(TaskState::Running));
        kill.spec.kill_requested = Some(true);
        assert_eq!(decide(&kill, RUNNING, now), Step::Stop { announce: true });
        let killing = Facts { handled: true, process: Process::Running { killing: true } };
        assert_eq!(decide(&kill, killing, now), Step::Stop { announce: false }, "Killing is written once");
        let exited = Facts { handled: true, process: Process::Exited };
        assert_eq!(decide(&kill, exited, now), Step::Wait, "its end is being recorded");
        assert_eq!(written(&decide(&kill, UNKNOWN, now)), (Some("Killed"), Some("KillRequested"), true));
        let mut staging = task(Some(TaskState::Staging));
        staging.spec.kill_requested = Some(true);
        assert_eq!(written(&decide(&staging, UNKNOWN, now)).0, Some("Killed"), "killed before it started");
        let mut deleted = task(Some(TaskState::Running));
        deleted.metadata.deletion_timestamp = Some(now);
        assert_eq!(decide(&deleted, RUNNING, now), Step::Stop { announce: true }, "a deletion stops it too");
    }

    #[test]
    fn an_agent_back_from_unreachable_says_how_the_task_really_is() {
        let now = Timestamp::now();
        let unreachable = task(Some(TaskState::Unreachable));
        assert_eq!(written(&decide(&unreachable, RUNNING, now)), (Some("Running"), Some("Reachable"), true));
        assert_eq!(written(&decide(&unreachable, UNKNOWN, now)), (Some("Lost"), Some("UnknownToAgent"), true));
        let exited = Facts { handled: true, process: Process::Exited };
        assert_eq!(decide(&unreachable, exited, now), Step::Wait, "the exit's status follows");
    }

    #[test]
    fn a_task_an_earlier_run_left_without_a_process_is_abandoned() {
        let now = Timestamp::now();
        for state in [TaskState::Starting, TaskState::Running, TaskState::Killing] {
            let step = decide(&task(Some(state)), UNKNOWN, now);
            assert!(matches!(step, Step::Abandon { .. }), "{state:?}: {step:?}");
            assert_eq!(written(&step), (Some("Failed"), Some("AgentRestarted"), true));
        }
    }

    #[test]
    fn the_end_says_why() {
        let now = Timestamp::now();
        let state = |end: End| {
            let status = ended(&end, now);
            (status["state"].as_str().map(str::to_owned), status["reason"].as_str().map(str::to_owned))
        };
        let exit = |code| Some(Ok(Exit::Code(code)));
        let owned = |s: &str, r: Option<&str>| (Some(s.to_owned()), r.map(str::to_owned));
        assert_eq!(state(End { outcome: exit(0), ..End::default() }), owned("Finished", None));
        assert_eq!(state(End { outcome: exit(3), ..End::default() }), owned("Failed", None));
        assert_eq!(state(End { outcome: exit(127), ..End::default() }), owned("Failed", Some("CommandNotFound")));
        let killed = End { outcome: Some(Ok(Exit::Signal(15))), killing: true, ..End::default() };
        assert_eq!(state(killed), owned("Killed", Some("KillRequested")));
        assert_eq!(
            state(End { outcome: exit(0), killing: true, ..End::default() }),
            owned("Killed", Some("KillRequested"))
        );
        let oom = End { outcome: Some(Ok(Exit::Signal(9))), oom_killed: true, mem: 64.0, ..End::default() };
        assert_eq!(ended(&oom, now)["message"], "the task used more than its 64 MiB of memory");
        let forks = End { outcome: exit(0), forks_refused: 7, pids_limit: Some(32), ..End::default() };
        assert_eq!(state(forks.clone()), owned("Finished", Some("PidsLimitReached")));
        assert!(ended(&forks, now)["message"].as_str().is_some_and(|m| m.contains("32 processes")));
        assert_eq!(state(End { outcome: exit(1), ..forks }), owned("Failed", Some("PidsLimitReached")));
        let disk = End { outcome: exit(0), disk_exceeded: Some("too big".into()), ..End::default() };
        assert_eq!(state(disk), owned("Failed", Some("DiskLimitExceeded")));
        assert_eq!(
            state(End { outcome: Some(Err("no such file".into())), ..End::default() }),
            owned("Failed", Some("StartFailed"))
        );
        assert_eq!(state(End::default()), owned("Failed", Some("Lost")));
    }
}
