//! Bad manifests get errors a person can act on: file, line, column, field path, and what to write instead.

use agora_schemas::manifest::{parse, parse_and_validate};

/// The single error of decoding `source`, rendered as the CLI prints it.
fn error(origin: &str, source: &str) -> String {
    match parse(source, origin) {
        Ok(docs) => panic!("expected an error, got {docs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let source = "apiVersion: agora/v1\nkind: App\nmetadata:\n  name: web\n  labels: {tier: web\nspec:\n  cmd: x\n";
    let message = error("web.yaml", source);
    assert!(message.starts_with("web.yaml:6:5: "), "{message}");
    assert!(message.contains("did not find expected ',' or '}'"), "{message}");
}

#[test]
fn yaml_syntax_error_in_a_later_document() {
    let source =
        "apiVersion: agora/v1\nkind: App\nmetadata: {name: a}\nspec: {cmd: x}\n---\nkind: App\n  bad: indent\n";
    let e = parse(source, "two.yaml").unwrap_err();
    assert_eq!((e.document, e.line), (1, Some(7)), "{e}");
    assert!(e.to_string().starts_with("two.yaml:7:"), "{e}");
}

#[test]
fn json_syntax_error_names_line_and_column() {
    let source = "{\n  \"apiVersion\": \"agora/v1\",\n  \"kind\": \"App\",\n  \"metadata\": {\"name\": \"web\",}\n}\n";
    let message = error("web.json", source);
    assert!(message.starts_with("web.json:4:"), "{message}");
    assert!(message.contains("trailing comma"), "{message}");
}

#[test]
fn unknown_field_names_its_path_and_suggests_the_right_one() {
    let source = "apiVersion: agora/v1\nkind: App\nmetadata:\n  name: web\nspec:\n  cmd: x\n  healthChecks:\n    - protocol: HTTP\n      intervalSecond: 5\n";
    assert_eq!(
        error("web.yaml", source),
        "web.yaml:9:7: spec.healthChecks[0].intervalSecond: unknown field \"intervalSecond\" (did you mean \"intervalSeconds\"?)"
    );
}

#[test]
fn unknown_field_without_a_close_match_lists_the_known_ones() {
    let source = "apiVersion: agora/v1\nkind: Framework\nmetadata: {name: f}\nspec:\n  priority: 5\n";
    let message = error("fw.yaml", source);
    assert!(message.starts_with("fw.yaml:5:3: spec.priority: unknown field \"priority\"; known fields: roles, weight, user, failoverTimeoutSeconds, suppressed"), "{message}");
}

#[test]
fn unknown_field_in_metadata_is_rejected_too() {
    let source = "apiVersion: agora/v1\nkind: App\nmetadata:\n  name: web\n  label: {a: b}\nspec: {cmd: x}\n";
    assert_eq!(
        error("web.yaml", source),
        "web.yaml:5:3: metadata.label: unknown field \"label\" (did you mean \"labels\"?)"
    );
}

#[test]
fn wrong_type_names_the_path_and_the_expected_type() {
    let source = "apiVersion: agora/v1\nkind: App\nmetadata: {name: web}\nspec:\n  cmd: x\n  cpus: two\n";
    assert_eq!(error("web.yaml", source), "web.yaml:6:9: spec.cpus: expected a number, got string \"two\"");
    let source = "apiVersion: agora/v1\nkind: App\nmetadata: {name: web}\nspec:\n  cmd: x\n  portDefinitions:\n    - port: 70000\n";
    assert_eq!(
        error("web.yaml", source),
        "web.yaml:7:13: spec.portDefinitions[0].port: 70000 is out of range (at most 65535)"
    );
    let source = "apiVersion: agora/v1\nkind: App\nmetadata: {name: web}\nspec:\n  cmd: x\n  env: [A, B]\n";
    assert_eq!(error("web.yaml", source), "web.yaml:6:8: spec.env: expected a mapping, got sequence");
    let source = "apiVersion: agora/v1\nkind: App\nmetadata: {name: web}\nspec:\n  cmd: x\n  requirePorts: maybe\n";
    assert_eq!(error("web.yaml", source), "web.yaml:6:17: spec.requirePorts: expected a boolean, got string \"maybe\"");
}

#[test]
fn wrong_type_in_json_names_the_path() {
    let source = r#"{"apiVersion": "agora/v1", "kind": "CronJob", "metadata": {"name": "j"}, "spec": {"command": "x", "parents": ["a"], "retries": "three"}}"#;
    let message = error("job.json", source);
    assert!(message.starts_with("job.json:1:"), "{message}");
    assert!(message.ends_with("spec.retries: expected a non-negative integer, got string \"three\""), "{message}");
}

#[test]
fn unknown_enum_value_lists_the_accepted_ones() {
    let source = "apiVersion: agora/v1\nkind: CronJob\nmetadata: {name: j}\nspec:\n  command: x\n  parents: [a]\n  concurrencyPolicy: Forbidden\n";
    assert_eq!(
        error("job.yaml", source),
        "job.yaml:7:22: spec.concurrencyPolicy: unknown value \"Forbidden\" (did you mean \"Forbid\"?); expected one of Forbid, Allow, Replace"
    );
}

#[test]
fn missing_required_field_is_named() {
    let source = "apiVersion: agora/v1\nkind: App\nmetadata: {name: web}\n";
    assert!(error("web.yaml", source).ends_with("missing required field \"spec\""));
}

#[test]
fn document_without_kind_says_so() {
    let source = "apiVersion: agora/v1\nmetadata:\n  name: web\nspec: {cmd: x}\n";
    assert_eq!(
        error("web.yaml", source),
        "web.yaml:1: the document has no \"kind\": every object needs both, e.g. \"apiVersion: agora/v1\" and \"kind: App\""
    );
}

#[test]
fn document_without_api_version_says_so() {
    let source = "# a comment first\nkind: App\nmetadata:\n  name: web\nspec: {cmd: x}\n";
    assert_eq!(
        error("web.yaml", source),
        "web.yaml:2: the document has no \"apiVersion\": every object needs both, e.g. \"apiVersion: agora/v1\" and \"kind: App\""
    );
}

#[test]
fn foreign_api_version_and_unknown_kind_are_named() {
    let source = "apiVersion: apps/v1\nkind: App\nmetadata: {name: web}\nspec: {cmd: x}\n";
    assert_eq!(
        error("web.yaml", source),
        "web.yaml:1:1: apiVersion: \"apps/v1\" is not served by Agora: use \"agora/v1\" (rbac.authorization.k8s.io/v1 for RBAC's kinds)"
    );
    let source = "apiVersion: agora/v1\nkind: Ap\nmetadata: {name: web}\nspec: {cmd: x}\n";
    assert_eq!(
        error("web.yaml", source),
        "web.yaml:2:1: kind: unknown kind \"Ap\" (did you mean \"App\"?); Agora serves App, AppVersion, CronJob, Task, Framework, Offer, Agent, Role, Lease, Event, Secret, Token in agora/v1"
    );
}

#[test]
fn a_document_that_is_not_a_mapping_says_what_it_is() {
    assert_eq!(
        error("x.yaml", "- a\n- b\n"),
        "x.yaml:1: expected an object (a mapping with apiVersion, kind, metadata, spec), got a list"
    );
}

#[test]
fn validation_errors_carry_the_line_of_the_field() {
    let source = "apiVersion: agora/v1\nkind: App\nmetadata:\n  name: web\nspec:\n  cmd: x\n  cpus: 0\n  healthChecks:\n    - protocol: HTTP\n      portIndex: 2\n";
    let errors: Vec<String> =
        parse_and_validate(source, "web.yaml").unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "web.yaml:7:3: spec.cpus: must be between 0.001 and 100000 (got 0)",
            "web.yaml:10:7: spec.healthChecks[0].portIndex: must be less than the number of ports (1)",
        ]
    );
}

#[test]
fn validation_errors_of_unwritten_fields_point_at_the_nearest_written_parent() {
    // No cmd, no args, no image: the error is about `spec.cmd`, which is not in the file; `spec` is.
    let source = "apiVersion: agora/v1\nkind: App\nmetadata: {name: web}\nspec:\n  instances: 2\n";
    let errors: Vec<String> =
        parse_and_validate(source, "web.yaml").unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        ["web.yaml:4:1: spec.cmd: one of cmd or args is required (only a container image can supply the command)"]
    );
}

#[test]
fn every_broken_document_of_a_file_is_reported_not_only_the_first() {
    let source = "apiVersion: agora/v1\nkind: App\nmetadata: {name: a}\nspec: {cmd: x, cpu: 2}\n---\n\
                  apiVersion: agora/v1\nkind: Ap\nmetadata: {name: b}\nspec: {cmd: x}\n---\n\
                  apiVersion: agora/v1\nkind: App\nmetadata: {name: c}\nspec: {cmd: x, instances: -1}\n---\n\
                  apiVersion: agora/v1\nkind: App\nmetadata: {name: d}\nspec: {cmd: x}\n";
    let errors = parse_and_validate(source, "four.yaml").unwrap_err();
    let said: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.iter().map(|e| e.document).collect::<Vec<_>>(), [0, 1, 2], "{said:#?}");
    assert!(said[0].starts_with("four.yaml:4:") && said[0].contains("cpu"), "{}", said[0]);
    assert!(said[1].contains("unknown kind \"Ap\""), "{}", said[1]);
    assert!(said[2].contains("spec.instances"), "{}", said[2]);
    // `parse` alone still answers with the first.
    assert_eq!(parse(source, "four.yaml").unwrap_err().to_string(), said[0]);
}
