//! The controller runtime against a real `agora apiserver` process on the embedded store: the watcher through
//! apiserver restarts and a forced 410; the controller's work queue under a burst of changes, with owned objects,
//! and with failing reconciles; the finalizer helper; leader election between two replicas of the example controller,
//! one of them killed with SIGKILL.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_client::{Api, Client, Config, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use agora_controllers::runtime::backoff::BackoffConfig;
use agora_controllers::runtime::controller::Config as ControllerConfig;
use agora_controllers::runtime::finalizer::{self, finalizer};
use agora_controllers::runtime::watcher::{self, Event};
use agora_controllers::runtime::{Action, Controller, ObjectRef, reflector};
use agora_e2e::{ApiserverProcess, eventually};
use agora_schemas::{App, Event as EventObject, Lease, Task};
use futures::StreamExt;
use serde_json::json;
use tokio::task::block_in_place;
use tokio::time::Instant;

fn client(server: &ApiserverProcess) -> Client {
    Client::new(Config::new(server.url()).connect_timeout(Duration::from_secs(1))).unwrap()
}

fn app(name: &str) -> App {
    serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": name},
                                  "spec": {"cmd": "sleep 100"}}))
    .unwrap()
}

async fn set_instances(apps: &Api<App>, name: &str, instances: i32) {
    apps.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"instances": instances}}))).await.unwrap();
}

