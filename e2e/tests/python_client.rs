//! The Python `kubernetes` client (installed by `scripts/install-deps.sh`) against `agora apiserver`'s secure
//! default: create, get, list with a selector, watch, dry runs, a 422, DynamicClient through discovery, and delete
//! collection — the script `e2e/clients/python_client.py` asserts each and exits non-zero on the first failure.

use std::path::PathBuf;
use std::process::Command;

use agora_e2e::ApiserverProcess as Apiserver;

#[test]
fn the_python_kubernetes_client_drives_agora() {
    let server = Apiserver::secure();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python_client.py");
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(server.kubeconfig())
        .env("HOME", home.path())
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client failed:\n{stdout}{stderr}");
    assert!(stdout.contains("python client: ok"), "{stdout}{stderr}");
}
