//! `agora agent --hollow N` as a process against `agora apiserver`: 1,000 simulated agents register and heartbeat,
//! their Tasks run and finish as their annotations say, tasks of other agents are left alone, and bad flags are
//! refused with a message naming them.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_client::{Api, Client, Config, ListParams, Patch, PatchParams, PostParams};
use agora_e2e::{ApiserverProcess, agora_binary, eventually};
use agora_schemas::{Agent, Lease, Task, TaskState};
use serde_json::json;

const AGENTS: usize = 1_000;

struct Hollow(Child);

impl Drop for Hollow {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn task(name: &str, agent: &str, annotations: serde_json::Value) -> Task {
    serde_json::from_value(json!({
        "apiVersion": "agora/v1", "kind": "Task",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"agent": agent, "framework": "bench", "cmd": "true", "cpus": 0.1, "mem": 16},
    }))
    .unwrap()
}

async fn state(tasks: &Api<Task>, name: &str) -> Option<TaskState> {
    tasks.get(name).await.ok().and_then(|t| t.status).map(|s| s.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hollow_agents_register_heartbeat_and_run_their_tasks() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let child = Command::new(agora_binary())
        .args(["agent", "--server", &server.url(), "--hollow", &AGENTS.to_string(), "--name-prefix", "sim-"])
        .args(["--heartbeat-seconds", "2", "--lease-seconds", "6", "--resources", "cpus:8;mem:16384;disk:100000"])
        .args(["--attributes", "rack:r1"])
        .env("AGORA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start agora agent --hollow");
    let mut hollow = Hollow(child);
    let client = Client::new(Config::new(server.url())).unwrap();

    let agents: Api<Agent> = Api::all(client.clone());
    // Registration is two writes (the spec, then the Ready status): wait for both on every agent.
    let ready = |agent: &Agent| agent.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready"));
    let registered = eventually(Duration::from_secs(60), "every hollow agent is registered and Ready", || async {
        let list = agents.list(&ListParams::default()).await.ok()?;
        (list.items.len() == AGENTS && list.items.iter().all(ready)).then_some(list.items)
    })
    .await;
    for agent in &registered {
        assert_eq!(agent.spec.resources.cpus, 8.0);
        assert_eq!(agent.spec.attributes.get("rack").map(String::as_str), Some("r1"));
    }

    // Every agent heartbeats: all 1,000 leases exist, then all of them are renewed again.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "agora-agents");
    let renewals = || async {
        let list = leases.list(&ListParams::default()).await.ok()?;
        let times: HashMap<String, _> =
            list.items.into_iter().filter_map(|l| Some((l.metadata.name?, l.spec.renew_time?))).collect();
        Some(times)
    };
    let first = eventually(Duration::from_secs(30), "every agent has a lease", || async {
        renewals().await.filter(|t| t.len() == AGENTS)
    })
    .await;
    eventually(Duration::from_secs(30), "every lease is renewed", || async {
        let now = renewals().await?;
        first.iter().all(|(name, at)| now.get(name).is_some_and(|later| later > at)).then_some(())
    })
    .await;

    // Tasks: one finishes after a second, one fails with its exit code, one is killed, one on a stranger is ignored.
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let create = |t: Task| {
        let tasks = tasks.clone();
        async move { tasks.create(&PostParams::default(), &t).await.unwrap() }
    };
    create(task("done", "sim-7", json!({"hollow.agora.dev/run-seconds": "1"}))).await;
    create(task("fails", "sim-999", json!({"hollow.agora.dev/run-seconds": "0.5", "hollow.agora.dev/exit-code": "3"})))
        .await;
    create(task("forever", "sim-0", json!({}))).await;
    create(task("stranger", "elsewhere-1", json!({"hollow.agora.dev/run-seconds": "0"}))).await;

    eventually(Duration::from_secs(20), "the tasks finish", || async {
        (state(&tasks, "done").await == Some(TaskState::Finished)
            && state(&tasks, "fails").await == Some(TaskState::Failed))
        .then_some(())
    })
    .await;
    let failed = tasks.get("fails").await.unwrap().status.unwrap();
    assert_eq!(failed.exit_code, Some(3));
    assert!(failed.started_at.is_some() && failed.finished_at >= failed.started_at);
    assert_eq!(state(&tasks, "forever").await, Some(TaskState::Running));

    tasks
        .patch("forever", &PatchParams::default(), &Patch::Merge(json!({"spec": {"killRequested": true}})))
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "the kill is reported", || async {
        (state(&tasks, "forever").await == Some(TaskState::Killed)).then_some(())
    })
    .await;
    assert_eq!(state(&tasks, "stranger").await, None, "a task of another agent is not touched");

    // SIGTERM stops it cleanly.
    let pid = hollow.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = hollow.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn bad_agent_flags_are_refused_by_name() {
    let run = |args: &[&str]| {
        let out = Command::new(agora_binary()).arg("agent").args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stderr) = run(&["--hollow", "2", "--resources", "cpus:4;gpus:1"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--resources item \"gpus:1\": unknown resource \"gpus\""), "{stderr}");
    let (code, stderr) = run(&["--hollow", "2", "--heartbeat-seconds", "10", "--lease-seconds", "5"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--lease-seconds (5) must be longer than --heartbeat-seconds (10)"), "{stderr}");
    let port = agora_e2e::free_port().to_string();
    let (code, stderr) =
        run(&["--name", "n1", "--server", &format!("http://127.0.0.1:{port}"), "--work-dir", "/tmp/agora-e2e-unused"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("registering agent n1") && stderr.contains(&port), "{stderr}");
}