/// Waits (up to `limit`) until `check` holds, looking every 20 ms at local state.
async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_resumes_after_an_apiserver_restart_and_relists_after_a_410() {
    let mut server = block_in_place(ApiserverProcess::embedded);
    let apps: Api<App> = Api::namespaced(client(&server), "default");
    for name in ["a", "b", "c"] {
        apps.create(&PostParams::default(), &app(name)).await.unwrap();
    }

    // A slow first retry (3 s, no jitter) keeps the watcher away while the test writes behind its back below.
    let backoff = BackoffConfig { initial: Duration::from_secs(3), ..BackoffConfig::WATCHER }.without_jitter();
    let (store, writer) = reflector::store::<App>();
    let log: Arc<Mutex<Vec<Event<App>>>> = Arc::default();
    let recorded = log.clone();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let failures = errors.clone();
    let watching = tokio::spawn(
        reflector::reflector(writer, watcher::watcher(apps.clone(), watcher::Config::default().backoff(backoff)))
            .for_each(move |event| {
                match event {
                    Ok(event) => recorded.lock().unwrap().push(event),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                async {}
            }),
    );
    assert!(store.wait_until_ready().await);
    assert_eq!(store.len(), 3);
    let key = |name: &str| ObjectRef::new(Some("default"), name);
    let instances = |name: &str| store.get(&key(name)).and_then(|a| a.spec.instances);
    let inits = || log.lock().unwrap().iter().filter(|e| matches!(e, Event::Init)).count();

    set_instances(&apps, "a", 2).await;
    until(Duration::from_secs(10), "the change of a is cached", || instances("a") == Some(2)).await;

    // Restart (SIGKILL) with nothing written until the watcher is back: the watch resumes from its revision, no
    // relist.
    block_in_place(|| server.restart());
    until(Duration::from_secs(30), "the watcher is back", || server.open_watches("apps") == 1).await;
    set_instances(&apps, "b", 2).await;
    until(Duration::from_secs(30), "the change of b after the restart is cached", || instances("b") == Some(2)).await;
    assert_eq!(inits(), 1, "a resumed watch needs no new list; errors: {:?}", errors.lock().unwrap());

    // Restart, write before the watcher is back, and compact the store past those writes (the apiserver stopped
    // meanwhile): resuming from the old revision is a 410, and the watcher lists again — and the cache drops `c`.
    block_in_place(|| server.restart());
    apps.delete("c", &DeleteParams::default()).await.unwrap();
    apps.create(&PostParams::default(), &app("d")).await.unwrap();
    set_instances(&apps, "a", 3).await;
    block_in_place(|| server.kill());
    let data =
        agora_apiserver::store::EmbeddedStore::open(agora_apiserver::store::EmbeddedConfig::new(server.data_dir()))
            .await
            .unwrap();
    use agora_apiserver::store::Store as _;
    data.compact(data.current_revision().await.unwrap()).await.unwrap();
    data.close().await.unwrap();
    block_in_place(|| server.start_again());
    until(Duration::from_secs(30), "the cache matches the server after the relist", || {
        let mut names: Vec<String> = store.state().iter().filter_map(|a| a.metadata.name.clone()).collect();
        names.sort();
        names == ["a", "b", "d"] && instances("a") == Some(3)
    })
    .await;
    assert_eq!(inits(), 2, "the 410 made exactly one relist");

    // Every object's final state is in the cache exactly as the server has it, and no watch event was delivered
    // twice.
    for listed in apps.list(&ListParams::default()).await.unwrap().items {
        let cached = store.get(&ObjectRef::from_object(&listed)).unwrap();
        assert_eq!(*cached, listed);
    }
    let mut applied = HashSet::new();
    for event in log.lock().unwrap().iter() {
        if let Event::Apply(o) = event {
            let seen = (o.metadata.name.clone(), o.metadata.resource_version.clone());
            assert!(applied.insert(seen.clone()), "delivered twice: {seen:?}");
        }
    }
    watching.abort();
}

/// What the reconcilers below saw.
#[derive(Default)]
struct Seen {
    /// (object, spec.instances) per reconcile, in order.
    reconciles: Mutex<Vec<(String, Option<i32>)>>,
    running: Mutex<HashSet<String>>,
    overlaps: AtomicUsize,
}

impl Seen {
    fn of(&self, name: &str) -> Vec<Option<i32>> {
        self.reconciles.lock().unwrap().iter().filter(|(n, _)| n == name).map(|(_, i)| *i).collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TestError(String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_makes_few_reconciles_never_concurrent_and_the_last_sees_the_final_state() {
    let server = block_in_place(ApiserverProcess::embedded);
    let client = client(&server);
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    for name in ["burst", "other-1", "other-2"] {
        apps.create(&PostParams::default(), &app(name)).await.unwrap();
    }
    let seen = Arc::new(Seen::default());
    let reconcile = |app: Arc<App>, seen: Arc<Seen>| async move {
        let name = app.metadata.name.clone().unwrap();
        if !seen.running.lock().unwrap().insert(name.clone()) {
            seen.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        // Real reconcilers call the apiserver; this one takes as long as a few calls.
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.reconciles.lock().unwrap().push((name.clone(), app.spec.instances));
        seen.running.lock().unwrap().remove(&name);
        Ok::<_, TestError>(Action::await_change())
    };
    let controller = Controller::new(Api::<App>::all(client), watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(4).debounce(Duration::from_millis(100)))
        .run(reconcile, |_, _, _| Action::await_change(), seen.clone());
    let running = tokio::spawn(controller.for_each(|_| async {}));
    until(Duration::from_secs(10), "every app is reconciled once", || seen.reconciles.lock().unwrap().len() == 3).await;

    let burst = Instant::now();
    for instances in 1..=100 {
        set_instances(&apps, "burst", instances).await;
    }
    let burst = burst.elapsed();
    until(Duration::from_secs(10), "a reconcile sees the final state", || seen.of("burst").last() == Some(&Some(100)))
        .await;
    // Anything still queued would run within a reconcile's time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = seen.of("burst");
    assert_eq!(runs.last(), Some(&Some(100)), "the last reconcile saw the final state: {runs:?}");
    // Changes coalesce: a change waits 100 ms in the queue, and one arriving while the object is reconciled waits
    // for that reconcile; so however fast or slow the 100 writes were, there is at most one reconcile per 100 ms of
    // burst, and one after it (as the two cores are shared, how long the burst takes varies, not this bound).
    let bound = burst.as_millis() as usize / 100 + 2;
    let made = runs.len() - 1;
    assert!(made <= bound.min(99), "100 changes in {burst:?} made {made} reconciles (at most {bound}): {runs:?}");
    assert_eq!(seen.overlaps.load(Ordering::SeqCst), 0, "an object was reconciled twice at once");
    assert_eq!(seen.of("other-1").len(), 1, "untouched objects are not reconciled again");
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_objects_trigger_their_owner_and_status_only_changes_can_be_skipped() {
    let server = block_in_place(ApiserverProcess::embedded);
    let client = client(&server);
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    let parent = apps.create(&PostParams::default(), &app("parent")).await.unwrap();
    let seen = Arc::new(Seen::default());
    let reconcile = |app: Arc<App>, seen: Arc<Seen>| async move {
        seen.reconciles.lock().unwrap().push((app.metadata.name.clone().unwrap(), app.spec.instances));
        Ok::<_, TestError>(Action::await_change())
    };
    let controller = Controller::new(Api::<App>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Task>::all(client.clone()), watcher::Config::default())
        .with_config(ControllerConfig::default().skip_status_changes())
        .run(reconcile, |_, _, _| Action::await_change(), seen.clone());
    let running = tokio::spawn(controller.for_each(|_| async {}));
    until(Duration::from_secs(10), "the parent is reconciled", || seen.of("parent").len() == 1).await;

    // A status-only change is skipped; a spec change is not.
    let status = Patch::Merge(json!({"status": {"instances": 1, "tasksRunning": 1}}));
    apps.patch_status("parent", &PatchParams::default(), &status).await.unwrap();
    set_instances(&apps, "parent", 2).await;
    until(Duration::from_secs(10), "the spec change is reconciled", || seen.of("parent").len() == 2).await;
    assert_eq!(seen.of("parent"), [Some(1), Some(2)], "the status change made no reconcile");

    // A Task owned by the App triggers it.
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let task: Task = serde_json::from_value(json!({
        "apiVersion": "agora/v1", "kind": "Task",
        "metadata": {"name": "parent-1", "ownerReferences": [{"apiVersion": "agora/v1", "kind": "App", "name": "parent",
                                                               "uid": parent.metadata.uid, "controller": true}]},
        "spec": {"agent": "n1", "framework": "marathon", "cmd": "sleep 1", "cpus": 0.1, "mem": 16},
    }))
    .unwrap();
    tasks.create(&PostParams::default(), &task).await.unwrap();
    until(Duration::from_secs(10), "the owned task triggers its app", || seen.of("parent").len() == 3).await;
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reconciles_back_off_exponentially_and_a_success_resets_the_backoff() {
    let server = block_in_place(ApiserverProcess::embedded);
    let client = client(&server);
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &app("flaky")).await.unwrap();

    struct Flaky {
        failures_left: AtomicI32,
        attempts: Mutex<Vec<Instant>>,
    }
    let ctx = Arc::new(Flaky { failures_left: AtomicI32::new(4), attempts: Mutex::default() });
    let reconcile = |_app: Arc<App>, ctx: Arc<Flaky>| async move {
        ctx.attempts.lock().unwrap().push(Instant::now());
        if ctx.failures_left.fetch_sub(1, Ordering::SeqCst) > 0 {
            return Err(TestError("not yet".into()));
        }
        Ok(Action::await_change())
    };
    let backoff = BackoffConfig { initial: Duration::from_millis(200), ..BackoffConfig::RECONCILE }.without_jitter();
    let controller = Controller::new(Api::<App>::all(client), watcher::Config::default())
        .with_config(ControllerConfig::default().backoff(backoff))
        // The policy asks for an immediate retry; the controller's backoff still applies.
        .run(reconcile, |_, _, _| Action::requeue(Duration::ZERO), ctx.clone());
    let errors = Arc::new(AtomicUsize::new(0));
    let counted = errors.clone();
    let running = tokio::spawn(controller.for_each(move |result| {
        if result.is_err() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        async {}
    }));
    let attempts = || ctx.attempts.lock().unwrap().clone();
    until(Duration::from_secs(20), "four failures and a success", || attempts().len() == 5).await;
    let at = attempts();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let backoff = Duration::from_millis(200 << i);
        assert!(*gap >= backoff, "retry {i} came after {gap:?}, before its backoff of {backoff:?}: {gaps:?}");
    }
    assert_eq!(errors.load(Ordering::SeqCst), 4, "each failure is reported on the stream");

    // After the success, a new failure starts again from the initial delay (not 3.2 s).
    ctx.failures_left.store(1, Ordering::SeqCst);
    set_instances(&apps, "flaky", 2).await;
    until(Duration::from_secs(20), "a failure and its retry", || attempts().len() == 7).await;
    let at = attempts();
    let gap = at[6] - at[5];
    assert!(gap >= Duration::from_millis(200) && gap < Duration::from_millis(1600), "retry after reset: {gap:?}");
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalizer_helper_runs_cleanup_exactly_once_before_the_object_goes() {
    let server = block_in_place(ApiserverProcess::embedded);
    let client = client(&server);
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &app("fin")).await.unwrap();

    #[derive(Default)]
    struct Counts {
        applies: AtomicUsize,
        cleanups: AtomicUsize,
    }
    const FINALIZER: &str = "test.agora.dev/cleanup";
    let counts = Arc::new(Counts::default());
    let api = apps.clone();
    let reconcile = move |app: Arc<App>, counts: Arc<Counts>| {
        let api = api.clone();
        async move {
            finalizer(&api, FINALIZER, app, |event| async move {
                match event {
                    finalizer::Event::Apply(_) => counts.applies.fetch_add(1, Ordering::SeqCst),
                    finalizer::Event::Cleanup(_) => counts.cleanups.fetch_add(1, Ordering::SeqCst),
                };
                Ok::<_, TestError>(Action::await_change())
            })
            .await
        }
    };
    let controller = Controller::new(Api::<App>::all(client), watcher::Config::default()).run(
        reconcile,
        |_, _, _| Action::requeue(Duration::from_millis(100)),
        counts.clone(),
    );
    let running = tokio::spawn(controller.for_each(|_| async {}));

    eventually(Duration::from_secs(10), "the finalizer is added", || async {
        apps.get("fin").await.ok().filter(|a| a.metadata.finalizers == [FINALIZER])
    })
    .await;
    until(Duration::from_secs(10), "the object is reconciled with its finalizer", || {
        counts.applies.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert_eq!(counts.cleanups.load(Ordering::SeqCst), 0);

    let marked = apps.delete("fin", &DeleteParams::default()).await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some(), "the finalizer holds the object");
    eventually(Duration::from_secs(10), "the object is gone", || async {
        apps.get_opt("fin").await.unwrap().is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counts.cleanups.load(Ordering::SeqCst), 1, "cleanup ran exactly once");
    running.abort();
}

/// A replica of `examples/app_health_label`.
struct Replica {
    child: Child,
    identity: &'static str,
}

impl Replica {
    fn start(server: &ApiserverProcess, identity: &'static str, log: &std::path::Path) -> Self {
        let log = std::fs::File::create(log.join(format!("{identity}.log"))).unwrap();
        let child = Command::new(agora_e2e::built_binary("examples/app_health_label"))
            .args(["--server", &server.url(), "--identity", identity, "--lease-seconds", "3"])
            .env("AGORA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the example controller");
        Self { child, identity }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.child.wait().unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn health_label(apps: &Api<App>, want: &str) {
    eventually(Duration::from_secs(15), &format!("the label says {want}"), || async {
        let app = apps.get("web").await.ok()?;
        (app.metadata.labels.get("example.agora.dev/health").map(String::as_str) == Some(want)).then_some(())
    })
    .await;
}

/// The reporters of the events about `web`, by host.
async fn event_hosts(client: &Client) -> HashMap<String, usize> {
    let events: Api<EventObject> = Api::namespaced(client.clone(), "default");
    let mut hosts = HashMap::new();
    for event in events.list(&ListParams::default().fields("involvedObject.name=web")).await.unwrap().items {
        let host = event.source.and_then(|s| s.host).unwrap_or_default();
        *hosts.entry(host).or_default() += 1;
    }
    hosts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_the_survivor_takes_over_within_the_lease_after_sigkill() {
    let server = block_in_place(ApiserverProcess::embedded);
    let client = client(&server);
    let logs = tempfile::tempdir().unwrap();
    let mut replicas =
        vec![Replica::start(&server, "replica-a", logs.path()), Replica::start(&server, "replica-b", logs.path())];
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease = eventually(Duration::from_secs(20), "a replica leads", || async {
        leases.get_opt("app-health-label").await.unwrap().filter(|l| l.spec.holder_identity.is_some())
    })
    .await;
    let leader = lease.spec.holder_identity.clone().unwrap();
    let (leading, following): (Vec<Replica>, Vec<Replica>) = replicas.drain(..).partition(|r| r.identity == leader);
    let (mut leading, mut following) = (leading.into_iter().next().unwrap(), following.into_iter().next().unwrap());

    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &app("web")).await.unwrap();
    health_label(&apps, "Unknown").await;

    // Several renewals later the same replica leads, the lease never changed hands, and only the leader acted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = leases.get("app-health-label").await.unwrap();
    assert_eq!(still.spec.holder_identity.as_deref(), Some(leader.as_str()));
    assert_eq!(still.spec.lease_transitions, lease.spec.lease_transitions);
    assert!(still.spec.renew_time > lease.spec.renew_time, "the leader renews");
    assert_eq!(event_hosts(&client).await, HashMap::from([(leader.clone(), 1)]));
    let follower_log = std::fs::read_to_string(logs.path().join(format!("{}.log", following.identity))).unwrap();
    assert!(!follower_log.contains("became leader"), "{follower_log}");

    // SIGKILL the leader: the survivor, which watches the lease, takes it 3 s after the last renewal.
    let killed_at = Instant::now();
    let _ = leading.child.kill();
    let _ = leading.child.wait();
    let taken = eventually(Duration::from_secs(15), "the survivor leads", || async {
        leases
            .get("app-health-label")
            .await
            .ok()
            .filter(|l| l.spec.holder_identity.as_deref() == Some(following.identity))
    })
    .await;
    let takeover = killed_at.elapsed();
    // Within the lease duration of the kill, give or take a second of scheduling on a busy machine.
    assert!(takeover <= Duration::from_secs(3 + 1), "takeover took {takeover:?} for a 3 s lease");
    assert_eq!(taken.spec.lease_transitions, Some(lease.spec.lease_transitions.unwrap_or(0) + 1));

    // The new leader acts.
    let status = Patch::Merge(json!({"status": {"instances": 1, "tasksRunning": 1, "tasksHealthy": 1}}));
    apps.patch_status("web", &PatchParams::default(), &status).await.unwrap();
    health_label(&apps, "Healthy").await;
    // Its Event is published after the label it reports (asynchronously): wait for it, then count.
    eventually(Duration::from_secs(10), "the new leader's Event", || async {
        event_hosts(&client).await.get(following.identity).map(drop)
    })
    .await;
    let hosts = event_hosts(&client).await;
    assert_eq!(hosts.get(following.identity), Some(&1), "{hosts:?}");

    // SIGTERM: a graceful stop that releases the lease at once.
    let exit = following.terminate();
    assert!(exit.success(), "{exit:?}");
    let released = leases.get("app-health-label").await.unwrap();
    assert_eq!(released.spec.holder_identity.as_deref(), Some(""), "the lease is released on a clean exit");
    println!("takeover after SIGKILL: {takeover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_counts_repeated_events_instead_of_duplicating_them() {
    use agora_controllers::runtime::events::{Record, Recorder, Reporter, reference};

    let server = block_in_place(ApiserverProcess::embedded);
    let client = client(&server);
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    let web = apps.create(&PostParams::default(), &app("web")).await.unwrap();
    let recorder = Recorder::new(client.clone(), Reporter::new("tester", Some("replica-1")));
    for _ in 0..3 {
        recorder.publish(&reference(&web), Record::warning("BackOff", "restarting failed task")).await.unwrap();
    }
    recorder.publish(&reference(&web), Record::normal("Scaled", "scaled to 2")).await.unwrap();

    let events: Api<EventObject> = Api::namespaced(client, "default");
    let mut listed = events.list(&ListParams::default().fields("involvedObject.name=web")).await.unwrap().items;
    listed.sort_by(|a, b| a.reason.cmp(&b.reason));
    let summary: Vec<(String, Option<i32>)> = listed.iter().map(|e| (e.reason.clone(), e.count)).collect();
    assert_eq!(summary, [("BackOff".to_owned(), Some(3)), ("Scaled".to_owned(), Some(1))]);
    let backoff = &listed[0];
    assert_eq!(backoff.involved_object.uid, web.metadata.uid);
    assert_eq!(backoff.type_, Some(agora_schemas::EventType::Warning));
    assert!(backoff.last_timestamp > backoff.first_timestamp, "the repeat moved lastTimestamp");
    assert_eq!(backoff.source.as_ref().and_then(|s| s.component.as_deref()), Some("tester"));

    // An event that was deleted meanwhile (events expire) is recreated, not lost.
    events.delete(backoff.metadata.name.as_deref().unwrap(), &DeleteParams::default()).await.unwrap();
    recorder.publish(&reference(&web), Record::warning("BackOff", "restarting failed task")).await.unwrap();
    let again = events.list(&ListParams::default().fields("reason=BackOff")).await.unwrap().items;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].count, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_reconciled_until_every_watch_has_listed() {
    use agora_controllers::runtime::controller::Error as ControllerError;

    let server = block_in_place(ApiserverProcess::embedded);
    let client = client(&server);
    let apps: Api<App> = Api::namespaced(client.clone(), "default");
    apps.create(&PostParams::default(), &app("web")).await.unwrap();
    let seen = Arc::new(Seen::default());
    let reconcile = |app: Arc<App>, seen: Arc<Seen>| async move {
        seen.reconciles.lock().unwrap().push((app.metadata.name.clone().unwrap(), app.spec.instances));
        Ok::<_, TestError>(Action::await_change())
    };
    // The Task watch can never list (its selector is malformed), so the controller's picture is never complete.
    let broken = watcher::Config::default().labels("tier in (web");
    let mut results = Controller::new(Api::<App>::all(client.clone()), watcher::Config::default())
        .watches(Api::<Task>::all(client), broken, |_task: &Task| Vec::<ObjectRef>::new())
        .run(reconcile, |_, _, _| Action::await_change(), seen.clone())
        .boxed();
    match results.next().await {
        Some(Err(ControllerError::Watch { kind, source })) => {
            assert_eq!(kind, "tasks");
            assert!(source.to_string().contains("400"), "{source}");
        }
        other => panic!("expected the Task watch's failure, got {other:?}"),
    }
    // The Apps were listed long ago; still nothing may act on them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(seen.reconciles.lock().unwrap().is_empty(), "reconciled before every cache was ready");
}
