//! The pure parts of marathon, tested as functions: the plan (scale, kill selection, backoff, the rolling upgrade,
//! health kills, unreachable timing, history, explanations) and placement (every constraint operator).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agora_schemas::{
    APP_LABEL, APP_VERSION_LABEL, App, AppSpec, AppStatus, Constraint, HealthCheck, KillSelection, ObjectMeta, Offer,
    Task, TaskSpec, TaskState, TaskStatus, UpgradeStrategy,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::offers::{Need, place, task_template};
use super::plan::{
    Agents, Context, KILL_REASON_ANNOTATION, KillReason, OfferSummary, Plan, capacity, dependencies, launch_delay, plan,
};
use crate::framework::placement::Spread;

fn now() -> Timestamp {
    "2026-12-01T12:00:00Z".parse().unwrap()
}

fn app(instances: i32, cmd: &str) -> App {
    let spec = AppSpec { instances: Some(instances), cmd: Some(cmd.to_owned()), ..AppSpec::default() };
    let mut meta = ObjectMeta::named(Some("default"), "web");
    meta.uid = Some("uid-web".to_owned());
    meta.generation = Some(1);
    let mut app = App::new(meta, spec);
    app.spec.apply_defaults();
    app
}

fn with_checks(mut app: App) -> App {
    let mut check = HealthCheck { path: Some("/health".into()), ..HealthCheck::default() };
    check.apply_defaults();
    app.spec.health_checks = vec![check];
    app
}

fn strategy(mut app: App, min: f64, over: f64) -> App {
    app.spec.upgrade_strategy =
        Some(UpgradeStrategy { minimum_health_capacity: Some(min), maximum_over_capacity: Some(over) });
    app
}

/// A task of `app` at `version`, started `age` seconds before now.
fn task(app: &App, name: &str, version: &str, state: TaskState, healthy: Option<bool>, age: i64) -> Arc<Task> {
    let mut meta = ObjectMeta::named(Some("default"), name);
    meta.labels.insert(APP_LABEL.into(), "web".into());
    meta.labels.insert(APP_VERSION_LABEL.into(), version.into());
    meta.creation_timestamp = Some(now() - SignedDuration::from_secs(age));
    let spec = TaskSpec {
        agent: format!("agent-{name}"),
        framework: "marathon".into(),
        health_checks: app.spec.health_checks.clone(),
        cpus: 1.0,
        mem: 128.0,
        ..TaskSpec::default()
    };
    let mut status = TaskStatus::new(state);
    status.started_at = Some(now() - SignedDuration::from_secs(age));
    status.healthy = healthy;
    if healthy == Some(false) {
        status.health_check_failures = 3;
    }
    if state.is_terminal() {
        status.finished_at = Some(now() - SignedDuration::from_secs(age / 2));
    }
    let mut t = Task::new(meta, spec);
    t.status = Some(status);
    Arc::new(t)
}

fn ctx(agents: &Agents) -> Context<'_> {
    Context { now: now(), version: None, agents, dependencies: Ok(()), health_kill_budget: 100, offers: None }
}

fn decide(app: &App, tasks: &[Arc<Task>]) -> Plan {
    plan(app, tasks, &ctx(&Agents::default()))
}

fn killed(p: &Plan) -> Vec<&str> {
    let mut names: Vec<&str> = p.kills.iter().map(|k| k.task.as_str()).collect();
    names.sort_unstable();
    names
}

fn running(app: &App, prefix: &str, version: &str, n: usize, healthy: Option<bool>) -> Vec<Arc<Task>> {
    (0..n)
        .map(|i| task(app, &format!("{prefix}{i}"), version, TaskState::Running, healthy, 100 + i as i64 * 10))
        .collect()
}

