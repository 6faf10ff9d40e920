//! `agora apiserver`'s secure default as a process: the credentials it makes (private files), kept across a restart
//! so every kubeconfig stays valid; principals' own tokens (`agora token`), revoked at once, and the audit log; and
//! the insecure mode refused beyond loopback.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use agora_client::{Api, ListParams};
use agora_e2e::{ApiserverProcess, agora_binary};
use agora_schemas::App;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_default_makes_private_credentials_and_keeps_them_across_a_restart() {
    let mut server = tokio::task::block_in_place(ApiserverProcess::secure);
    let data = server.data_dir();
    for file in ["token", "kubeconfig", "pki/ca.key", "pki/server.key"] {
        let mode = std::fs::metadata(data.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} is its owner's only");
    }
    let kubeconfig = std::fs::read_to_string(server.kubeconfig()).unwrap();
    assert!(kubeconfig.contains(&format!("server: https://127.0.0.1:{}", server.port)), "{kubeconfig}");
    assert!(kubeconfig.contains("certificate-authority-data:"), "{kubeconfig}");
    let client = server.client();
    Api::<App>::all(client.clone()).list(&ListParams::default()).await.unwrap();

    tokio::task::block_in_place(|| server.restart());
    assert_eq!(std::fs::read_to_string(server.kubeconfig()).unwrap(), kubeconfig, "the same CA and token");
    Api::<App>::all(client).list(&ListParams::default()).await.expect("a client made before the restart still works");
}

