//! `agora up` as a user runs it: one command, a temporary data dir, and a cluster that runs an App on this machine's
//! real agent; the kubeconfig it writes (also printed by `agora kubeconfig`) works for the real kubectl and for
//! `agora get`; SIGTERM stops every part; a second `agora up` on the same data dir continues, the App still there and
//! running again. And the CLI's journeys on such a cluster: the example manifests applied and waited for, a bad
//! version that fails its wait, describe, rollback, scale, logs -f, trigger, events, prune and drain.

mod common;

use common::up::Up;

use std::process::{Command, Stdio};
use std::time::Duration;

use agora_client::{Api, ListParams, Patch, PatchParams};
use agora_e2e::{agora_binary, eventually, free_port};
use agora_schemas::App;
use serde_json::json;

fn client(dir: &std::path::Path) -> agora_client::Client {
    let config = agora_client::Config::from_kubeconfig(&dir.join("kubeconfig"), None).unwrap();
    agora_client::Client::new(config).unwrap()
}

async fn running(apps: &Api<App>, what: &str) {
    eventually(Duration::from_secs(90), what, || async {
        let app = apps.get("sleeper").await.ok()?;
        app.status.filter(|s| s.tasks_running == 1).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_up_runs_a_cluster_and_a_second_up_continues_it() {
    // Tasks keep running while `up` is stopped (its agent picks them up again), and their root file systems are
    // mounted in the data dir: WorkDir kills them and removes it without following a mount.
    let dir = common::WorkDir(tempfile::tempdir().unwrap());
    let data = dir.0.path().to_owned();
    let (port, agent_port) = (free_port(), free_port());
    let mut up = Up::start(&data, port, agent_port);
    let said = tokio::task::block_in_place(|| up.wait_up());
    assert!(said.contains("agora is up") && said.contains(&format!("127.0.0.1:{port}")), "{said}");
    assert!(said.contains(&format!("export KUBECONFIG={}", data.join("kubeconfig").display())), "{said}");
    // Private: it holds the CA key and the token.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    let printed = Command::new(agora_binary()).args(["kubeconfig", "--data-dir"]).arg(&data).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&printed.stdout), std::fs::read_to_string(data.join("kubeconfig")).unwrap());

    // An App runs on this machine's agent.
    let apps: Api<App> = Api::namespaced(client(&data), "default");
    let intent = json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "sleeper"},
        "spec": {"cmd": "sleep 3600", "cpus": 0.1, "mem": 32}});
    apps.patch("sleeper", &PatchParams::apply("e2e").force(), &Patch::Apply(&intent)).await.unwrap();
    running(&apps, "the app runs").await;
    // kubectl, with only the kubeconfig up wrote.
    let home = tempfile::tempdir().unwrap();
    let kubectl = Command::new("/usr/bin/kubectl")
        .arg("--kubeconfig")
        .arg(data.join("kubeconfig"))
        .args(["get", "apps"])
        .env("HOME", home.path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&kubectl.stdout);
    assert!(table.lines().any(|l| l.starts_with("sleeper ")), "{table}{}", String::from_utf8_lossy(&kubectl.stderr));

    // agora get prints the server's columns; -o name and a missing object.
    let agora = |args: &[&str]| {
        Command::new(agora_binary()).args(args).arg("--kubeconfig").arg(data.join("kubeconfig")).output().unwrap()
    };
    let got = agora(&["get", "apps"]);
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(text.starts_with("NAME ") && text.contains("INSTANCES") && text.contains("RUNNING"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("sleeper ") && l.split_whitespace().nth(2) == Some("1")), "{text}");
    assert_eq!(String::from_utf8_lossy(&agora(&["get", "apps", "-o", "name"]).stdout), "app.agora/sleeper\n");
    // A missing object is "not done" (1) for get and describe alike, as for delete.
    let missing = agora(&["get", "app", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("apps.agora \"nope\" not found"), "{missing:?}");
    let missing = agora(&["describe", "app", "nope"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    // Several objects as JSON are one List document; the cluster options may come before the verb, as kubectl's.
    let listed = Command::new(agora_binary())
        .arg("--kubeconfig")
        .arg(data.join("kubeconfig"))
        .args(["-n", "default", "get", "apps", "-o", "json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("one JSON document");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["metadata"]["name"], "sleeper");
    let across = Command::new(agora_binary())
        .arg("--kubeconfig")
        .arg(data.join("kubeconfig"))
        .args(["-A", "get", "tasks"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&across.stdout).starts_with("NAMESPACE "), "{across:?}");
    // Output into a pipe nobody reads ends the command as it ends any Unix tool (SIGPIPE), not with a panic.
    let kubeconfig = format!("--kubeconfig={}", data.join("kubeconfig").display());
    for args in [&[kubeconfig.as_str(), "get", "tasks", "-A", "-o", "yaml"][..], &["completion", "bash"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(agora_binary()).args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(out.status.signal(), Some(13), "{args:?}: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{args:?}: {out:?}");
    }
    // Text from the cluster cannot drive the terminal: an Event whose message forges a line and clears the screen is
    // printed escaped, by events and by describe.
    let events: Api<agora_schemas::Event> = Api::namespaced(client(&data), "default");
    let forged: agora_schemas::Event = serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "Event",
        "metadata": {"name": "sleeper.forged"}, "involvedObject": {"kind": "App", "name": "sleeper"},
        "reason": "Forged", "type": "Normal", "message": "ok\r\n1s   Normal   Fake   app/x   \u{1b}[2Jgone",
        "count": 1, "lastTimestamp": "2026-12-01T00:00:00Z"}))
    .unwrap();
    events.create(&agora_client::PostParams::default(), &forged).await.unwrap();
    for args in [&["events"][..], &["describe", "app", "sleeper"]] {
        let text = String::from_utf8_lossy(&agora(args).stdout).into_owned();
        let line = text.lines().find(|l| l.contains("Forged")).unwrap_or_else(|| panic!("{args:?}: {text}"));
        assert!(line.contains("ok\\r\\n1s") && line.contains("\\u{1b}[2Jgone"), "{args:?}: {line}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains("\n1s   Normal"), "{args:?}");
    }
    let unknown = agora(&["get", "widgets"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown kind \"widgets\""), "{unknown:?}");

    // agora version names both ends; completions are generated.
    let version = String::from_utf8_lossy(&agora(&["version"]).stdout).into_owned();
    assert!(version.starts_with("client: agora ") && version.contains("server: v1.32.0-agora."), "{version}");
    let completion = Command::new(agora_binary()).args(["completion", "bash"]).output().unwrap();
    assert!(String::from_utf8_lossy(&completion.stdout).contains("_agora()"));

    // agora apply: created, unchanged, configured; a dry run; an invalid manifest applies nothing.
    let manifest = dir.0.path().join("batch.yaml");
    let batch = "apiVersion: agora/v1\nkind: App\nmetadata:\n  name: batch\nspec:\n  cmd: sleep 1\n  instances: 0\n";
    std::fs::write(&manifest, batch).unwrap();
    let file = manifest.to_str().unwrap();
    let out = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out(&agora(&["apply", "-f", file])), "app.agora/batch created\n");
    assert_eq!(out(&agora(&["apply", "-f", file])), "app.agora/batch unchanged\n");
    std::fs::write(&manifest, batch.replace("sleep 1", "sleep 2")).unwrap();
    assert_eq!(out(&agora(&["apply", "-f", file, "--dry-run"])), "app.agora/batch configured (server dry run)\n");
    assert_eq!(apps.get("batch").await.unwrap().spec.cmd.as_deref(), Some("sleep 1"), "the dry run changed it");
    assert_eq!(out(&agora(&["apply", "-f", file])), "app.agora/batch configured\n");
    let managers = apps.get("batch").await.unwrap().metadata.managed_fields;
    assert!(managers.iter().any(|m| m.manager == "agora" && m.operation == "Apply"), "{managers:?}");
    std::fs::write(
        &manifest,
        format!("{batch}---\napiVersion: agora/v1\nkind: App\nmetadata: {{name: typo}}\nspec: {{cmd: x, cpu: 1}}\n"),
    )
    .unwrap();
    let refused = agora(&["apply", "-f", file]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("{file}:")) && stderr.contains("spec.cpu") && stderr.contains("nothing was applied"),
        "{stderr}"
    );
    assert!(out(&refused).is_empty(), "nothing applied: {}", out(&refused));

    // SIGTERM stops every part; the apiserver's port is free again.
    let status = tokio::task::block_in_place(|| up.stop());
    assert!(status.success(), "{status}");
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "the apiserver is gone");

    // The second up continues: the App is there and runs again.
    let mut again = Up::start(&data, port, agent_port);
    tokio::task::block_in_place(|| again.wait_up());
    let apps: Api<App> = Api::namespaced(client(&data), "default");
    assert_eq!(apps.list(&ListParams::default()).await.unwrap().items.len(), 2);
    running(&apps, "the app runs after the second up").await;
    let status = tokio::task::block_in_place(|| again.stop());
    assert!(status.success(), "{status}");
}

/// The processes whose command line has `--parent PID`: the parts `agora up` (pid PID) started.
fn parts_of(pid: u32) -> Vec<u32> {
    let wanted = format!("\0--parent\0{pid}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&wanted))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_up_holds_its_data_dir_reports_a_failing_part_and_its_parts_die_with_it() {
    let dir = common::WorkDir(tempfile::tempdir().unwrap());
    let data = dir.0.path().join("data");
    let scratch = tempfile::tempdir().unwrap();
    let manifests = scratch.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("batch.yaml"),
        "apiVersion: agora/v1\nkind: App\nmetadata: {name: batch}\nspec: {cmd: sleep 1, instances: 0}\n",
    )
    .unwrap();
    // The agent's port is taken by someone else: the agent cannot start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent_port = taken.local_addr().unwrap().port();
    let port = free_port();
    let errors = scratch.path().join("up.stderr");
    let args = |port: u16| {
        vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--agent-listen".to_owned(),
            format!("127.0.0.1:{agent_port}"),
            "--apply".to_owned(),
            manifests.to_str().unwrap().to_owned(),
        ]
    };
    let mut up = Up::spawn(&data, args(port), std::fs::File::create(&errors).unwrap());
    let pid = up.child.id();
    let said_up = tokio::task::block_in_place(|| up.wait_up());
    assert!(said_up.contains("app.agora/batch created"), "{said_up}");

    // A second up on the same data dir is refused at once, naming the first.
    let second = Command::new(agora_binary())
        .args(["up", "--no-agent", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2), "{}", said(&second));
    assert!(said(&second).contains(&format!("is in use by agora up (pid {pid})")), "{}", said(&second));

    // The agent's failure is in up's own output, with the end of its log saying why.
    eventually(Duration::from_secs(30), "up reports the agent's failure", || async {
        let text = std::fs::read_to_string(&errors).ok()?;
        (text.contains("the agent exited") && text.contains("| ") && text.contains(&agent_port.to_string()))
            .then_some(())
    })
    .await;
    let report = std::fs::read_to_string(&errors).unwrap();
    assert!(report.contains("Address already in use") || report.contains("address in use"), "{report}");
    // The parts' logs are plain text.
    let log = std::fs::read_to_string(data.join("logs/apiserver.log")).unwrap();
    assert!(log.contains("apiserver listening") && !log.contains('\u{1b}'), "{log}");

    // The user scales the App; then `kill -9` of up (a closed terminal): its parts die with it.
    let scaled = agora_in(&data, &["scale", "app", "batch", "--instances", "2"]);
    assert_eq!(scaled.status.code(), Some(0), "{}", said(&scaled));
    assert!(!parts_of(pid).is_empty(), "up's parts run with --parent {pid}");
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    eventually(Duration::from_secs(20), "up's parts are gone", || async { parts_of(pid).is_empty().then_some(()) })
        .await;
    eventually(Duration::from_secs(10), "the apiserver's port is free", || async {
        std::net::TcpListener::bind(("127.0.0.1", port)).ok().map(drop)
    })
    .await;

    // Up again with the same manifests: what exists is left as the user changed it, and nothing conflicts.
    drop(taken);
    let mut again = Up::spawn(&data, args(port), Stdio::inherit());
    let said_again = tokio::task::block_in_place(|| again.wait_up());
    assert!(said_again.contains("app.agora/batch exists, left as it is"), "{said_again}");
    assert!(!said_again.contains("conflict"), "{said_again}");
    let apps: Api<App> = Api::namespaced(client(&data), "default");
    assert_eq!(apps.get("batch").await.unwrap().spec.instances, Some(2), "the user's scale stands");
    let status = tokio::task::block_in_place(|| again.stop());
    assert!(status.success(), "{status}");
}

