//! The allocator's decisions at scale, as pure functions (the shape of Mesos' allocator benchmark,
//! `HierarchicalAllocator_BENCHMARK_Test`): 10,000 agents, 1,000 frameworks in 100 roles (ten per role, some roles
//! nested), half the agents running a task.
//!
//! - **full round**: `allocate` over every agent, each with something free — every agent is offered;
//! - **snapshot**: `observe` of the objects the reflectors hold (agents, frameworks, leases, tasks, offers);
//! - **housekeeping**: liveness and expiry over the same objects;
//! - **one event**: one task finished — what the controller does for it: a snapshot with the one agent whose
//!   resources changed (the frameworks' allocations and the cluster's total complete) and a round over that agent.
//!   Housekeeping does not run for task and offer changes (its decisions change with time, agents, frameworks and
//!   leases).
//!
//! `cargo bench -p agora-controllers --bench allocator`. Knobs: `AGORA_BENCH_AGENTS` (10000),
//! `AGORA_BENCH_FRAMEWORKS` (1000), `AGORA_BENCH_ROLES` (100), `AGORA_BENCH_ITERATIONS` (20).

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_controllers::allocator::observed::{Observed, Timing, housekeeping, observe, observe_agents};
use agora_controllers::allocator::round::{RoleView, allocate};
use agora_schemas::{Agent, Framework, Lease, Task};
use jiff::Timestamp;
use serde_json::json;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(value).expect("a valid object"))
}

fn lease(name: &str, now: Timestamp) -> Arc<Lease> {
    object(json!({"apiVersion": "agora/v1", "kind": "Lease", "metadata": {"name": name, "namespace": "x"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 15, "renewTime": now}}))
}

fn role(i: usize) -> String {
    // Every tenth role nests under the one before it.
    if i % 10 == 9 { format!("r{}/sub", i - 1) } else { format!("r{i}") }
}

/// The cluster as the reflectors hold it.
fn cluster(agents: usize, frameworks: usize, roles: usize, now: Timestamp) -> Observed {
    let mut observed = Observed::default();
    for i in 0..agents {
        let name = format!("agent-{i}");
        observed.agents.push(object::<Agent>(json!({"apiVersion": "agora/v1", "kind": "Agent",
            "metadata": {"name": name, "resourceVersion": "1"},
            "spec": {"resources": {"cpus": 8.0, "mem": 32768.0, "disk": 100_000.0, "ports": [[31000, 32000]]},
                     "attributes": {"rack": format!("r{}", i % 40)}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}})));
        observed.agent_leases.insert(name.clone(), lease(&name, now));
    }
    for i in 0..frameworks {
        let name = format!("fw-{i}");
        observed.frameworks.push(object::<Framework>(json!({"apiVersion": "agora/v1", "kind": "Framework",
            "metadata": {"name": name}, "spec": {"roles": [role(i % roles)], "weight": 1.0 + (i % 3) as f64}})));
        observed.framework_leases.insert(name.clone(), lease(&name, now));
    }
    for i in (0..agents).step_by(2) {
        let framework = i % frameworks;
        observed.tasks.push(object::<Task>(json!({"apiVersion": "agora/v1", "kind": "Task",
            "metadata": {"name": format!("task-{i}"), "namespace": "default", "resourceVersion": "2"},
            "spec": {"agent": format!("agent-{i}"), "framework": format!("fw-{framework}"),
                     "role": role(framework % roles), "cmd": "x", "cpus": 2.0, "mem": 4096.0,
                     "ports": [{"port": 31000}]},
            "status": {"state": "Running"}})));
    }
    observed
}

/// The median and the slowest of `iterations` runs of `f`.
fn time<T>(iterations: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let started = Instant::now();
            black_box(f());
            started.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks what is here; nothing is a test.
    }
    let (agents, frameworks, roles) =
        (knob("AGORA_BENCH_AGENTS", 10_000), knob("AGORA_BENCH_FRAMEWORKS", 1000), knob("AGORA_BENCH_ROLES", 100));
    let iterations = knob("AGORA_BENCH_ITERATIONS", 20).max(1);
    let now = Timestamp::now();
    let observed = cluster(agents, frameworks, roles, now);
    let role_views: BTreeMap<String, RoleView> = (0..roles)
        .filter(|i| i % 4 == 0)
        .map(|i| (role(i), RoleView { weight: 2.0, guarantee: None, limit: None }))
        .collect();
    println!("allocator: {agents} agents, {frameworks} frameworks in {roles} roles, {} tasks", observed.tasks.len());

    let snapshot = observe(&observed, &role_views, now);
    let every: Vec<usize> = (0..snapshot.agents.len()).collect();
    let offers = allocate(&snapshot, &every, now).len();
    let (round, round_max) = time(iterations, || allocate(&snapshot, &every, now));
    println!("  full round ({offers} offers): median {}, slowest {}", ms(round), ms(round_max));

    let (snap, snap_max) = time(iterations, || observe(&observed, &role_views, now));
    println!("  snapshot: median {}, slowest {}", ms(snap), ms(snap_max));
    let (house, house_max) = time(iterations, || housekeeping(&observed, Timing::default(), now));
    println!("  housekeeping: median {}, slowest {}", ms(house), ms(house_max));

    // One task finished on agent-0: the controller's whole work for that event.
    let mut after = observed.clone();
    let mut finished = (*after.tasks[0]).clone();
    finished.status.as_mut().expect("status").state = agora_schemas::TaskState::Finished;
    after.tasks[0] = Arc::new(finished);
    let changed: HashSet<String> = HashSet::from(["agent-0".to_owned()]);
    let (event, event_max) = time(iterations, || {
        let snapshot = observe_agents(&after, &role_views, now, Some(&changed));
        allocate(&snapshot, &[0], now)
    });
    let partial = observe_agents(&after, &role_views, now, Some(&changed));
    assert_eq!(allocate(&partial, &[0], now).len(), 1, "the freed agent is offered");
    let (one_round, _) = time(iterations, || allocate(&partial, &[0], now));
    println!(
        "  one event (a task finished): median {} (of which the one-agent round {}), slowest {}",
        ms(event),
        ms(one_round),
        ms(event_max)
    );
    let full_cycle = round + snap + house;
    println!(
        "  a full cycle (snapshot + housekeeping + full round) {} vs one event {}: {:.1}x less work",
        ms(full_cycle),
        ms(event),
        full_cycle.as_secs_f64() / event.as_secs_f64()
    );
}
