//! Every validation rule, with the message a user sees. Validation reports every violation at once, each with its
//! JSON path; it runs on the object as written (before defaults), as the apiserver does.

use agora_schemas::manifest::parse;

/// The violations of the single object in `yaml`, as `path: message`.
fn violations(yaml: &str) -> Vec<String> {
    let docs = parse(yaml, "t.yaml").unwrap_or_else(|e| panic!("does not decode: {e}"));
    match docs[0].object.validate() {
        Ok(()) => Vec::new(),
        Err(errors) => errors.errors().iter().map(ToString::to_string).collect(),
    }
}

fn app(spec: &str) -> Vec<String> {
    violations(&format!("apiVersion: agora/v1\nkind: App\nmetadata: {{name: web}}\nspec:\n{spec}"))
}

fn job(spec: &str) -> Vec<String> {
    violations(&format!("apiVersion: agora/v1\nkind: CronJob\nmetadata: {{name: nightly}}\nspec:\n{spec}"))
}

#[test]
fn a_valid_app_has_no_violations() {
    assert_eq!(app("  cmd: sleep 100\n"), Vec::<String>::new());
    assert_eq!(app("  args: [sleep, '100']\n"), Vec::<String>::new());
    assert_eq!(app("  container: {image: busybox}\n"), Vec::<String>::new(), "the image supplies the command");
}

#[test]
fn cmd_xor_args() {
    assert_eq!(app("  cmd: sleep 1\n  args: [sleep, '1']\n"), ["spec.cmd: set either cmd or args, not both"]);
    assert_eq!(
        app("  instances: 1\n"),
        ["spec.cmd: one of cmd or args is required (only a container image can supply the command)"]
    );
    assert_eq!(app("  cmd: '  '\n"), ["spec.cmd: must not be empty"]);
    assert_eq!(app("  args: []\n"), ["spec.args: must not be empty"]);
    assert_eq!(
        job("  parents: [a]\n  command: x\n  args: [y]\n"),
        ["spec.command: set either command or args, not both"]
    );
}

#[test]
fn schedule_xor_parents() {
    assert_eq!(
        job("  schedule: R/2026-01-01T00:00:00Z/PT1H\n  parents: [extract]\n  command: x\n"),
        ["spec.schedule: set either schedule or parents, not both"]
    );
    assert_eq!(job("  command: x\n"), ["spec.schedule: one of schedule or parents is required"]);
    assert_eq!(job("  schedule: R/2026-01-01T00:00:00Z/PT1H\n  command: x\n"), Vec::<String>::new());
    assert_eq!(job("  parents: [extract]\n  command: x\n"), Vec::<String>::new());
}

#[test]
fn schedule_parts_are_checked() {
    assert_eq!(
        job("  schedule: R/2026-01-01T00:00:00Z/PT\n  command: x\n"),
        ["spec.schedule: period \"PT\": 'T' must be followed by hours, minutes or seconds, e.g. \"PT1H\""]
    );
    assert_eq!(
        job("  schedule: R/2026-01-01T00:00:00Z/PT1H\n  scheduleTimeZone: Europe/Atlantis\n  command: x\n"),
        [
            "spec.scheduleTimeZone: time zone \"Europe/Atlantis\": not a known IANA time zone name, e.g. \"Europe/Berlin\" or \"UTC\""
        ]
    );
    assert_eq!(
        job("  parents: [a]\n  scheduleTimeZone: UTC\n  command: x\n"),
        ["spec.scheduleTimeZone: only a job with a schedule has a time zone"]
    );
    assert_eq!(
        job("  parents: [a]\n  command: x\n  epsilon: 60s\n"),
        ["spec.epsilon: period \"60s\": a duration starts with 'P', e.g. \"PT1H\" or \"P1D\""]
    );
    // A run a millisecond would be load, not a schedule.
    assert_eq!(
        job("  schedule: R/2026-01-01T00:00:00Z/PT0.001S\n  command: x\n"),
        ["spec.schedule: the period PT0.001S is shorter than 1 s"]
    );
    assert!(job("  schedule: R/PT1S\n  command: x\n").is_empty());
}

