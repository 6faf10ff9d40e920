//! Images from a registry, for real: Debian's `docker-registry` (distribution 2.8) on loopback, images pushed to it
//! with `skopeo`, and an agent with an empty image store running tasks that name them. Pulled and run; a second
//! image that shares a layer fetches only what it lacks (the registry's access log counts the blob fetches); a tag
//! that does not exist, a blob corrupted in the registry's storage, an image index (multi-platform), and
//! `imagePullPolicy` `Always` and `Never`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use agora_agent::images::ImageStore;
use agora_client::{Api, LogParams, PostParams};
use agora_e2e::{ApiserverProcess, free_port, http_ok};
use agora_schemas::{Task, TaskState};
use common::{WorkDir, busybox_rootfs, start_agent, task, terminal};
use serde_json::{Value, json};
use sha2::Digest as _;

/// `docker-registry serve` on a free loopback port, its storage and access log in `dir`.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
    log: PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, "", false)
    }

    /// With `extra` appended to its configuration (TLS, auth); `tls` says how to check it is up.
    fn start_with(dir: &Path, extra: &str, tls: bool) -> Self {
        let port = free_port();
        let storage = dir.join("storage");
        let log = dir.join("registry.log");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::fs::File::create(dir.join("registry.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("docker-registry is installed (make deps)");
        let deadline = Instant::now() + Duration::from_secs(20);
        let up = || if tls { std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() } else { http_ok(port, "/v2/") };
        while !up() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, storage, log }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The agent's completed GETs of `uri` in the access log, with their statuses.
    fn agent_gets(&self, uri: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("msg=\"response completed\"") && l.contains("http.request.method=GET"))
            .filter(|l| l.contains("http.request.useragent=agora-agent"))
            // logfmt quotes a value with a colon in it
            .filter(|l| {
                l.split_whitespace()
                    .any(|f| f == format!("http.request.uri={uri}") || f == format!("http.request.uri=\"{uri}\""))
            })
            .filter_map(|l| {
                l.split_whitespace().find_map(|f| f.strip_prefix("http.response.status=")).map(str::to_owned)
            })
            .collect()
    }

    /// How many times the agent fetched blob `digest` (GETs answered 200 or 307).
    fn blob_fetches(&self, digest: &str) -> usize {
        let statuses = self.agent_gets(&format!("/v2/team/web/blobs/{digest}"));
        statuses.iter().filter(|s| *s == "200" || *s == "307").count()
    }

    /// How many times the agent fetched the manifest of `tag`.
    fn manifest_fetches(&self, tag: &str) -> usize {
        self.agent_gets(&format!("/v2/team/web/manifests/{tag}")).len()
    }

    /// Copies `name` from the OCI layout at `layout` to `team/web:<tag>` in the registry (an index with every image
    /// it lists).
    fn push(&self, layout: &Path, name: &str, tag: &str) {
        self.push_as(layout, name, tag, &[]);
    }

    fn push_as(&self, layout: &Path, name: &str, tag: &str, flags: &[&str]) {
        let pushed = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--all", "--quiet", "--dest-tls-verify=false"])
            .args(flags)
            .arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/team/web:{tag}", self.address()))
            .output()
            .expect("skopeo is installed (make deps)");
        assert!(pushed.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&pushed.stderr));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

fn blob(store: &ImageStore, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(store.root().join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// An image of `base`'s layers with `top`'s layer on them, named `name` in `store` (its config follows `base`'s).
fn stacked(store: &ImageStore, base: &str, top: &str, name: &str) -> Vec<String> {
    let (base, top) = (store.lookup(base).unwrap().unwrap(), store.lookup(top).unwrap().unwrap());
    let (base, top) = (blob(store, &base), blob(store, &top));
    let mut config = blob(store, base["config"]["digest"].as_str().unwrap());
    let top_config = blob(store, top["config"]["digest"].as_str().unwrap());
    let diff_ids = config["rootfs"]["diff_ids"].as_array_mut().unwrap();
    diff_ids.extend(top_config["rootfs"]["diff_ids"].as_array().unwrap().iter().cloned());
    let config_bytes = config.to_string().into_bytes();
    let config_digest = sha256(&config_bytes);
    store.put_verified(&config_bytes, &config_digest).unwrap();
    let mut manifest = base.clone();
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_bytes.len());
    manifest["layers"].as_array_mut().unwrap().extend(top["layers"].as_array().unwrap().iter().cloned());
    let manifest_bytes = manifest.to_string().into_bytes();
    let digest = sha256(&manifest_bytes);
    store.put_verified(&manifest_bytes, &digest).unwrap();
    store.name_image(name, &digest).unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect()
}

/// A one-layer image holding `/etc/version` with `text`, in `store` as `name`; its layer's digest.
fn version_image(store: &ImageStore, dir: &Path, name: &str, text: &str) -> String {
    let rootfs = dir.join(format!("rootfs-{name}"));
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/version"), text).unwrap();
    store.build(&rootfs, name).unwrap();
    let manifest = blob(store, &store.lookup(name).unwrap().unwrap());
    manifest["layers"][0]["digest"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_images_pulled_from_a_registry_verified_and_shared() {
    let dir = tempfile::tempdir().unwrap();
    let registry = tokio::task::block_in_place(|| Registry::start(dir.path()));
    // Images to push, made in an OCI layout of their own (an image store is one): busybox as the base layer.
    let layout_work = dir.path().join("layout");
    let source = ImageStore::open(&layout_work).unwrap();
    let base_rootfs = dir.path().join("rootfs-base");
    busybox_rootfs(&base_rootfs);
    // Not byte for byte the agent's own busybox image (built within the same second, it would be, and the agent
    // would never fetch the base layer: content addressing at work).
    std::fs::write(base_rootfs.join("base"), "the registry's base\n").unwrap();
    source.build(&base_rootfs, "base:1").unwrap();
    let one = version_image(&source, dir.path(), "v:1", "one\n");
    let two = version_image(&source, dir.path(), "v:2", "two\n");
    let three = version_image(&source, dir.path(), "v:3", "three\n");
    let web1 = stacked(&source, "base:1", "v:1", "web:1");
    let web2 = stacked(&source, "base:1", "v:2", "web:2");
    stacked(&source, "base:1", "v:3", "web:3");
    assert_eq!((web1[0] == web2[0], &web1[1], &web2[1]), (true, &one, &two), "web:1 and web:2 share the base");
    let layout = source.root().to_path_buf();
    // An image index (a multi-platform image): web:1 for this machine's architecture, web:2 for another.
    let (arch, other) = if std::env::consts::ARCH == "aarch64" { ("arm64", "amd64") } else { ("amd64", "arm64") };
    let entry = |name: &str, arch: &str| {
        let digest = source.lookup(name).unwrap().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap().to_owned();
        let size = std::fs::metadata(layout.join("blobs/sha256").join(hex)).unwrap().len();
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
               "platform": {"architecture": arch, "os": "linux"}})
    };
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": [entry("web:2", other), entry("web:1", arch)]});
    let index_bytes = index.to_string().into_bytes();
    let index_digest = sha256(&index_bytes);
    source.put_verified(&index_bytes, &index_digest).unwrap();
    let mut names: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    names["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}));
    std::fs::write(layout.join("index.json"), names.to_string()).unwrap();
    tokio::task::block_in_place(|| {
        for tag in ["1", "2", "3"] {
            registry.push(&layout, &format!("web:{tag}"), tag);
        }
        registry.push(&layout, "multi", "multi");
    });

    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, agent_dir, client) = start_agent(&server, &work).await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let create = |t: Task| {
        let tasks = tasks.clone();
        async move { tasks.create(&PostParams::default(), &t).await.unwrap() }
    };
    let image = |tag: &str| format!("{}/team/web:{tag}", registry.address());
    let version = "cat /etc/version";

    // Pulled and run: the agent's store had only busybox.
    create(task("web1", Some(&image("1")), version, json!({}))).await;
    let ended = terminal(&tasks, "web1").await;
    assert_eq!((ended.state, ended.exit_code), (TaskState::Finished, Some(0)), "{ended:?}");
    assert_eq!(tasks.logs("web1", &LogParams::default()).await.unwrap(), "one\n");
    let store = ImageStore::open(&agent_dir).unwrap();
    assert!(store.lookup(&image("1")).unwrap().is_some(), "named in the agent's store by its full reference");

    // The second image shares the base layer: only its own layer is fetched.
    create(task("web2", Some(&image("2")), version, json!({}))).await;
    assert_eq!(terminal(&tasks, "web2").await.state, TaskState::Finished);
    assert_eq!(tasks.logs("web2", &LogParams::default()).await.unwrap(), "two\n");
    assert_eq!(registry.blob_fetches(&web1[0]), 1, "the shared base layer is fetched once");
    assert_eq!((registry.blob_fetches(&one), registry.blob_fetches(&two)), (1, 1));

    // A later task of an image the store has (IfNotPresent) asks the registry nothing; Always asks for the manifest
    // again, and still fetches no layer it has.
    create(task("web1-again", Some(&image("1")), version, json!({}))).await;
    assert_eq!(terminal(&tasks, "web1-again").await.state, TaskState::Finished);
    assert_eq!(registry.manifest_fetches("1"), 1);
    let always = json!({"container": {"image": image("1"), "imagePullPolicy": "Always"}});
    create(task("web1-always", None, version, always)).await;
    assert_eq!(terminal(&tasks, "web1-always").await.state, TaskState::Finished);
    assert_eq!(registry.manifest_fetches("1"), 2, "Always asks the registry");
    assert_eq!((registry.blob_fetches(&web1[0]), registry.blob_fetches(&one)), (1, 1), "and fetches no layer again");

    // An image index: the agent takes the image for linux and its architecture (web:1's, already here).
    create(task("multi", Some(&image("multi")), version, json!({}))).await;
    let ended = terminal(&tasks, "multi").await;
    assert_eq!(ended.state, TaskState::Finished, "{ended:?}");
    assert_eq!(tasks.logs("multi", &LogParams::default()).await.unwrap(), "one\n", "this machine's platform");
    assert_eq!(registry.manifest_fetches("multi"), 1);
    let chosen = source.lookup("web:1").unwrap().unwrap();
    assert_eq!(registry.manifest_fetches(&chosen), 1, "the index's entry for this platform, by digest");

    // Never: only what the store has.
    let never = json!({"container": {"image": image("3"), "imagePullPolicy": "Never"}});
    create(task("web3-never", None, version, never)).await;
    let refused = terminal(&tasks, "web3-never").await;
    assert_eq!((refused.state, refused.reason.as_deref()), (TaskState::Failed, Some("ImageNotFound")), "{refused:?}");
    assert!(refused.message.as_deref().is_some_and(|m| m.contains("imagePullPolicy is Never")), "{refused:?}");

    // A tag the registry does not have.
    create(task("missing", Some(&image("nope")), version, json!({}))).await;
    let missing = terminal(&tasks, "missing").await;
    assert_eq!((missing.state, missing.reason.as_deref()), (TaskState::Failed, Some("ImageNotFound")), "{missing:?}");
    assert!(missing.message.as_deref().is_some_and(|m| m.contains(&image("nope"))), "{missing:?}");

    // A blob corrupted in the registry's storage: never run, the digest named, nothing of it kept.
    let hex = three.strip_prefix("sha256:").unwrap();
    let data = registry.storage.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    create(task("web3", Some(&image("3")), "echo RAN", json!({}))).await;
    let corrupt = terminal(&tasks, "web3").await;
    assert_eq!((corrupt.state, corrupt.reason.as_deref()), (TaskState::Failed, Some("ImagePullFailed")), "{corrupt:?}");
    let message = corrupt.message.clone().unwrap_or_default();
    assert!(message.contains(&three) && message.contains("does not match"), "{message}");
    assert!(!store.has_blob(&three), "the corrupt blob is not kept");
    assert!(store.lookup(&image("3")).unwrap().is_none(), "nor the image named");
    assert_eq!(tasks.logs("web3", &LogParams::default()).await.unwrap_or_default(), "", "it never ran");

    // `agora image pull` into another store, and `image list` shows it; a missing tag fails, saying so.
    let other = dir.path().join("other-store");
    let agora = |args: &[&str]| {
        let output = Command::new(agora_e2e::agora_binary()).args(args).arg("--work-dir").arg(&other).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (code, said) = tokio::task::block_in_place(|| agora(&["image", "pull", &image("2")]));
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains(&format!("pulled {}", image("2"))), "{said}");
    let (_, listed) = tokio::task::block_in_place(|| agora(&["image", "list"]));
    assert!(listed.contains(&image("2")), "{listed}");
    let (code, said) = tokio::task::block_in_place(|| agora(&["image", "pull", &image("nope")]));
    assert_ne!(code, Some(0));
    assert!(said.contains("not found"), "{said}");
}

fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program).args(args).current_dir(dir).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A registry that serves TLS (a certificate of a CA the test makes) and asks for a password (htpasswd, bcrypt):
/// the agent reaches it with `--registry-ca` and the credentials of the task's pull secret (`agora image pull` with
/// those of `--registry-config`), and the password appears in no Task, Event or message — not even when it is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_tls_and_a_password_is_pulled_from_and_the_password_shows_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let password = "s3cret-pa55word";
    tokio::task::block_in_place(|| {
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=agora-test-ca",
            ],
            d,
        );
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "registry.key",
                "-out",
                "registry.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            d,
        );
        std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "registry.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "registry.pem",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
            d,
        );
        let entry = run("htpasswd", &["-Bbn", "alice", password], d);
        std::fs::write(d.join("htpasswd"), entry).unwrap();
    });
    let extra = format!(
        "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: agora-test\n    path: {}\n",
        d.join("registry.pem").display(),
        d.join("registry.key").display(),
        d.join("htpasswd").display()
    );
    let registry = tokio::task::block_in_place(|| Registry::start_with(d, &extra, true));
    let source = ImageStore::open(&d.join("layout")).unwrap();
    let rootfs = d.join("rootfs");
    busybox_rootfs(&rootfs);
    source.build(&rootfs, "web:1").unwrap();
    let creds = format!("alice:{password}");
    tokio::task::block_in_place(|| registry.push_as(source.root(), "web:1", "private", &["--dest-creds", &creds]));
    let encode = |text: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(text)
    };
    let config = |auth: &str| json!({"auths": {registry.address(): {"auth": encode(auth)}}}).to_string();
    std::fs::write(d.join("config.json"), config(&creds)).unwrap();
    std::fs::write(d.join("wrong.json"), config(&format!("alice:{password}-but-wrong"))).unwrap();
    let ca = format!("{}={}", registry.address(), d.join("ca.pem").display());
    let image = format!("{}/team/web:private", registry.address());

    // The agent, with the CA but no credentials of its own: the task brings them, as a pull secret.
    let server = tokio::task::block_in_place(ApiserverProcess::secure);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let config_file = d.join("config.json").display().to_string();
    let (_agent, _agent_dir, client) = common::start_agent_with(&server, &work, &["--registry-ca", ca.as_str()]).await;
    let tasks: Api<Task> = Api::namespaced(client.clone(), "default");
    let with_secrets = |names: &[&str]| {
        let secrets: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
        json!({"container": {"image": image, "imagePullSecrets": secrets}})
    };

    // No secret, a secret that does not exist: refused, saying which, and the password nowhere.
    tasks.create(&PostParams::default(), &task("anonymous", Some(&image), "true", json!({}))).await.unwrap();
    tasks.create(&PostParams::default(), &task("missing", None, "true", with_secrets(&["nope"]))).await.unwrap();
    let anonymous = terminal(&tasks, "anonymous").await;
    assert_eq!((anonymous.state, anonymous.reason.as_deref()), (TaskState::Failed, Some("ImagePullFailed")));
    let said = anonymous.message.unwrap_or_default();
    assert!(said.contains("refused") || said.contains("authentication"), "{said}");
    let missing = terminal(&tasks, "missing").await;
    assert_eq!(missing.reason.as_deref(), Some("ImagePullFailed"), "{missing:?}");
    assert!(missing.message.unwrap_or_default().contains("pull secret default/nope does not exist"));

    // The secret, made by `agora create secret docker-registry` with the password on stdin: the task runs.
    let created = tokio::task::block_in_place(|| {
        let mut child = Command::new(agora_e2e::agora_binary())
            .args(["create", "secret", "docker-registry", "regcred", "--docker-server", &registry.address()])
            .args(["--docker-username", "alice", "--password-stdin"])
            .args(server.cluster_args())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{password}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    });
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert_eq!(String::from_utf8_lossy(&created.stdout), "secret.agora/regcred created\n");
    let described = tokio::task::block_in_place(|| {
        Command::new(agora_e2e::agora_binary())
            .args(["describe", "secret", "regcred"])
            .args(server.cluster_args())
            .output()
            .unwrap()
    });
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(described.contains("Type:") && described.contains(".dockerconfigjson:"), "{described}");
    assert!(!described.contains(password), "{described}");
    tasks
        .create(&PostParams::default(), &task("private", None, "echo pulled", with_secrets(&["nope-not", "regcred"])))
        .await
        .unwrap();
    let ended = terminal(&tasks, "private").await;
    assert_eq!(ended.reason.as_deref(), Some("ImagePullFailed"), "a missing secret in the list fails: {ended:?}");
    tasks
        .create(&PostParams::default(), &task("private2", None, "echo pulled", with_secrets(&["regcred"])))
        .await
        .unwrap();
    let ended = terminal(&tasks, "private2").await;
    assert_eq!((ended.state, ended.exit_code), (TaskState::Finished, Some(0)), "{ended:?}");
    assert_eq!(tasks.logs("private2", &LogParams::default()).await.unwrap(), "pulled\n");

    // Without credentials, or with wrong ones: refused, saying so, without the password.
    let pull = |extra: &[&str]| {
        let output = Command::new(agora_e2e::agora_binary())
            .args(["image", "pull", &image, "--registry-ca", &ca, "--work-dir"])
            .arg(d.join("cli-store"))
            .args(extra)
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let wrong = d.join("wrong.json").display().to_string();
    for (what, extra) in [("no credentials", vec![]), ("a wrong password", vec!["--registry-config", wrong.as_str()])] {
        let (ok, said) = tokio::task::block_in_place(|| pull(&extra));
        assert!(!ok, "{what}: {said}");
        assert!(said.contains("refused") || said.contains("authentication"), "{what}: {said}");
        assert!(!said.contains(password) && !said.contains(&encode(&creds)), "{what}: the password shows: {said}");
    }
    let (ok, said) = tokio::task::block_in_place(|| pull(&["--registry-config", config_file.as_str()]));
    assert!(ok, "{said}");

    // Nowhere in the Tasks or the Events.
    let everything = format!(
        "{}{}",
        serde_json::to_string(&tasks.list(&Default::default()).await.unwrap().items).unwrap(),
        serde_json::to_string(
            &Api::<agora_schemas::Event>::namespaced(client, "default").list(&Default::default()).await.unwrap().items
        )
        .unwrap()
    );
    assert!(!everything.contains(password) && !everything.contains(&encode(&creds)), "the password shows");
}

