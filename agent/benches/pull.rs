//! What a pull costs, against `skopeo copy` of the same image in the same run.
//!
//! Debian's `docker-registry` on loopback holds a ~100 MiB image of five layers (busybox and four of 24 MiB of random
//! bytes, which no compression shrinks), pushed with skopeo. Each round times:
//!
//! - **cold**: the agent's [`Puller`] into an empty store, against `skopeo copy docker://… dir:…` (a process, as a
//!   user runs it) into an empty directory — the target is ≤ 1.2× skopeo;
//! - **base present**: the same pull into a store that already has every layer but the top one;
//! - **unpack**: the first resolve of the pulled image (its layers unpacked for overlayfs), which skopeo never does;
//! - **warm**: a task's way to its root file system when every layer is present — `Always` (the manifest fetched
//!   and checked, nothing else) then resolve, and `IfNotPresent` (a lookup, no request) then resolve — the target is
//!   ≤ 50 ms.
//!
//! Median and slowest of the rounds; run with `cargo bench -p agora-agent --bench pull` (needs `make deps`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agora_agent::images::ImageStore;
use agora_agent::pull::{Progress, Puller, RegistryOptions};

const ROUNDS: usize = 5;
const LAYER_MIB: usize = 24;

fn start_registry(dir: &Path, port: u16) -> agora_e2e::Proc {
    let config = dir.join("config.yml");
    let storage = dir.join("storage");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        ),
    )
    .expect("the registry's config");
    let registry = agora_e2e::Proc::quiet(Path::new("/usr/bin/docker-registry"), [Path::new("serve"), &config]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    registry
}

/// busybox, then `layers` layers of random bytes, each a one-layer image stacked by hand into `name`.
fn build_image(store: &ImageStore, dir: &Path, layers: usize) -> String {
    let base = dir.join("rootfs-base/bin");
    std::fs::create_dir_all(&base).expect("a rootfs");
    std::fs::copy("/bin/busybox", base.join("busybox")).expect("/bin/busybox (Debian's busybox-static)");
    store.build(&dir.join("rootfs-base"), "part:0").expect("the base");
    let mut random = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    for n in 1..=layers {
        let rootfs = dir.join(format!("rootfs-{n}"));
        std::fs::create_dir_all(&rootfs).expect("a rootfs");
        let mut bytes = vec![0; LAYER_MIB << 20];
        std::io::Read::read_exact(&mut random, &mut bytes).expect("random bytes");
        std::fs::write(rootfs.join(format!("data-{n}")), bytes).expect("a layer's file");
        store.build(&rootfs, &format!("part:{n}")).expect("a layer");
    }
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").expect("a digest");
        serde_json::from_slice(&std::fs::read(store.root().join("blobs/sha256").join(hex)).expect("a blob"))
            .expect("JSON")
    };
    let mut manifest = serde_json::Value::Null;
    let mut config = serde_json::Value::Null;
    for n in 0..=layers {
        let part = blob(&store.lookup(&format!("part:{n}")).expect("index").expect("the part"));
        let part_config = blob(part["config"]["digest"].as_str().expect("config"));
        if n == 0 {
            (manifest, config) = (part, part_config);
        } else {
            manifest["layers"].as_array_mut().expect("layers").push(part["layers"][0].clone());
            config["rootfs"]["diff_ids"]
                .as_array_mut()
                .expect("diff ids")
                .push(part_config["rootfs"]["diff_ids"][0].clone());
        }
    }
    let sha = |bytes: &[u8]| format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(bytes));
    let config_bytes = config.to_string().into_bytes();
    store.put_verified(&config_bytes, &sha(&config_bytes)).expect("the config");
    manifest["config"]["digest"] = sha(&config_bytes).into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = manifest.to_string().into_bytes();
    store.put_verified(&manifest_bytes, &sha(&manifest_bytes)).expect("the manifest");
    store.name_image("big:1", &sha(&manifest_bytes)).expect("named").reference
}

fn stats(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    (times[times.len() / 2].as_secs_f64() * 1e3, times[times.len() - 1].as_secs_f64() * 1e3)
}

