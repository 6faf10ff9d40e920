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
