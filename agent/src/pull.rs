//! Pulling images from registries into the local store, through the OCI Distribution / Docker Registry HTTP API v2.
//!
//! `oci-client` speaks the protocol: Docker's reference defaults (`docker.io`, `library/`, `latest`), manifest
//! negotiation (OCI and Docker schema 2 manifests, image indexes and manifest lists), bearer-token challenges and
//! basic auth, redirects to blob storage. What this module adds is what an agent needs around it:
//!
//! - nothing is trusted before it is checked: the manifest's bytes against the digest they are fetched by (and the
//!   one a reference pins), every blob against its descriptor's digest and size while it streams to a temporary
//!   file — a blob longer than its descriptor is cut off at once — and only a checked blob is published;
//! - the image is bounded before anything is downloaded: at most [`MAX_LAYERS`] layers and
//!   [`RegistryOptions::max_image_bytes`] in all, as its manifest declares them;
//! - blobs are content-addressed and shared: a blob the store has is never fetched again, and concurrent pulls of
//!   one blob on this agent download it once (the others wait for it);
//! - plain HTTP only to a loopback registry or one named with `--insecure-registry`, as Docker and containerd do;
//!   TLS otherwise, with the system's roots and a CA file per registry;
//! - credentials (the task's pull secrets, then the agent's Docker `config.json`) are used and never repeated: error messages name the registry, the
//!   reference and the digest, never a user or a password.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::images::{ImageStore, ImageSummary};

/// The most layers an image may have (overlayfs stacks at most about 128 lower directories, as Docker's limit says).
pub const MAX_LAYERS: usize = 127;
/// The default bound of one image's declared size (layers and config).
pub const MAX_IMAGE_BYTES: u64 = 16 * 1024 * 1024 * 1024;
/// The largest manifest or index accepted.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Attempts of one blob download (a connection that breaks is tried again; a wrong digest is not).
const ATTEMPTS: u32 = 3;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// How the agent reaches registries.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Registries (`host:port`) reached over plain HTTP, besides loopback ones.
    pub insecure: Vec<String>,
    /// A CA certificate file (PEM) per registry (`host:port`), trusted besides the system's roots.
    pub ca_files: Vec<(String, PathBuf)>,
    /// A Docker `config.json` with credentials per registry (`auths.<registry>.auth`, base64 `user:password`).
    pub docker_config: Option<PathBuf>,
    /// The largest image (its layers and config, as its manifest declares them); 0 for [`MAX_IMAGE_BYTES`].
    pub max_image_bytes: u64,
}

/// Why a pull failed, in words that name the registry, reference or digest — never a credential.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry has no such repository, tag or manifest.
    #[error("{0}")]
    NotFound(String),
    /// Anything else: unreachable or refusing registry, a blob that does not match its digest, an image too large.
    #[error("{0}")]
    Failed(String),
}

impl PullError {
    /// The task status reason for it.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "ImageNotFound",
            Self::Failed(_) => "ImagePullFailed",
        }
    }
}

/// Bytes of the image's blobs present so far, and in all (as its manifest declares them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Present (already in the store, or downloaded).
    pub done: u64,
    /// In all.
    pub total: u64,
}

/// Registry credentials a task names (a `DockerConfigJson` Secret's `config.json`): used, never shown — it has no
/// `Debug`.
pub struct PullSecret {
    /// `namespace/name`, for messages.
    pub name: String,
    /// The Docker `config.json`.
    pub config: Value,
}

/// Where one pull's blobs come from, and how it is named in messages.
#[derive(Clone, Copy)]
struct Source<'a> {
    client: &'a Client,
    image: &'a Reference,
    whole: &'a str,
    registry: &'a str,
}

