//! Every example in `manifests/` (one machine) and `examples/cluster/` (more machines) parses, defaults and validates;
//! the defaults are Marathon's and Chronos'.

use std::path::PathBuf;

use agora_schemas::manifest::{Document, parse_and_validate};
use agora_schemas::{AnyObject, ConcurrencyPolicy, HealthCheckProtocol, KillSelection};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `name` under the repository (`manifests/web.yaml`).
fn load(name: &str) -> Vec<Document> {
    let path = repo().join(name);
    let source = std::fs::read_to_string(&path).unwrap();
    parse_and_validate(&source, &path.display().to_string()).unwrap_or_else(|errors| {
        panic!("{name}:\n{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    })
}

#[test]
fn every_example_manifest_is_valid() {
    let mut count = 0;
    let entries = ["manifests", "examples/cluster"].into_iter().flat_map(|dir| {
        std::fs::read_dir(repo().join(dir)).unwrap().map(move |e| format!("{dir}/{}", e.unwrap().file_name().display()))
    });
    for name in entries {
        if name.ends_with(".yaml") || name.ends_with(".json") {
            let documents = load(&name);
            assert!(!documents.is_empty(), "{name} holds no object");
            for document in &documents {
                // Defaulting is idempotent and the defaulted object is still valid.
                let mut again = document.object.clone();
                again.apply_defaults();
                assert_eq!(again, document.object, "{name}");
                document.object.validate().unwrap();
            }
            count += 1;
        }
    }
    assert!(count >= 7, "expected the seven examples, found {count}");
}

#[test]
fn host_web_app_gets_marathon_defaults() {
    let docs = load("examples/cluster/web-spread.yaml");
    let AnyObject::App(app) = &docs[0].object else { panic!("not an App") };
    let spec = &app.spec;
    assert_eq!(spec.instances, Some(3));
    assert!(spec.container.is_none(), "runs on the host filesystem");
    assert_eq!(spec.backoff_seconds, Some(1));
    assert_eq!(spec.backoff_factor, Some(1.15));
    assert_eq!(spec.max_launch_delay_seconds, Some(300));
    assert_eq!(spec.kill_selection, Some(KillSelection::YoungestFirst));
    assert_eq!(spec.require_ports, Some(false));
    assert_eq!(spec.disk, Some(0.0));
    assert_eq!(spec.role.as_deref(), Some("*"));
    let ports = spec.port_definitions.as_ref().unwrap();
    assert_eq!((ports[0].port, ports[0].name.as_deref()), (Some(0), Some("http")));
    let check = &spec.health_checks[0];
    assert_eq!(check.protocol, Some(HealthCheckProtocol::Http));
    assert_eq!(check.grace_period_seconds, Some(30));
    let unreachable = spec.unreachable_strategy.as_ref().unwrap();
    assert_eq!((unreachable.inactive_after_seconds, unreachable.expunge_after_seconds), (Some(300), Some(600)));
}

#[test]
fn app_without_ports_gets_one_and_checks_get_defaults() {
    let source = "apiVersion: agora/v1\nkind: App\nmetadata: {name: a}\nspec:\n  cmd: sleep 100\n  healthChecks: [{protocol: TCP}, {protocol: COMMAND, command: 'true'}]\n";
    let docs = parse_and_validate(source, "a.yaml").unwrap();
    let AnyObject::App(app) = &docs[0].object else { panic!() };
    assert_eq!(app.spec.instances, Some(1));
    assert_eq!(app.spec.cpus, Some(1.0));
    assert_eq!(app.spec.mem, Some(128.0));
    assert_eq!(app.spec.port_definitions.as_ref().map(Vec::len), Some(1), "Marathon gives one port so $PORT0 exists");
    let [tcp, command] = &app.spec.health_checks[..] else { panic!() };
    assert_eq!((tcp.port_index, tcp.path.as_deref()), (Some(0), None));
    assert_eq!(
        (tcp.interval_seconds, tcp.timeout_seconds, tcp.max_consecutive_failures),
        (Some(60), Some(20), Some(3))
    );
    assert_eq!((command.port_index, command.grace_period_seconds), (None, Some(300)));
    let upgrade = app.spec.upgrade_strategy.as_ref().unwrap();
    assert_eq!((upgrade.minimum_health_capacity, upgrade.maximum_over_capacity), (Some(1.0), Some(1.0)));
    // An explicit empty list means no ports at all.
    let none = "apiVersion: agora/v1\nkind: App\nmetadata: {name: a}\nspec: {cmd: x, portDefinitions: []}\n";
    let AnyObject::App(app) = &parse_and_validate(none, "a.yaml").unwrap()[0].object else { panic!() };
    assert_eq!(app.spec.port_definitions.as_deref(), Some(&[][..]));
}

#[test]
fn container_app_keeps_what_it_sets() {
    let docs = load("examples/cluster/cache-spread.yaml");
    let AnyObject::App(app) = &docs[0].object else { panic!() };
    assert_eq!(app.spec.container.as_ref().unwrap().image, "busybox:latest");
    assert_eq!(app.spec.kill_selection, Some(KillSelection::OldestFirst));
    assert_eq!(app.spec.constraints.len(), 3);
    for constraint in &app.spec.constraints {
        constraint.parse().unwrap();
    }
}

#[test]
fn scheduled_job_gets_chronos_defaults() {
    let docs = load("manifests/nightly-backup.yaml");
    let AnyObject::CronJob(job) = &docs[0].object else { panic!() };
    assert_eq!(job.spec.retries, Some(2));
    assert_eq!(job.spec.epsilon.as_deref(), Some("PT10M"));
    assert_eq!(job.spec.concurrency_policy, Some(ConcurrencyPolicy::Forbid));
    assert_eq!((job.spec.soft_error, job.spec.disabled), (Some(false), Some(false)));
    assert_eq!(job.spec.disk, Some(256.0));
    let schedule = agora_schemas::iso8601::Schedule::parse(
        job.spec.schedule.as_deref().unwrap(),
        job.spec.schedule_time_zone.as_deref(),
        "2026-06-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    // 02:00 in Berlin summer time is 00:00 UTC.
    assert_eq!(
        schedule.next_after("2026-06-01T00:00:00Z".parse().unwrap()).unwrap().to_string(),
        "2026-06-02T00:00:00Z"
    );
}

#[test]
fn dependent_jobs_parse_as_a_chain() {
    let docs = load("manifests/etl-pipeline.yaml");
    let names: Vec<(String, Vec<String>)> = docs
        .iter()
        .map(|d| match &d.object {
            AnyObject::CronJob(job) => (job.metadata.name.clone().unwrap(), job.spec.parents.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            ("extract".into(), vec![]),
            ("transform".into(), vec!["extract".into()]),
            ("load".into(), vec!["transform".into()])
        ]
    );
    assert_eq!(docs.iter().map(|d| d.line).collect::<Vec<_>>(), [3, 12, 22], "each document's first line");
    let AnyObject::CronJob(transform) = &docs[1].object else { panic!() };
    assert_eq!(transform.spec.cpus, Some(0.1));
    assert_eq!(transform.spec.schedule, None);
}

#[test]
fn framework_defaults() {
    let docs = load("examples/cluster/framework.yaml");
    let AnyObject::Framework(fw) = &docs[0].object else { panic!() };
    assert_eq!(fw.spec.roles.as_deref(), Some(&["*".to_owned(), "analytics".to_owned()][..]));
    assert_eq!(fw.spec.weight, Some(2.0));
    assert_eq!(fw.spec.suppressed, Some(false));
    let minimal = "apiVersion: agora/v1\nkind: Framework\nmetadata: {name: f}\nspec: {}\n";
    let AnyObject::Framework(fw) = &parse_and_validate(minimal, "f.yaml").unwrap()[0].object else { panic!() };
    assert_eq!(fw.spec.roles.as_deref(), Some(&["*".to_owned()][..]));
    assert_eq!(fw.spec.failover_timeout_seconds, Some(604_800));
}
