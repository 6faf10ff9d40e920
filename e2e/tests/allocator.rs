//! The allocator through real processes — `agora apiserver`, `agora controllers`, `agora agent --hollow` (and a real
//! agent for the example frameworks): DRF weights, agent and framework liveness, cordon, offer expiry and clean-up,
//! a failover of two allocator replicas under a checker of every offer and task, and both example frameworks.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_client::{Api, Client, ListParams, Patch, PatchParams, PostParams};
use agora_controllers::framework::{Framework, Launch, Scheduler};
use agora_controllers::runtime::leader::LeaseConfig;
use agora_controllers::runtime::watcher;
use agora_e2e::Proc;
use agora_e2e::{ApiserverProcess, built_binary, eventually};
use agora_schemas::{
    Agent, ConditionStatus, Event, Framework as FrameworkObject, Lease, LeaseSpec, ObjectMeta, Offer, OfferPhase, Task,
    TaskSpec, TaskState, TaskTemplate,
};
use common::{WorkDir, spawn, start_agent};
use futures::StreamExt;
use serde_json::json;

/// `agora controllers --only allocator` with 3 s leader leases and `flags`.
fn controllers(server: &ApiserverProcess, identity: &str, flags: &[&str]) -> Proc {
    let mut args = vec!["controllers", "--only", "allocator", "--identity", identity, "--lease-seconds", "3"];
    args.extend_from_slice(flags);
    spawn(server, &args)
}

/// A framework written by hand (no SDK): its Framework object and a lease renewed until the handle is aborted.
async fn raw_framework(client: &Client, name: &str, failover_seconds: u64) -> tokio::task::JoinHandle<()> {
    let frameworks: Api<FrameworkObject> = Api::all(client.clone());
    let intent = json!({"apiVersion": "agora/v1", "kind": "Framework", "metadata": {"name": name},
        "spec": {"failoverTimeoutSeconds": failover_seconds}});
    frameworks.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&intent)).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "agora-frameworks");
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let now = jiff::Timestamp::now();
            let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": 2, "renewTime": now}});
            if leases.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.is_err() {
                let spec = LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: Some(2),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                };
                let _ = leases.create(&PostParams::default(), &Lease::new(ObjectMeta::named(None, &name), spec)).await;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    })
}

fn phase(offer: &Offer) -> OfferPhase {
    offer.status.as_ref().map_or(OfferPhase::Outstanding, |s| s.phase)
}

fn reason(offer: &Offer) -> Option<&str> {
    offer.status.as_ref()?.reason.as_deref()
}

async fn offers(client: &Client, framework: &str) -> Vec<Offer> {
    let api: Api<Offer> = Api::all(client.clone());
    let params = ListParams::default().fields(&format!("spec.framework={framework}"));
    api.list(&params).await.map(|l| l.items).unwrap_or_default()
}

/// Waits for an Outstanding offer to `framework` on `agent` (any agent: "") other than `except`.
async fn outstanding(client: &Client, framework: &str, agent: &str, except: &[String]) -> Offer {
    eventually(Duration::from_secs(20), &format!("an offer to {framework} on {agent:?}"), || async {
        offers(client, framework).await.into_iter().find(|o| {
            phase(o) == OfferPhase::Outstanding
                && (agent.is_empty() || o.spec.agent == agent)
                && !except.contains(o.metadata.name.as_ref().unwrap())
        })
    })
    .await
}

fn task_template(name: &str, cpus: f64, run_seconds: Option<f64>) -> TaskTemplate {
    let mut metadata = ObjectMeta::named(Some("default"), name);
    if name.ends_with('-') {
        metadata = ObjectMeta {
            generate_name: Some(name.to_owned()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        };
    }
    if let Some(seconds) = run_seconds {
        metadata.annotations.insert("hollow.agora.dev/run-seconds".into(), seconds.to_string());
    }
    TaskTemplate { metadata, spec: TaskSpec { cmd: Some("true".into()), cpus, mem: 32.0, ..TaskSpec::default() } }
}

async fn accept(client: &Client, offer: &Offer, tasks: Vec<TaskTemplate>) -> Offer {
    let api: Api<Offer> = Api::all(client.clone());
    let acceptance = agora_schemas::OfferAcceptance { tasks, ..Default::default() };
    api.accept(offer.metadata.name.as_deref().unwrap(), &acceptance).await.expect("accept")
}

fn ready(agent: &Agent) -> Option<(ConditionStatus, String)> {
    let c = agent.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason.clone().unwrap_or_default()))
}