/// Pulls images into one store.
pub struct Puller {
    store: ImageStore,
    options: RegistryOptions,
    clients: Mutex<HashMap<String, Client>>,
    downloads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Whether `registry` (`host[:port]`) is this machine: `localhost`, `127.x.y.z` or `[::1]`.
#[must_use]
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(host, _)| host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `registry` is reached over plain HTTP: a loopback one, or one named insecure — unless a CA file is given
/// for it, which says it serves TLS.
#[must_use]
pub fn plain_http(registry: &str, insecure: &[String], has_ca: bool) -> bool {
    !has_ca && (is_loopback(registry) || insecure.iter().any(|r| r == registry))
}

/// The manifest a platform-less client picks from an index for this machine: linux and its architecture.
fn choose_platform(index: &Value) -> Option<String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let entries = index["manifests"].as_array()?;
    entries
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_owned)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

impl Puller {
    /// A puller into `store`.
    #[must_use]
    pub fn new(store: ImageStore, options: RegistryOptions) -> Self {
        Self { store, options, clients: Mutex::default(), downloads: Mutex::default() }
    }

    fn max_image_bytes(&self) -> u64 {
        if self.options.max_image_bytes == 0 { MAX_IMAGE_BYTES } else { self.options.max_image_bytes }
    }

    /// The client for `registry` with `auth`: plain HTTP for a loopback or `--insecure-registry` one, TLS
    /// otherwise. One per registry and credentials, since a client keeps the first credentials it is given for a
    /// registry (and the tokens they earn): a task's must never serve another's pull.
    fn client(&self, registry: &str, auth: &RegistryAuth) -> Result<Client, PullError> {
        let who = match auth {
            RegistryAuth::Basic(user, password) => sha256(format!("{user}:{password}").as_bytes()),
            RegistryAuth::Bearer(token) => sha256(token.as_bytes()),
            RegistryAuth::Anonymous => String::new(),
        };
        let key = format!("{registry} {who}");
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let has_ca = self.options.ca_files.iter().any(|(r, _)| r == registry);
        let plain = plain_http(registry, &self.options.insecure, has_ca);
        let mut extra_root_certificates = Vec::new();
        for (_, file) in self.options.ca_files.iter().filter(|(r, _)| r == registry) {
            let data = std::fs::read(file).map_err(|e| {
                PullError::Failed(format!("reading the CA file {} for registry {registry}: {e}", file.display()))
            })?;
            extra_root_certificates.push(Certificate { encoding: CertificateEncoding::Pem, data });
        }
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::HttpsExcept(vec![registry.to_owned()])
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            user_agent: "agora-agent",
            ..ClientConfig::default()
        };
        let client = Client::new(config);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The credentials for `registry`: the first pull secret that has some, else the agent's Docker `config.json`,
    /// else anonymous.
    fn auth(&self, registry: &str, secrets: &[PullSecret]) -> Result<RegistryAuth, PullError> {
        for secret in secrets {
            match agora_schemas::registry_credentials(&secret.config, registry) {
                Ok(Some((user, password))) => return Ok(RegistryAuth::Basic(user, password)),
                Ok(None) => {}
                Err(why) => return Err(PullError::Failed(format!("pull secret {}: {why}", secret.name))),
            }
        }
        let Some(file) = &self.options.docker_config else { return Ok(RegistryAuth::Anonymous) };
        let text = std::fs::read_to_string(file)
            .map_err(|e| PullError::Failed(format!("reading the registry credentials {}: {e}", file.display())))?;
        let config: Value = serde_json::from_str(&text).map_err(|_| {
            PullError::Failed(format!("the registry credentials {} are not a Docker config.json", file.display()))
        })?;
        match agora_schemas::registry_credentials(&config, registry) {
            Ok(Some((user, password))) => Ok(RegistryAuth::Basic(user, password)),
            Ok(None) => Ok(RegistryAuth::Anonymous),
            Err(why) => Err(PullError::Failed(format!("{} ({why})", file.display()))),
        }
    }