#[test]
fn parents_are_names_not_self_not_repeated() {
    assert_eq!(
        job("  parents: [nightly, a, a, Bad_Name]\n  command: x\n"),
        [
            "spec.parents[0]: a job cannot be its own parent (\"nightly\")",
            "spec.parents[2]: \"a\" is listed twice",
            "spec.parents[3]: must name a CronJob: \"Bad_Name\" is not a valid DNS-1123 label: use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. \"my-app\")",
        ]
    );
}

#[test]
fn instances_are_not_negative() {
    assert_eq!(app("  cmd: x\n  instances: -1\n"), ["spec.instances: must be greater than or equal to 0 (got -1)"]);
    assert_eq!(app("  cmd: x\n  instances: 0\n"), Vec::<String>::new(), "0 instances suspends an app");
}

#[test]
fn cpus_mem_and_disk_are_within_what_a_machine_can_have() {
    assert_eq!(
        app("  cmd: x\n  cpus: 0\n  mem: -5\n  disk: -1\n"),
        [
            "spec.cpus: must be between 0.001 and 100000 (got 0)",
            "spec.mem: must be between 1 and 1073741824 (got -5)",
            "spec.disk: must be between 0 and 1073741824 (got -1)",
        ]
    );
    assert_eq!(
        job("  parents: [a]\n  command: x\n  cpus: 0\n"),
        ["spec.cpus: must be between 0.001 and 100000 (got 0)"]
    );
    // Implausible magnitudes, which once passed as "positive".
    assert_eq!(
        app("  cmd: x\n  cpus: 1e-300\n  mem: 1e30\n"),
        [
            "spec.cpus: must be between 0.001 and 100000 (got 1e-300)",
            "spec.mem: must be between 1 and 1073741824 (got 1e30)",
        ]
    );
}

#[test]
fn constraint_operators_and_arity() {
    let cases = [
        ("[hostname, UNIQUE]", None),
        ("[hostname, UNIQUE, x]", Some("UNIQUE takes no value, got \"x\"")),
        ("[rack, CLUSTER]", None),
        ("[rack, CLUSTER, a]", None),
        ("[rack, GROUP_BY]", None),
        ("[rack, GROUP_BY, '3']", None),
        ("[rack, GROUP_BY, three]", Some("GROUP_BY takes a non-negative integer, got \"three\"")),
        ("[hostname, MAX_PER, '2']", None),
        ("[hostname, MAX_PER]", Some("MAX_PER needs a value: [\"hostname\", \"MAX_PER\", value]")),
        ("[hostname, MAX_PER, '-1']", Some("MAX_PER takes a non-negative integer, got \"-1\"")),
        ("[hostname, MAX_PER, '0']", Some("MAX_PER must be at least 1")),
        ("[zone, LIKE, 'eu-.*']", None),
        ("[zone, LIKE, '[a-']", Some("LIKE takes a regular expression; \"[a-\" is not one (unclosed character class)")),
        ("[zone, UNLIKE, 'us-.*']", None),
        ("[zone, UNLIKE, '(']", Some("UNLIKE takes a regular expression; \"(\" is not one (unclosed group)")),
        ("[zone, LIKE]", Some("LIKE needs a value: [\"zone\", \"LIKE\", value]")),
        ("[zone, IS, eu-1]", None),
        ("[zone, IS]", Some("IS needs a value: [\"zone\", \"IS\", value]")),
        (
            "[zone, EQUALS, a]",
            Some("unknown operator \"EQUALS\", expected one of UNIQUE, CLUSTER, GROUP_BY, MAX_PER, LIKE, UNLIKE, IS"),
        ),
        ("[hostname]", Some("a constraint is [field, OPERATOR] or [field, OPERATOR, value], got 1 element(s)")),
        ("[a, IS, b, c]", Some("a constraint is [field, OPERATOR] or [field, OPERATOR, value], got 4 element(s)")),
        ("['', UNIQUE]", Some("the field (first element) must not be empty")),
    ];
    for (constraint, expected) in cases {
        let got = app(&format!("  cmd: x\n  constraints:\n    - {constraint}\n"));
        match expected {
            None => assert_eq!(got, Vec::<String>::new(), "{constraint}"),
            Some(message) => assert_eq!(got, [format!("spec.constraints[0]: {message}")], "{constraint}"),
        }
    }
}