#[test]
fn scaling_launches_what_is_missing_and_kills_by_the_kill_selection() {
    let a = app(3, "serve");
    let v = a.spec.version();
    let p = decide(&a, &[]);
    assert_eq!((p.launch, p.kills.len()), (3, 0));
    assert_eq!(p.status.instances, 3);
    assert!(p.status.deployment.is_none(), "a first start is not a rolling upgrade");

    // Down to 1: the two youngest go (t0 is the youngest: ages 100, 110, 120).
    let tasks = running(&a, "t", &v, 3, None);
    let mut one = a.clone();
    one.spec.instances = Some(1);
    assert_eq!(one.spec.version(), v, "scaling is not a new version");
    let p = decide(&one, &tasks);
    assert_eq!((p.launch, killed(&p)), (0, vec!["t0", "t1"]));
    assert!(p.kills.iter().all(|k| k.reason == KillReason::ScaleDown));
    one.spec.kill_selection = Some(KillSelection::OldestFirst);
    assert_eq!(killed(&decide(&one, &tasks)), ["t1", "t2"]);

    // Tasks not yet running go before running ones, whatever their age.
    let mut tasks = running(&a, "t", &v, 2, None);
    tasks.push(task(&a, "staged", &v, TaskState::Staging, None, 500));
    one.spec.kill_selection = Some(KillSelection::OldestFirst);
    assert_eq!(killed(&decide(&one, &tasks)), ["staged", "t1"]);

    // A careless (or hostile) instance count plans without overflow; placement is bounded by the offers.
    let huge = app(i32::MAX, "serve");
    let p = decide(&huge, &running(&huge, "t", &huge.spec.version(), 3, None));
    assert_eq!((p.launch, p.status.instances), (i32::MAX as usize - 3, i32::MAX));
    let (placed, _) = place(
        &[offer("o", "a1", &[], 4.0)],
        &[Need { app: &huge, version: "v".into(), count: p.launch, spread: Spread::new() }],
    );
    assert_eq!(placed.len(), 4, "as many as the offer holds (1 cpu each), then it stops");

    // A kill already requested is not requested again and is not an instance.
    let mut dying = (*tasks[0]).clone();
    dying.spec.kill_requested = Some(true);
    let p = decide(&a, &[Arc::new(dying), tasks[1].clone()]);
    assert_eq!((p.launch, p.kills.len()), (2, 0));
}

#[test]
fn the_upgrade_arithmetic_follows_marathon() {
    assert_eq!(capacity(&app(3, "x").spec, 3, true), (3, 6));
    assert_eq!(capacity(&strategy(app(3, "x"), 1.0, 0.0).spec, 3, true), (3, 4), "one extra when min == max");
    assert_eq!(capacity(&strategy(app(4, "x"), 0.5, 0.0).spec, 4, true), (2, 4));
    assert_eq!(capacity(&strategy(app(3, "x"), 0.0, 0.0).spec, 3, true), (0, 3));
    assert_eq!(capacity(&strategy(app(3, "x"), 0.5, 0.5).spec, 3, true), (2, 4), "ceil and floor");
}

/// Upgrades `n` instances from version "old" under (min, over), with `new_healthy` of the new tasks already
/// launched healthy and `new_unhealthy` launched but not (yet) healthy.
fn upgrade(n: i32, min: f64, over: f64, new_healthy: usize, new_unhealthy: usize) -> (Plan, Vec<Arc<Task>>) {
    let a = strategy(with_checks(app(n, "v2")), min, over);
    let v = a.spec.version();
    let mut tasks = running(&a, "old", "old", n as usize, Some(true));
    tasks.extend(running(&a, "new", &v, new_healthy, Some(true)));
    tasks.extend((0..new_unhealthy).map(|i| task(&a, &format!("wait{i}"), &v, TaskState::Running, None, 5)));
    (decide(&a, &tasks), tasks)
}

