//! `agora agent` as a process running real containers (as root, here and in CI) against `agora apiserver`: a busybox
//! image built with `agora image build`; exit codes, output and the task's environment; the order of reported
//! states; kill with a grace period (a task ignoring SIGTERM is SIGKILLed); an OOM kill; a missing image; a task
//! without an image; and a deleted task whose container is stopped before it goes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agora_client::{Api, DeleteParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use agora_e2e::{ApiserverProcess, agora_binary, eventually};
use agora_schemas::{Agent, Task, TaskState};
use common::{
    AgentProcess, WorkDir, busybox_rootfs, cgroup_pids, sandbox, spawn_agent, start_agent, start_agent_with, task,
    terminal,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_a_kill_9_of_their_agent_and_exits_meanwhile_are_reported() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (mut agent, agent_dir, client) = start_agent(&server, &work).await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let started =
        [("survivor", "sleep 100"), ("quick", "sleep 2; exit 7"), ("abandoned", "sleep 100"), ("stopped", "sleep 100")];
    for (name, cmd) in started {
        tasks
            .create(&PostParams::default(), &task(name, Some("busybox"), cmd, json!({"killGracePeriodSeconds": 1})))
            .await
            .unwrap();
    }
    let running = |name: &'static str| {
        let tasks = tasks.clone();
        async move {
            eventually(Duration::from_secs(20), &format!("{name} runs"), || async {
                tasks.get(name).await.ok().filter(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running))
            })
            .await
        }
    };
    let survivor = running("survivor").await;
    let quick = running("quick").await;
    let abandoned = running("abandoned").await;
    let stopped = running("stopped").await;
    let pids = cgroup_pids(&survivor);
    assert!(!pids.is_empty());

    // kill -9 the agent; meanwhile `quick` exits, `abandoned` is deleted (its finalizer keeps it Terminating) and
    // `stopped` is asked to be killed.
    let _ = agent.0.kill();
    let _ = agent.0.wait();
    let quick_dir = agent_dir.join("tasks").join(quick.metadata.uid.as_deref().unwrap());
    eventually(Duration::from_secs(20), "quick exits while the agent is down", || async {
        quick_dir.join("exit.json").exists().then_some(())
    })
    .await;
    tasks.delete("abandoned", &DeleteParams::default()).await.unwrap();
    let kill = Patch::Merge(json!({"spec": {"killRequested": true}}));
    tasks.patch("stopped", &PatchParams::default(), &kill).await.unwrap();
    assert_eq!(tasks.get("quick").await.unwrap().status.unwrap().state, TaskState::Running, "nobody reported it yet");

    let _agent = spawn_agent(&server, &agent_dir);
    let quick = terminal(&tasks, "quick").await;
    assert_eq!((quick.state, quick.exit_code), (TaskState::Failed, Some(7)), "the exit code is known: {quick:?}");
    eventually(Duration::from_secs(20), "abandoned is stopped and gone", || async {
        tasks.get_opt("abandoned").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(cgroup_pids(&abandoned).is_empty());
    // The kill asked for while the agent was down stops the process, not only the record.
    assert_eq!(terminal(&tasks, "stopped").await.state, TaskState::Killed);
    eventually(Duration::from_secs(20), "stopped's processes are gone", || async {
        cgroup_pids(&stopped).is_empty().then_some(())
    })
    .await;
    let still = tasks.get("survivor").await.unwrap().status.unwrap();
    assert_eq!(still.state, TaskState::Running);
    assert_eq!(cgroup_pids(&survivor), pids, "the same process runs on");

    // The restarted agent still controls it.
    tasks
        .patch("survivor", &PatchParams::default(), &Patch::Merge(json!({"spec": {"killRequested": true}})))
        .await
        .unwrap();
    assert_eq!(terminal(&tasks, "survivor").await.state, TaskState::Killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_agent_serves_logs_only_to_whoever_presents_it() {
    let server = tokio::task::block_in_place(|| ApiserverProcess::embedded_with_token("s3cret-token"));
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, _, client) = start_agent(&server, &work).await;
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    tasks.create(&PostParams::default(), &task("told", Some("busybox"), "echo secret", json!({}))).await.unwrap();
    assert_eq!(terminal(&tasks, "told").await.state, TaskState::Finished);
    // The apiserver presents the cluster token to the agent when it proxies.
    assert_eq!(tasks.logs("told", &LogParams::default()).await.unwrap(), "secret\n");
    let agent = Api::<Agent>::all(client).get("a1").await.unwrap();
    let status = agent.status.expect("the agent's status");
    let address = status.address.expect("the agent's address");
    assert!(address.starts_with("https://"), "with the cluster's token the agent serves HTTPS: {address}");
    let uid = tasks.get("told").await.unwrap().metadata.uid.unwrap();
    // Trusting the CA the agent published, and nothing else.
    let ca = status.certificate_authority.expect("the agent publishes its CA");
    let tls = agora_client::tls_client_config(ca.as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_backend_preconfigured(tls).build().unwrap();
    let stranger = reqwest::Client::new().get(format!("{address}/healthz")).send().await;
    assert!(stranger.is_err(), "a client that does not trust the agent's CA cannot talk to it");
    let log = format!("{address}/v1/tasks/{uid}/stdout");
    for (presented, expected) in [(None, 401), (Some("Bearer wrong"), 401), (Some("Bearer s3cret-token"), 200)] {
        let mut request = http.get(&log);
        if let Some(value) = presented {
            request = request.header("Authorization", value);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), expected, "{presented:?}");
    }
    let metrics = http.get(format!("{address}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 401, "metrics need the token too");
    assert_eq!(http.get(format!("{address}/healthz")).send().await.unwrap().status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_work_dir_is_taken_from_where_the_agent_starts() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let work = WorkDir(tempfile::tempdir().unwrap());
    busybox_rootfs(&work.0.path().join("rootfs-src"));
    let relative = |command: &mut Command| {
        command.current_dir(work.0.path()).args(["--work-dir", "agent"]);
    };
    let mut build = Command::new(agora_binary());
    build.args(["image", "build", "--rootfs", "rootfs-src", "--tag", "busybox"]);
    relative(&mut build);
    assert!(build.status().unwrap().success());
    let mut agent = Command::new(agora_binary());
    agent.args(["agent", "--server", &server.url(), "--name", "a1", "--listen", "127.0.0.1:0"]);
    relative(&mut agent);
    let _agent = AgentProcess(agent.env("AGORA_LOG", "warn").stdout(Stdio::null()).spawn().unwrap());
    let tasks: Api<Task> = Api::namespaced(server.client(), "default");
    tasks.create(&PostParams::default(), &task("here", Some("busybox"), "echo here", json!({}))).await.unwrap();
    let status = terminal(&tasks, "here").await;
    assert_eq!(status.state, TaskState::Finished, "{status:?}");
    assert_eq!(tasks.logs("here", &LogParams::default()).await.unwrap(), "here\n");
}

#[test]
fn a_spare_shim_exits_without_a_trace_when_its_agent_is_gone() {
    let state = tempfile::tempdir().unwrap();
    let mut spare = Command::new(agora_binary())
        .args(["container-shim", "-"])
        .arg(state.path().join("containers"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(spare.try_wait().unwrap().is_none(), "a spare waits for its task");
    drop(spare.stdin.take()); // what the agent's exit does to the pipe
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = spare.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = spare.kill();
            panic!("the spare did not exit at end-of-file");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0, "it created nothing");
}

#[test]
fn an_agent_without_a_token_refuses_to_listen_beyond_loopback() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(agora_binary())
        .args(["agent", "--server", "http://127.0.0.1:9", "--name", "open", "--listen", "0.0.0.0:0", "--work-dir"])
        .arg(work.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0:0 without the cluster's token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_are_kept_for_their_retention_then_removed() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, agent_dir, client) = start_agent_with(&server, &work, &["--sandbox-retention-seconds", "3"]).await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let created =
        tasks.create(&PostParams::default(), &task("brief", Some("busybox"), "echo bye", json!({}))).await.unwrap();
    assert_eq!(terminal(&tasks, "brief").await.state, TaskState::Finished);
    let dir = agent_dir.join("tasks").join(created.metadata.uid.as_deref().unwrap());
    assert_eq!(tasks.logs("brief", &LogParams::default()).await.unwrap(), "bye\n", "the log outlives the task");
    eventually(Duration::from_secs(30), "the sandbox is collected after 3 s", || async {
        (!dir.exists()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tasks_run_at_once_on_one_agent() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, agent_dir, client) = start_agent(&server, &work).await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    for i in 0..50 {
        let cmd = "echo started $TASK_ID; exec sleep 300";
        // Fifty fit the agent exactly (2 cpus, 1024 MiB): its admission counts what its tasks hold.
        let t = task(&format!("many-{i}"), Some("busybox"), cmd, json!({"mem": 16, "cpus": 0.04}));
        tasks.create(&PostParams::default(), &t).await.unwrap();
    }
    let running = |state: TaskState| {
        let tasks = tasks.clone();
        async move {
            let list = tasks.list(&agora_client::ListParams::default()).await.ok()?;
            let count = list.items.iter().filter(|t| t.status.as_ref().is_some_and(|s| s.state == state)).count();
            (count == 50).then_some(list.items)
        }
    };
    let all = eventually(Duration::from_secs(120), "all 50 run at the same time", || running(TaskState::Running)).await;
    for t in &all {
        let name = t.metadata.name.clone().unwrap();
        let stdout = sandbox(&agent_dir, t).join("stdout");
        let want = format!("started {name}\n");
        eventually(Duration::from_secs(20), &format!("{name} writes its line"), || async {
            (std::fs::read_to_string(&stdout).ok()? == want).then_some(())
        })
        .await;
        tasks
            .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"killRequested": true}})))
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(120), "all 50 are killed", || running(TaskState::Killed)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_tasks_in_containers_and_reports_every_state() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (mut agent, agent_dir, client) = start_agent(&server, &work).await;
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let create = |t: Task| {
        let tasks = tasks.clone();
        async move { tasks.create(&PostParams::default(), &t).await.unwrap() }
    };

    // Exit code, output, environment, and the order of the states.
    let ports = json!({"ports": [{"port": 31005, "name": "http-api"}]});
    let created = create(task(
        "exits",
        Some("busybox"),
        "echo $TASK_ID $PORT0 $PORT_HTTP_API $PORTS $AGORA_NAMESPACE; echo oops >&2; exit 3",
        ports,
    ))
    .await;
    assert_eq!(created.metadata.finalizers, ["agora.dev/agent"], "bound: its agent holds its deletion from the start");
    let mut states = Vec::new();
    let mut watch = tasks
        .watch(
            &WatchParams::default().fields("metadata.name=exits").timeout(30),
            created.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    while let Some(Ok(event)) = watch.next().await {
        if let WatchEvent::Modified(t) = event {
            let state = t.status.map(|s| s.state);
            if states.last() != Some(&state) {
                states.push(state);
            }
            if state.is_some_and(TaskState::is_terminal) {
                break;
            }
        }
    }
    assert_eq!(
        states,
        [Some(TaskState::Starting), Some(TaskState::Running), Some(TaskState::Failed)],
        "each state once, in order (no write before the first: the finalizer came with the creation)"
    );
    let exits = tasks.get("exits").await.unwrap();
    let status = exits.status.clone().unwrap();
    assert_eq!(status.exit_code, Some(3));
    assert!(status.started_at.is_some() && status.finished_at >= status.started_at);
    let out = std::fs::read_to_string(sandbox(&agent_dir, &exits).join("stdout")).unwrap();
    assert_eq!(out, "exits 31005 31005 31005 default\n");
    assert_eq!(std::fs::read_to_string(sandbox(&agent_dir, &exits).join("stderr")).unwrap(), "oops\n");

    // Logs through the apiserver's proxy to the agent: whole, stderr, the last lines, and followed as they come.
    assert_eq!(tasks.logs("exits", &LogParams::default()).await.unwrap(), "exits 31005 31005 31005 default\n");
    assert_eq!(tasks.logs("exits", &LogParams::default().stderr()).await.unwrap(), "oops\n");
    create(task("chatty", Some("busybox"), "for i in 1 2 3; do echo line $i; done; sleep 2; echo late", json!({})))
        .await;
    eventually(Duration::from_secs(20), "chatty runs", || async {
        tasks.get("chatty").await.ok()?.status.filter(|s| s.state == TaskState::Running)
    })
    .await;
    let followed: Vec<bytes::Bytes> =
        tasks.log_stream("chatty", &LogParams::default().follow()).await.unwrap().try_collect().await.unwrap();
    let followed = String::from_utf8(followed.concat()).unwrap();
    assert_eq!(followed, "line 1\nline 2\nline 3\nlate\n", "a followed log ends when the task does");
    assert_eq!(tasks.logs("chatty", &LogParams::default().tail(2)).await.unwrap(), "line 3\nlate\n");
    let error = tasks.logs("nope", &LogParams::default()).await.unwrap_err();
    assert!(error.is_not_found(), "{error}");

    // Health checks: HTTP (busybox's httpd on the task's port) and COMMAND (in the container) pass, fail when the
    // page goes, and recover when it is back.
    let checks = json!({
        "ports": [{"port": 31007}],
        "healthChecks": [
            {"protocol": "HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": 0, "intervalSeconds": 1,
             "timeoutSeconds": 1, "maxConsecutiveFailures": 5},
            {"protocol": "COMMAND", "command": "test -f /mnt/mesos/sandbox/www/health", "gracePeriodSeconds": 0,
             "intervalSeconds": 1, "timeoutSeconds": 2},
        ],
    });
    let web = create(task(
        "web",
        Some("busybox"),
        "mkdir -p www && echo ok > www/health && exec httpd -f -p $PORT0 -h www",
        checks,
    ))
    .await;
    let health = |want: bool| {
        let tasks = tasks.clone();
        async move {
            eventually(Duration::from_secs(30), &format!("web's health is {want}"), || async {
                let status = tasks.get("web").await.ok()?.status?;
                (status.healthy == Some(want)).then_some(status)
            })
            .await
        }
    };
    let healthy = health(true).await;
    assert_eq!(healthy.health_check_failures, 0);
    assert!(healthy.last_health_check.as_ref().is_some_and(|c| c.passed));
    // Usage from the task's cgroup, in its status and in the agent's /metrics.
    let usage = eventually(Duration::from_secs(20), "web's usage is reported", || async {
        tasks.get("web").await.ok()?.status?.usage.filter(|u| u.memory_bytes > 0)
    })
    .await;
    assert!(usage.memory_peak_bytes >= Some(usage.memory_bytes) && usage.cpu_seconds >= 0.0, "{usage:?}");
    let agents: Api<Agent> = Api::all(client.clone());
    let address = agents.get("a1").await.unwrap().status.and_then(|s| s.address).expect("the agent's address");
    let port: u16 = address.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap();
    let metrics = agora_e2e::http_get(port, "/metrics").expect("the agent serves /metrics");
    assert!(metrics.contains("agora_task_memory_bytes{task=\"default/web\""), "{metrics}");
    assert!(metrics.contains("agora_tasks_running"), "{metrics}");

    let page = sandbox(&agent_dir, &web).join("www/health");
    std::fs::remove_file(&page).unwrap();
    let unhealthy = health(false).await;
    assert!(unhealthy.health_check_failures >= 1);
    let last = unhealthy.last_health_check.unwrap();
    assert!(!last.passed, "{last:?}");
    std::fs::write(&page, "ok\n").unwrap();
    assert_eq!(health(true).await.health_check_failures, 0, "a pass resets the count");
    tasks.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"killRequested": true}}))).await.unwrap();
    assert_eq!(terminal(&tasks, "web").await.state, TaskState::Killed);
    eventually(Duration::from_secs(10), "web's series go", || async {
        let metrics = agora_e2e::http_get(port, "/metrics")?;
        (!metrics.contains("task=\"default/web\"")).then_some(())
    })
    .await;

    create(task("succeeds", Some("busybox"), "true", json!({}))).await;
    assert_eq!(terminal(&tasks, "succeeds").await.state, TaskState::Finished);

    // Without an image, the host's file system, read-only (the sandbox is the working directory).
    let host_cmd =
        "cat /etc/os-release >/dev/null && (touch /etc/agora-e2e 2>/dev/null || echo read-only) && echo x > y";
    let on_host = create(task("no-image", None, host_cmd, json!({}))).await;
    let no_image = terminal(&tasks, "no-image").await;
    assert_eq!(no_image.state, TaskState::Finished, "{no_image:?}");
    assert_eq!(std::fs::read_to_string(sandbox(&agent_dir, &on_host).join("stdout")).unwrap(), "read-only\n");
    assert!(sandbox(&agent_dir, &on_host).join("y").exists() && !Path::new("/etc/agora-e2e").exists());

    // What cannot run says why, and the agent goes on serving the others.
    // (With the default policy the agent would try to pull it from Docker Hub; Never keeps this to the store.)
    let never = json!({"container": {"image": "nope:1", "imagePullPolicy": "Never"}});
    create(task("missing-image", None, "true", never)).await;
    create(task("no-command", Some("busybox"), "no-such-command --flag", json!({}))).await;
    create(task("too-big", Some("busybox"), "true", json!({"mem": 4096}))).await;
    let no_command = terminal(&tasks, "no-command").await;
    assert_eq!((no_command.state, no_command.reason.as_deref()), (TaskState::Failed, Some("CommandNotFound")));
    let too_big = terminal(&tasks, "too-big").await;
    assert_eq!((too_big.state, too_big.reason.as_deref()), (TaskState::Failed, Some("InsufficientResources")));
    assert!(too_big.message.as_deref().is_some_and(|m| m.contains("mem 4096")), "{too_big:?}");
    let missing = terminal(&tasks, "missing-image").await;
    assert_eq!((missing.state, missing.reason.as_deref()), (TaskState::Failed, Some("ImageNotFound")));
    assert!(missing.message.as_deref().is_some_and(|m| m.contains("nope:1")), "{missing:?}");

    // Over its memory: the cgroup kills it.
    create(task(
        "hungry",
        Some("busybox"),
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}",
        json!({"mem": 16}),
    ))
    .await;
    let hungry = terminal(&tasks, "hungry").await;
    assert_eq!((hungry.state, hungry.reason.as_deref()), (TaskState::Failed, Some("OOMKilled")), "{hungry:?}");

    // killRequested: a task that handles SIGTERM stops within its grace period, cleanly.
    let polite = "trap 'echo bye; exit 0' TERM; while true; do sleep 0.2; done";
    create(task("polite", Some("busybox"), polite, json!({"killGracePeriodSeconds": 10}))).await;
    let polite_task = eventually(Duration::from_secs(20), "polite runs", || async {
        tasks.get("polite").await.ok().filter(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running))
    })
    .await;
    let asked = Instant::now();
    tasks
        .patch("polite", &PatchParams::default(), &Patch::Merge(json!({"spec": {"killRequested": true}})))
        .await
        .unwrap();
    let stopped = terminal(&tasks, "polite").await;
    assert_eq!((stopped.state, stopped.exit_code), (TaskState::Killed, Some(0)), "it exited on SIGTERM: {stopped:?}");
    assert!(asked.elapsed() < Duration::from_secs(10), "before the grace period ran out");
    assert_eq!(std::fs::read_to_string(sandbox(&agent_dir, &polite_task).join("stdout")).unwrap(), "bye\n");

    // killRequested: a task that ignores SIGTERM is SIGKILLed after its grace period.
    create(task(
        "stubborn",
        Some("busybox"),
        "trap '' TERM; sleep 100 & wait; sleep 100",
        json!({"killGracePeriodSeconds": 1}),
    ))
    .await;
    eventually(Duration::from_secs(20), "stubborn runs", || async {
        tasks.get("stubborn").await.ok()?.status.filter(|s| s.state == TaskState::Running)
    })
    .await;
    let asked = Instant::now();
    tasks
        .patch("stubborn", &PatchParams::default(), &Patch::Merge(json!({"spec": {"killRequested": true}})))
        .await
        .unwrap();
    let killed = terminal(&tasks, "stubborn").await;
    assert_eq!(killed.state, TaskState::Killed);
    assert_eq!(killed.exit_code, Some(128 + 9), "SIGKILLed: {killed:?}");
    assert!(asked.elapsed() >= Duration::from_secs(1), "the grace period was given");

    // Deleting a running task stops its container before the task goes.
    let doomed = create(task("doomed", Some("busybox"), "sleep 100", json!({}))).await;
    eventually(Duration::from_secs(20), "doomed runs", || async {
        tasks.get("doomed").await.ok()?.status.filter(|s| s.state == TaskState::Running)
    })
    .await;
    let uid = doomed.metadata.uid.clone().unwrap();
    let cgroup = Path::new("/sys/fs/cgroup/memory/agora").join(&uid);
    assert!(cgroup.exists());
    tasks.delete("doomed", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(20), "doomed is gone", || async {
        tasks.get_opt("doomed").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(!cgroup.exists(), "its container and cgroup went first");

    let pid = agent.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = agent.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}