#[test]
fn like_matches_the_whole_value() {
    let docs = parse(
        "apiVersion: agora/v1\nkind: App\nmetadata: {name: a}\nspec: {cmd: x, constraints: [[zone, LIKE, 'eu-.']]}\n",
        "t.yaml",
    )
    .unwrap();
    let agora_schemas::AnyObject::App(app) = &docs[0].object else { panic!() };
    let agora_schemas::ConstraintRule::Like(regex) = app.spec.constraints[0].parse().unwrap() else { panic!() };
    assert!(regex.is_match("eu-1"));
    assert!(!regex.is_match("eu-12"), "anchored, as Marathon matches the whole attribute value");
    assert!(!regex.is_match("xeu-1"));
}

#[test]
fn upgrade_strategy_fractions_are_between_0_and_1() {
    assert_eq!(
        app("  cmd: x\n  upgradeStrategy: {minimumHealthCapacity: 1.5, maximumOverCapacity: -0.1}\n"),
        [
            "spec.upgradeStrategy.minimumHealthCapacity: must be between 0 and 1 (got 1.5)",
            "spec.upgradeStrategy.maximumOverCapacity: must be between 0 and 1 (got -0.1)",
        ]
    );
    assert_eq!(
        app("  cmd: x\n  upgradeStrategy: {minimumHealthCapacity: 0, maximumOverCapacity: 1}\n"),
        Vec::<String>::new()
    );
}

#[test]
fn health_check_port_index_is_within_the_ports() {
    assert_eq!(
        app("  cmd: x\n  healthChecks: [{portIndex: 1}]\n"),
        ["spec.healthChecks[0].portIndex: must be less than the number of ports (1)"]
    );
    assert_eq!(
        app("  cmd: x\n  portDefinitions: []\n  healthChecks: [{protocol: TCP}]\n"),
        ["spec.healthChecks[0].portIndex: must be less than the number of ports (0)"]
    );
    assert_eq!(app("  cmd: x\n  portDefinitions: [{}, {}]\n  healthChecks: [{portIndex: 1}]\n"), Vec::<String>::new());
}

#[test]
fn health_check_fields_fit_the_protocol() {
    assert_eq!(
        app("  cmd: x\n  healthChecks: [{protocol: COMMAND, portIndex: 0}]\n"),
        [
            "spec.healthChecks[0].command: a COMMAND health check needs a command",
            "spec.healthChecks[0].portIndex: a COMMAND health check uses no port"
        ]
    );
    assert_eq!(
        app("  cmd: x\n  healthChecks: [{protocol: TCP, command: 'true', path: /}]\n"),
        [
            "spec.healthChecks[0].command: only COMMAND health checks run a command, this one is TCP",
            "spec.healthChecks[0].path: only HTTP health checks have a path"
        ]
    );
    assert_eq!(
        app("  cmd: x\n  healthChecks: [{path: health, intervalSeconds: 0, timeoutSeconds: 0}]\n"),
        [
            "spec.healthChecks[0].path: \"health\" must start with '/'",
            "spec.healthChecks[0].intervalSeconds: must be greater than 0",
            "spec.healthChecks[0].timeoutSeconds: must be greater than 0",
        ]
    );
}

#[test]
fn ports_are_unique_and_named_properly() {
    assert_eq!(
        app("  cmd: x\n  portDefinitions: [{port: 8080, name: http}, {port: 8080, name: http}, {name: Bad_Name}]\n"),
        [
            "spec.portDefinitions[1].name: \"http\" is already the name of port 0",
            "spec.portDefinitions[1].port: 8080 is already requested by port 0",
            "spec.portDefinitions[2].name: \"Bad_Name\" is not a valid DNS-1123 label: use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. \"my-app\")",
        ]
    );
    assert_eq!(
        app("  cmd: x\n  requirePorts: true\n  portDefinitions: [{port: 0}]\n"),
        ["spec.portDefinitions[0].port: requirePorts needs a fixed, non-zero port"]
    );
}

