//! `agora up` as a user runs it: one command, a temporary data dir, and a cluster that runs an App on this machine's
//! real agent; the kubeconfig it writes (also printed by `agora kubeconfig`) works for the real kubectl and for
//! `agora get`; SIGTERM stops every part; a second `agora up` on the same data dir continues, the App still there and
//! running again.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_client::{Api, ListParams, Patch, PatchParams};
use agora_e2e::{agora_binary, eventually, free_port};
use agora_schemas::App;
use serde_json::json;

struct Up {
    child: Child,
}

impl Up {
    fn start(dir: &std::path::Path, port: u16, agent_port: u16) -> Self {
        let child = Command::new(agora_binary())
            .args(["up", "--data-dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--agent-listen", &format!("127.0.0.1:{agent_port}")])
            .args(["--agent-resources", "cpus:2;mem:2048;disk:1000;ports:[31500-31600]"])
            .env("AGORA_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("agora up starts");
        Self { child }
    }

    /// Reads its output until the line saying it is up.
    fn wait_up(&mut self) -> String {
        use std::io::BufRead as _;
        let stdout = self.child.stdout.take().expect("piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.expect("a line");
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("Ctrl-C stops it") {
                std::thread::spawn(move || lines.for_each(drop));
                return seen;
            }
        }
        panic!("agora up ended before it was up:\n{seen}");
    }

    /// SIGTERM, and the exit status within 30 s.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "agora up did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    /// A test that failed midway stops `up` as a user would (SIGTERM), so its parts stop too; SIGKILL would orphan
    /// them, and the agent would restart the tasks the work dir's cleanup kills.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let missing = agora(&["get", "app", "nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("apps.agora \"nope\" not found"), "{missing:?}");
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
