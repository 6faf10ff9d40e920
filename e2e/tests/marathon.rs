//! Marathon through real processes: `agora apiserver`, `agora controllers` (allocator and marathon), and a real agent
//! running `python3 -m http.server` with HTTP health checks — start, replace a killed task, a rolling upgrade under
//! a watch that samples the healthy count, a failing version stuck with its explanation, rollback, scale-down by kill
//! selection — and hollow agents for spreading, unreachable agents and a marathon leader killed mid-deployment.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_client::{Api, ListParams, Patch, PatchParams};
use agora_controllers::runtime::watcher;
use agora_e2e::Proc;
use agora_e2e::{ApiserverProcess, eventually};
use agora_schemas::{APP_LABEL, APP_VERSION_LABEL, App, AppVersion, Event, Task, TaskState};
use common::{WorkDir, cgroup_pids, spawn, start_agent};
use futures::StreamExt;
use serde_json::{Value, json};

/// `agora controllers --only <which>` with 3 s leases.
fn controllers(server: &ApiserverProcess, identity: &str, which: &str) -> Proc {
    spawn(server, &["controllers", "--only", which, "--identity", identity, "--lease-seconds", "3"])
}

/// Applies an App (server-side apply, as `kubectl apply --server-side` would).
async fn apply(apps: &Api<App>, name: &str, spec: Value) -> App {
    let intent = json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": name}, "spec": spec});
    apps.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&intent)).await.unwrap()
}

/// Waits until `name`'s status satisfies `done`.
async fn app_until(apps: &Api<App>, name: &str, what: &str, secs: u64, done: impl Fn(&App) -> bool) -> App {
    eventually(Duration::from_secs(secs), what, || async {
        apps.get(name).await.ok().filter(|a| a.status.is_some() && done(a))
    })
    .await
}

fn status(app: &App) -> agora_schemas::AppStatus {
    app.status.clone().unwrap_or_default()
}

/// The app's non-terminal tasks.
async fn live(tasks: &Api<Task>, app: &str) -> Vec<Task> {
    let params = ListParams::default().labels(&format!("{APP_LABEL}={app}"));
    let all = tasks.list(&params).await.unwrap().items;
    all.into_iter().filter(|t| t.status.as_ref().is_none_or(|s| !s.state.is_terminal())).collect()
}

fn version_of(task: &Task) -> String {
    task.metadata.labels.get(APP_VERSION_LABEL).cloned().unwrap_or_default()
}

fn healthy_running(task: &Task) -> bool {
    task.status.as_ref().is_some_and(|s| s.state == TaskState::Running && s.healthy == Some(true))
}

/// Samples, through a watch of the app's tasks, the fewest healthy running tasks seen after each event.
fn sample_healthy(tasks: Api<Task>, app: &str) -> (Arc<Mutex<usize>>, tokio::task::JoinHandle<()>) {
    let fewest = Arc::new(Mutex::new(usize::MAX));
    let config = watcher::Config::default().labels(&format!("{APP_LABEL}={app}"));
    let handle = tokio::spawn({
        let fewest = fewest.clone();
        async move {
            let mut state: HashMap<String, bool> = HashMap::new();
            let mut listed = false;
            let mut events = std::pin::pin!(watcher::watcher(tasks, config));
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitApply(t) | watcher::Event::Apply(t)) => {
                        state.insert(t.metadata.name.clone().unwrap_or_default(), healthy_running(&t));
                    }
                    Ok(watcher::Event::Delete(t)) => {
                        state.remove(t.metadata.name.as_deref().unwrap_or_default());
                    }
                    Ok(watcher::Event::InitDone) => listed = true,
                    _ => {}
                }
                if listed {
                    let healthy = state.values().filter(|h| **h).count();
                    let mut f = fewest.lock().unwrap();
                    *f = (*f).min(healthy);
                }
            }
        }
    });
    (fewest, handle)
}

async fn events_for(server: &ApiserverProcess, app: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(server.client(), "default");
    let all = events.list(&ListParams::default()).await.unwrap().items;
    all.into_iter().filter(|e| e.involved_object.name == app && e.involved_object.kind == "App").collect()
}