#[test]
fn backoff_unreachable_role_env_and_dependencies() {
    assert_eq!(
        app(
            "  cmd: x\n  backoffFactor: 0.5\n  unreachableStrategy: {inactiveAfterSeconds: 0, expungeAfterSeconds: 0}\n  role: ' bad'\n  env: {'A=B': x}\n  dependencies: [web, db_1]\n"
        ),
        [
            "spec.env[A=B]: \"A=B\" is not a valid environment variable name (non-empty, without '=' or NUL)",
            "spec.backoffFactor: must be at least 1.0 (got 0.5)",
            "spec.unreachableStrategy.inactiveAfterSeconds: must be at least 1",
            "spec.unreachableStrategy.expungeAfterSeconds: must be greater than inactiveAfterSeconds (0), got 0",
            "spec.role: \" bad\" is not a valid role: use \"*\" or names like \"web\" or \"eng/web\" (no spaces or dots)",
            "spec.dependencies[0]: an App cannot depend on itself (\"web\")",
            "spec.dependencies[1]: must name an App: \"db_1\" is not a valid DNS-1123 label: use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. \"my-app\")",
        ]
    );
}

#[test]
fn names_are_dns_1123() {
    let object = |kind: &str, name: &str, spec: &str| {
        violations(&format!("apiVersion: agora/v1\nkind: {kind}\nmetadata: {{name: '{name}'}}\nspec: {spec}\n"))
    };
    let label = "is not a valid DNS-1123 label: use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. \"my-app\")";
    assert_eq!(object("App", "Web", "{cmd: x}"), [format!("metadata.name: \"Web\" {label}")]);
    assert_eq!(
        object("App", "web.v2", "{cmd: x}"),
        [format!("metadata.name: \"web.v2\" {label}")],
        "app names are labels"
    );
    assert_eq!(object("App", "-web", "{cmd: x}"), [format!("metadata.name: \"-web\" {label}")]);
    let long = "a".repeat(64);
    assert_eq!(
        object("App", &long, "{cmd: x}"),
        [format!("metadata.name: \"{long}\" must be no more than 63 characters (has 64)")]
    );
    let agent = "{resources: {cpus: 1, mem: 1}}";
    assert_eq!(object("Agent", "node-1.rack-a", agent), Vec::<String>::new(), "agent names may be hostnames");
    assert_eq!(
        object("Agent", "node_1", agent),
        [
            "metadata.name: \"node_1\" is not a valid DNS-1123 subdomain: use lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit (e.g. \"node-1.rack-a\")"
        ]
    );
    assert_eq!(
        violations("apiVersion: agora/v1\nkind: App\nmetadata: {}\nspec: {cmd: x}\n"),
        ["metadata.name: name or generateName is required"]
    );
    assert_eq!(
        violations("apiVersion: agora/v1\nkind: App\nmetadata: {generateName: web-}\nspec: {cmd: x}\n"),
        Vec::<String>::new()
    );
    assert_eq!(
        violations("apiVersion: agora/v1\nkind: App\nmetadata: {generateName: Web-}\nspec: {cmd: x}\n"),
        [format!("metadata.generateName: with a 5-character suffix: \"Web-x0000\" {label}")]
    );
}

#[test]
fn namespaces_are_labels_and_only_for_namespaced_kinds() {
    assert_eq!(
        violations("apiVersion: agora/v1\nkind: App\nmetadata: {name: web, namespace: My_NS}\nspec: {cmd: x}\n"),
        [
            "metadata.namespace: \"My_NS\" is not a valid DNS-1123 label: use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. \"my-app\")"
        ]
    );
    assert_eq!(
        violations("apiVersion: agora/v1\nkind: Framework\nmetadata: {name: f, namespace: default}\nspec: {}\n"),
        ["metadata.namespace: must not be set: this kind is cluster-scoped"]
    );
}