#[test]
fn rolling_upgrades_keep_the_minimum_healthy_and_the_maximum_running() {
    // (1, 1): every new task at once; an old one goes per new one healthy.
    let (p, _) = upgrade(3, 1.0, 1.0, 0, 0);
    assert_eq!((p.launch, p.kills.len()), (3, 0));
    let d = p.status.deployment.as_ref().unwrap();
    assert_eq!((d.from.clone(), d.old, d.new, d.step.as_str()), (vec!["old".to_owned()], 3, 0, "StartingNewTasks"));
    let (p, _) = upgrade(3, 1.0, 1.0, 1, 2);
    assert_eq!((p.launch, p.kills.len()), (0, 1), "one new healthy: one old goes");
    assert!(p.kills.iter().all(|k| k.reason == KillReason::Upgrade));
    let (p, _) = upgrade(3, 1.0, 1.0, 0, 3);
    assert_eq!((p.launch, p.kills.len()), (0, 0), "new tasks not healthy: nothing old goes");
    assert!(
        p.status
            .deployment
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .contains("3 of 3 new task(s) to pass HTTP /health")
    );
    // (1, 0): one extra task at a time.
    let (p, _) = upgrade(3, 1.0, 0.0, 0, 0);
    assert_eq!((p.launch, p.kills.len()), (1, 0));
    let (p, _) = upgrade(3, 1.0, 0.0, 1, 0);
    assert_eq!((p.kills.len(), p.launch), (1, 0), "the old one is killed first; the next new one waits for room");
    // (0.5, 0): half the old ones go at once, then new ones fill the room.
    let (p, _) = upgrade(4, 0.5, 0.0, 0, 0);
    assert_eq!((p.launch, p.kills.len()), (0, 2));
    // (0, 0): all old ones go, then all new ones start.
    let (p, tasks) = upgrade(3, 0.0, 0.0, 0, 0);
    assert_eq!((p.launch, p.kills.len()), (0, 3));
    let dying: Vec<Arc<Task>> = tasks
        .iter()
        .map(|t| {
            let mut t = (**t).clone();
            t.status.as_mut().unwrap().state = TaskState::Killed;
            Arc::new(t)
        })
        .collect();
    let a = strategy(with_checks(app(3, "v2")), 0.0, 0.0);
    let mut prev = p.status.clone();
    prev.deployment.as_mut().unwrap().to = a.spec.version();
    let mut with_prev = a.clone();
    with_prev.status = Some(prev);
    let p = decide(&with_prev, &dying);
    assert_eq!(p.launch, 3, "once the old ones are gone the new ones start");
    assert!(p.status.deployment.is_some(), "still deploying until the new ones are healthy");

    // Done: all new and healthy, no deployment, a DeploymentSucceeded event.
    let a = with_checks(app(3, "v2"));
    let v = a.spec.version();
    let mut was = a.clone();
    was.status = Some(AppStatus {
        deployment: Some(agora_schemas::Deployment { to: v.clone(), ..Default::default() }),
        ..Default::default()
    });
    let p = decide(&was, &running(&a, "new", &v, 3, Some(true)));
    assert!(p.status.deployment.is_none());
    assert!(p.events.iter().any(|e| e.reason == "DeploymentSucceeded"), "{:?}", p.events);
}

#[test]
fn health_kills_are_bounded_and_unknown_health_never_kills() {
    let a = with_checks(app(4, "serve"));
    let v = a.spec.version();
    // All four failing: the default strategy (minimumHealthCapacity 1) lets one be down at a time.
    let tasks = running(&a, "t", &v, 4, Some(false));
    let p = decide(&a, &tasks);
    assert_eq!(p.kills.len(), 1);
    assert_eq!(p.kills[0].reason, KillReason::Unhealthy);
    assert_eq!(p.launch, 1, "the killed one is replaced");
    // With one already being killed for health, no more.
    let mut dying = (*tasks[0]).clone();
    dying.spec.kill_requested = Some(true);
    dying.metadata.annotations.insert(KILL_REASON_ANNOTATION.into(), "Unhealthy".into());
    let p = decide(&a, &[Arc::new(dying), tasks[1].clone(), tasks[2].clone(), tasks[3].clone()]);
    assert_eq!(p.kills.len(), 0);
    // minimumHealthCapacity 0.5: two may be down at once; the caller's budget caps it further.
    let half = strategy(a.clone(), 0.5, 1.0);
    assert_eq!(decide(&half, &running(&half, "t", &half.spec.version(), 4, Some(false))).kills.len(), 2);
    let no_agents = Agents::default();
    let mut tight = ctx(&no_agents);
    tight.health_kill_budget = 0;
    assert!(plan(&half, &running(&half, "t", &half.spec.version(), 4, Some(false)), &tight).kills.is_empty());
    // Unknown health (grace period, or no result yet) and unhealthy below the limit kill nothing.
    let p = decide(&a, &running(&a, "t", &v, 4, None));
    assert!(p.kills.is_empty());
    let mut below = (*tasks[0]).clone();
    below.status.as_mut().unwrap().health_check_failures = 2;
    assert!(decide(&a, &[Arc::new(below)]).kills.is_empty());
}