/// A registry that accepts connections and never answers: the task shows it is pulling, and a kill ends the pull at
/// once (not after the client's minute-long read timeout), the task `Killed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_ends_a_pull_that_hangs() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    // Connections are accepted and held, never answered.
    let held = std::thread::spawn(move || silent.incoming().take(8).filter_map(Result::ok).collect::<Vec<_>>());
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, _agent_dir, client) = start_agent(&server, &work).await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let image = format!("{address}/team/web:1");
    tasks.create(&PostParams::default(), &task("stuck", Some(&image), "true", json!({}))).await.unwrap();
    agora_e2e::eventually(Duration::from_secs(20), "the task is pulling", || async {
        tasks.get("stuck").await.ok()?.status.filter(|s| s.state == TaskState::Starting)
    })
    .await;
    let asked = Instant::now();
    let kill = agora_client::Patch::Merge(json!({"spec": {"killRequested": true}}));
    tasks.patch("stuck", &agora_client::PatchParams::default(), &kill).await.unwrap();
    let ended = terminal(&tasks, "stuck").await;
    assert_eq!((ended.state, ended.reason.as_deref()), (TaskState::Killed, Some("KillRequested")), "{ended:?}");
    assert!(ended.message.unwrap_or_default().contains("while its image"), "the message says it was pulling");
    assert!(asked.elapsed() < Duration::from_secs(30), "ended by the kill, not by a timeout");
    drop(held);
}

