//! The real `/usr/bin/kubectl`, given only the kubeconfig the apiserver writes, against `agora apiserver`'s secure
//! default (HTTPS with its generated CA, a generated bearer token) running as a process, on the embedded store and
//! on etcd; a client without the token gets 401:
//! apply, get (`-o yaml`, `-l`, `-A`, the server's columns and `-o wide`), `get -w`, patch, scale, delete (also
//! waiting on a finalizer, and `--all`), `diff` and `--dry-run=server` leaving the store as it was, `describe` with
//! Events, api-resources, explain, `create namespace` refused, and an unknown field rejected by name.
//!
//! Server-side apply: `apply --server-side` after client-side apply (ownership migrated), conflicts and
//! `--force-conflicts`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agora_e2e::{ApiserverProcess as Apiserver, EtcdProcess};

struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl with nothing but the kubeconfig the apiserver wrote.
    fn new(server: &Apiserver) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(server.kubeconfig(), dir.path().join("config")).expect("the apiserver wrote its kubeconfig");
        Self { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("/usr/bin/kubectl");
        command
            .arg("--kubeconfig")
            .arg(self.dir.path().join("config"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kubectl")
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Reads lines from a running `kubectl get -w` until one contains every word of `want`.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if seen.iter().any(|l| want.iter().all(|w| l.contains(w))) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no watch line with {want:?}; saw {seen:#?}");
        if let Ok(line) = lines.recv_timeout(left) {
            seen.push(line);
        }
    }
}

fn kubectl_suite(store: Option<String>) {
    let server = match store {
        Some(url) => Apiserver::secure_on_etcd(&url),
        None => Apiserver::secure(),
    };
    let kubectl = Kubectl::new(&server);
    assert!(kubectl.ok(&["version", "-o", "json"]).contains("serverVersion"), "kubectl reaches it over HTTPS");
    unauthenticated_requests_are_refused(&server);
    an_oversized_body_over_http2_gets_its_413(&server);

    // Client-side apply of every example, then again: nothing is created twice.
    let applied = kubectl.ok(&["apply", "-f", "manifests/", "-f", "examples/cluster/"]);
    for object in [
        "app.agora/web created",
        "app.agora/cache created",
        "cronjob.agora/load created",
        "framework.agora/spark-dispatcher created",
        "app.agora/web-spread created",
    ] {
        assert!(applied.contains(object), "{applied}");
    }
    let again = kubectl.ok(&["apply", "-f", "manifests/"]);
    assert!(!again.contains("created"), "{again}");
    assert!(again.contains("cronjob.agora/nightly-backup unchanged"), "{again}");
    // A change is applied.
    let manifest =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/nightly-backup.yaml"))
            .unwrap();
    let changed = kubectl.dir.path().join("changed.yaml");
    std::fs::write(&changed, manifest.replace("retries: 2", "retries: 5")).unwrap();
    assert!(
        kubectl.ok(&["apply", "-f", changed.to_str().unwrap()]).contains("cronjob.agora/nightly-backup configured")
    );
    assert!(
        kubectl.ok(&["get", "cronjob", "nightly-backup", "-n", "ops", "-o", "jsonpath={.spec.retries}"]).contains('5')
    );

    // Server-side apply takes over from client-side apply (kubectl migrates the ownership), then applies changes.
    // As in Kubernetes, a value that differs from what client-side apply set would be a conflict with
    // "kubectl-client-side-apply", so the manifests are first applied client-side as they are.
    let retries = || kubectl.ok(&["get", "cronjob", "nightly-backup", "-n", "ops", "-o", "jsonpath={.spec.retries}"]);
    kubectl.ok(&["apply", "-f", "manifests/"]);
    assert_eq!(retries(), "2");
    let server_side = kubectl.ok(&["apply", "--server-side", "-f", "manifests/"]);
    assert!(server_side.contains("app.agora/web serverside-applied"), "{server_side}");
    let managers =
        kubectl.ok(&["get", "app", "cache", "-n", "shop", "-o", "jsonpath={.metadata.managedFields[*].manager}"]);
    assert!(managers.split(' ').any(|m| m == "kubectl") && !managers.contains("client-side"), "{managers}");
    let file = changed.to_str().unwrap();
    assert!(kubectl.ok(&["apply", "--server-side", "-f", file]).contains("nightly-backup serverside-applied"));
    assert_eq!(retries(), "5");
    // Another manager changes the field; applying over it conflicts until forced.
    kubectl.ok(&["patch", "cronjob", "nightly-backup", "-n", "ops", "--type=merge", "-p", r#"{"spec":{"retries":9}}"#]);
    let out = kubectl.run(&["apply", "--server-side", "-f", file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a conflict fails the apply");
    assert!(stderr.contains("conflict with \"kubectl-patch\"") && stderr.contains(".spec.retries"), "{stderr}");
    assert_eq!(retries(), "9");
    kubectl.ok(&["apply", "--server-side", "--force-conflicts", "-f", file]);
    assert_eq!(retries(), "5");

    // get: -o yaml, -l, -A.
    let yaml = kubectl.ok(&["get", "app", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: App") && yaml.contains("resourceVersion:") && yaml.contains("backoffFactor: 1.15"),
        "{yaml}"
    );
    let labelled = kubectl.ok(&["get", "apps", "-A", "-l", "tier in (backend)"]);
    assert!(labelled.contains("cache") && !labelled.contains("web"), "{labelled}");
    let all = kubectl.ok(&["get", "cronjobs", "-A"]);
    for name in ["extract", "transform", "load", "nightly-backup"] {
        assert!(all.contains(name), "{all}");
    }

    // Server-side printing: the kind's columns, and more with -o wide.
    let table = kubectl.ok(&["get", "apps"]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "INSTANCES", "RUNNING", "HEALTHY", "DEPLOYMENT", "VERSION", "AGE"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(!header.contains("STAGED"), "wide columns only with -o wide: {table}");
    assert!(table.lines().any(|l| l.starts_with("web ") && l.contains(" 2 ")), "{table}");
    let wide = kubectl.ok(&["get", "apps", "-o", "wide"]);
    assert!(wide.lines().next().is_some_and(|h| h.contains("STAGED") && h.contains("LAST FAILURE")), "{wide}");
    let jobs = kubectl.ok(&["get", "cronjobs", "-n", "analytics"]);
    assert!(jobs.lines().next().is_some_and(|h| h.contains("SCHEDULE") && h.contains("NEXT RUN")), "{jobs}");
    assert!(jobs.contains("after extract"), "a child job shows its parents: {jobs}");

    // Dry runs write nothing: diff, apply, scale and delete against the server.
    let stored = || {
        kubectl.ok(&[
            "get",
            "app",
            "web",
            "-o",
            "jsonpath={.metadata.resourceVersion}/{.metadata.generation}/{.spec.instances}",
        ])
    };
    let before = stored();
    let web = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/web.yaml")).unwrap();
    let scaled = kubectl.dir.path().join("web-5.yaml");
    std::fs::write(&scaled, web.replace("instances: 2", "instances: 5")).unwrap();
    let diff = kubectl.run(&["diff", "-f", scaled.to_str().unwrap()]);
    assert_eq!(diff.status.code(), Some(1), "kubectl diff finds the change: {}", String::from_utf8_lossy(&diff.stderr));
    assert!(
        String::from_utf8_lossy(&diff.stdout).contains("+  instances: 5"),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let dry = kubectl.ok(&["apply", "--dry-run=server", "-f", scaled.to_str().unwrap()]);
    assert!(dry.contains("app.agora/web configured (server dry run)"), "{dry}");
    assert!(kubectl.ok(&["scale", "app", "web", "--replicas=9", "--dry-run=server"]).contains("(server dry run)"));
    let deleted = kubectl.ok(&["delete", "app", "web", "--dry-run=server"]);
    assert!(deleted.contains("app.agora \"web\" deleted (server dry run)"), "{deleted}");
    assert_eq!(stored(), before, "a dry run changed the object");

    // kubectl describe shows the Events about the object.
    let uid = kubectl.ok(&["get", "app", "web", "-o", "jsonpath={.metadata.uid}"]);
    let event = kubectl.dir.path().join("event.yaml");
    std::fs::write(
        &event,
        format!(
            "apiVersion: agora/v1\nkind: Event\nmetadata: {{name: web-scaled, namespace: default}}\n\
             involvedObject: {{apiVersion: agora/v1, kind: App, namespace: default, name: web, uid: {uid}}}\n\
             reason: ScalingUp\nmessage: launching 3 tasks\ntype: Normal\nsource: {{component: marathon}}\n\
             count: 1\nfirstTimestamp: 2026-12-01T00:00:00Z\nlastTimestamp: 2026-12-01T00:00:00Z\n"
        ),
    )
    .unwrap();
    kubectl.ok(&["create", "-f", event.to_str().unwrap()]);
    let described = kubectl.ok(&["describe", "app", "web"]);
    assert!(
        described.contains("Events:") && described.contains("ScalingUp") && described.contains("launching 3 tasks"),
        "{described}"
    );

    // Namespaces come into being when used.
    let out = kubectl.run(&["create", "namespace", "staging"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("namespaces are not objects in Agora"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Namespaces are the ones in use.
    let namespaces = kubectl.ok(&["get", "namespaces"]);
    for name in ["default", "shop", "ops"] {
        assert!(namespaces.contains(name), "{namespaces}");
    }

    // get -w sees changes and deletions.
    let mut watch = kubectl
        .command(&["get", "apps", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    wait_for_line(&lines, &mut seen, &["ADDED", "web"]);
    assert!(
        kubectl.ok(&["patch", "app", "web", "--type=merge", "-p", r#"{"spec":{"instances":4}}"#]).contains("patched")
    );
    wait_for_line(&lines, &mut seen, &["MODIFIED", "web"]);
    assert!(kubectl.ok(&["scale", "app", "web", "--replicas=2"]).contains("scaled"));
    assert_eq!(kubectl.ok(&["get", "app", "web", "-o", "jsonpath={.spec.instances}"]), "2");
    assert!(kubectl.ok(&["delete", "app", "web"]).contains("app.agora \"web\" deleted"));
    wait_for_line(&lines, &mut seen, &["DELETED", "web"]);
    let _ = watch.kill();
    let _ = watch.wait();
    let gone = kubectl.run(&["get", "app", "web"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("apps.agora \"web\" not found"));

    // delete waits for a finalizer to be removed.
    let fw = kubectl.dir.path().join("fw.yaml");
    std::fs::write(
        &fw,
        "apiVersion: agora/v1\nkind: Framework\nmetadata:\n  name: held\n  finalizers: [agora.dev/hold]\nspec: {}\n",
    )
    .unwrap();
    kubectl.ok(&["apply", "-f", fw.to_str().unwrap()]);
    let mut deleting =
        kubectl.command(&["delete", "framework", "held", "--timeout=60s"]).stdout(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubectl.ok(&["get", "framework", "held", "-o", "jsonpath={.metadata.deletionTimestamp}"]).contains('T') {
        assert!(Instant::now() < deadline, "the framework was never marked for deletion");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(deleting.try_wait().unwrap().is_none(), "delete waits while the finalizer is there");
    kubectl.ok(&["patch", "framework", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let status = deleting.wait().unwrap();
    assert!(status.success(), "kubectl delete returns once the object is gone");

    // Discovery and OpenAPI: api-resources, explain.
    let resources = kubectl.ok(&["api-resources", "--api-group=agora"]);
    for line in
        ["apps", "appversions", "cronjobs", "agents", "frameworks", "offers", "roles", "tasks", "leases", "events"]
    {
        assert!(resources.contains(line), "{resources}");
    }
    let explained = kubectl.ok(&["explain", "app.spec"]);
    assert!(explained.contains("healthChecks") && explained.contains("instances"), "{explained}");

    // delete --all empties a namespace's apps, and only that namespace's.
    assert!(kubectl.ok(&["delete", "apps", "--all", "-n", "shop"]).contains("app.agora \"cache\" deleted"));
    let left = kubectl.run(&["get", "apps", "-n", "shop"]);
    assert!(String::from_utf8_lossy(&left.stderr).contains("No resources found"), "{left:?}");
    assert!(kubectl.ok(&["get", "cronjobs", "-n", "ops"]).contains("nightly-backup"));

    // An unknown field is rejected, naming it.
    let bad = kubectl.dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: agora/v1\nkind: App\nmetadata: {name: typo}\nspec: {cmd: x, cpu: 1}\n").unwrap();
    let out = kubectl.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.cpu") && stderr.contains("unknown field \"cpu\""), "{stderr}");
}

/// Without the token (curl, or a client trusting the CA but presenting nothing or a wrong token): 401 Status.
fn unauthenticated_requests_are_refused(server: &Apiserver) {
    let ca = server.data_dir().join("pki/ca.crt");
    let url = format!("{}/apis/agora/v1/apps", server.url());
    for auth in [None, Some("Authorization: Bearer wrong")] {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--cacert"]).arg(&ca).args(["-w", "\n%{http_code}", &url]);
        if let Some(header) = auth {
            curl.args(["-H", header]);
        }
        let out = curl.output().expect("curl is installed (make deps)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.ends_with("\n401") && text.contains("\"reason\":\"Unauthorized\""), "{auth:?}: {text}");
    }
    // Plain HTTP to the HTTPS port gets nowhere.
    assert!(!agora_e2e::http_ok(server.port, "/apis/agora/v1/apps"));
}

/// A body over the limit, sent by curl over HTTP/2 while the server has already decided: the 413 Status arrives and
/// the stream ends cleanly (curl reported "HTTP/2 stream was not closed cleanly" when the server reset the stream
/// under the upload). Several times, since whether curl is still sending when the answer comes is a race.
fn an_oversized_body_over_http2_gets_its_413(server: &Apiserver) {
    let ca = server.data_dir().join("pki/ca.crt");
    let token = std::fs::read_to_string(server.data_dir().join("token")).unwrap();
    let body = server.data_dir().join("big.json");
    std::fs::write(&body, vec![b'a'; 4_000_000]).unwrap();
    let url = format!("{}/apis/agora/v1/namespaces/default/apps", server.url());
    for _ in 0..5 {
        let out = Command::new("curl")
            .args(["-sS", "--http2", "-X", "POST", "-H", "Content-Type: application/json", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .args(["-w", "\n%{http_code} %{http_version}", &url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.ends_with("\n413 2") && text.contains("\"reason\":\"RequestEntityTooLarge\""), "{text}");
    }
    std::fs::remove_file(&body).unwrap();
}

#[test]
fn kubectl_on_the_embedded_store() {
    kubectl_suite(None);
}

#[test]
fn kubectl_on_etcd() {
    let etcd = EtcdProcess::start();
    kubectl_suite(Some(etcd.store_url()));
}

#[test]
fn kubectl_creates_reads_and_refuses_rbac_objects_as_kubernetes_does() {
    let server = Apiserver::secure();
    let kubectl = Kubectl::new(&server);
    let resources = kubectl.ok(&["api-resources", "--api-group=rbac.authorization.k8s.io", "-o", "name"]);
    for kind in ["roles", "rolebindings", "clusterroles", "clusterrolebindings"] {
        assert!(resources.contains(&format!("{kind}.rbac.authorization.k8s.io")), "{resources}");
    }
    let created = kubectl.run(&[
        "create",
        "role",
        "app-reader",
        "-n",
        "team-a",
        "--verb=get,list,watch",
        "--resource=apps.agora,apps.agora/scale",
    ]);
    let (stdout, stderr) = (String::from_utf8_lossy(&created.stdout), String::from_utf8_lossy(&created.stderr));
    assert!(stdout.contains("role.rbac.authorization.k8s.io/app-reader created"), "{stdout}{stderr}");
    assert!(!stderr.contains("Warning"), "{stderr}");
    let bound = kubectl.ok(&[
        "create",
        "rolebinding",
        "alice-reads",
        "-n",
        "team-a",
        "--role=app-reader",
        "--user=alice",
        "--group=team-a",
    ]);
    assert!(bound.contains("rolebinding.rbac.authorization.k8s.io/alice-reads created"), "{bound}");
    kubectl.ok(&["create", "clusterrole", "health-reader", "--verb=get", "--non-resource-url=/healthz"]);
    kubectl.ok(&[
        "create",
        "clusterrolebinding",
        "everyone-health",
        "--clusterrole=health-reader",
        "--group=system:authenticated",
    ]);

    let role = kubectl.ok(&["get", "roles.rbac.authorization.k8s.io", "app-reader", "-n", "team-a", "-o", "json"]);
    let role: serde_json::Value = serde_json::from_str(&role).unwrap();
    assert_eq!(role["apiVersion"], "rbac.authorization.k8s.io/v1");
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["apps", "apps/scale"]));
    let binding = kubectl.ok(&[
        "get",
        "rolebinding",
        "alice-reads",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.subjects[*].name} {.roleRef.name}",
    ]);
    assert_eq!(binding, "alice team-a app-reader");
    let listed = kubectl.ok(&["get", "clusterrolebindings"]);
    assert!(listed.contains("everyone-health"), "{listed}");
    // Agora's own Roles (DRF weights and quotas) are still `roles` of group agora, beside RBAC's: plain `roles`
    // names Agora's (its group is listed first), which hold none of RBAC's.
    let agoras = kubectl.run(&["get", "roles", "-n", "team-a", "-o", "name"]);
    assert!(agoras.status.success() && !String::from_utf8_lossy(&agoras.stdout).contains("app-reader"));

    // Refused as Kubernetes refuses them: a binding's role never changes; a ServiceAccount is no Agora principal.
    let patched = kubectl.run(&[
        "patch",
        "rolebinding",
        "alice-reads",
        "-n",
        "team-a",
        "--type=merge",
        "-p",
        r#"{"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"}}"#,
    ]);
    let stderr = String::from_utf8_lossy(&patched.stderr);
    assert!(!patched.status.success() && stderr.contains("roleRef") && stderr.contains("immutable"), "{stderr}");
    let service_account = kubectl.run(&[
        "create",
        "rolebinding",
        "sa",
        "-n",
        "team-a",
        "--role=app-reader",
        "--serviceaccount=team-a:builder",
    ]);
    let stderr = String::from_utf8_lossy(&service_account.stderr);
    assert!(!service_account.status.success() && stderr.contains("subjects[0].kind"), "{stderr}");
    let deleted = kubectl.ok(&["delete", "roles.rbac.authorization.k8s.io", "app-reader", "-n", "team-a"]);
    assert!(deleted.contains("deleted"), "{deleted}");
}