#[test]
fn backoff_grows_per_failure_is_capped_and_resets() {
    let mut a = app(1, "false");
    a.spec.backoff_seconds = Some(2);
    a.spec.backoff_factor = Some(2.0);
    a.spec.max_launch_delay_seconds = Some(10);
    let delays: Vec<i64> = (0..6).map(|f| launch_delay(&a.spec, f).as_secs()).collect();
    assert_eq!(delays, [0, 2, 4, 8, 10, 10]);

    let v = a.spec.version();
    // One failure 1 s ago: delayed for 2 s from it, with the reason and a timer.
    let mut failed = (*task(&a, "f1", &v, TaskState::Failed, None, 2)).clone();
    let s = failed.status.as_mut().unwrap();
    s.exit_code = Some(1);
    s.finished_at = Some(now() - SignedDuration::from_secs(1));
    let p = decide(&a, &[Arc::new(failed.clone())]);
    assert_eq!(p.status.consecutive_failures, 1);
    assert_eq!(p.launch, 0);
    assert_eq!(p.status.delayed_until, Some(now() + SignedDuration::from_secs(1)));
    assert_eq!(p.wake, p.status.delayed_until);
    let scheduled = p.status.conditions.iter().find(|c| c.type_ == "Scheduled").unwrap();
    assert_eq!(scheduled.reason.as_deref(), Some("Backoff"));
    assert!(scheduled.message.as_ref().unwrap().contains("exit code 1"), "{scheduled:?}");
    assert!(p.events.iter().any(|e| e.reason == "TaskFailed") && p.events.iter().any(|e| e.reason == "Backoff"));

    // The same failure seen again is not counted twice; a second one doubles the delay.
    let mut again = a.clone();
    again.status = Some(p.status.clone());
    assert_eq!(decide(&again, &[Arc::new(failed.clone())]).status.consecutive_failures, 1);
    let mut second = failed.clone();
    second.metadata.name = Some("f2".into());
    second.status.as_mut().unwrap().finished_at = Some(now());
    let p2 = decide(&again, &[Arc::new(failed.clone()), Arc::new(second)]);
    assert_eq!(p2.status.consecutive_failures, 2);
    assert_eq!(p2.status.delayed_until, Some(now() + SignedDuration::from_secs(4)));
    assert!(p2.delete.is_empty(), "the newest failures are kept for describe");

    // Killed on request is not a failure; a new version starts from zero.
    let killed = task(&a, "k", &v, TaskState::Killed, None, 2);
    assert_eq!(decide(&a, std::slice::from_ref(&killed)).status.consecutive_failures, 0);
    assert_eq!(decide(&a, &[killed]).delete, ["k"], "a killed task is forgotten");
    let mut newer = again.clone();
    newer.spec.cmd = Some("true".into());
    assert_eq!(decide(&newer, &[Arc::new(failed.clone())]).status.consecutive_failures, 0);

    // Healthy at full strength long enough after the last failure: the delay resets.
    let mut calm = again.clone();
    let mut status = p.status.clone();
    status.last_task_failure.as_mut().unwrap().timestamp = Some(now() - SignedDuration::from_mins(6));
    calm.status = Some(status);
    let p = decide(&calm, &running(&a, "t", &v, 1, None));
    assert_eq!((p.status.consecutive_failures, p.status.delayed_until), (0, None));
}