async fn events_with_reason(client: &Client, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::all(client.clone());
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason == reason)
        .collect()
}

/// Accepts every offer whole: as many tasks of `cpus` (and 32 MiB) as fit, each running `run_seconds` on a hollow
/// agent.
struct Greedy {
    name: String,
    cpus: f64,
    run_seconds: f64,
}

impl Scheduler for Greedy {
    fn offers(&mut self, offers: &[Arc<Offer>], _tasks: &[Arc<Task>]) -> Vec<Launch> {
        offers
            .iter()
            .map(|o| {
                let fit = ((o.spec.resources.cpus + 1e-9) / self.cpus).floor().min(o.spec.resources.mem / 32.0);
                let tasks = (0..fit as usize)
                    .map(|_| task_template(&format!("{}-", self.name), self.cpus, Some(self.run_seconds)))
                    .collect();
                Launch { offer: o.metadata.name.clone().unwrap(), tasks }
            })
            .collect()
    }

    fn wants_offers(&self, _tasks: &[Arc<Task>]) -> bool {
        true
    }
}

fn greedy(client: &Client, name: &str, weight: f64, cpus: f64, run_seconds: f64) -> tokio::task::JoinHandle<()> {
    let framework =
        Framework::new(client.clone(), name).weight(weight).lease(LeaseConfig::with_duration(Duration::from_secs(3)));
    let scheduler = Greedy { name: name.to_owned(), cpus, run_seconds };
    tokio::spawn(async move {
        framework.run(scheduler, std::future::pending()).await.expect("framework runs");
    })
}