/// A one-layer image holding `/data`, `mib` MiB of random bytes (so the layer does not compress), in `store` as
/// `name`; its layer's digest.
fn random_image(store: &ImageStore, dir: &Path, name: &str, mib: usize) -> String {
    let rootfs = dir.join(format!("rootfs-{name}"));
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut bytes = vec![0; mib << 20];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    std::fs::write(rootfs.join("data"), bytes).unwrap();
    store.build(&rootfs, name).unwrap();
    let manifest = blob(store, &store.lookup(name).unwrap().unwrap());
    manifest["layers"][0]["digest"].as_str().unwrap().to_owned()
}

fn image_command(agent_dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(agora_e2e::agora_binary())
        .arg("image")
        .args(args)
        .arg("--work-dir")
        .arg(agent_dir)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// An agent with a 40 MiB image budget and three images of a shared base and 8 MiB of their own (16 MiB each on
/// disk, blob and unpacked): the third pull puts the store over budget, and the least recently used image no task
/// uses goes — web:2, not the older web:1 that a running task uses — with its own layer, the shared base kept.
/// `agora image rm` refuses the image in use, naming the task, and removes it once the task has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_store_keeps_its_budget_and_never_collects_an_image_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let registry = tokio::task::block_in_place(|| Registry::start(dir.path()));
    let source = ImageStore::open(&dir.path().join("layout")).unwrap();
    let base_rootfs = dir.path().join("rootfs-base");
    busybox_rootfs(&base_rootfs);
    // Not byte for byte the agent's own busybox image (built within the same second, it would be, and the agent
    // would never fetch the base layer: content addressing at work).
    std::fs::write(base_rootfs.join("base"), "the registry's base\n").unwrap();
    source.build(&base_rootfs, "base:1").unwrap();
    let mut own = Vec::new();
    for n in 1..=3 {
        own.push(random_image(&source, dir.path(), &format!("data:{n}"), 8));
        stacked(&source, "base:1", &format!("data:{n}"), &format!("web:{n}"));
        tokio::task::block_in_place(|| registry.push(source.root(), &format!("web:{n}"), &n.to_string()));
    }
    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, agent_dir, client) = common::start_agent_with(&server, &work, &["--image-gc-budget", "40M"]).await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let image = |n: u32| format!("{}/team/web:{n}", registry.address());

    tasks.create(&PostParams::default(), &task("keeper", Some(&image(1)), "sleep 600", json!({}))).await.unwrap();
    common::running(&tasks, "keeper").await;
    for (name, n) in [("two", 2), ("three", 3)] {
        tasks.create(&PostParams::default(), &task(name, Some(&image(n)), "true", json!({}))).await.unwrap();
        let ended = terminal(&tasks, name).await;
        assert_eq!(ended.state, TaskState::Finished, "{ended:?}");
    }
    let listed = || tokio::task::block_in_place(|| image_command(&agent_dir, &["list"]).1);
    let store = ImageStore::open(&agent_dir).unwrap();
    agora_e2e::eventually(Duration::from_secs(30), "web:2 is collected", || async {
        (!listed().contains(&image(2))).then_some(())
    })
    .await;
    let list = listed();
    assert!(list.contains(&image(1)) && list.contains(&image(3)), "{list}");
    assert!(!store.has_blob(&own[1]), "web:2's own layer is deleted");
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_owned();
    assert!(!store.root().join("layers/sha256").join(hex(&own[1])).exists(), "and its unpacked layer");
    assert!(store.has_blob(&own[0]) && store.has_blob(&own[2]), "the others' layers stay");

    // In use: refused, naming the task; once the task has ended, removed (the shared base stays for web:3).
    let (ok, said) = tokio::task::block_in_place(|| image_command(&agent_dir, &["rm", &image(1)]));
    assert!(!ok && said.contains("is used by task"), "{said}");
    let kill = agora_client::Patch::Merge(json!({"spec": {"killRequested": true}}));
    tasks.patch("keeper", &agora_client::PatchParams::default(), &kill).await.unwrap();
    terminal(&tasks, "keeper").await;
    let (ok, said) = tokio::task::block_in_place(|| image_command(&agent_dir, &["rm", &image(1)]));
    assert!(ok && said.contains(&format!("removed {}", image(1))), "{said}");
    assert!(!store.has_blob(&own[0]), "web:1's own layer is deleted");
    let (ok, said) = tokio::task::block_in_place(|| image_command(&agent_dir, &["rm", "no-such:image"]));
    assert!(!ok && said.contains("no-such:image"), "{said}");
    // web:3 still runs from what is left: its base and its own 8 MiB.
    let check = "test $(wc -c < /data) -eq 8388608 && test -x /bin/busybox";
    tasks.create(&PostParams::default(), &task("again", Some(&image(3)), check, json!({}))).await.unwrap();
    let again = terminal(&tasks, "again").await;
    assert_eq!(again.state, TaskState::Finished, "{again:?}");
}