fn web_spec(cmd: &str, health_path: &str) -> Value {
    json!({
        "instances": 3, "cmd": cmd, "cpus": 0.1, "mem": 64,
        "backoffSeconds": 1, "backoffFactor": 1.15, "maxLaunchDelaySeconds": 5,
        "healthChecks": [{"protocol": "HTTP", "path": health_path, "gracePeriodSeconds": 3, "intervalSeconds": 1,
                          "timeoutSeconds": 2, "maxConsecutiveFailures": 3}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_runs_heals_rolls_over_gets_stuck_explained_rolls_back_and_scales_down() {
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, _dir, client) = start_agent(&server, &work).await;
    let _controllers = spawn(&server, &["controllers", "--identity", "c1", "--lease-seconds", "3"]);
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let serve = "exec python3 -m http.server $PORT0 --bind 127.0.0.1";
    let begun = std::time::Instant::now();
    let phase = |what: &str| eprintln!("marathon e2e: {what} at {:.1} s", begun.elapsed().as_secs_f64());

    // Three instances reach healthy.
    apply(&apps, "web", web_spec(serve, "/")).await;
    let app = app_until(&apps, "web", "3 healthy", 60, |a| status(a).tasks_healthy == 3).await;
    let v1 = status(&app).version.unwrap();
    let running = live(&tasks, "web").await;
    assert_eq!(running.len(), 3);
    let ports: HashSet<u16> = running.iter().map(|t| t.spec.ports[0].port).collect();
    assert_eq!(ports.len(), 3, "each instance got a port of its own from the offer");
    assert!(agora_e2e::http_ok(running[0].spec.ports[0].port, "/"), "the task serves on $PORT0");
    assert!(running.iter().all(|t| t.metadata.owner_references[0].name == "web"));

    phase("3 healthy");
    // A task's process killed: it fails, and a replacement brings the app back to 3 healthy.
    let victim = running[0].clone();
    for pid in cgroup_pids(&victim).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    let victim_name = victim.metadata.name.clone().unwrap();
    app_until(&apps, "web", "the failed task replaced", 60, |a| {
        let s = status(a);
        s.tasks_healthy == 3 && s.last_task_failure.as_ref().is_some_and(|f| f.task == victim_name)
    })
    .await;
    assert!(!live(&tasks, "web").await.iter().any(|t| t.metadata.name.as_ref() == Some(&victim_name)));

    phase("replaced");
    // A cmd change rolls over with minimumHealthCapacity 1: the healthy count never drops below 3.
    let (fewest, sampler) = sample_healthy(tasks.clone(), "web");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let serve2 = "exec python3 -m http.server $PORT0 --bind 127.0.0.1 --directory .";
    apply(&apps, "web", web_spec(serve2, "/")).await;
    let app = app_until(&apps, "web", "the rolling upgrade done", 90, |a| {
        let s = status(a);
        s.version.as_deref() != Some(v1.as_str()) && s.deployment.is_none() && s.tasks_healthy == 3
    })
    .await;
    let v2 = status(&app).version.unwrap();
    let after = live(&tasks, "web").await;
    assert!(after.iter().all(|t| version_of(t) == v2), "only the new version runs");
    sampler.abort();
    let fewest = *fewest.lock().unwrap();
    assert!(fewest >= 3, "the healthy count dropped to {fewest} during the upgrade");
    let reasons: Vec<String> = events_for(&server, "web").await.iter().map(|e| e.reason.clone()).collect();
    for reason in ["Launched", "TaskFailed", "DeploymentStarted", "DeploymentSucceeded", "Killing"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} event in {reasons:?}");
    }

    phase("rolled over");
    // A version whose health check fails is stuck, says why, and the old tasks keep serving.
    apply(&apps, "web", web_spec(serve2, "/nope")).await;
    let stuck = app_until(&apps, "web", "the failing deployment explained", 60, |a| {
        let waiting = status(a).deployment.as_ref().and_then(|d| d.waiting.clone()).unwrap_or_default();
        waiting.contains("to pass HTTP /nope (last: ") && waiting.contains("404")
    })
    .await;
    let deployment = status(&stuck).deployment.unwrap();
    assert_eq!(deployment.step, "WaitingForHealth", "{deployment:?}");
    let v3 = status(&stuck).version.unwrap();
    let old_healthy = live(&tasks, "web").await.iter().filter(|t| version_of(t) == v2 && healthy_running(t)).count();
    assert_eq!(old_healthy, 3, "the old version keeps all its instances while the new one fails");

    phase("stuck explained");
    // Rollback: the previous spec again goes back to v2 through the same path; the failing tasks go.
    apply(&apps, "web", web_spec(serve2, "/")).await;
    app_until(&apps, "web", "rolled back", 60, |a| {
        let s = status(a);
        s.version.as_deref() == Some(v2.as_str()) && s.deployment.is_none() && s.tasks_healthy == 3
    })
    .await;
    eventually(Duration::from_secs(30), "the failing version's tasks are gone", || async {
        live(&tasks, "web").await.iter().all(|t| version_of(t) == v2).then_some(())
    })
    .await;
    let versions: Api<AppVersion> = Api::namespaced(client.clone(), "default");
    let recorded: HashSet<String> =
        versions.list(&ListParams::default()).await.unwrap().items.into_iter().map(|v| v.spec.version).collect();
    for v in [&v1, &v2, &v3] {
        assert!(recorded.contains(v), "version {v} recorded in {recorded:?}");
    }

    phase("rolled back");
    // Scale to 1 (the scale subresource, as kubectl scale): the youngest two go; scaling is not a new version.
    let mut by_age = live(&tasks, "web").await;
    by_age.sort_by_key(|t| t.status.as_ref().and_then(|s| s.started_at));
    let oldest = by_age[0].metadata.name.clone().unwrap();
    apps.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    let app = app_until(&apps, "web", "scaled to 1", 30, |a| {
        let s = status(a);
        s.instances == 1 && s.tasks_running == 1
    })
    .await;
    assert_eq!(status(&app).version.as_deref(), Some(v2.as_str()));
    let left = eventually(Duration::from_secs(30), "one task left", || async {
        let l = live(&tasks, "web").await;
        (l.len() == 1).then_some(l)
    })
    .await;
    assert_eq!(left[0].metadata.name.as_ref(), Some(&oldest), "YoungestFirst keeps the oldest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_spread_tasks_over_hollow_agents() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let _r1 = common::hollow(&server, 3, "r1-", "cpus:8;mem:8192;ports:[31000-31100]", "rack:r1");
    let _r2 = common::hollow(&server, 3, "r2-", "cpus:8;mem:8192;ports:[31000-31100]", "rack:r2");
    let _controllers = spawn(&server, &["controllers", "--identity", "c1", "--lease-seconds", "3"]);
    let client = server.client();
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let base = json!({"cmd": "serve", "cpus": 0.5, "mem": 64});
    let with = |instances: i32, constraint: Value| {
        let mut spec = base.clone();
        spec["instances"] = json!(instances);
        spec["constraints"] = json!([constraint]);
        spec
    };
    apply(&apps, "unique", with(8, json!(["hostname", "UNIQUE"]))).await;
    apply(&apps, "grouped", with(6, json!(["rack", "GROUP_BY", "2"]))).await;
    apply(&apps, "racked", with(4, json!(["rack", "IS", "r2"]))).await;
    app_until(&apps, "grouped", "grouped running", 60, |a| status(a).tasks_running == 6).await;
    app_until(&apps, "racked", "racked running", 60, |a| status(a).tasks_running == 4).await;
    let unique = app_until(&apps, "unique", "unique placed on every agent", 60, |a| status(a).tasks_running == 6).await;
    // Six agents for eight instances: six run, and the app says why the others wait.
    let scheduled = status(&unique).conditions.into_iter().find(|c| c.type_ == "Scheduled").unwrap();
    assert_eq!(scheduled.message.as_deref(), Some("UNIQUE hostname: 6 agents for 8 instances"), "{scheduled:?}");
    let agents: HashSet<String> = live(&tasks, "unique").await.into_iter().map(|t| t.spec.agent).collect();
    assert_eq!(agents.len(), 6);
    let mut per_rack: BTreeMap<String, usize> = BTreeMap::new();
    for t in live(&tasks, "grouped").await {
        *per_rack.entry(t.spec.agent[..2].to_owned()).or_default() += 1;
    }
    assert_eq!(per_rack, BTreeMap::from([("r1".to_owned(), 3), ("r2".to_owned(), 3)]));
    assert!(live(&tasks, "racked").await.iter().all(|t| t.spec.agent.starts_with("r2-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agents_task_is_replaced_and_the_surplus_killed_when_it_returns() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let agents: Vec<Proc> = (0..3)
        .map(|i| common::hollow(&server, 1, &format!("h{i}-"), "cpus:8;mem:8192;ports:[31000-31100]", ""))
        .collect();
    let _controllers = spawn(&server, &["controllers", "--identity", "c1", "--lease-seconds", "3"]);
    let client = server.client();
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let spec = json!({"instances": 2, "cmd": "serve", "cpus": 0.5, "mem": 64,
        "constraints": [["hostname", "UNIQUE"]],
        "unreachableStrategy": {"inactiveAfterSeconds": 2, "expungeAfterSeconds": 600}});
    apply(&apps, "web", spec).await;
    app_until(&apps, "web", "2 running", 60, |a| status(a).tasks_running == 2).await;
    let first = live(&tasks, "web").await;
    let cut_off = first[0].clone();
    let index: usize = cut_off.spec.agent[1..2].parse().unwrap();
    agents[index].signal("-STOP");
    // The allocator marks it Unreachable (3 s lease); 2 s later marathon replaces it on the free agent.
    let replacement = eventually(Duration::from_secs(30), "a replacement runs", || async {
        let l = live(&tasks, "web").await;
        let fresh: Vec<Task> =
            l.into_iter().filter(|t| !first.iter().any(|f| f.metadata.name == t.metadata.name)).collect();
        fresh.into_iter().find(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running))
    })
    .await;
    let cut = tasks.get(cut_off.metadata.name.as_deref().unwrap()).await.unwrap();
    assert_eq!(cut.status.unwrap().state, TaskState::Unreachable, "the old task is kept, not killed");
    assert_ne!(replacement.spec.agent, cut_off.spec.agent);
    // The agent returns: its task runs again, and the surplus (the youngest: the replacement) is killed.
    agents[index].signal("-CONT");
    eventually(Duration::from_secs(30), "back to 2, the replacement killed", || async {
        let l = live(&tasks, "web").await;
        let names: HashSet<String> = l.iter().filter_map(|t| t.metadata.name.clone()).collect();
        (l.len() == 2 && !names.contains(replacement.metadata.name.as_deref().unwrap())).then_some(())
    })
    .await;
    let back = tasks.get(cut_off.metadata.name.as_deref().unwrap()).await.unwrap();
    assert_eq!(back.status.unwrap().state, TaskState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marathon_leader_killed_mid_deployment_leaves_the_survivor_to_finish_without_extra_kills() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let _agents = common::hollow(&server, 4, "h-", "cpus:8;mem:8192;ports:[31000-31100]", "");
    let _allocator = controllers(&server, "alloc", "allocator");
    let mut replicas: BTreeMap<String, Proc> = BTreeMap::new();
    replicas.insert("m1".into(), controllers(&server, "m1", "marathon"));
    replicas.insert("m2".into(), controllers(&server, "m2", "marathon"));
    let client = server.client();
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let check = json!([{"protocol": "TCP", "gracePeriodSeconds": 1, "intervalSeconds": 1}]);
    let spec =
        |env: Value| json!({"instances": 6, "cmd": "serve", "cpus": 0.5, "mem": 64, "healthChecks": check, "env": env});
    apply(&apps, "web", spec(json!({}))).await;
    let app = app_until(&apps, "web", "6 healthy", 60, |a| status(a).tasks_healthy == 6).await;
    let v1 = status(&app).version.unwrap();
    let old: HashSet<String> = live(&tasks, "web").await.into_iter().filter_map(|t| t.metadata.name).collect();

    // The new version's tasks become healthy 8 s after they start: kill the leader while they are not yet.
    apply(&apps, "web", spec(json!({"HOLLOW_HEALTHY_AFTER": "8"}))).await;
    app_until(&apps, "web", "6 new tasks launched", 30, |a| status(a).deployment.as_ref().is_some_and(|d| d.new == 6))
        .await;
    let leases: Api<agora_schemas::Lease> = Api::namespaced(client.clone(), "agora-frameworks");
    let holder = leases.get("marathon").await.unwrap().spec.holder_identity.unwrap();
    replicas.get_mut(&holder).unwrap().signal("-KILL");
    let all = tasks.list(&ListParams::default().labels(&format!("{APP_LABEL}=web"))).await.unwrap().items;
    assert!(
        all.iter().all(|t| t.spec.kill_requested != Some(true)),
        "nothing was killed before the new tasks were healthy"
    );

    let app = app_until(&apps, "web", "the survivor finished the deployment", 60, |a| {
        let s = status(a);
        s.deployment.is_none() && s.tasks_healthy == 6 && s.version.as_deref() != Some(v1.as_str())
    })
    .await;
    let v2 = status(&app).version.unwrap();
    let all = tasks.list(&ListParams::default().labels(&format!("{APP_LABEL}=web"))).await.unwrap().items;
    let new: Vec<&Task> = all.iter().filter(|t| version_of(t) == v2).collect();
    assert_eq!(new.len(), 6, "no extra launches");
    assert!(new.iter().all(|t| t.spec.kill_requested != Some(true)), "no new task was killed");
    let killed_old = all.iter().filter(|t| old.contains(t.metadata.name.as_deref().unwrap_or_default())).count();
    assert!(all.iter().filter(|t| version_of(t) == v1).all(|t| t.spec.kill_requested == Some(true)));
    assert!(killed_old <= 6);
    let leader = leases.get("marathon").await.unwrap().spec.holder_identity.unwrap();
    assert_ne!(leader, holder, "the survivor leads");
}
