//! What a hostile task tries, against the secure default (an HTTPS apiserver with a token, a real agent as root):
//! reading host files through its own log (links in its sandbox), reading root-only host files, calling the
//! cluster API on loopback, fork-bombing the host, and asking to run as root. Each is refused, and the agent still
//! removes every cgroup. Health checks (HTTP, TCP, COMMAND) and logs keep working for the unprivileged tasks.

mod common;

use std::path::Path;
use std::time::Duration;

use agora_client::{Api, LogParams, PostParams};
use agora_e2e::{ApiserverProcess, eventually};
use agora_schemas::{Task, TaskState};
use common::{WorkDir, running, start_agent, task, terminal};
use serde_json::json;

/// Every cgroup of task `uid` on this (cgroup v1) host is gone.
fn cgroups_removed(uid: &str) -> bool {
    std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten().all(|c| !c.path().join("agora").join(uid).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_task_reaches_nothing_that_is_not_its_own() {
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, agent_dir, client) = start_agent(&server, &work).await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let token = server.token().unwrap();
    let token_file = server.token_file();
    let create = |t: Task| {
        let tasks = tasks.clone();
        async move { tasks.create(&PostParams::default(), &t).await.unwrap() }
    };

    // 1. Its log replaced by links to the cluster's token and the host's /etc/shadow: the agent reads neither.
    let swap = format!(
        "cd /mnt/mesos/sandbox && echo before && rm -f stdout stderr && ln -s {} stdout && ln -s /etc/shadow stderr \
         && sleep 3",
        token_file.display()
    );
    let mut created = Vec::new();
    for (name, image) in [("links-image", Some("busybox")), ("links-host", None)] {
        created.push(create(task(name, image, &swap, json!({}))).await);
        running(&tasks, name).await;
        let sandbox = agent_dir.join("tasks").join(created.last().unwrap().metadata.uid.as_deref().unwrap());
        eventually(Duration::from_secs(20), "the task swapped its log for links", || async {
            std::fs::symlink_metadata(sandbox.join("sandbox/stderr")).ok().filter(|m| m.file_type().is_symlink())
        })
        .await;
        for params in [LogParams::default(), LogParams::default().stderr(), LogParams::default().tail(5)] {
            let error = tasks.logs(name, &params).await.expect_err("a link is never read");
            let text = error.to_string();
            assert!(text.contains("Forbidden") || text.contains("a symbolic link"), "{name}: {text}");
            assert!(!text.contains(&token) && !text.contains("root:"), "{name}: {text}");
        }
        assert_eq!(terminal(&tasks, name).await.state, TaskState::Finished);
    }

    // 2. On the host's root file system: unprivileged, root-only files unreadable, the agent's work dir and the
    // credentials hidden, and the cluster API on loopback answers 401 to a task that has no token.
    let api = format!("https://127.0.0.1:{}/apis/agora/v1/namespaces/default/apps", server.port);
    let probe = format!(
        "echo uid $(id -u) gid $(id -g); \
         head -c 1 /etc/shadow >/dev/null 2>&1 && echo READ-SHADOW; \
         cat {token} >/dev/null 2>&1 && echo READ-TOKEN; \
         cat {kubeconfig} >/dev/null 2>&1 && echo READ-KUBECONFIG; \
         echo agent-dir $(ls {agent_dir}/tasks 2>/dev/null | wc -l); \
         echo get $(curl -sk -o /dev/null -w '%{{http_code}}' {api}); \
         echo post $(curl -sk -o /dev/null -w '%{{http_code}}' -X POST -H 'Content-Type: application/json' \
           -d '{{\"apiVersion\":\"agora/v1\",\"kind\":\"App\",\"metadata\":{{\"name\":\"evil\"}},\"spec\":{{\"cmd\":\"x\"}}}}' {api}); \
         env | grep -c -i -e token -e kubeconfig",
        token = token_file.display(),
        kubeconfig = server.kubeconfig().display(),
        agent_dir = agent_dir.display(),
    );
    let on_host = create(task("probe", None, &probe, json!({}))).await;
    let status = terminal(&tasks, "probe").await;
    let out = tasks.logs("probe", &LogParams::default()).await.unwrap();
    assert_eq!(status.state, TaskState::Failed, "grep -c found nothing, so it exits 1: {status:?} {out}");
    assert!(out.contains("uid 65532 gid 65532\n"), "the unprivileged task user: {out}");
    assert!(!out.contains("READ-"), "no root-only file and no credential is readable: {out}");
    assert!(out.contains("agent-dir 0\n"), "the agent's work dir (other tasks' sandboxes) is hidden: {out}");
    assert!(out.contains("get 401\n") && out.contains("post 401\n"), "the API refuses it: {out}");
    assert!(out.ends_with("0\n"), "no credential in its environment: {out}");
    let apps = Api::<agora_schemas::App>::namespaced(server.client(), "default");
    assert!(apps.get_opt("evil").await.unwrap().is_none(), "nothing was created");
    created.push(on_host);

    // 3. A fork loop stops at its pids limit, and the task says why.
    let bomb =
        create(task("bomb", Some("busybox"), "while true; do sleep 30 & done", json!({"limits": {"pids": 64}}))).await;
    let bombed = terminal(&tasks, "bomb").await;
    assert_eq!((bombed.state, bombed.reason.as_deref()), (TaskState::Failed, Some("PidsLimitReached")), "{bombed:?}");
    assert!(bombed.message.as_deref().is_some_and(|m| m.contains("limit of 64 processes")), "{bombed:?}");
    created.push(bomb);

    // 4. Root only where the agent allows it (this one does not).
    let root = create(task("wants-root", None, "id -u", json!({"user": "root"}))).await;
    let refused = terminal(&tasks, "wants-root").await;
    assert_eq!((refused.state, refused.reason.as_deref()), (TaskState::Failed, Some("RootNotAllowed")), "{refused:?}");
    assert!(refused.message.as_deref().is_some_and(|m| m.contains("--allow-root-tasks")), "{refused:?}");
    created.push(root);

    for t in &created {
        let uid = t.metadata.uid.clone().unwrap();
        eventually(Duration::from_secs(20), &format!("{}'s cgroups are removed", t.metadata.display_name()), || {
            let uid = uid.clone();
            async move { cgroups_removed(&uid).then_some(()) }
        })
        .await;
    }
    assert!(Path::new(&agent_dir).join("pki/ca.key").exists(), "the agent's own CA stays private to it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_and_logs_work_for_unprivileged_tasks_with_and_without_an_image() {
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, _, client) = start_agent(&server, &work).await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let checks = |port: u16| {
        json!({
            "ports": [{"port": port}],
            "healthChecks": [
                {"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 0, "intervalSeconds": 1,
                 "timeoutSeconds": 2},
                {"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 2},
                {"protocol": "COMMAND", "command": "test \"$(id -u)\" = 65532 && test -w /mnt/mesos/sandbox",
                 "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 5},
            ],
        })
    };
    let servers = [
        (
            "web-image",
            Some("busybox"),
            "echo serving as $(id -u); mkdir -p www && echo hi > www/index.html && exec httpd -f -p $PORT0 -h www",
            31001,
        ),
        ("web-host", None, "echo serving as $(id -u); exec python3 -m http.server $PORT0", 31002),
    ];
    for (name, image, cmd, port) in servers {
        tasks.create(&PostParams::default(), &task(name, image, cmd, checks(port))).await.unwrap();
    }
    for (name, ..) in servers {
        let status = eventually(Duration::from_secs(40), &format!("{name} is healthy"), || async {
            tasks.get(name).await.ok()?.status.filter(|s| s.healthy == Some(true))
        })
        .await;
        assert_eq!(status.health_check_failures, 0, "{name}: {status:?}");
        let log = tasks.logs(name, &LogParams::default()).await.unwrap();
        assert!(log.starts_with("serving as 65532\n"), "{name}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_gets_no_privileged_group_and_only_the_room_its_agent_has_left() {
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, agent_dir, client) = start_agent(&server, &work).await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let create = |t: Task| {
        let tasks = tasks.clone();
        async move { tasks.create(&PostParams::default(), &t).await.unwrap() }
    };

    // A system group that is not the user's own is refused like root: shadow's (42, by number or name), root's.
    let probe = "id -G; head -c 1 /etc/shadow >/dev/null 2>&1 && echo READ-SHADOW; true";
    for (name, user) in [("shadow-gid", "65532:42"), ("shadow-name", "65532:shadow"), ("root-gid", "1:0")] {
        create(task(name, None, probe, json!({"user": user, "cpus": 0.1}))).await;
        let refused = terminal(&tasks, name).await;
        assert_eq!((refused.state, refused.reason.as_deref()), (TaskState::Failed, Some("GroupNotAllowed")), "{user}");
        assert!(refused.message.as_deref().is_some_and(|m| m.contains("--allow-root-tasks")), "{refused:?}");
    }
    // An ordinary group is the task's to use.
    create(task("ordinary-gid", None, probe, json!({"user": "65532:4000", "cpus": 0.1}))).await;
    assert_eq!(terminal(&tasks, "ordinary-gid").await.state, TaskState::Finished);
    let out = tasks.logs("ordinary-gid", &LogParams::default()).await.unwrap();
    assert_eq!(out, "4000\n", "only its own group, and /etc/shadow unreadable");

    // A fork loop that exits 0 still says it hit its pids limit.
    // (Python, which goes on when a fork fails, where a shell gives up.)
    let forks = "exec python3 -c 'import os, time\nfor _ in range(40):\n    try:\n        if os.fork() == 0:\n            \
                 time.sleep(2)\n            os._exit(0)\n    except OSError:\n        pass'";
    create(task("forks-then-0", None, forks, json!({"cpus": 0.1, "limits": {"pids": 16}}))).await;
    let ended = terminal(&tasks, "forks-then-0").await;
    assert_eq!((ended.state, ended.exit_code), (TaskState::Finished, Some(0)), "{ended:?}");
    assert_eq!(ended.reason.as_deref(), Some("PidsLimitReached"), "{ended:?}");
    assert!(ended.message.as_deref().is_some_and(|m| m.contains("limit of 16 processes")), "{ended:?}");

    // A command that ignores SIGTERM as PID 1 (`exec sleep`) stops at once under the agent's init, and a kill asked
    // for is Killed, not a failure.
    create(task("stubborn", None, "exec sleep 600", json!({"cpus": 0.1, "killGracePeriodSeconds": 60}))).await;
    running(&tasks, "stubborn").await;
    let asked = jiff::Timestamp::now();
    let kill = agora_client::Patch::Merge(json!({"spec": {"killRequested": true}}));
    tasks.patch("stubborn", &agora_client::PatchParams::default(), &kill).await.unwrap();
    let killed = terminal(&tasks, "stubborn").await;
    assert_eq!((killed.state, killed.reason.as_deref()), (TaskState::Killed, Some("KillRequested")), "{killed:?}");
    assert_eq!(killed.exit_code, Some(143), "SIGTERM ended it, not the SIGKILL 60 s later: {killed:?}");
    let took = killed.finished_at.unwrap().duration_since(asked);
    assert!(took < jiff::SignedDuration::from_secs(20), "stopped {took:?} after the kill was asked");

    // Disk: over its limit in its sandbox, or in /tmp, a task is stopped and says why.
    for (name, target) in [("disk-sandbox", "big"), ("disk-tmp", "/tmp/big")] {
        let fill = format!("head -c 40000000 /dev/zero > {target}; sleep 60");
        create(task(name, None, &fill, json!({"cpus": 0.1, "disk": 10}))).await;
        let ended = terminal(&tasks, name).await;
        assert_eq!((ended.state, ended.reason.as_deref()), (TaskState::Failed, Some("DiskLimitExceeded")), "{ended:?}");
        let message = ended.message.unwrap_or_default();
        assert!(message.contains("limit of 10 MiB") && message.contains("MiB of disk"), "{name}: {message}");
    }
    // Within its limit, it runs to its end.
    create(task("disk-within", None, "head -c 2000000 /dev/zero > small", json!({"cpus": 0.1, "disk": 10}))).await;
    assert_eq!(terminal(&tasks, "disk-within").await.state, TaskState::Finished);

    // COMMAND checks that hang are killed whole at their timeout, and only the tail of what one prints is kept.
    let check = |command: &str| {
        json!({"cpus": 0.1, "healthChecks": [{"protocol": "COMMAND", "command": command, "timeoutSeconds": 1,
            "intervalSeconds": 1, "gracePeriodSeconds": 0, "maxConsecutiveFailures": 0}]})
    };
    let hanging = create(task("hanging-check", None, "sleep 60", check("sleep 1000"))).await;
    let loud =
        create(task("loud-check", None, "sleep 60", check("head -c 50000000 /dev/zero | tr '\\0' x; exit 1"))).await;
    running(&tasks, "hanging-check").await;
    eventually(Duration::from_secs(30), "the checks have failed a few times", || async {
        let failures = |t: Task| t.status.map_or(0, |s| s.health_check_failures);
        let (h, l) = (tasks.get("hanging-check").await.ok()?, tasks.get("loud-check").await.ok()?);
        (failures(h) >= 5 && failures(l) >= 3).then_some(())
    })
    .await;
    let pids = |uid: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids/agora/{uid}/pids.current"))
            .map_or(0, |p| p.trim().parse::<u32>().unwrap_or(0))
    };
    let current = pids(hanging.metadata.uid.as_deref().unwrap());
    assert!(current <= 6, "init, sh, sleep and at most the check in flight: {current} processes");
    let output = agent_dir.join("tasks").join(loud.metadata.uid.as_deref().unwrap()).join("health-check.out");
    let kept = std::fs::metadata(&output).map_or(0, |m| m.len());
    assert!(kept <= 10 * 1024, "the check printed 50 MB; {kept} bytes are kept");
    for name in ["hanging-check", "loud-check"] {
        tasks.delete(name, &Default::default()).await.unwrap();
    }
    // Gone, their room with them (a deleted task holds its claim until the agent has stopped it).
    eventually(Duration::from_secs(30), "the checked tasks are gone", || async {
        let gone = |t: Option<Task>| t.is_none();
        (gone(tasks.get_opt("hanging-check").await.ok()?) && gone(tasks.get_opt("loud-check").await.ok()?))
            .then_some(())
    })
    .await;

    // Two tasks bound straight to the 2-cpu agent at once, each asking 1.9 cpus: one runs, the other is refused.
    let big = |name: &str| task(name, None, "sleep 60", json!({"cpus": 1.9}));
    let (a, b) = tokio::join!(create(big("big-a")), create(big("big-b")));
    let refused = eventually(Duration::from_secs(30), "one runs and the other is refused", || async {
        let (a, b) = (tasks.get("big-a").await.ok()?, tasks.get("big-b").await.ok()?);
        let state = |t: &Task| t.status.as_ref().map(|s| s.state);
        match (state(&a), state(&b)) {
            (Some(TaskState::Running), Some(TaskState::Failed)) => b.status,
            (Some(TaskState::Failed), Some(TaskState::Running)) => a.status,
            _ => None,
        }
    })
    .await;
    assert_eq!(refused.reason.as_deref(), Some("InsufficientResources"), "{refused:?}");
    let message = refused.message.unwrap_or_default();
    // The other one's 1.9 held, and whatever the finished tasks still held while the agent recorded their ends.
    assert!(message.contains("asks for cpus 1.9, but agent a1 has 0") && message.contains("free of 2"), "{message}");
    // Once the running one is gone, its room is free again.
    for t in [&a, &b] {
        let _ = tasks.delete(t.metadata.name.as_deref().unwrap(), &Default::default()).await;
    }
    eventually(Duration::from_secs(30), "both are gone", || async {
        (tasks.get_opt("big-a").await.ok()?.is_none() && tasks.get_opt("big-b").await.ok()?.is_none()).then_some(())
    })
    .await;
    create(big("big-c")).await;
    running(&tasks, "big-c").await;
}