    /// Pulls `reference` (a Docker reference: `[registry[:port]/]repo[:tag][@sha256:digest]`) into the store and
    /// names it by its full form (`docker.io/library/busybox:latest`); `progress` hears how far it is.
    ///
    /// # Errors
    /// [`PullError::NotFound`] for a repository, tag or manifest the registry does not have; [`PullError::Failed`]
    /// for everything else, in words.
    pub async fn pull(
        &self,
        reference: &str,
        secrets: &[PullSecret],
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<ImageSummary, PullError> {
        let parsed: Reference = reference
            .parse()
            .map_err(|e| PullError::Failed(format!("image reference {reference:?} is not valid: {e}")))?;
        let registry = parsed.registry().to_owned();
        let auth = self.auth(&registry, secrets)?;
        let client = self.client(parsed.resolve_registry(), &auth)?;
        let whole = parsed.whole();
        let failed = |e: OciDistributionError| describe(&e, &whole, &registry);

        let accepted = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];
        let (mut bytes, mut digest) = client.pull_manifest_raw(&parsed, &auth, &accepted).await.map_err(failed)?;
        check_manifest(&bytes, &digest, parsed.digest(), &whole)?;
        let mut top: Value = serde_json::from_slice(&bytes)
            .map_err(|e| PullError::Failed(format!("the manifest of {whole} is not JSON: {e}")))?;
        let media = |v: &Value| v["mediaType"].as_str().unwrap_or_default().to_owned();
        if media(&top) == OCI_INDEX || media(&top) == DOCKER_LIST || top["manifests"].is_array() {
            let chosen = choose_platform(&top).ok_or_else(|| {
                PullError::NotFound(format!(
                    "{whole} is an image index with no linux/{} image",
                    std::env::consts::ARCH.replace("x86_64", "amd64")
                ))
            })?;
            let by_digest =
                Reference::with_digest(parsed.registry().to_owned(), parsed.repository().to_owned(), chosen.clone());
            (bytes, digest) = client.pull_manifest_raw(&by_digest, &auth, &accepted).await.map_err(failed)?;
            check_manifest(&bytes, &digest, Some(&chosen), &whole)?;
            top = serde_json::from_slice(&bytes)
                .map_err(|e| PullError::Failed(format!("the manifest of {whole} is not JSON: {e}")))?;
        }
        let blobs = blobs_of(&top, &whole, self.max_image_bytes())?;
        let total = blobs.iter().map(|b| b.size.max(0).unsigned_abs()).sum();
        let mut done = blobs.iter().filter(|b| self.store.has_blob(&b.digest)).map(|b| b.size.unsigned_abs()).sum();
        progress(Progress { done, total });
        for blob in &blobs {
            if self.store.has_blob(&blob.digest) {
                continue;
            }
            let before = done;
            let source = Source { client: &client, image: &parsed, whole: &whole, registry: &registry };
            self.download(&source, blob, &|bytes| progress(Progress { done: before + bytes, total })).await?;
            done = before + blob.size.unsigned_abs();
            progress(Progress { done, total });
        }
        self.store
            .put_verified(&bytes, &digest)
            .map_err(|e| PullError::Failed(format!("storing the manifest of {whole}: {e}")))?;
        let store = self.store.clone();
        let name = whole.clone();
        tokio::task::spawn_blocking(move || store.name_image(&name, &digest))
            .await
            .map_err(|e| PullError::Failed(format!("storing {whole}: {e}")))?
            .map_err(|e| PullError::Failed(format!("storing {whole}: {e}")))
    }

    /// Downloads one blob into the store, unless another pull brings it meanwhile.
    async fn download(
        &self,
        source: &Source<'_>,
        blob: &OciDescriptor,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), PullError> {
        let lock = self
            .downloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(blob.digest.clone())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        if self.store.has_blob(&blob.digest) {
            return Ok(()); // another pull brought it while this one waited
        }
        let mut last = None;
        // One file for every attempt: a download cut off is resumed from where it stopped.
        let temp = self.store.download_path();
        for _ in 0..ATTEMPTS {
            match self.try_download(source, blob, &temp, progress).await {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err((error, retry)) => {
                    last = Some(error);
                    if !retry {
                        break;
                    }
                }
            }
        }
        self.downloads.lock().unwrap_or_else(PoisonError::into_inner).remove(&blob.digest);
        let _ = std::fs::remove_file(&temp); // gone already when the blob was published
        last.map_or(Ok(()), Err)
    }

