//! `agora validate` run as a process: the example manifests pass; a bad one fails with file, line and path.

use std::path::PathBuf;
use std::process::{Command, Output};

fn agora(args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agora"));
    command.args(args).current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    match stdin {
        None => command.output().unwrap(),
        Some(input) => {
            use std::io::Write;
            let mut child = command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

#[test]
fn example_manifests_validate() {
    let out = agora(&["validate", "-f", "manifests"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("manifests/web.yaml: App default/web is valid"), "{stdout}");
    assert!(stdout.contains("manifests/etl-pipeline.yaml: CronJob analytics/load is valid"), "{stdout}");
}

#[test]
fn json_output_shows_the_server_defaults() {
    let out = agora(&["validate", "-f", "examples/cluster/framework.yaml", "-o", "json"], None);
    assert!(out.status.success());
    let object: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(object["spec"]["suppressed"], false);
    assert_eq!(object["spec"]["weight"], 2.0);
}

#[test]
fn invalid_manifest_fails_with_every_violation_located() {
    let bad = "apiVersion: agora/v1\nkind: App\nmetadata:\n  name: web\nspec:\n  cmd: x\n  cpus: 0\n  instances: -1\n";
    let out = agora(&["validate", "-f", "-"], Some(bad));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "-:7:3: spec.cpus: must be between 0.001 and 100000 (got 0)",
            "-:8:3: spec.instances: must be greater than or equal to 0 (got -1)"
        ]
    );
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let out = agora(&["validate", "-f", "no/such.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading no/such.yaml"));
}

#[test]
fn help_lists_the_commands() {
    let out = agora(&["--help"], None);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("validate") && help.contains("version"), "{help}");
}