#[test]
fn unreachable_tasks_are_replaced_then_expunged_and_surplus_is_killed_on_return() {
    let a = app(2, "serve");
    let v = a.spec.version();
    let mut lost = (*task(&a, "u", &v, TaskState::Unreachable, None, 1000)).clone();
    lost.spec.agent = "gone-agent".into();
    let lost = Arc::new(lost);
    let ok = task(&a, "ok", &v, TaskState::Running, None, 1000);
    let agents_since = |secs: i64| Agents {
        unreachable_since: HashMap::from([("gone-agent".to_owned(), now() - SignedDuration::from_secs(secs))]),
        ..Agents::default()
    };
    // Before inactiveAfterSeconds (300): still an instance; a timer for when it is not.
    let agents = agents_since(100);
    let p = plan(&a, &[lost.clone(), ok.clone()], &ctx(&agents));
    assert_eq!((p.launch, p.kills.len()), (0, 0));
    assert_eq!(p.wake, Some(now() + SignedDuration::from_secs(200)));
    // Past it: replaced, not killed.
    let agents = agents_since(301);
    let p = plan(&a, &[lost.clone(), ok.clone()], &ctx(&agents));
    assert_eq!((p.launch, p.kills.len()), (1, 0));
    assert_eq!(p.wake, Some(now() + SignedDuration::from_secs(299)), "next: the expunge");
    // Past expungeAfterSeconds (600): forgotten, killed should it return.
    let agents = agents_since(601);
    let p = plan(&a, &[lost.clone(), ok.clone()], &ctx(&agents));
    assert_eq!(p.kills.iter().map(|k| k.reason).collect::<Vec<_>>(), [KillReason::Expunged]);
    // Back (Running again) next to its replacement: the surplus goes, by the kill selection (the youngest).
    let back = task(&a, "u", &v, TaskState::Running, None, 1000);
    let replacement = task(&a, "r", &v, TaskState::Running, None, 10);
    let p = decide(&a, &[back, ok, replacement]);
    assert_eq!(killed(&p), ["r"]);
}

#[test]
fn waits_are_explained() {
    // Dependencies.
    let a = app(2, "serve");
    let agents = Agents::default();
    let mut c = ctx(&agents);
    c.dependencies = Err("waiting for app db to run healthy (0 of 1 healthy)".into());
    let p = plan(&a, &[], &c);
    assert_eq!(p.launch, 0);
    let scheduled = p.status.conditions.iter().find(|c| c.type_ == "Scheduled").unwrap();
    assert_eq!(scheduled.reason.as_deref(), Some("DependenciesNotReady"));
    // UNIQUE with too few agents.
    let mut unique = app(5, "serve");
    unique.spec.constraints = vec![Constraint(vec!["hostname".into(), "UNIQUE".into()])];
    let agents = Agents { distinct: HashMap::from([("hostname".to_owned(), 3)]), ..Agents::default() };
    let p = plan(&unique, &[], &ctx(&agents));
    let why = p.status.conditions.iter().find(|c| c.type_ == "Scheduled").unwrap().message.clone().unwrap();
    assert_eq!(why, "UNIQUE hostname: 3 agents for 5 instances");
    assert_eq!(p.launch, 5, "it still tries: agents may join");
    // No offer big enough.
    let mut big = app(1, "serve");
    big.spec.cpus = Some(4.0);
    let summary = OfferSummary {
        rejections: BTreeMap::from([("InsufficientCpus".to_owned(), 7)]),
        last_misfit: Some("cpus: needs 4, 2.5 left".into()),
        largest: Some((2.5, 4096.0, "a-3".into())),
    };
    let agents = Agents::default();
    let mut c = ctx(&agents);
    c.offers = Some(&summary);
    let p = plan(&big, &[], &c);
    assert_eq!(p.status.offer_rejections.get("InsufficientCpus"), Some(&7));
    let why = p.status.conditions.iter().find(|c| c.type_ == "Scheduled").unwrap().message.clone().unwrap();
    assert_eq!(why, "no offer can fit 4 cpus (largest free 2.5 on agent a-3)");
    // A failing new version: the health check's last output and the failure count.
    let a = with_checks(app(1, "v2"));
    let v = a.spec.version();
    let mut t = (*task(&a, "n", &v, TaskState::Running, Some(false), 30)).clone();
    let s = t.status.as_mut().unwrap();
    s.health_check_failures = 2;
    s.last_health_check = Some(agora_schemas::task::HealthCheckResult {
        time: now(),
        passed: false,
        output: Some("503 after 20 ms".into()),
    });
    let old = task(&a, "o", "old", TaskState::Running, Some(true), 300);
    let p = decide(&a, &[old, Arc::new(t)]);
    let waiting = p.status.deployment.unwrap().waiting.unwrap();
    assert!(
        waiting
            .contains("waiting for 1 of 1 new task(s) to pass HTTP /health (last: 503 after 20 ms, 2 of 3 failures)"),
        "{waiting}"
    );
}