    /// One attempt: streams the blob to `temp` — after what an earlier attempt left there, asking the registry for
    /// the rest (an HTTP range), or from the start when it sends the whole blob — checking size and digest, then
    /// publishes it. The error says whether another attempt may help.
    async fn try_download(
        &self,
        source: &Source<'_>,
        blob: &OciDescriptor,
        temp: &std::path::Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), (PullError, bool)> {
        let Source { client, image, whole, registry } = *source;
        let expected = blob.size.unsigned_abs();
        let cleanup = |temp: &std::path::Path| {
            let _ = std::fs::remove_file(temp);
        };
        let have = std::fs::metadata(temp).map_or(0, |m| m.len());
        let refused = |e: OciDistributionError| {
            let retry = matches!(e, OciDistributionError::RequestError(_));
            (describe(&e, whole, registry), retry)
        };
        let (stream, resumed) = if have > 0 && have < expected {
            match client.pull_blob_stream_partial(image, blob, have, None).await.map_err(refused)? {
                oci_client::client::BlobResponse::Partial(stream) => (stream, true),
                oci_client::client::BlobResponse::Full(stream) => (stream, false),
            }
        } else {
            (client.pull_blob_stream(image, blob).await.map_err(refused)?, false)
        };
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let opened = if resumed {
            // The bytes already here count towards the digest.
            match hash_file(temp, &mut hasher).await {
                Ok(n) => {
                    written = n;
                    tokio::fs::OpenOptions::new().append(true).open(temp).await
                }
                Err(e) => Err(e),
            }
        } else {
            tokio::fs::File::create(temp).await
        };
        let mut file = opened.map_err(|e| (PullError::Failed(format!("writing {}: {e}", temp.display())), false))?;
        // The stream is read as it comes, not verified by the client: the digest is checked here, on the bytes kept.
        let mut raw = stream.stream;
        while let Some(chunk) = raw.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let mismatch = e.to_string().to_lowercase().contains("digest");
                    if mismatch {
                        cleanup(temp);
                    } else {
                        // Cut off: what came is kept for the next attempt to resume after.
                        let _ = file.flush().await;
                    }
                    let message = if mismatch {
                        format!("blob {} of {whole} does not match its digest: {e}; the image is not used", blob.digest)
                    } else {
                        format!("downloading blob {} of {whole} from {registry}: {e}", blob.digest)
                    };
                    return Err((PullError::Failed(message), !mismatch));
                }
            };
            written += chunk.len() as u64;
            if written > expected {
                cleanup(temp);
                let message = format!(
                    "blob {} of {whole} is longer than the {expected} bytes its manifest declares; the image is not used",
                    blob.digest
                );
                return Err((PullError::Failed(message), false));
            }
            hasher.update(&chunk);
            if let Err(e) = file.write_all(&chunk).await {
                cleanup(temp);
                return Err((PullError::Failed(format!("writing blob {}: {e}", blob.digest)), false));
            }
            progress(written);
        }
        let synced = file.sync_all().await;
        drop(file);
        let actual = format!("sha256:{:x}", hasher.finalize());
        if written != expected || actual != blob.digest {
            cleanup(temp);
            let message = format!(
                "blob {} of {whole} does not match its digest and size ({written} bytes hashing to {actual}, {expected} \
                 declared); the image is not used",
                blob.digest
            );
            return Err((PullError::Failed(message), false));
        }
        if let Err(e) = synced {
            cleanup(temp);
            return Err((PullError::Failed(format!("writing blob {}: {e}", blob.digest)), false));
        }
        self.store.commit_blob(temp, &blob.digest).map_err(|e| {
            cleanup(temp);
            (PullError::Failed(e.to_string()), false)
        })
    }
}