#[test]
fn without_authentication_the_apiserver_serves_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(agora_binary())
        .args(["apiserver", "--listen", "0.0.0.0:0", "--insecure-allow-unauthenticated", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure-allow-unauthenticated is for loopback addresses only"), "{stderr}");
    let output = Command::new(agora_binary())
        .args(["apiserver", "--insecure-allow-unauthenticated", "--token-file", "/nope", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "a token with the insecure mode makes no sense and is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"), "{output:?}");
}

#[test]
fn the_apiservers_own_credential_errors_name_the_apiserver() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(agora_binary())
        .args(["apiserver", "--listen", "127.0.0.1:0", "--token-file", "/nonexistent/token", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the apiserver's --token-file: cannot read the token file /nonexistent/token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_running_apiserver_restores_into_a_new_data_dir_and_an_emptied_file_is_refused() {
    let mut server = tokio::task::block_in_place(ApiserverProcess::secure);
    let apps: Api<App> = Api::namespaced(server.client(), "default");
    for name in ["one", "two", "three"] {
        let app: App = serde_json::from_value(serde_json::json!({"apiVersion": "agora/v1", "kind": "App",
            "metadata": {"name": name}, "spec": {"cmd": "sleep 1"}}))
        .unwrap();
        apps.create(&agora_client::PostParams::default(), &app).await.unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let snapshot = work.path().join("snap");
    // The running apiserver holds the file: the command asks it, through the data dir's kubeconfig.
    let taken = Command::new(agora_binary())
        .args(["store", "snapshot"])
        .arg(&snapshot)
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .unwrap();
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    assert!(String::from_utf8_lossy(&taken.stdout).contains("(through https://127.0.0.1:"), "{taken:?}");
    let restored = work.path().join("restored");
    let restore = Command::new(agora_binary())
        .args(["store", "restore"])
        .arg(&snapshot)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    // The restored store serves the three apps.
    let port = agora_e2e::free_port();
    let mut child = Command::new(agora_binary())
        .args(["apiserver", "--insecure-allow-unauthenticated", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&restored)
        .spawn()
        .unwrap();
    let client = agora_client::Client::new(agora_client::Config::new(format!("http://127.0.0.1:{port}"))).unwrap();
    let names = agora_e2e::eventually(std::time::Duration::from_secs(20), "the restored apiserver serves", || async {
        let list = Api::<App>::namespaced(client.clone(), "default").list(&ListParams::default()).await.ok()?;
        Some(list.items.iter().filter_map(|a| a.metadata.name.clone()).collect::<Vec<_>>())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(names, ["one", "three", "two"]);
    // An emptied data file: the apiserver refuses to start, naming it and the way back.
    server.kill();
    std::fs::File::create(server.data_dir().join("agora.redb")).unwrap();
    let output = Command::new(agora_binary())
        .args(["apiserver", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(server.data_dir())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("agora.redb is empty (0 bytes)") && stderr.contains("agora store restore"), "{stderr}");
}

/// Waits until the audit log's lines (written by the apiserver's writer thread, a moment after the answer) hold what
/// `done` looks for.
async fn audited(server: &ApiserverProcess, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(server.audit_log()).unwrap_or_default();
        let lines: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if done(&lines) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the audit log lacks {what}:\n{log}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Binds ClusterRole `role` to a subject everywhere, as the admin.
async fn grant(server: &ApiserverProcess, name: &str, kind: &str, subject: &str, role: &str) {
    let binding: agora_schemas::rbac::ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
        "subjects": [{"kind": kind, "name": subject}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}}))
    .unwrap();
    Api::<agora_schemas::rbac::ClusterRoleBinding>::all(server.client())
        .create(&agora_client::PostParams::default(), &binding)
        .await
        .unwrap();
}

/// `agora token ARGS --kubeconfig K`.
fn token_command(server: &ApiserverProcess, args: &[&str]) -> std::process::Output {
    Command::new(agora_binary()).arg("token").args(args).arg("--kubeconfig").arg(server.kubeconfig()).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principals_token_works_until_revoked_its_watch_ends_then_and_the_audit_log_names_it() {
    use futures::StreamExt;
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let created = tokio::task::block_in_place(|| {
        token_command(&server, &["create", "alice", "--group", "team-a", "--ttl", "1h"])
    });
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(created.status.success() && stderr.contains("created for alice"), "{stderr}");
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("agora_") && !token.contains('\n'), "stdout is the token alone: {token:?}");

    // The real kubectl, with alice's token instead of the admin's.
    let kubectl = |extra: &[&str]| {
        Command::new("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(["--token", &token])
            .args(extra)
            .output()
            .unwrap()
    };
    // Nothing is allowed until granted; then, through her group, what the grant says.
    let refused = tokio::task::block_in_place(|| kubectl(&["get", "apps", "-A"]));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("User \"alice\" cannot list resource \"apps\""), "{stderr}");
    grant(&server, "team-a-views", "Group", "team-a", "view").await;
    // The apiserver learns of the binding through its watch: a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listed = tokio::task::block_in_place(|| kubectl(&["get", "apps", "-A"]));
        if listed.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", String::from_utf8_lossy(&listed.stderr));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The list shows whose tokens there are, never a token or its digest.
    let list = tokio::task::block_in_place(|| token_command(&server, &["list"]));
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(table.contains("alice") && table.contains("team-a"), "{table}");
    let stored = Api::<agora_schemas::Token>::all(server.client()).list(&ListParams::default()).await.unwrap();
    let digest = &stored.items[0].spec.sha256;
    assert_eq!(digest.len(), 64, "only its digest is stored");
    assert!(!table.contains(&token) && !table.contains(digest.as_str()), "{table}");

    // A watch opened with it ends when it is revoked; the token is refused from then on.
    let config = agora_client::Config::from_kubeconfig(&server.kubeconfig(), None).unwrap().token(token.clone());
    let alice = agora_client::Client::new(config).unwrap();
    let mut watch = Api::<App>::all(alice.clone())
        .watch(&agora_client::WatchParams::default().timeout(300), "0")
        .await
        .unwrap()
        .boxed();
    let revoked = tokio::task::block_in_place(|| token_command(&server, &["revoke", "alice"]));
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    assert!(String::from_utf8_lossy(&revoked.stdout).contains("revoked"));
    let ended = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while let Some(Ok(_)) = watch.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the revoked token's watch was closed");
    let refused = Api::<App>::all(alice).list(&ListParams::default()).await.unwrap_err();
    assert!(refused.to_string().contains("Unauthorized"), "{refused}");
    let denied = tokio::task::block_in_place(|| kubectl(&["get", "apps", "-A"]));
    assert!(!denied.status.success());
    let again = tokio::task::block_in_place(|| token_command(&server, &["revoke", "alice"]));
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("has no tokens"));

    // Bad input is refused by name, before anything is written.
    let bad = tokio::task::block_in_place(|| token_command(&server, &["create", "bob", "--ttl", "soon"]));
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--ttl \"soon\""));
    let bad = tokio::task::block_in_place(|| token_command(&server, &["create", "has space"]));
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("principal \"has space\""));

    // The audit log: the admin's create and revoke, and alice's refusal after it.
    audited(&server, "the admin's token writes and alice's 401", |lines| {
        let find = |principal: serde_json::Value, verb: &str, code: u64| {
            lines.iter().any(|l| {
                l["principal"] == principal && l["verb"] == verb && l["resource"] == "tokens" && l["code"] == code
            })
        };
        find("admin".into(), "create", 201)
            && find("admin".into(), "delete", 200)
            && lines.iter().any(|l| l["principal"].is_null() && l["code"] == 401 && l["verb"] == "list")
    })
    .await;
    let mode = std::fs::metadata(server.audit_log()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_bound_in_one_namespace_acts_there_only_and_kubectl_auth_can_i_says_so() {
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let created = tokio::task::block_in_place(|| token_command(&server, &["create", "alice"]));
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let kubectl = |args: &[&str]| {
        Command::new("/usr/bin/kubectl").arg("--kubeconfig").arg(server.kubeconfig()).args(args).output().unwrap()
    };
    let as_alice = |args: &[&str]| {
        let mut all = vec!["--token", token.as_str()];
        all.extend_from_slice(args);
        kubectl(&all)
    };
    let bound = tokio::task::block_in_place(|| {
        kubectl(&["create", "rolebinding", "alice-edits", "-n", "team-a", "--clusterrole=edit", "--user=alice"])
    });
    assert!(bound.status.success(), "{}", String::from_utf8_lossy(&bound.stderr));
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = tokio::task::block_in_place(|| as_alice(&all));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // The binding reaches the apiserver's policy through its watch: a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while can(&["create", "apps.agora", "-n", "team-a"]) != "yes" {
        assert!(std::time::Instant::now() < deadline, "kubectl auth can-i never said yes");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(can(&["create", "apps.agora", "-n", "team-b"]), "no");
    assert_eq!(can(&["list", "apps.agora", "--all-namespaces"]), "no");
    assert_eq!(can(&["create", "tokens.agora"]), "no", "no principal mints tokens unless granted");
    assert_eq!(can(&["create", "clusterrolebindings.rbac.authorization.k8s.io"]), "no");

    let config = agora_client::Config::from_kubeconfig(&server.kubeconfig(), None).unwrap().token(token.clone());
    let alice = agora_client::Client::new(config).unwrap();
    let app = |namespace: &str| -> App {
        serde_json::from_value(serde_json::json!({"apiVersion": "agora/v1", "kind": "App",
            "metadata": {"name": "web", "namespace": namespace}, "spec": {"cmd": "sleep 1000", "instances": 0}}))
        .unwrap()
    };
    let post = agora_client::PostParams::default();
    Api::<App>::namespaced(alice.clone(), "team-a").create(&post, &app("team-a")).await.expect("her namespace");
    let refused = Api::<App>::namespaced(alice.clone(), "team-b").create(&post, &app("team-b")).await.unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains(
            "User \"alice\" cannot create resource \"apps\" in API group \"agora\" in the namespace \"team-b\""
        ),
        "{message}"
    );
    // A name she may not read is forbidden whether it exists or not.
    Api::<App>::namespaced(server.client(), "team-b").create(&post, &app("team-b")).await.unwrap();
    let exists = Api::<App>::namespaced(alice.clone(), "team-b").get("web").await.unwrap_err().to_string();
    let missing = Api::<App>::namespaced(alice.clone(), "team-b").get("nope").await.unwrap_err().to_string();
    assert!(exists.contains("forbidden") && missing.contains("forbidden"), "{exists} / {missing}");
    let across = Api::<App>::all(alice.clone()).list(&ListParams::default()).await.unwrap_err().to_string();
    assert!(across.contains("at the cluster scope"), "{across}");
    let escalate = tokio::task::block_in_place(|| {
        as_alice(&["create", "clusterrolebinding", "mine", "--clusterrole=cluster-admin", "--user=alice"])
    });
    assert!(!escalate.status.success() && String::from_utf8_lossy(&escalate.stderr).contains("forbidden"));

    // Every refusal is in the audit log, with her name.
    audited(&server, "alice's refusals", |lines| {
        lines.iter().filter(|l| l["principal"] == "alice" && l["code"] == 403).count() >= 4
    })
    .await;
}