#[test]
fn status_conditions_keep_their_transition_times() {
    let a = app(1, "serve");
    let v = a.spec.version();
    let p = decide(&a, &running(&a, "t", &v, 1, None));
    let mut again = a.clone();
    let mut status = p.status.clone();
    for c in &mut status.conditions {
        c.last_transition_time = Some(now() - SignedDuration::from_hours(1));
    }
    again.status = Some(status.clone());
    let p2 = decide(&again, &running(&a, "t", &v, 1, None));
    assert_eq!(p2.status, status, "nothing changed, so the status is the same (and is not written)");
    assert!(p2.events.is_empty(), "{:?}", p2.events);
}

fn offer(name: &str, agent: &str, attributes: &[(&str, &str)], cpus: f64) -> Arc<Offer> {
    let attributes: BTreeMap<&str, &str> = attributes.iter().copied().collect();
    Arc::new(
        serde_json::from_value(json!({"apiVersion": "agora/v1", "kind": "Offer", "metadata": {"name": name},
            "spec": {"framework": "marathon", "agent": agent, "hostname": agent, "role": "*", "attributes": attributes,
                     "resources": {"cpus": cpus, "mem": 4096.0, "ports": [[31000, 31009]]}}}))
        .unwrap(),
    )
}

fn constrained(instances: i32, constraint: &[&str]) -> App {
    let mut a = app(instances, "serve");
    a.spec.cpus = Some(0.5);
    a.spec.constraints = vec![Constraint(constraint.iter().map(|s| (*s).to_owned()).collect())];
    a
}

/// Where `count` tasks of `a` go, given `spread`: agents in placement order.
fn placed_on(a: &App, offers: &[Arc<Offer>], count: usize, spread: Spread) -> Vec<String> {
    let need = Need { app: a, version: a.spec.version(), count, spread };
    let (placed, _) = place(offers, &[need]);
    let agent =
        |offer: &str| offers.iter().find(|o| o.metadata.name.as_deref() == Some(offer)).unwrap().spec.agent.clone();
    placed.iter().map(|p| agent(&p.offer)).collect()
}