/// `agora ARGS --kubeconfig DIR/kubeconfig`.
fn agora_in(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(agora_binary()).args(args).arg("--kubeconfig").arg(data.join("kubeconfig")).output().unwrap()
}

fn said(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_one_machine_cluster() {
    // The data dir is the WorkDir itself, whose cleanup kills the tasks left in its agent/ (they outlive `up`).
    let dir = common::WorkDir(tempfile::tempdir().unwrap());
    let data = dir.0.path().to_owned();
    let scratch = tempfile::tempdir().unwrap();
    // The container example's image, as `make run` builds it.
    let rootfs = scratch.path().join("rootfs");
    common::busybox_rootfs(&rootfs);
    let built = Command::new(agora_binary())
        .args(["image", "build", "--tag", "busybox:latest", "--rootfs"])
        .arg(&rootfs)
        .arg("--work-dir")
        .arg(data.join("agent"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", said(&built));
    let (port, agent_port) = (free_port(), free_port());
    let mut up = Up::start_with(&data, port, agent_port, "cpus:2;mem:2048;disk:2000;ports:[31700-31800]");
    tokio::task::block_in_place(|| up.wait_up());
    let run = |args: &[&str]| agora_in(&data, args);
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifests = repo.join("manifests");

    // Every example runs on this one machine, waited for. A job's first run is waited for when it is due within the
    // timeout: `extract` runs every 5 minutes, so either it ran (and its children after it) or it is scheduled.
    let applied =
        tokio::task::block_in_place(|| run(&["apply", "-f", manifests.to_str().unwrap(), "--wait", "--timeout", "60"]));
    let text = said(&applied);
    assert_eq!(applied.status.code(), Some(0), "{text}");
    for line in [
        "app.agora/web created",
        "app.agora/web: 2 of 2 running and healthy",
        "app.agora/cache: 2 of 2 running and healthy",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    // Either scheduled, or — when the test runs at its time (nightly-backup's 02:00 Berlin is 00:00 or 01:00 UTC) —
    // its run was due and waited for.
    for job in ["extract", "nightly-backup"] {
        assert!(
            text.contains(&format!("cronjob.agora/{job}: scheduled, next run at"))
                || text.contains(&format!("cronjob.agora/{job}: its run succeeded")),
            "{job}: {text}"
        );
    }
    assert!(
        text.contains("cronjob.agora/transform: runs after extract")
            || text.contains("cronjob.agora/transform: its run succeeded"),
        "{text}"
    );
    let table = String::from_utf8_lossy(&run(&["get", "apps", "-A"]).stdout).into_owned();
    for app in ["web", "cache"] {
        assert!(
            table.lines().any(|l| l.split_whitespace().nth(1) == Some(app) && l.split_whitespace().nth(3) == Some("2")),
            "{app} runs 2: {table}"
        );
    }

    // A version whose tasks exit 3 fails `apply --wait`, saying why; the old version keeps serving meanwhile.
    let web = std::fs::read_to_string(manifests.join("web.yaml")).unwrap();
    let cmd = web.lines().find(|l| l.trim_start().starts_with("cmd:")).unwrap();
    let bad = scratch.path().join("web-bad.yaml");
    std::fs::write(&bad, web.replace(cmd, "  cmd: echo broken; exit 3")).unwrap();
    let failed =
        tokio::task::block_in_place(|| run(&["apply", "-f", bad.to_str().unwrap(), "--wait", "--timeout", "120"]));
    let text = said(&failed);
    assert_eq!(failed.status.code(), Some(1), "{text}");
    assert!(text.contains("app.agora/web: failed: version") && text.contains("exit code 3"), "{text}");

    // describe shows the deployment, both versions and marathon's Events.
    let described = said(&run(&["describe", "app", "web"]));
    assert!(described.contains("Deployment:") && described.contains("Versions:\n"), "{described}");
    assert!(described.contains("Events:\n") && described.contains("marathon"), "{described}");
    let versions = described.split("Versions:\n").nth(1).and_then(|rest| rest.split("Events:").next()).unwrap_or("");
    assert_eq!(versions.lines().filter(|l| l.trim_start().starts_with("web-")).count(), 2, "{described}");

    // Rollback to the version before, waited for; then scale.
    let rolled = tokio::task::block_in_place(|| run(&["rollback", "app", "web", "--wait", "--timeout", "120"]));
    let text = said(&rolled);
    assert_eq!(rolled.status.code(), Some(0), "{text}");
    assert!(text.contains("rolled back to version") && text.contains("2 of 2 running and healthy"), "{text}");
    let apps: Api<App> = Api::namespaced(client(&data), "default");
    let good_version = apps.get("web").await.unwrap().spec.version();
    let scaled = tokio::task::block_in_place(|| run(&["scale", "app", "web", "--instances", "1", "--wait"]));
    assert_eq!(scaled.status.code(), Some(0), "{}", said(&scaled));
    assert!(said(&scaled).contains("scaled from 2 to 1"), "{}", said(&scaled));
    assert_eq!(apps.get("web").await.unwrap().spec.instances, Some(1));

    // logs -f streams what a task writes while it writes it.
    let ticker = scratch.path().join("ticker.yaml");
    std::fs::write(
        &ticker,
        "apiVersion: agora/v1\nkind: App\nmetadata: {name: ticker, labels: {set: journey}}\n\
         spec: {cmd: 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done', cpus: 0.1, mem: 32}\n",
    )
    .unwrap();
    let applied = tokio::task::block_in_place(|| run(&["apply", "-f", ticker.to_str().unwrap(), "--wait"]));
    assert_eq!(applied.status.code(), Some(0), "{}", said(&applied));
    let mut follow = Command::new(agora_binary())
        .args(["logs", "-f", "app/ticker", "--kubeconfig"])
        .arg(data.join("kubeconfig"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = tokio::task::block_in_place(|| {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        // A line the task wrote after the first one arrived: the stream follows, it is not one read.
        let later = lines.by_ref().map(Result::unwrap).find(|l| l != &first).unwrap();
        (first, later)
    });
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(lines.0.starts_with("tick ") && lines.1.starts_with("tick ") && lines.0 != lines.1, "{lines:?}");

    // prune: the journey's set without the ticker deletes it (and only what agora applied with that label).
    let empty_set = scratch.path().join("set.yaml");
    std::fs::write(&empty_set, "apiVersion: agora/v1\nkind: App\nmetadata: {name: keeper, labels: {set: journey}}\nspec: {cmd: sleep 3600, cpus: 0.1, mem: 32, instances: 0}\n").unwrap();
    let pruned = run(&["apply", "-f", empty_set.to_str().unwrap(), "--prune", "-l", "set=journey"]);
    let text = said(&pruned);
    assert_eq!(pruned.status.code(), Some(0), "{text}");
    assert!(text.contains("app.agora/keeper created") && text.contains("app.agora/ticker pruned"), "{text}");
    assert!(apps.get_opt("web").await.unwrap().is_some(), "web carries no such label");

    // trigger runs a job now; events --for shows chronos saying so.
    let triggered = run(&["trigger", "cronjob", "extract", "-n", "analytics", "--id", "journey"]);
    assert_eq!(triggered.status.code(), Some(0), "{}", said(&triggered));
    let tasks: Api<agora_schemas::Task> = Api::namespaced(client(&data), "analytics");
    eventually(Duration::from_secs(60), "the triggered run finishes", || async {
        let task = tasks.get("extract-manual-journey-0").await.ok()?;
        task.status.filter(|s| s.state == agora_schemas::TaskState::Finished)
    })
    .await;
    let events = said(&run(&["events", "-n", "analytics", "--for", "cronjob/extract"]));
    assert!(events.contains("cronjob/extract") && events.contains("extract-manual-journey-0"), "{events}");

    // drain: with a second (hollow) agent, the machine's tasks are killed and started there.
    let agents: Api<agora_schemas::Agent> = Api::all(client(&data));
    let machine = agents.list(&ListParams::default()).await.unwrap().items[0].metadata.name.clone().unwrap();
    let _spare = agora_e2e::Proc::quiet(
        &agora_binary(),
        [
            "agent",
            "--hollow",
            "1",
            "--name-prefix",
            "spare-",
            "--resources",
            "cpus:4;mem:4096;disk:4000;ports:[32000-32100]",
            "--kubeconfig",
            data.join("kubeconfig").to_str().unwrap(),
        ],
    );
    eventually(Duration::from_secs(30), "the spare agent registers", || async {
        agents.get_opt("spare-0").await.ok().flatten()
    })
    .await;
    let before_drain = apps.get("web").await.unwrap().status.unwrap_or_default();
    let on_machine: Api<agora_schemas::Task> = Api::namespaced(client(&data), "default");
    let running_there = ListParams::default().fields(&format!("spec.agent={machine},status.state=Running"));
    let web_there: Vec<String> = on_machine
        .list(&running_there)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|t| t.metadata.labels.get(agora_schemas::APP_LABEL).map(String::as_str) == Some("web"))
        .filter_map(|t| t.metadata.name)
        .collect();
    assert!(!web_there.is_empty(), "web runs on {machine} before the drain");
    // Their last states, as a watch sees them (marathon may delete a killed task soon after it stops).
    let last_states: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, agora_schemas::TaskState>>> =
        std::sync::Arc::default();
    let watching = tokio::spawn({
        let (tasks, states) = (on_machine.clone(), last_states.clone());
        async move {
            use agora_controllers::runtime::watcher;
            use futures::StreamExt;
            let mut events = std::pin::pin!(watcher::watcher(tasks, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let task = match event {
                    Ok(watcher::Event::Apply(t) | watcher::Event::InitApply(t) | watcher::Event::Delete(t)) => t,
                    _ => continue,
                };
                if let (Some(name), Some(status)) = (task.metadata.name.clone(), task.status.as_ref()) {
                    states.lock().unwrap().insert(name, status.state);
                }
            }
        }
    });
    eventually(Duration::from_secs(10), "the watch has listed the tasks", || async {
        let states = last_states.lock().unwrap();
        web_there.iter().all(|n| states.contains_key(n)).then_some(())
    })
    .await;
    let drained = tokio::task::block_in_place(|| run(&["drain", "agent", &machine, "--timeout", "120"]));
    let text = said(&drained);
    assert_eq!(drained.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("agent.agora/{machine} drained")), "{text}");
    assert_eq!(agents.get(&machine).await.unwrap().spec.unschedulable, Some(true));
    let listed = String::from_utf8_lossy(&run(&["get", "agents"]).stdout).into_owned();
    assert!(
        listed.lines().any(|l| l.starts_with(&format!("{machine} ")) && l.contains("Ready,SchedulingDisabled")),
        "a cordoned agent says so: {listed}"
    );
    eventually(Duration::from_secs(90), "web runs again, on the spare agent", || async {
        let app = apps.get("web").await.ok()?;
        let running = app.status.as_ref().is_some_and(|s| s.tasks_running == 1);
        let all: Api<agora_schemas::Task> = Api::namespaced(client(&data), "default");
        let on_spare = all.list(&ListParams::default().fields("spec.agent=spare-0")).await.ok()?;
        (running && !on_spare.items.is_empty()).then_some(())
    })
    .await;
    assert_eq!(apps.get("web").await.unwrap().spec.version(), good_version);
    // A task killed by the drain is Killed, not a failure: it feeds no backoff.
    eventually(Duration::from_secs(30), "web's tasks on the drained agent have ended", || async {
        let states = last_states.lock().unwrap();
        web_there.iter().all(|n| states.get(n).is_some_and(|s| s.is_terminal())).then_some(())
    })
    .await;
    watching.abort();
    for name in &web_there {
        let state = last_states.lock().unwrap().get(name).copied();
        assert_eq!(state, Some(agora_schemas::TaskState::Killed), "{name}");
    }
    let after_drain = apps.get("web").await.unwrap().status.unwrap_or_default();
    assert_eq!(
        (after_drain.consecutive_failures, after_drain.last_task_failure.as_ref().map(|f| f.timestamp)),
        (before_drain.consecutive_failures, before_drain.last_task_failure.as_ref().map(|f| f.timestamp)),
        "the drain counted no failure"
    );
    let delayed = after_drain.conditions.iter().find(|c| c.reason.as_deref() == Some("Backoff"));
    assert!(delayed.is_none(), "no launch delay from the drain: {delayed:?}");
    let uncordoned = run(&["uncordon", "agent", &machine]);
    assert!(said(&uncordoned).contains("uncordoned"), "{}", said(&uncordoned));

    // delete --wait returns once the object is gone …
    let deleted = tokio::task::block_in_place(|| run(&["delete", "app", "keeper", "--wait"]));
    assert_eq!(deleted.status.code(), Some(0), "{}", said(&deleted));
    assert!(apps.get_opt("keeper").await.unwrap().is_none());
    let missing = run(&["delete", "app", "keeper"]);
    assert_eq!(missing.status.code(), Some(1), "{}", said(&missing));
    // delete -f: each object in the namespace its manifest names (cache is in shop, not the default namespace).
    let cache = manifests.join("cache.yaml");
    let deleted = tokio::task::block_in_place(|| run(&["delete", "-f", cache.to_str().unwrap(), "--wait"]));
    let text = said(&deleted);
    assert_eq!(deleted.status.code(), Some(0), "{text}");
    assert!(text.contains("app.agora/cache deleted") && text.contains("app.agora/cache is gone"), "{text}");
    let shop: Api<App> = Api::namespaced(client(&data), "shop");
    assert!(shop.get_opt("cache").await.unwrap().is_none());
    // … and once its tasks are gone too, stopped by the agent (as Marathon's DELETE kills an app's tasks): a task
    // that ignores SIGTERM takes its 3 s grace period to stop.
    let stubborn = scratch.path().join("stubborn.yaml");
    std::fs::write(&stubborn, "apiVersion: agora/v1\nkind: App\nmetadata: {name: stubborn}\nspec: {cmd: \"trap '' TERM; while true; do sleep 1; done\", cpus: 0.1, mem: 32, instances: 1, taskKillGracePeriodSeconds: 3}\n").unwrap();
    let applied = tokio::task::block_in_place(|| run(&["apply", "-f", stubborn.to_str().unwrap(), "--wait"]));
    assert_eq!(applied.status.code(), Some(0), "{}", said(&applied));
    let deleted = tokio::task::block_in_place(|| run(&["delete", "app", "stubborn", "--wait"]));
    assert_eq!(deleted.status.code(), Some(0), "{}", said(&deleted));
    let tasks: Api<agora_schemas::Task> = Api::namespaced(client(&data), "default");
    let selector = format!("{}=stubborn", agora_schemas::APP_LABEL);
    let left = tasks.list(&ListParams::default().labels(&selector)).await.unwrap().items;
    assert!(left.is_empty(), "delete --wait returned with the app's task still there: {left:?}");

    let status = tokio::task::block_in_place(|| up.stop());
    assert!(status.success(), "{status}");
}

/// `make run`'s script as a newcomer runs it: the busybox image built, `agora up` with the examples applied, and
/// every example App running on this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_run_starts_a_cluster_running_the_examples() {
    let dir = common::WorkDir(tempfile::tempdir().unwrap());
    let data = dir.0.path().to_owned();
    let (port, agent_port) = (free_port(), free_port());
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let child = Command::new(repo.join("scripts/run.sh"))
        .args(["--agent-listen", &format!("127.0.0.1:{agent_port}")])
        .args(["--agent-resources", "cpus:2;mem:2048;disk:2000;ports:[31900-31999]"])
        .env("AGORA_BIN", agora_binary())
        .env("AGORA_DATA_DIR", &data)
        .env("AGORA_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("scripts/run.sh starts");
    let mut up = Up { child };
    let said = tokio::task::block_in_place(|| up.wait_up());
    assert!(said.contains("built busybox:latest"), "{said}");
    assert!(said.contains("app.agora/web created") && said.contains("applied manifests"), "{said}");
    let apps: Api<App> = Api::all(client(&data));
    eventually(Duration::from_secs(120), "web and cache run 2 healthy instances each", || async {
        let listed = apps.list(&ListParams::default()).await.ok()?.items;
        let healthy = |name: &str| {
            listed.iter().any(|a| {
                a.metadata.name.as_deref() == Some(name) && a.status.as_ref().is_some_and(|s| s.tasks_healthy == 2)
            })
        };
        (healthy("web") && healthy("cache")).then_some(())
    })
    .await;
    // top across namespaces names each task's namespace.
    let top = String::from_utf8_lossy(&agora_in(&data, &["top", "tasks", "-A"]).stdout).into_owned();
    assert!(top.starts_with("NAMESPACE ") && top.lines().any(|l| l.starts_with("shop ")), "{top}");
    // `agora image list` without --work-dir finds the store of up's default data dir (~/.agora).
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&data, home.path().join(".agora")).unwrap();
    let images = Command::new(agora_binary()).args(["image", "list"]).env("HOME", home.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&images.stdout).contains("busybox:latest"), "{images:?}");

    let status = tokio::task::block_in_place(|| up.stop());
    assert!(status.success(), "{status}");
}
