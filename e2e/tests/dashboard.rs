//! The dashboard in a real headless Chromium, against `agora up` (secure: HTTPS and a token) with its real agent and
//! a few hollow agents: without the token it asks for one and shows nothing; with it the overview shows the agents;
//! an App applied meanwhile appears and reaches running without a reload; scaling from its page changes
//! `spec.instances`; a job's "Run now" creates a run; a task's page shows its log growing while the task writes; with
//! a read-only principal's token the pages read as before and a write is refused, in the server's words.
//! Each page is saved as a screenshot under the target dir.

mod common;

use std::time::Duration;

use agora_client::{Api, ListParams, Patch, PatchParams};
use agora_e2e::{agora_binary, eventually, free_port};
use agora_schemas::{App, CronJob, Task};
use common::browser::{Chromium, eval, screenshot, wait_for};
use common::up::Up;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_live_and_acts_through_the_api() {
    let dir = common::WorkDir(tempfile::tempdir().unwrap());
    let data = dir.0.path().to_owned();
    let (port, agent_port) = (free_port(), free_port());
    let mut up = Up::start_with(&data, port, agent_port, "cpus:2;mem:2048;disk:2000;ports:[32100-32200]");
    tokio::task::block_in_place(|| up.wait_up());
    let kubeconfig = data.join("kubeconfig");
    let client = agora_client::Client::new(agora_client::Config::from_kubeconfig(&kubeconfig, None).unwrap()).unwrap();
    let _hollow = agora_e2e::Proc::quiet(
        &agora_binary(),
        [
            "agent",
            "--hollow",
            "3",
            "--name-prefix",
            "spare-",
            "--resources",
            "cpus:4;mem:4096;disk:4000;ports:[33000-33100]",
            "--attributes",
            "kind:hollow",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    let token = std::fs::read_to_string(data.join("token")).unwrap().trim().to_owned();
    let ui = format!("https://127.0.0.1:{port}/ui/");

    let chromium = Chromium::launch().await;
    let page = chromium.open(&ui).await;

    // Without the token: a prompt, and nothing of the cluster.
    wait_for(&page, "the token prompt", "document.getElementById('token-dialog').open", WITHIN).await;
    let shown = eval(&page, "document.getElementById('main').innerText").await;
    assert!(shown.as_str().unwrap_or_default().contains("needs its token"), "{shown}");
    assert_eq!(
        eval(&page, "document.querySelectorAll('.tile').length").await,
        json!(0),
        "agents shown without the token"
    );
    screenshot(&page, "token").await;
    // A wrong token is refused: the prompt comes back.
    page.find_element("#token-input").await.unwrap().click().await.unwrap().type_str("not-the-token").await.unwrap();
    page.find_element("#token-submit").await.unwrap().click().await.unwrap();
    wait_for(&page, "the prompt again for a wrong token", "document.getElementById('token-dialog').open", WITHIN).await;
    assert_eq!(eval(&page, "document.querySelectorAll('.tile').length").await, json!(0));

    // With it: the overview shows every agent (this machine's and the three hollow ones).
    page.find_element("#token-input").await.unwrap().click().await.unwrap().type_str(&token).await.unwrap();
    page.find_element("#token-submit").await.unwrap().click().await.unwrap();
    wait_for(
        &page,
        "four agents on the overview",
        "Number(document.querySelector('[data-testid=agent-count]')?.textContent) === 4 && \
         document.querySelectorAll('.tile').length === 4",
        WITHIN,
    )
    .await;
    assert_eq!(eval(&page, "sessionStorage.getItem('agora.token') !== null").await, json!(true));
    assert!(!eval(&page, "location.href").await.as_str().unwrap_or_default().contains(&token), "never in a URL");
    screenshot(&page, "overview").await;

    // An App applied now appears on the apps page and reaches running, without a reload.
    eval(&page, "location.hash = '#/apps'").await;
    wait_for(&page, "the apps page", "document.querySelector('h1')?.textContent === 'Apps'", WITHIN).await;
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    let ticker = json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "ticker"},
        "spec": {"cmd": "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done", "cpus": 0.1, "mem": 32,
                 "constraints": [["kind", "UNLIKE", "hollow"]]}});
    apps.patch("ticker", &PatchParams::apply("e2e").force(), &Patch::Apply(&ticker)).await.unwrap();
    let loaded = eval(&page, "window.__agoraLoads = (window.__agoraLoads || 0) + 1").await;
    wait_for(
        &page,
        "ticker running on the apps page",
        "[...document.querySelectorAll('.list-row')].some(r => r.innerText.includes('ticker') && r.innerText.includes('1/1 running'))",
        WITHIN,
    )
    .await;
    assert_eq!(eval(&page, "window.__agoraLoads").await, loaded, "the page was reloaded");
    screenshot(&page, "apps").await;

    // Scale from the app's page: spec.instances changes.
    eval(&page, "location.hash = '#/apps/default/ticker'").await;
    wait_for(&page, "the app's page", "document.getElementById('scale-input')?.value === '1'", WITHIN).await;
    eval(&page, "document.getElementById('scale-input').value = ''").await;
    page.find_element("#scale-input").await.unwrap().click().await.unwrap().type_str("2").await.unwrap();
    page.find_element("#scale-button").await.unwrap().click().await.unwrap();
    eventually(WITHIN, "spec.instances is 2", || async {
        apps.get("ticker").await.ok().filter(|a| a.spec.instances == Some(2)).map(|_| ())
    })
    .await;
    let managers = apps.get("ticker").await.unwrap().metadata.managed_fields;
    assert!(managers.iter().any(|m| m.manager == "agora-dashboard"), "written as the dashboard: {managers:?}");
    wait_for(
        &page,
        "two tasks on the app's page",
        "document.querySelector('[data-testid=app-instances]')?.textContent.startsWith('2 wanted: 2 running')",
        WITHIN,
    )
    .await;
    screenshot(&page, "app").await;

    // A task's page: its log grows while it writes.
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let listed = tasks.list(&ListParams::default().labels("agora.dev/app=ticker")).await.unwrap().items;
    // On this machine's real agent (the hollow ones write no logs).
    let task = listed.iter().find(|t| !t.spec.agent.starts_with("spare-")).unwrap().metadata.name.clone().unwrap();
    eval(&page, &format!("location.hash = '#/tasks/default/{task}'")).await;
    let first = wait_for(
        &page,
        "the task's log",
        "(document.getElementById('log')?.textContent.match(/tick \\d+/g) || []).length",
        WITHIN,
    )
    .await;
    wait_for(
        &page,
        "more log lines as the task writes",
        &format!("(document.getElementById('log')?.textContent.match(/tick \\d+/g) || []).length > {first} + 2"),
        WITHIN,
    )
    .await;
    screenshot(&page, "task").await;

    // A job's "Run now" creates a run.
    let jobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let job = json!({"apiVersion": "agora/v1", "kind": "CronJob", "metadata": {"name": "report"},
        "spec": {"schedule": "R/2030-01-01T00:00:00Z/P1D", "command": "echo report done", "cpus": 0.1, "mem": 32,
                 "constraints": [["kind", "UNLIKE", "hollow"]]}});
    jobs.patch("report", &PatchParams::apply("e2e").force(), &Patch::Apply(&job)).await.unwrap();
    eval(&page, "location.hash = '#/cronjobs/default/report'").await;
    wait_for(&page, "the job's page", "document.getElementById('run-now') !== null", WITHIN).await;
    page.find_element("#run-now").await.unwrap().click().await.unwrap();
    eventually(WITHIN, "a run of report", || async {
        let runs = tasks.list(&ListParams::default().labels("agora.dev/cronjob=report")).await.ok()?.items;
        runs.iter().any(|t| t.metadata.name.as_deref().is_some_and(|n| n.starts_with("report-manual-"))).then_some(())
    })
    .await;
    wait_for(
        &page,
        "the run counted on the job's page",
        "document.querySelector('[data-testid=job-counters]')?.textContent.startsWith('1 succeeded')",
        WITHIN,
    )
    .await;
    screenshot(&page, "cronjob").await;

    // The jobs list.
    eval(&page, "location.hash = '#/cronjobs'").await;
    wait_for(&page, "the jobs list", "document.querySelectorAll('.list-row.jobs').length > 1", WITHIN).await;
    screenshot(&page, "cronjobs").await;

    // Forgetting the token: nothing shows again.
    page.find_element("#forget-token").await.unwrap().click().await.unwrap();
    wait_for(&page, "the prompt after forgetting", "document.getElementById('token-dialog').open", WITHIN).await;
    assert_eq!(eval(&page, "sessionStorage.getItem('agora.token')").await, json!(null));

    // A read-only principal's token: the pages read as before; a write is refused, in the server's words.
    let made = tokio::task::block_in_place(|| {
        std::process::Command::new(agora_binary())
            .args(["token", "create", "viewer", "--kubeconfig", kubeconfig.to_str().unwrap()])
            .output()
            .unwrap()
    });
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let viewer = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let binding: agora_schemas::rbac::ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "viewer-views"},
        "subjects": [{"kind": "User", "name": "viewer"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}}))
    .unwrap();
    Api::<agora_schemas::rbac::ClusterRoleBinding>::all(client.clone())
        .create(&Default::default(), &binding)
        .await
        .unwrap();
    let as_viewer = agora_client::Config::from_kubeconfig(&kubeconfig, None).unwrap().token(viewer.clone());
    let as_viewer = agora_client::Client::new(as_viewer).unwrap();
    eventually(WITHIN, "the viewer's binding in the apiserver's policy", || async {
        Api::<App>::all(as_viewer.clone()).list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await;
    page.find_element("#token-input").await.unwrap().click().await.unwrap().type_str(&viewer).await.unwrap();
    page.find_element("#token-submit").await.unwrap().click().await.unwrap();
    eval(&page, "location.hash = '#/apps/default/ticker'").await;
    wait_for(
        &page,
        "the app's page, read as the viewer",
        "document.getElementById('scale-input')?.value === '2'",
        WITHIN,
    )
    .await;
    eval(&page, "document.getElementById('scale-input').value = ''").await;
    page.find_element("#scale-input").await.unwrap().click().await.unwrap().type_str("3").await.unwrap();
    page.find_element("#scale-button").await.unwrap().click().await.unwrap();
    let said = wait_for(
        &page,
        "the refusal shown",
        "(t => t.includes('failed') && t)(document.getElementById('message')?.textContent || '')",
        WITHIN,
    )
    .await;
    let said = said.as_str().unwrap_or_default().to_owned();
    assert!(said.contains("forbidden") && said.contains("User \"viewer\" cannot patch"), "{said}");
    assert_eq!(apps.get("ticker").await.unwrap().spec.instances, Some(2), "nothing written");
    screenshot(&page, "read-only").await;

    apps.delete("ticker", &Default::default()).await.unwrap();
    drop(chromium);
    let status = tokio::task::block_in_place(|| up.stop());
    assert!(status.success(), "{status}");
}

/// The assets are served to anyone (they hold no data) with a policy that allows only this server's own scripts;
/// the API behind them still wants the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assets_are_public_and_the_data_is_not() {
    let server = agora_e2e::ApiserverProcess::secure();
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let base = server.url();
    let index = http.get(format!("{base}/ui/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let policy = index.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(index.text().await.unwrap().contains("<script type=\"module\" src=\"main.js\">"));
    let script = http.get(format!("{base}/ui/app.js")).send().await.unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(http.get(format!("{base}/ui/nope.js")).send().await.unwrap().status(), 404);
    assert_eq!(http.get(format!("{base}/ui/..%2Ftoken")).send().await.unwrap().status(), 404, "only the assets");
    let redirect = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(redirect.get(format!("{base}/ui")).send().await.unwrap().headers()["location"], "/ui/");
    assert_eq!(http.get(format!("{base}/apis/agora/v1/apps")).send().await.unwrap().status(), 401);
}