#[test]
fn every_constraint_operator_places_as_marathon_does() {
    let offers = vec![
        offer("o1", "a1", &[("rack", "r1")], 4.0),
        offer("o2", "a2", &[("rack", "r1")], 4.0),
        offer("o3", "a3", &[("rack", "r2")], 4.0),
        offer("o4", "a4", &[], 4.0),
    ];
    // UNIQUE hostname: one per agent, at most four.
    let mut on = placed_on(&constrained(6, &["hostname", "UNIQUE"]), &offers, 6, Spread::new());
    on.sort();
    assert_eq!(on, ["a1", "a2", "a3", "a4"]);
    // UNIQUE on an attribute: one per rack; an agent lacking it never qualifies.
    assert_eq!(placed_on(&constrained(3, &["rack", "UNIQUE"]), &offers, 3, Spread::new()).len(), 2);
    // CLUSTER with a value: only there; without one, the first placement fixes it.
    assert!(
        placed_on(&constrained(3, &["rack", "CLUSTER", "r2"]), &offers, 3, Spread::new()).iter().all(|a| a == "a3")
    );
    let fixed = Spread::from([("rack".to_owned(), BTreeMap::from([("r1".to_owned(), 1)]))]);
    let on = placed_on(&constrained(3, &["rack", "CLUSTER"]), &offers, 3, fixed);
    assert!(on.iter().all(|a| a == "a1" || a == "a2"), "{on:?}");
    let on = placed_on(&constrained(3, &["rack", "CLUSTER"]), &offers, 3, Spread::new());
    let racks: std::collections::BTreeSet<&str> = on.iter().map(|a| if a == "a3" { "r2" } else { "r1" }).collect();
    assert_eq!(racks.len(), 1, "{on:?}");
    // GROUP_BY: evenly over the values; with a count, a used value waits until that many are in use.
    let on = placed_on(&constrained(4, &["rack", "GROUP_BY"]), &offers, 4, Spread::new());
    let r2 = on.iter().filter(|a| *a == "a3").count();
    assert_eq!((on.len(), r2), (4, 2), "{on:?}");
    let one_rack = vec![offers[0].clone(), offers[1].clone()];
    let used = Spread::from([("rack".to_owned(), BTreeMap::from([("r1".to_owned(), 1)]))]);
    assert!(placed_on(&constrained(4, &["rack", "GROUP_BY", "2"]), &one_rack, 1, used).is_empty());
    // MAX_PER: at most n per value.
    assert_eq!(placed_on(&constrained(6, &["rack", "MAX_PER", "2"]), &offers, 6, Spread::new()).len(), 4);
    // LIKE / UNLIKE / IS on the whole value; a missing attribute passes only UNLIKE.
    assert!(
        placed_on(&constrained(2, &["rack", "LIKE", "r[2-9]"]), &offers, 2, Spread::new()).iter().all(|a| a == "a3")
    );
    let on = placed_on(&constrained(10, &["rack", "UNLIKE", "r1"]), &offers, 10, Spread::new());
    assert!(on.iter().all(|a| a == "a3" || a == "a4") && on.contains(&"a4".to_owned()) && on.len() == 10, "{on:?}");
    assert!(placed_on(&constrained(2, &["rack", "IS", "r"]), &offers, 2, Spread::new()).is_empty());
    assert!(placed_on(&constrained(2, &["hostname", "IS", "a2"]), &offers, 2, Spread::new()).iter().all(|a| a == "a2"));
}

#[test]
fn placement_counts_rejections_and_tasks_carry_the_app() {
    let offers = vec![offer("small", "a1", &[], 0.5)];
    let mut a = app(2, "serve");
    a.spec.cpus = Some(1.0);
    let (placed, summaries) = place(&offers, &[Need { app: &a, version: "v".into(), count: 2, spread: Spread::new() }]);
    assert!(placed.is_empty());
    assert_eq!(summaries[0].rejections.get("InsufficientCpus"), Some(&1));
    assert_eq!(summaries[0].largest, Some((0.5, 4096.0, "a1".into())));

    a.spec.env.insert("MODE".into(), "prod".into());
    a.spec.port_definitions =
        Some(vec![agora_schemas::PortDefinition { port: Some(0), name: Some("http".into()), ..Default::default() }]);
    let t = task_template(&a, &a.spec.version(), &[31005]);
    assert_eq!(t.metadata.labels.get(APP_LABEL).map(String::as_str), Some("web"));
    assert_eq!(t.metadata.labels.get(APP_VERSION_LABEL), Some(&a.spec.version()));
    assert_eq!(t.metadata.owner_references[0].uid, "uid-web");
    assert_eq!(t.metadata.generate_name.as_deref(), Some(format!("web-{}-", a.spec.version()).as_str()));
    assert_eq!((t.spec.ports[0].port, t.spec.ports[0].name.as_deref()), (31005, Some("http")));
    assert_eq!(t.spec.env.get("MODE").map(String::as_str), Some("prod"));
    assert_eq!(t.spec.cmd.as_deref(), Some("serve"));
}