fn main() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let dir = scratch.path();
    let port = agora_e2e::free_port();
    let _registry = start_registry(dir, port);
    let source = ImageStore::open(&dir.join("source")).expect("a store");
    let name = build_image(&source, dir, 4);
    let pushed = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{name}", source.root().display()))
        .arg(format!("docker://127.0.0.1:{port}/team/big:1"))
        .output()
        .expect("skopeo is installed (make deps)");
    assert!(pushed.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&pushed.stderr));
    let reference = format!("127.0.0.1:{port}/team/big:1");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let quiet = |_: Progress| {};

    let (mut ours, mut theirs, mut base_present, mut unpack, mut warm_always, mut warm_present) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut size = 0;
    for round in 0..ROUNDS {
        // skopeo, cold.
        let target: PathBuf = dir.join(format!("skopeo-{round}"));
        let started = Instant::now();
        let copied = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", target.display()))
            .output()
            .expect("skopeo");
        theirs.push(started.elapsed());
        assert!(copied.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&copied.stderr));
        std::fs::remove_dir_all(&target).expect("removing skopeo's copy");

        // Ours, cold.
        let work = tempfile::tempdir().expect("a work dir");
        let store = ImageStore::open(work.path()).expect("a store");
        let puller = Puller::new(store.clone(), RegistryOptions::default());
        let started = Instant::now();
        let pulled = runtime.block_on(puller.pull(&reference, &[], &quiet)).expect("the pull");
        ours.push(started.elapsed());
        size = pulled.size;
        let started = Instant::now();
        store.resolve(&reference).expect("resolved");
        unpack.push(started.elapsed());

        // Warm: every layer present.
        let started = Instant::now();
        runtime.block_on(puller.pull(&reference, &[], &quiet)).expect("the pull");
        store.resolve(&reference).expect("resolved");
        warm_always.push(started.elapsed());
        let started = Instant::now();
        assert!(store.lookup(&reference).expect("index").is_some());
        store.resolve(&reference).expect("resolved");
        warm_present.push(started.elapsed());

        // The base present (every layer but the top one): a store that has the image with its top layer removed.
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store.root().join("blobs/sha256").join(pulled.digest.trim_start_matches("sha256:")))
                .expect("the manifest"),
        )
        .expect("JSON");
        let top = manifest["layers"].as_array().and_then(|l| l.last()).and_then(|l| l["digest"].as_str()).expect("top");
        std::fs::remove_file(store.root().join("blobs/sha256").join(top.trim_start_matches("sha256:"))).expect("rm");
        store.unname(std::slice::from_ref(&pulled.reference)).expect("unnamed");
        let started = Instant::now();
        runtime.block_on(puller.pull(&reference, &[], &quiet)).expect("the pull");
        base_present.push(started.elapsed());
    }
    let mib = size as f64 / 1_048_576.0;
    let (ours_median, ours_slowest) = stats(ours);
    let (theirs_median, theirs_slowest) = stats(theirs);
    println!("image: {mib:.1} MiB in 5 layers, loopback registry (docker-registry 2.8), {ROUNDS} rounds");
    println!("cold pull, agora:        {ours_median:8.1} ms median, {ours_slowest:8.1} ms slowest");
    println!("cold copy, skopeo:       {theirs_median:8.1} ms median, {theirs_slowest:8.1} ms slowest");
    println!("ratio agora / skopeo:    {:8.2} (target <= 1.2)", ours_median / theirs_median);
    let (m, s) = stats(base_present);
    println!("pull, base present:      {m:8.1} ms median, {s:8.1} ms slowest (one 24 MiB layer fetched)");
    let (m, s) = stats(unpack);
    println!("first unpack:            {m:8.1} ms median, {s:8.1} ms slowest (skopeo does not unpack)");
    let (m, s) = stats(warm_always);
    println!("warm, Always + resolve:  {m:8.2} ms median, {s:8.2} ms slowest (target <= 50 ms)");
    let (m, s) = stats(warm_present);
    println!("warm, present + resolve: {m:8.2} ms median, {s:8.2} ms slowest");
}