/// Cores held by `framework`'s non-terminal tasks.
async fn running_cpus(client: &Client, framework: &str) -> f64 {
    let api: Api<Task> = Api::all(client.clone());
    let params = ListParams::default().fields(&format!("spec.framework={framework}"));
    let tasks = api.list(&params).await.map(|l| l.items).unwrap_or_default();
    tasks.iter().filter(|t| t.status.as_ref().is_none_or(|s| !s.state.is_terminal())).map(|t| t.spec.cpus).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_greedy_frameworks_with_weights_1_and_3_share_the_cluster_1_to_3() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let client = server.client();
    let _allocator = controllers(&server, "c1", &[]);
    let light = greedy(&client, "light", 1.0, 1.0, 2.0);
    let heavy = greedy(&client, "heavy", 3.0, 1.0, 2.0);
    let frameworks: Api<FrameworkObject> = Api::all(client.clone());
    eventually(Duration::from_secs(20), "both frameworks register", || async {
        (frameworks.list(&ListParams::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;
    // 8 agents × 4 cores; tasks of one core that end after 2 s, so the cluster turns over and DRF keeps deciding.
    let _agents = common::hollow(&server, 8, "w-", "cpus:4;mem:4096;disk:1000", "");
    let settled = std::sync::atomic::AtomicUsize::new(0);
    eventually(Duration::from_secs(60), "a 1:3 allocation, three times in a row", || async {
        let (l, h) = (running_cpus(&client, "light").await, running_cpus(&client, "heavy").await);
        let fair = (5.0..=11.0).contains(&l) && (21.0..=27.0).contains(&h) && l + h >= 28.0;
        let order = std::sync::atomic::Ordering::SeqCst;
        let settled = if fair {
            settled.fetch_add(1, order) + 1
        } else {
            settled.store(0, order);
            0
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        (settled >= 3).then_some(())
    })
    .await;
    // The allocator keeps each framework's status: its share and what it holds.
    let status = eventually(Duration::from_secs(10), "heavy's status", || async {
        frameworks.get("heavy").await.ok()?.status.filter(|s| s.dominant_share.is_some_and(|d| d > 0.0))
    })
    .await;
    let connected = status.conditions.iter().find(|c| c.type_ == "Connected").map(|c| c.status);
    assert_eq!(connected, Some(ConditionStatus::True));
    assert!(status.allocated.is_some_and(|a| a.cpus > 0.0));
    light.abort();
    heavy.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stops_heartbeating_is_unreachable_with_its_tasks_and_offers_then_ready_again() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let client = server.client();
    let _allocator = controllers(&server, "c1", &[]);
    let renewing = raw_framework(&client, "holder", 3600).await;
    let agent = common::hollow(&server, 1, "lone-", "cpus:2;mem:2048;disk:100", "");
    let first = outstanding(&client, "holder", "lone-0", &[]).await;
    let accepted = accept(&client, &first, vec![task_template("sleeper", 0.5, None)]).await;
    assert_eq!(accepted.status.unwrap().tasks, ["sleeper"]);
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    common::running(&tasks, "sleeper").await;
    // The rest of the agent is offered again, and left outstanding.
    let rest = outstanding(&client, "holder", "lone-0", &[first.metadata.name.clone().unwrap()]).await;
    assert!((rest.spec.resources.cpus - 1.5).abs() < 1e-6, "{:?}", rest.spec.resources);

    agent.signal("-STOP");
    let agents: Api<Agent> = Api::all(client.clone());
    eventually(Duration::from_secs(20), "the agent is Unreachable", || async {
        let agent = agents.get("lone-0").await.ok()?;
        (ready(&agent)? == (ConditionStatus::False, "Unreachable".to_owned())).then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "its task is Unreachable", || async {
        (tasks.get("sleeper").await.ok()?.status?.state == TaskState::Unreachable).then_some(())
    })
    .await;
    let offers_api: Api<Offer> = Api::all(client.clone());
    let rescinded = eventually(Duration::from_secs(10), "its offer is rescinded", || async {
        offers_api.get(rest.metadata.name.as_deref()?).await.ok().filter(|o| phase(o) == OfferPhase::Rescinded)
    })
    .await;
    assert_eq!(reason(&rescinded), Some("AgentUnreachable"));
    assert!(!events_with_reason(&client, "AgentUnreachable").await.is_empty(), "an Event says why");

    agent.signal("-CONT");
    eventually(Duration::from_secs(20), "the agent is Ready again", || async {
        (ready(&agents.get("lone-0").await.ok()?)?.0 == ConditionStatus::True).then_some(())
    })
    .await;
    common::running(&tasks, "sleeper").await;
    renewing.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_that_stops_renewing_loses_its_offers_and_after_its_failover_timeout_its_tasks() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let client = server.client();
    let _allocator = controllers(&server, "c1", &[]);
    let renewing = raw_framework(&client, "flaky", 4).await;
    let _agent = common::hollow(&server, 1, "f-", "cpus:2;mem:2048;disk:100", "");
    let first = outstanding(&client, "flaky", "f-0", &[]).await;
    accept(&client, &first, vec![task_template("orphan", 0.5, None)]).await;
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    common::running(&tasks, "orphan").await;
    let rest = outstanding(&client, "flaky", "f-0", &[first.metadata.name.clone().unwrap()]).await;

    renewing.abort();
    let offers_api: Api<Offer> = Api::all(client.clone());
    let rescinded = eventually(Duration::from_secs(10), "its offer is rescinded", || async {
        offers_api.get(rest.metadata.name.as_deref()?).await.ok().filter(|o| phase(o) == OfferPhase::Rescinded)
    })
    .await;
    assert_eq!(reason(&rescinded), Some("FrameworkDisconnected"));
    let frameworks: Api<FrameworkObject> = Api::all(client.clone());
    eventually(Duration::from_secs(10), "its status says it is not connected", || async {
        let status = frameworks.get("flaky").await.ok()?.status?;
        status.conditions.iter().find(|c| c.type_ == "Connected" && c.status == ConditionStatus::False).map(drop)
    })
    .await;
    // Still running within the failover timeout (4 s after the lease lapsed); killed after it.
    assert_ne!(tasks.get("orphan").await.unwrap().spec.kill_requested, Some(true));
    let killed = common::terminal(&tasks, "orphan").await;
    assert_eq!(killed.state, TaskState::Killed);
    assert!(!events_with_reason(&client, "FailedOver").await.is_empty(), "an Event says why");
    // No offers go to a disconnected framework.
    let outstanding_now =
        offers(&client, "flaky").await.into_iter().filter(|o| phase(o) == OfferPhase::Outstanding).count();
    assert_eq!(outstanding_now, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_expire_decided_ones_are_removed_and_a_cordoned_agent_is_offered_nothing() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let client = server.client();
    let flags = ["--offer-timeout-seconds", "2", "--keep-decided-seconds", "2"];
    let _allocator = controllers(&server, "c1", &flags);
    let renewing = raw_framework(&client, "idle", 3600).await;
    let _agents = common::hollow(&server, 2, "c-", "cpus:1;mem:1024;disk:100", "");
    // Never answered: it expires, and its agent is offered again.
    let first = outstanding(&client, "idle", "c-0", &[]).await;
    let first_name = first.metadata.name.clone().unwrap();
    let offers_api: Api<Offer> = Api::all(client.clone());
    let expired = eventually(Duration::from_secs(10), "the offer expires", || async {
        offers_api.get(&first_name).await.ok().filter(|o| phase(o) == OfferPhase::Rescinded)
    })
    .await;
    assert_eq!(reason(&expired), Some("Expired"));
    outstanding(&client, "idle", "c-0", std::slice::from_ref(&first_name)).await;
    // Decided, with no filter: deleted a little later.
    eventually(Duration::from_secs(10), "the expired offer is deleted", || async {
        offers_api.get_opt(&first_name).await.ok()?.is_none().then_some(())
    })
    .await;

    // Cordon c-1: its outstanding offer is rescinded and no new one is made while c-0 keeps being offered.
    let agents: Api<Agent> = Api::all(client.clone());
    let on_c1 = outstanding(&client, "idle", "c-1", &[]).await;
    agents
        .patch("c-1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}})))
        .await
        .unwrap();
    let cordoned = eventually(Duration::from_secs(10), "c-1's offer is rescinded", || async {
        offers_api.get(on_c1.metadata.name.as_deref()?).await.ok().filter(|o| phase(o) == OfferPhase::Rescinded)
    })
    .await;
    assert_eq!(reason(&cordoned), Some("AgentUnschedulable"));
    let since = cordoned.status.as_ref().and_then(|s| s.decided_at).unwrap();
    // Two more expiry cycles on c-0.
    let mut seen = vec![];
    for _ in 0..2 {
        let offer = outstanding(&client, "idle", "c-0", &seen).await;
        seen.push(offer.metadata.name.clone().unwrap());
        eventually(Duration::from_secs(10), "it expires", || async {
            offers_api
                .get_opt(offer.metadata.name.as_deref()?)
                .await
                .ok()?
                .filter(|o| phase(o) == OfferPhase::Outstanding)
                .is_none()
                .then_some(())
        })
        .await;
    }
    let made_for_c1 = offers(&client, "idle")
        .await
        .into_iter()
        .filter(|o| o.spec.agent == "c-1" && o.metadata.creation_timestamp.is_some_and(|t| t > since));
    assert_eq!(made_for_c1.count(), 0, "a cordoned agent gets no offers");
    renewing.abort();
}

/// One change seen by the checker, in the store's revision order.
enum Change {
    Offer(Arc<Offer>),
    Task(Arc<Task>),
}

fn revision(meta: &ObjectMeta) -> u64 {
    meta.resource_version.as_deref().and_then(|v| v.parse().ok()).expect("numeric resourceVersions")
}

fn record<K>(
    api: Api<K>,
    changes: &Arc<Mutex<Vec<(u64, Change)>>>,
    wrap: fn(Arc<K>) -> Change,
) -> tokio::task::JoinHandle<()>
where
    K: agora_schemas::Resource + Clone + Send + Sync + 'static,
{
    let changes = changes.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) = event {
                let rv = revision(object.metadata());
                changes.lock().unwrap().push((rv, wrap(Arc::new(object))));
            }
        }
    })
}

/// Replays every change in revision order and checks that no agent's tasks and outstanding offers ever exceed it,
/// and that no offer is used more than once. Returns how many offers and tasks it saw.
fn check(changes: &mut [(u64, Change)], totals: &HashMap<String, f64>) -> (usize, usize) {
    changes.sort_by_key(|(rv, _)| *rv);
    let mut offers: HashMap<String, Arc<Offer>> = HashMap::new();
    let mut tasks: HashMap<String, Arc<Task>> = HashMap::new();
    let mut accepted_at: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for (rv, change) in changes.iter() {
        let agent = match change {
            Change::Offer(offer) => {
                let name = offer.metadata.name.clone().unwrap();
                if let Some(before) = offers.get(&name) {
                    let (was, now) = (phase(before), phase(offer));
                    assert!(
                        was == OfferPhase::Outstanding || was == now,
                        "offer {name} went {was:?} → {now:?} at {rv}"
                    );
                }
                offers.insert(name, offer.clone());
                offer.spec.agent.clone()
            }
            Change::Task(task) => {
                if let Some(offer) = &task.spec.offer
                    && !tasks.contains_key(task.metadata.name.as_deref().unwrap())
                {
                    accepted_at.entry(offer.clone()).or_default().insert(*rv);
                }
                tasks.insert(task.metadata.name.clone().unwrap(), task.clone());
                task.spec.agent.clone()
            }
        };
        let used_offers: BTreeSet<&str> = tasks.values().filter_map(|t| t.spec.offer.as_deref()).collect();
        let held_by_tasks: f64 = tasks
            .values()
            .filter(|t| t.spec.agent == agent && t.status.as_ref().is_none_or(|s| !s.state.is_terminal()))
            .map(|t| t.spec.cpus)
            .sum();
        let held_by_offers: f64 = offers
            .values()
            .filter(|o| o.spec.agent == agent && phase(o) == OfferPhase::Outstanding)
            .filter(|o| !used_offers.contains(o.metadata.name.as_deref().unwrap()))
            .map(|o| o.spec.resources.cpus)
            .sum();
        let total = totals[&agent];
        assert!(
            held_by_tasks + held_by_offers <= total + 1e-6,
            "at revision {rv}, agent {agent} holds {held_by_tasks} cpus in tasks and {held_by_offers} in offers, of {total}"
        );
    }
    for (offer, revisions) in &accepted_at {
        assert_eq!(revisions.len(), 1, "offer {offer} was used by acceptances at {revisions:?}");
    }
    (offers.len(), tasks.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_allocator_replicas_never_overcommit_an_agent_when_the_leader_is_killed() {
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let client = server.client();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let watches = [
        record::<Offer>(Api::all(client.clone()), &changes, Change::Offer),
        record::<Task>(Api::all(client.clone()), &changes, Change::Task),
    ];
    let mut replicas =
        BTreeMap::from([("c1", controllers(&server, "c1", &[])), ("c2", controllers(&server, "c2", &[]))]);
    let frameworks = [greedy(&client, "g1", 1.0, 0.5, 1.0), greedy(&client, "g2", 2.0, 0.5, 1.0)];
    let _agents = common::hollow(&server, 10, "s-", "cpus:2;mem:2048;disk:100", "");
    let tasks: Api<Task> = Api::all(client.clone());
    let count = || async { tasks.list(&ListParams::default()).await.map(|l| l.items.len()).unwrap_or(0) };
    eventually(Duration::from_secs(30), "60 tasks placed", || async { (count().await >= 60).then_some(()) }).await;
    // Kill the leader in the middle of its work.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "agora-system");
    let leader = leases.get("agora-allocator").await.unwrap().spec.holder_identity.unwrap();
    let killed = replicas.remove(leader.as_str()).expect("the leader is one of ours");
    drop(killed);
    let before = count().await;
    eventually(Duration::from_secs(40), "the other replica takes over and places 60 more", || async {
        (count().await >= before + 60).then_some(())
    })
    .await;
    let successor = leases.get("agora-allocator").await.unwrap().spec.holder_identity.unwrap();
    assert_ne!(successor, leader);
    for handle in frameworks.iter().chain(&watches) {
        handle.abort();
    }
    let totals: HashMap<String, f64> = (0..10).map(|i| (format!("s-{i}"), 2.0)).collect();
    let mut changes = std::mem::take(&mut *changes.lock().unwrap());
    let (offers, tasks) = check(&mut changes, &totals);
    assert!(offers >= 20 && tasks >= 120, "checked {offers} offers and {tasks} tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_example_frameworks_run_five_tasks_on_a_real_agent() {
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, _dir, _client) = start_agent(&server, &work).await;
    let _allocator = controllers(&server, "c1", &[]);
    let rust = tokio::task::spawn_blocking({
        let kubeconfig = server.kubeconfig();
        move || {
            Command::new(built_binary("examples/five_tasks"))
                .env("KUBECONFIG", kubeconfig)
                .env("AGORA_LOG", "warn")
                .output()
                .unwrap()
        }
    });
    let python = tokio::task::spawn_blocking({
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../controllers/examples/python/five_tasks.py");
        let (url, token, ca) = (server.url(), server.token_file(), server.data_dir().join("pki/ca.crt"));
        move || {
            Command::new("python3")
                .arg(script)
                .args(["--server", &url, "--token-file"])
                .arg(token)
                .arg("--ca-file")
                .arg(ca)
                .output()
                .unwrap()
        }
    });
    for (which, output) in [("rust", rust.await.unwrap()), ("python", python.await.unwrap())] {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{which}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("5/5 tasks finished"), "{which}: {stdout}");
        assert_eq!(stdout.matches(": Finished on a1").count(), 5, "{which}: {stdout}");
    }
    // Both unregistered.
    let frameworks: Api<FrameworkObject> = Api::all(server.client());
    assert!(frameworks.list(&ListParams::default()).await.unwrap().items.is_empty());
}