/// A TCP proxy to `upstream` that cuts the first connection once `cut_after` bytes of responses have gone through
/// it, and records what the later ones asked for and how many response bytes it forwarded in all.
struct CuttingProxy {
    port: u16,
    forwarded: std::sync::Arc<std::sync::atomic::AtomicU64>,
    requests: std::sync::Arc<std::sync::Mutex<String>>,
}

impl CuttingProxy {
    fn start(upstream: u16, cut_after: u64) -> Self {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (total, asked) = (forwarded.clone(), requests.clone());
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(mut client) = client else { return };
                let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { return };
                let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let asked = asked.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0; 16384];
                    while let Ok(read) = client_in.read(&mut buffer) {
                        if read == 0 || server_out.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                        asked.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..read]));
                    }
                    let _ = server_out.shutdown(std::net::Shutdown::Write);
                });
                let total = total.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0; 16384];
                    let mut sent = 0;
                    while let Ok(read) = server.read(&mut buffer) {
                        if read == 0 || client.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                        sent += read as u64;
                        total.fetch_add(read as u64, Ordering::Relaxed);
                        if n == 0 && sent >= cut_after {
                            break; // the first connection is cut mid-response
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self { port, forwarded, requests }
    }
}

/// A download cut off mid-blob is resumed where it stopped (an HTTP range), not fetched again from the start, and
/// the resumed blob is still checked against its digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_off_is_resumed_from_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let registry = tokio::task::block_in_place(|| Registry::start(dir.path()));
    let source = ImageStore::open(&dir.path().join("layout")).unwrap();
    random_image(&source, dir.path(), "big:1", 8);
    tokio::task::block_in_place(|| registry.push(source.root(), "big:1", "big"));
    let proxy = CuttingProxy::start(registry.port, 3 << 20);
    let store = ImageStore::open(&dir.path().join("agent")).unwrap();
    let puller = agora_agent::pull::Puller::new(store.clone(), Default::default());
    let reference = format!("127.0.0.1:{}/team/web:big", proxy.port);
    let pulled = puller.pull(&reference, &[], &|_| {}).await.expect("the pull succeeds after the cut");
    assert!(store.resolve(&pulled.reference).is_ok());
    let asked = proxy.requests.lock().unwrap().to_lowercase();
    assert!(asked.contains("range: bytes="), "the second attempt asks for the rest: {asked}");
    let forwarded = proxy.forwarded.load(std::sync::atomic::Ordering::Relaxed);
    assert!(forwarded < (8 << 20) + (3 << 20) / 2, "{forwarded} bytes came through: the blob was fetched again");
}