/// Feeds the file's bytes to `hasher`; returns how many there were.
async fn hash_file(path: &std::path::Path, hasher: &mut Sha256) -> std::io::Result<u64> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await?;
    let mut buffer = vec![0; 1 << 20];
    let mut total = 0;
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
}

/// The manifest's bytes must hash to the digest they were fetched by, and to the one the reference pins.
fn check_manifest(bytes: &[u8], digest: &str, pinned: Option<&str>, whole: &str) -> Result<(), PullError> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(PullError::Failed(format!(
            "the manifest of {whole} is {} bytes; at most {MAX_MANIFEST_BYTES} are accepted",
            bytes.len()
        )));
    }
    let actual = sha256(bytes);
    for wanted in std::iter::once(digest).chain(pinned) {
        if actual != wanted {
            return Err(PullError::Failed(format!(
                "the manifest of {whole} does not match its digest {wanted} (it hashes to {actual}); the image is not \
                 used"
            )));
        }
    }
    Ok(())
}

/// The config and layers of an image manifest, checked against the limits before anything is downloaded.
fn blobs_of(manifest: &Value, whole: &str, max_bytes: u64) -> Result<Vec<OciDescriptor>, PullError> {
    let invalid = |why: String| PullError::Failed(format!("the manifest of {whole} is not usable: {why}"));
    let descriptor = |v: &Value| -> Result<OciDescriptor, PullError> {
        serde_json::from_value::<OciDescriptor>(v.clone()).map_err(|e| invalid(format!("a descriptor: {e}")))
    };
    let config = descriptor(&manifest["config"])?;
    let layers = manifest["layers"].as_array().ok_or_else(|| invalid("it lists no layers".to_owned()))?;
    if layers.len() > MAX_LAYERS {
        return Err(invalid(format!("it lists {} layers; at most {MAX_LAYERS} are supported", layers.len())));
    }
    let mut blobs = vec![config];
    for layer in layers {
        blobs.push(descriptor(layer)?);
    }
    let mut total: u64 = 0;
    for blob in &blobs {
        let hex = blob.digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid(format!("{:?} is not a sha256 digest", blob.digest)));
        }
        if blob.size < 0 {
            return Err(invalid(format!("blob {} has a negative size", blob.digest)));
        }
        total = total.saturating_add(blob.size.unsigned_abs());
    }
    if total > max_bytes {
        return Err(PullError::Failed(format!(
            "{whole} declares {total} bytes of layers and config; this agent takes images of at most {max_bytes} bytes"
        )));
    }
    Ok(blobs)
}

/// An error of the protocol, in words naming the image and registry (never credentials).
fn describe(e: &OciDistributionError, whole: &str, registry: &str) -> PullError {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            PullError::NotFound(format!("image {whole} not found: the registry {registry} has no such manifest"))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let unknown = codes.iter().any(|c| {
                matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown)
            });
            let words: Vec<String> = envelope.errors.iter().map(|e| format!("{:?}: {}", e.code, e.message)).collect();
            if unknown {
                PullError::NotFound(format!("image {whole} not found in registry {registry} ({})", words.join("; ")))
            } else {
                PullError::Failed(format!("registry {registry} refused {whole}: {}", words.join("; ")))
            }
        }
        OciDistributionError::AuthenticationFailure(_) | OciDistributionError::UnauthorizedError { .. } => {
            PullError::Failed(format!(
                "registry {registry} refused {whole}: authentication required or denied (credentials come from the \
                 task's imagePullSecrets, then the agent's --registry-config)"
            ))
        }
        OciDistributionError::RequestError(e) => {
            PullError::Failed(format!("registry {registry} is unreachable for {whole}: {}", without_url(e)))
        }
        OciDistributionError::ServerError { code, message, .. } => {
            PullError::Failed(format!("registry {registry} answered {code} for {whole}: {message}"))
        }
        OciDistributionError::DigestError(e) => PullError::Failed(format!("{whole}: {e}; the image is not used")),
        other => PullError::Failed(format!("pulling {whole} from {registry}: {other}")),
    }
}

