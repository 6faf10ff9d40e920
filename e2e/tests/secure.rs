//! `agora apiserver`'s secure default as a process: the credentials it makes (private files), kept across a restart
//! so every kubeconfig stays valid; and the insecure mode refused beyond loopback.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use agora_client::{Api, ListParams};
use agora_e2e::{ApiserverProcess, agora_binary};
use agora_schemas::App;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_default_makes_private_credentials_and_keeps_them_across_a_restart() {
    let mut server = tokio::task::block_in_place(ApiserverProcess::secure);
    let data = server.data_dir();
    for file in ["token", "kubeconfig", "pki/ca.key", "pki/server.key"] {
        let mode = std::fs::metadata(data.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file} is its owner's only");
    }
    let kubeconfig = std::fs::read_to_string(server.kubeconfig()).unwrap();
    assert!(kubeconfig.contains(&format!("server: https://127.0.0.1:{}", server.port)), "{kubeconfig}");
    assert!(kubeconfig.contains("certificate-authority-data:"), "{kubeconfig}");
    let client = server.client();
    Api::<App>::all(client.clone()).list(&ListParams::default()).await.unwrap();

    tokio::task::block_in_place(|| server.restart());
    assert_eq!(std::fs::read_to_string(server.kubeconfig()).unwrap(), kubeconfig, "the same CA and token");
    Api::<App>::all(client).list(&ListParams::default()).await.expect("a client made before the restart still works");
}

#[test]
fn without_authentication_the_apiserver_serves_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(agora_binary())
        .args(["apiserver", "--listen", "0.0.0.0:0", "--insecure-allow-unauthenticated", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure-allow-unauthenticated is for loopback addresses only"), "{stderr}");
    let output = Command::new(agora_binary())
        .args(["apiserver", "--insecure-allow-unauthenticated", "--token-file", "/nope", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "a token with the insecure mode makes no sense and is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"), "{output:?}");
}