/// The end-to-end case: an App (through the allocator and marathon) names `127.0.0.1:PORT/team/web:1`, and a
/// fresh agent whose store has never seen it pulls it and runs its instances — no import step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_runs_from_a_registry_image_on_a_fresh_agent() {
    let dir = tempfile::tempdir().unwrap();
    let registry = tokio::task::block_in_place(|| Registry::start(dir.path()));
    let source = ImageStore::open(&dir.path().join("layout")).unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/greeting"), "from the registry\n").unwrap();
    source.build(&rootfs, "web:1").unwrap();
    tokio::task::block_in_place(|| registry.push(source.root(), "web:1", "1"));
    let image = format!("{}/team/web:1", registry.address());

    let server = tokio::task::block_in_place(ApiserverProcess::embedded);
    let work = WorkDir(tempfile::tempdir().unwrap());
    let (_agent, agent_dir, client) = start_agent(&server, &work).await;
    assert!(ImageStore::open(&agent_dir).unwrap().lookup(&image).unwrap().is_none(), "a fresh agent");
    let _controllers = common::spawn(&server, &["controllers", "--identity", "c1", "--lease-seconds", "3"]);
    let apps: Api<agora_schemas::App> = Api::namespaced(client.clone(), "default");
    let app = json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "web"},
        "spec": {"instances": 2, "container": {"image": image}, "cmd": "cat /etc/greeting && exec sleep 600",
                 "cpus": 0.1, "mem": 32}});
    apps.create(&PostParams::default(), &serde_json::from_value(app).unwrap()).await.unwrap();
    agora_e2e::eventually(Duration::from_secs(60), "both instances run", || async {
        apps.get("web").await.ok()?.status.filter(|s| s.tasks_running == 2)
    })
    .await;
    let tasks: Api<Task> = Api::namespaced(client, "default");
    let running = tasks.list(&Default::default()).await.unwrap().items;
    let name = running[0].metadata.name.clone().unwrap();
    assert_eq!(tasks.logs(&name, &LogParams::default()).await.unwrap(), "from the registry\n");
    assert!(ImageStore::open(&agent_dir).unwrap().lookup(&image).unwrap().is_some(), "pulled into its store");
    assert_eq!(registry.manifest_fetches("1"), 1, "pulled once for both instances");
}