#[test]
fn dependencies_wait_for_health_and_cycles_are_named() {
    let named = |name: &str, deps: &[&str], healthy: i32| {
        let mut a = app(1, "serve");
        a.metadata.name = Some(name.to_owned());
        a.spec.dependencies = deps.iter().map(|d| (*d).to_owned()).collect();
        a.status = Some(AppStatus { tasks_healthy: healthy, ..AppStatus::default() });
        a
    };
    let apps = [named("web", &["api"], 0), named("api", &["db"], 0), named("db", &[], 1)];
    let lookup = |n: &str| apps.iter().find(|a| a.metadata.name.as_deref() == Some(n));
    assert_eq!(dependencies(&apps[2], lookup), Ok(()));
    assert_eq!(dependencies(&apps[1], lookup), Ok(()), "db runs healthy");
    assert_eq!(dependencies(&apps[0], lookup).unwrap_err(), "waiting for app api to run healthy (0 of 1 healthy)");
    let missing = named("web", &["cache"], 0);
    assert_eq!(dependencies(&missing, lookup).unwrap_err(), "waiting for app cache, which does not exist");
    let cycle = [named("a", &["b"], 1), named("b", &["c"], 1), named("c", &["a"], 1)];
    let lookup = |n: &str| cycle.iter().find(|a| a.metadata.name.as_deref() == Some(n));
    assert_eq!(dependencies(&cycle[0], lookup).unwrap_err(), "dependency cycle: a → b → c → a: none of them can start");
}

#[test]
fn a_change_during_a_deployment_retargets_it_and_the_intermediate_version_is_old() {
    // Rolling from "v1" to v2 (3 instances, the default strategy): one v2 task healthy, one v1 already killed.
    let v2_app = with_checks(app(3, "v2"));
    let v2 = v2_app.spec.version();
    let mut tasks = running(&v2_app, "one", "v1", 2, Some(true));
    tasks.extend(running(&v2_app, "two", &v2, 1, Some(true)));
    tasks.extend((0..2).map(|i| task(&v2_app, &format!("wait{i}"), &v2, TaskState::Running, None, 5)));
    let mid = decide(&v2_app, &tasks);
    assert_eq!(mid.status.deployment.as_ref().map(|d| d.to.clone()), Some(v2.clone()));
    // The spec changes again: v3 is the target, v1 and v2 are both old, and nothing healthy goes yet.
    let mut v3_app = with_checks(app(3, "v3"));
    v3_app.status = Some(mid.status.clone());
    let v3 = v3_app.spec.version();
    let p = decide(&v3_app, &tasks);
    let d = p.status.deployment.as_ref().unwrap();
    assert_eq!(d.to, v3);
    assert_eq!(d.from, {
        let mut from = vec!["v1".to_owned(), v2.clone()];
        from.sort();
        from
    });
    assert_eq!(p.launch, 1, "6 at most, 5 running: the 2 killed now still hold their room until they stop");
    let killed_names = killed(&p);
    assert_eq!(killed_names, ["wait0", "wait1"], "old tasks that are not healthy go first, freely");
    assert!(p.events.iter().any(|e| e.reason == "DeploymentRetargeted"), "{:?}", p.events);
    // Healthy old ones (of either version) go only as v3 tasks become healthy: the minimum of 3 holds.
    let mut later = tasks.clone();
    later.retain(|t| !t.metadata.name.as_deref().unwrap().starts_with("wait"));
    later.extend(running(&v3_app, "three", &v3, 1, Some(true)));
    let p = decide(&v3_app, &later);
    assert_eq!(p.kills.len(), 1, "4 healthy, 3 wanted: one old goes");
}