#[test]
fn label_keys_and_values() {
    let with_labels = |labels: &str| {
        violations(&format!(
            "apiVersion: agora/v1\nkind: App\nmetadata: {{name: web, labels: {labels}}}\nspec: {{cmd: x}}\n"
        ))
    };
    assert_eq!(with_labels("{tier: web, app.kubernetes.io/name: web, empty: ''}"), Vec::<String>::new());
    assert_eq!(
        with_labels("{'tier!': web}"),
        [
            "metadata.labels[tier!]: key \"tier!\" is not valid: the name part must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit, with an optional DNS subdomain prefix and '/' (e.g. \"tier\" or \"example.com/tier\")"
        ]
    );
    assert_eq!(
        with_labels("{'Example.com/tier': web}"),
        [
            "metadata.labels[Example.com/tier]: prefix of key \"Example.com/tier\": \"Example.com\" is not a valid DNS-1123 subdomain: use lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit (e.g. \"node-1.rack-a\")"
        ]
    );
    assert_eq!(
        with_labels("{tier: '-web'}"),
        [
            "metadata.labels[tier]: value \"-web\" is not valid: at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ]
    );
    let long = "v".repeat(64);
    assert_eq!(with_labels(&format!("{{tier: {long}}}")).len(), 1, "values are at most 63 characters");
    assert_eq!(
        violations(
            "apiVersion: agora/v1\nkind: App\nmetadata: {name: web, annotations: {'bad key': x}}\nspec: {cmd: x}\n"
        )
        .len(),
        1,
        "annotation keys follow the label key rules"
    );
}

#[test]
fn every_violation_is_reported_at_once() {
    let got = app(
        "  cmd: x\n  args: [y]\n  instances: -1\n  cpus: 0\n  mem: 0\n  constraints: [[hostname, UNIQUE, x]]\n  healthChecks: [{portIndex: 3}]\n  upgradeStrategy: {minimumHealthCapacity: 2}\n",
    );
    assert_eq!(got.len(), 7, "{got:#?}");
}

#[test]
fn api_version_and_kind_must_match_the_type() {
    let task = "apiVersion: agora/v1\nkind: Task\nmetadata: {name: t, namespace: default}\nspec: {agent: '', framework: '', cmd: x, cpus: 0.1, mem: 32, ports: [{port: 0}, {port: 31000}, {port: 31000}]}\n";
    assert_eq!(
        violations(task),
        [
            "spec.agent: the agent the task is bound to is required",
            "spec.framework: the framework that launched the task is required",
            "spec.ports[0].port: a task's port is a real host port, not 0",
            "spec.ports[2].port: 31000 is already port 1",
        ]
    );
}

#[test]
fn cluster_kinds_validate_resources_roles_and_reservations() {
    let agent = "apiVersion: agora/v1\nkind: Agent\nmetadata: {name: n1}\nspec:\n  resources: {cpus: 4, mem: 1024, ports: [[31000, 31999], [31500, 32500], [10, 5]]}\n  reservations:\n    web: {cpus: 5, ports: [[40000, 40010]]}\n  attributes: {rack: ''}\n";
    assert_eq!(
        violations(agent),
        [
            "spec.resources.ports[2]: [10, 5] is not a port range: need 1 <= from <= to",
            "spec.resources.ports[1]: [31500, 32500] overlaps [31000, 31999]",
            "spec.reservations[web].ports[0]: [40000, 40010] is not within the agent's ports",
            "spec.reservations: reserve 5 cpus in all, more than the agent has (4)",
            "spec.attributes[rack]: an attribute needs a value",
        ]
    );
    let framework =
        "apiVersion: agora/v1\nkind: Framework\nmetadata: {name: f}\nspec: {roles: ['*', '*'], weight: 0}\n";
    assert_eq!(
        violations(framework),
        ["spec.roles[1]: \"*\" is listed twice", "spec.weight: must be greater than 0 (got 0)"]
    );
    let offer = "apiVersion: agora/v1\nkind: Offer\nmetadata: {name: o}\nspec: {framework: '', agent: a, resources: {cpus: -1}}\n";
    assert_eq!(
        violations(offer),
        [
            "spec.framework: the framework the offer is for is required",
            "spec.resources.cpus: must be between 0 and 100000 (got -1)"
        ]
    );
    let lease = "apiVersion: agora/v1\nkind: Lease\nmetadata: {name: l, namespace: agora-system}\nspec: {leaseDurationSeconds: 0}\n";
    assert_eq!(violations(lease), ["spec.leaseDurationSeconds: must be greater than 0 (got 0)"]);
    let event = "apiVersion: agora/v1\nkind: Event\nmetadata: {name: e, namespace: default}\ninvolvedObject: {kind: App, name: ''}\nreason: 'not pascal'\ncount: 0\n";
    assert_eq!(
        violations(event),
        [
            "involvedObject.name: the name of the object the event is about is required",
            "reason: \"not pascal\" must be one PascalCase word (letters and digits)",
            "count: must be at least 1 (got 0)",
        ]
    );
}

#[test]
fn users_and_limits_are_checked() {
    for user in ["www-data", "1000", "1000:1000", "app.user", "_svc", "a:b", "65532:shadow", "www-data:1000"] {
        assert_eq!(app(&format!("  cmd: x\n  user: '{user}'\n")), Vec::<String>::new(), "{user}");
    }
    let wrong = "is not a user: use a name (\"www-data\"), a uid (\"1000\"), or either with a group (\"1000:1000\", \
                 \"www-data:staff\")";
    for user in ["", "-x", "a b", "1000:", ":1", "99999999999", "a:b:c", "x/y", "a:-g"] {
        assert_eq!(app(&format!("  cmd: x\n  user: '{user}'\n")), [format!("spec.user: \"{user}\" {wrong}")], "{user}");
    }
    assert_eq!(app("  cmd: x\n  limits: {pids: 64}\n"), Vec::<String>::new());
    assert_eq!(app("  cmd: x\n  limits: {pids: 0}\n"), ["spec.limits.pids: must be between 1 and 4194304 (got 0)"]);
    assert_eq!(
        job("  parents: [a]\n  command: x\n  limits: {pids: 5000000}\n"),
        ["spec.limits.pids: must be between 1 and 4194304 (got 5000000)"]
    );
}

#[test]
fn integers_too_large_for_their_field_say_so() {
    let docs = agora_schemas::manifest::parse(
        "apiVersion: agora/v1\nkind: App\nmetadata: {name: web}\nspec: {cmd: x, instances: 1000000000000}\n",
        "t.yaml",
    );
    let error = docs.expect_err("refused").to_string();
    assert!(error.contains("spec.instances: 1000000000000 is out of range (at most 2147483647)"), "{error}");
}

#[test]
fn roles_have_a_positive_weight_and_a_guarantee_within_the_limit() {
    let role = |name: &str, spec: &str| {
        violations(&format!("apiVersion: agora/v1\nkind: Role\nmetadata: {{name: {name}}}\nspec: {spec}\n"))
    };
    assert!(role("eng.web", "{weight: 2, quota: {guarantee: {cpus: 4}, limit: {cpus: 8, mem: 1024}}}").is_empty());
    assert_eq!(
        role("eng", "{weight: 0, quota: {guarantee: {cpus: 9, mem: -1}, limit: {cpus: 8, disk: 1e16}}}"),
        [
            "spec.weight: must be greater than 0 (got 0)",
            "spec.quota.guarantee.mem: must be between 0 and 1000000000000000 (got -1)",
            "spec.quota.limit.disk: must be between 0 and 1000000000000000 (got 10000000000000000)",
            "spec.quota.guarantee.cpus: the guarantee (9) is more than the limit (8)",
        ]
    );
    // Frameworks cannot name a role with a dot: its Role object's name would be ambiguous.
    let framework = "apiVersion: agora/v1\nkind: Framework\nmetadata: {name: f}\nspec: {roles: [a.b]}\n";
    assert_eq!(
        violations(framework),
        [
            "spec.roles[0]: \"a.b\" is not a valid role: use \"*\" or names like \"web\" or \"eng/web\" (no spaces or dots)"
        ]
    );
}