/// A request error without its URL (which may carry a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut words = if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_timeout() {
        "timed out".to_owned()
    } else {
        "request failed".to_owned()
    };
    while let Some(cause) = source {
        words.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised_and_no_others() {
        for yes in ["127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.1.2.3:80"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["registry.example.com:5000", "10.0.0.1:5000", "docker.io", "localhost.evil.com:5000"] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn plain_http_only_for_loopback_or_insecure_registries_without_a_ca() {
        let insecure = vec!["10.0.0.5:5000".to_owned()];
        assert!(plain_http("127.0.0.1:5000", &insecure, false));
        assert!(plain_http("10.0.0.5:5000", &insecure, false));
        assert!(!plain_http("10.0.0.6:5000", &insecure, false), "not named insecure");
        assert!(!plain_http("registry.example.com", &insecure, false));
        assert!(!plain_http("127.0.0.1:5000", &insecure, true), "a CA says it serves TLS");
    }

    #[test]
    fn a_manifest_must_hash_to_its_digest_and_to_the_pinned_one() {
        let bytes = br#"{"schemaVersion":2}"#;
        let digest = sha256(bytes);
        assert!(check_manifest(bytes, &digest, None, "r").is_ok());
        assert!(check_manifest(bytes, &digest, Some(&digest), "r").is_ok());
        let other = sha256(b"other");
        let refused = check_manifest(bytes, &other, None, "r").unwrap_err().to_string();
        assert!(refused.contains(&other) && refused.contains(&digest), "{refused}");
        assert!(check_manifest(bytes, &digest, Some(&other), "r").is_err(), "pinned by the reference");
    }

    #[test]
    fn images_past_the_limits_are_refused_before_any_download() {
        let layer = |size: i64| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", "a".repeat(64)), "size": size})
        };
        let manifest = |layers: Vec<Value>| {
            serde_json::json!({"schemaVersion": 2, "config": {"mediaType":
            "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "b".repeat(64)), "size": 10},
            "layers": layers})
        };
        assert_eq!(blobs_of(&manifest(vec![layer(5), layer(7)]), "r", 100).unwrap().len(), 3);
        let many = blobs_of(&manifest(vec![layer(1); 10_000]), "r", u64::MAX).unwrap_err().to_string();
        assert!(many.contains("10000 layers") && many.contains("127"), "{many}");
        let huge = blobs_of(&manifest(vec![layer(1 << 40)]), "r", MAX_IMAGE_BYTES).unwrap_err().to_string();
        assert!(huge.contains("1099511627786 bytes"), "{huge}");
        let negative = blobs_of(&manifest(vec![layer(-1)]), "r", 100).unwrap_err().to_string();
        assert!(negative.contains("negative"), "{negative}");
        let mut bad = manifest(vec![layer(1)]);
        bad["layers"][0]["digest"] = serde_json::json!("sha256:../../etc");
        assert!(blobs_of(&bad, "r", 100).unwrap_err().to_string().contains("not a sha256 digest"));
    }

    #[test]
    fn the_index_entry_for_this_machine_is_chosen() {
        let arch = if std::env::consts::ARCH == "x86_64" { "amd64" } else { "arm64" };
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:other", "platform": {"os": "linux", "architecture": other}},
            {"digest": "sha256:windows", "platform": {"os": "windows", "architecture": arch}},
            {"digest": "sha256:mine", "platform": {"os": "linux", "architecture": arch}},
        ]});
        assert_eq!(choose_platform(&index).as_deref(), Some("sha256:mine"));
        assert_eq!(choose_platform(&serde_json::json!({"manifests": []})), None);
    }
}
