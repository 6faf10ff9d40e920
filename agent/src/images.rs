//! The local OCI image store under `<work dir>/images`: itself an OCI image layout (`oci-layout`, `index.json` naming
//! each image with `org.opencontainers.image.ref.name`, content-addressed `blobs/sha256/…`), plus `layers/`, each
//! layer unpacked once and shared by every image and task that uses it.
//!
//! - [`ImageStore::build`]: one-layer image from a root filesystem directory (`agora image build`).
//! - [`ImageStore::import`]: an OCI image layout tar, as `skopeo copy … oci-archive:` or `docker save` write
//!   (`agora image import`); every blob's digest is checked, and an import that fails adds no image.
//! - [`ImageStore::resolve`]: the unpacked layers of an image (bottom first) and its configuration, for the runtime
//!   to stack with overlayfs. OCI whiteouts become overlayfs whiteouts as layers are unpacked.
//!
//! Changes of `index.json` hold an exclusive lock on `index.lock`, and every file appears by rename, so concurrent
//! imports and a running agent never see half an image.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The annotation naming an image in an index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and `docker save` put the full image name in.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What went wrong with an image, naming it (or the file, or the blob).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the store or of an import could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The input is not a usable image (a bad reference, a missing or corrupt blob, an unsupported format).
    #[error("{0}")]
    Invalid(String),
    /// No image of that name.
    #[error("image {0} not found (agora image list shows what there is; agora image import or build adds one)")]
    NotFound(String),
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// One image in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    /// `name:tag`.
    pub reference: String,
    /// The manifest's digest, `sha256:…`.
    pub digest: String,
    /// The layers' size in bytes, as stored (compressed).
    pub size: u64,
}

/// An image ready to run: its unpacked layers, bottom first, and its configuration.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// `name:tag`.
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    /// Unpacked layer directories, bottom first (overlayfs' `lowerdir` wants them top first).
    pub layers: Vec<PathBuf>,
    /// The image's configuration (environment, entrypoint, command, working directory, user).
    pub config: ImageConfiguration,
}

/// `name[:tag]` with the tag defaulted to `latest`, checked.
///
/// # Errors
/// [`Error::Invalid`] naming what is wrong with the reference.
pub fn normalize_reference(reference: &str) -> Result<String> {
    // `name@sha256:<hex>` names one manifest: kept as it is, the name checked as below.
    if let Some((name, digest)) = reference.split_once('@') {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::Invalid(format!(
                "image digest {digest:?} is not valid: sha256: and 64 lowercase hex digits"
            )));
        }
        let name = normalize_reference(name)?;
        let name = name.strip_suffix(":latest").filter(|_| !name_has_tag(reference)).unwrap_or(&name);
        return Ok(format!("{name}@{digest}"));
    }
    let (name, tag) = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:".contains(&b))
        });
    if !name_ok {
        return Err(Error::Invalid(format!(
            "image name {name:?} is not valid: lowercase letters, digits, '.', '_', '-' in '/'-separated parts"
        )));
    }
    let tag_ok =
        !tag.is_empty() && tag.len() <= 128 && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !tag_ok {
        return Err(Error::Invalid(format!(
            "image tag {tag:?} is not valid: up to 128 letters, digits, '.', '_', '-'"
        )));
    }
    Ok(format!("{name}:{tag}"))
}

/// Whether the name part of `name[:tag]@digest` has a tag of its own.
fn name_has_tag(reference: &str) -> bool {
    let name = reference.split_once('@').map_or(reference, |(name, _)| name);
    name.rsplit_once(':').is_some_and(|(_, tag)| !tag.contains('/'))
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), written: 0 }
    }

    fn finish(self) -> (W, String, u64) {
        (self.inner, format!("sha256:{:x}", self.hasher.finalize()), self.written)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A lock on one of the store's lock files — shared against garbage collection ([`ImageStore::hold`]), or exclusive
/// — released when dropped.
#[derive(Debug)]
pub struct Hold {
    _lock: File,
}

/// The local image store.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating it if needed) the store under `work_dir/images`.
    ///
    /// # Errors
    /// When the directories cannot be created.
    pub fn open(work_dir: &Path) -> Result<Self> {
        let root = work_dir.join("images");
        for dir in [root.join("blobs/sha256"), root.join("layers/sha256"), root.join("tmp"), root.join("used")] {
            fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        }
        let store = Self { root };
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            store.write_atomically(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            let empty =
                json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [] });
            store.write_atomically(&store.index_path(), empty.to_string().as_bytes())?;
        }
        Ok(store)
    }

    /// The store's directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .ok_or_else(|| Error::Invalid(format!("{digest:?} is not a sha256 digest")))?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    /// A fresh temporary path inside the store (same file system, so a rename publishes it).
    fn temp_path(&self, purpose: &str) -> PathBuf {
        let unique = format!("{purpose}-{}-{}", std::process::id(), unique_suffix());
        self.root.join("tmp").join(unique)
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let temp = self.temp_path("write");
        let mut file = File::create(&temp).map_err(io_error(format!("writing {}", temp.display())))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error(format!("writing {}", temp.display())))?;
        fs::rename(&temp, path).map_err(io_error(format!("renaming {} to {}", temp.display(), path.display())))
    }

    /// Stores `reader`'s bytes as a blob; returns its digest and size. When `expected` is given, a mismatch is an
    /// error and nothing is stored.
    fn put_blob(&self, reader: &mut dyn Read, expected: Option<&str>) -> Result<(String, u64, bool)> {
        let temp = self.temp_path("blob");
        let file = File::create(&temp).map_err(io_error(format!("writing {}", temp.display())))?;
        let mut hashing = Hashing::new(io::BufWriter::new(file));
        let copied = io::copy(reader, &mut hashing);
        let (writer, digest, size) = hashing.finish();
        let synced = copied.and_then(|_| writer.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all());
        if let Err(e) = synced {
            let _ = fs::remove_file(&temp);
            return Err(Error::Io { what: format!("writing blob {}", temp.display()), source: e });
        }
        if let Some(expected) = expected.filter(|e| *e != digest) {
            let _ = fs::remove_file(&temp);
            return Err(Error::Invalid(format!("blob {expected} does not match its content (sha256 is {digest})")));
        }
        let path = self.blob_path(&digest)?;
        let new = !path.exists();
        fs::rename(&temp, &path).map_err(io_error(format!("storing blob {digest}")))?;
        Ok((digest, size, new))
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::Invalid(format!("blob {digest} is missing")),
            _ => Error::Io { what: format!("reading blob {digest}"), source: e },
        })
    }

    /// Runs `change` on the index under the store's lock, then writes it back.
    fn update_index(&self, change: impl FnOnce(&mut Vec<Value>) -> Result<()>) -> Result<()> {
        let _lock = self.lock("index.lock", rustix::fs::FlockOperation::LockExclusive)?;
        let mut index = self.read_index()?;
        let manifests =
            index["manifests"].as_array_mut().ok_or_else(|| Error::Invalid("index.json has no manifests".into()))?;
        change(manifests)?;
        self.write_atomically(&self.index_path(), index.to_string().as_bytes())
        // The lock is released when `_lock` is dropped.
    }

    fn read_index(&self) -> Result<Value> {
        let bytes =
            fs::read(self.index_path()).map_err(io_error(format!("reading {}", self.index_path().display())))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", self.index_path().display())))
    }

    /// Names `manifest` (a descriptor) `reference` in the index, replacing what had that name.
    fn tag(&self, reference: &str, manifest: Value) -> Result<()> {
        if let Some(digest) = manifest["digest"].as_str() {
            self.mark_used(digest);
        }
        self.update_index(|manifests| {
            manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(reference));
            let mut manifest = manifest;
            manifest["annotations"] = json!({ REF_NAME: reference });
            manifests.push(manifest);
            Ok(())
        })
    }

    /// The manifest digest of the image named `reference` (normalized), if the store has it.
    ///
    /// # Errors
    /// A bad reference, or an unreadable index.
    pub fn lookup(&self, reference: &str) -> Result<Option<String>> {
        let reference = normalize_reference(reference)?;
        let index = self.read_index()?;
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"][REF_NAME].as_str() == Some(reference.as_str()))
            .and_then(|m| m["digest"].as_str())
            .map(str::to_owned))
    }

    /// Whether the store holds blob `digest`.
    #[must_use]
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Where a blob being downloaded is written before [`ImageStore::commit_blob`] publishes it.
    #[must_use]
    pub fn download_path(&self) -> PathBuf {
        self.temp_path("download")
    }

    /// Publishes a downloaded file, already checked against `digest`, as that blob.
    ///
    /// # Errors
    /// A bad digest, or a failed rename.
    pub fn commit_blob(&self, downloaded: &Path, digest: &str) -> Result<()> {
        let path = self.blob_path(digest)?;
        fs::rename(downloaded, &path).map_err(io_error(format!("storing blob {digest}")))
    }

    /// Stores `bytes` as blob `digest`, refusing them if they do not match it.
    ///
    /// # Errors
    /// A mismatch ([`Error::Invalid`] naming both digests), or a failed write.
    pub fn put_verified(&self, bytes: &[u8], digest: &str) -> Result<()> {
        self.put_blob(&mut &bytes[..], Some(digest)).map(drop)
    }

    /// Names the image manifest `digest` (already stored, with its config and layers) `reference`.
    ///
    /// # Errors
    /// A bad reference, a missing blob, a failed write.
    pub fn name_image(&self, reference: &str, digest: &str) -> Result<ImageSummary> {
        let reference = normalize_reference(reference)?;
        let bytes = self.read_blob(digest)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("manifest {digest}: {e}")))?;
        for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
            if !self.has_blob(blob.digest().as_ref()) {
                return Err(Error::Invalid(format!("image {reference}: blob {} is missing", blob.digest())));
            }
        }
        self.tag(&reference, json!({ "mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": bytes.len() }))?;
        let size = manifest.layers().iter().map(oci_spec::image::Descriptor::size).sum();
        Ok(ImageSummary { reference, digest: digest.to_owned(), size })
    }

    /// Every name in the index with the digest it names.
    ///
    /// # Errors
    /// An unreadable index.
    pub fn names(&self) -> Result<Vec<(String, String)>> {
        let index = self.read_index()?;
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["annotations"][REF_NAME].as_str()?.to_owned(), m["digest"].as_str()?.to_owned())))
            .collect())
    }

    /// Removes `references` (exact names) from the index; their blobs stay until collected.
    ///
    /// # Errors
    /// An unreadable index, or a failed write.
    pub fn unname(&self, references: &[String]) -> Result<()> {
        self.update_index(|manifests| {
            manifests.retain(|m| {
                !m["annotations"][REF_NAME].as_str().is_some_and(|name| references.iter().any(|r| r == name))
            });
            Ok(())
        })
    }

    /// The blobs the manifest or index `digest` needs: itself, and its config and layers (an index: its manifests',
    /// as far as the store has them).
    ///
    /// # Errors
    /// A missing or unreadable manifest.
    pub fn blobs_of(&self, digest: &str) -> Result<Vec<String>> {
        let value: Value = serde_json::from_slice(&self.read_blob(digest)?)
            .map_err(|e| Error::Invalid(format!("manifest {digest}: {e}")))?;
        let mut blobs = vec![digest.to_owned()];
        for child in value["manifests"].as_array().into_iter().flatten() {
            if let Some(child) = child["digest"].as_str().filter(|d| self.has_blob(d) && *d != digest) {
                blobs.extend(self.blobs_of(child).unwrap_or_else(|_| vec![child.to_owned()]));
            }
        }
        let descriptors = std::iter::once(&value["config"]).chain(value["layers"].as_array().into_iter().flatten());
        blobs.extend(descriptors.filter_map(|d| d["digest"].as_str()).map(str::to_owned));
        Ok(blobs)
    }

    /// Records that image `digest` is used now (for the collector's least-recently-used order).
    pub fn mark_used(&self, digest: &str) {
        let Some(hex) = digest.strip_prefix("sha256:") else { return };
        let mark = self.root.join("used").join(hex);
        let touched = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&mark)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        if let Err(e) = touched {
            tracing::debug!(mark = %mark.display(), error = %e, "marking an image used");
        }
    }

    /// When image `digest` was last used (its manifest's arrival when it never was).
    #[must_use]
    pub fn last_used(&self, digest: &str) -> std::time::SystemTime {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        [self.root.join("used").join(hex), self.root.join("blobs/sha256").join(hex)]
            .iter()
            .find_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
            .unwrap_or(std::time::UNIX_EPOCH)
    }

    /// The bytes blob `digest` holds on disk: the blob, and its unpacked layer if it has one.
    #[must_use]
    pub fn held_bytes(&self, digest: &str) -> u64 {
        let Ok(path) = self.blob_path(digest) else { return 0 };
        let blob = fs::metadata(&path).map_or(0, |m| m.len());
        let hex = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let layer = self.root.join("layers/sha256").join(&hex);
        if !layer.is_dir() {
            return blob;
        }
        let size_file = self.root.join("layers/sha256").join(format!("{hex}.size"));
        let unpacked = fs::read_to_string(&size_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(|| {
            let size = crate::disk::usage(std::slice::from_ref(&layer));
            let _ = fs::write(&size_file, size.to_string());
            size
        });
        blob + unpacked
    }

    /// Holds the store against collection (shared: pulls and launches hold it together) until dropped: what is
    /// fetched but not yet named, or resolved but not yet recorded as in use, stays.
    ///
    /// # Errors
    /// The lock file cannot be opened.
    pub fn hold(&self) -> Result<Hold> {
        self.lock("gc.lock", rustix::fs::FlockOperation::LockShared)?
            .ok_or_else(|| Error::Invalid("the store's collection lock is busy".into()))
    }

    /// Locks the store's lock file `name` as `how` says; `None` when a non-blocking lock is taken by someone else.
    pub(crate) fn lock(&self, name: &str, how: rustix::fs::FlockOperation) -> Result<Option<Hold>> {
        let path = self.root.join(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        match rustix::fs::flock(&file, how) {
            Ok(()) => Ok(Some(Hold { _lock: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::Io { what: format!("locking {}", path.display()), source: e.into() }),
        }
    }

    /// Every image, by reference.
    ///
    /// # Errors
    /// When the index cannot be read.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let index = self.read_index()?;
        let mut images = Vec::new();
        for entry in index["manifests"].as_array().into_iter().flatten() {
            let (Some(reference), Some(digest)) = (entry["annotations"][REF_NAME].as_str(), entry["digest"].as_str())
            else {
                continue;
            };
            let manifest: ImageManifest = serde_json::from_slice(&self.read_blob(digest)?)
                .map_err(|e| Error::Invalid(format!("manifest {digest}: {e}")))?;
            let size = manifest.layers().iter().map(oci_spec::image::Descriptor::size).sum();
            images.push(ImageSummary { reference: reference.to_owned(), digest: digest.to_owned(), size });
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(images)
    }

    /// Builds a one-layer image of the directory `rootfs` and names it `reference`.
    ///
    /// # Errors
    /// A bad reference, an unreadable directory, a failed write.
    pub fn build(&self, rootfs: &Path, reference: &str) -> Result<ImageSummary> {
        let reference = normalize_reference(reference)?;
        if !rootfs.is_dir() {
            return Err(Error::Invalid(format!("--rootfs {} is not a directory", rootfs.display())));
        }
        // tar → (diff id) → gzip → (digest) → file.
        let temp = self.temp_path("layer");
        let file = File::create(&temp).map_err(io_error(format!("writing {}", temp.display())))?;
        let compressed = Hashing::new(io::BufWriter::new(file));
        let uncompressed = Hashing::new(GzEncoder::new(compressed, Compression::fast()));
        let mut archive = tar::Builder::new(uncompressed);
        archive.follow_symlinks(false);
        archive.mode(tar::HeaderMode::Complete);
        let built = archive.append_dir_all(".", rootfs).and_then(|()| archive.into_inner());
        let uncompressed = match built {
            Ok(inner) => inner,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(Error::Io { what: format!("archiving {}", rootfs.display()), source: e });
            }
        };
        let (gzip, diff_id, _) = uncompressed.finish();
        let compressed = gzip.finish().map_err(io_error("compressing the layer"))?;
        let (writer, digest, size) = compressed.finish();
        writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
            .and_then(|f| f.sync_all())
            .map_err(io_error(format!("writing {}", temp.display())))?;
        let layer_path = self.blob_path(&digest)?;
        fs::rename(&temp, &layer_path).map_err(io_error(format!("storing layer {digest}")))?;

        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = json!({
            "created": jiff::Timestamp::now().to_string(),
            "architecture": architecture,
            "os": "linux",
            "config": { "Env": [DEFAULT_PATH], "WorkingDir": "/" },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created_by": format!("agora image build --rootfs {}", rootfs.display()) }],
        });
        let config_bytes = config.to_string().into_bytes();
        let (config_digest, config_size, _) = self.put_blob(&mut config_bytes.as_slice(), None)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size },
            "layers": [{ "mediaType": LAYER_GZIP_MEDIA_TYPE, "digest": digest, "size": size }],
        });
        let manifest_bytes = manifest.to_string().into_bytes();
        let (manifest_digest, manifest_size, _) = self.put_blob(&mut manifest_bytes.as_slice(), None)?;
        self.tag(
            &reference,
            json!({ "mediaType": MANIFEST_MEDIA_TYPE, "digest": manifest_digest, "size": manifest_size }),
        )?;
        Ok(ImageSummary { reference, digest: manifest_digest, size })
    }

    /// Imports the images of an OCI image layout tar. Each is named by its `io.containerd.image.name` or
    /// `org.opencontainers.image.ref.name` annotation, or by `reference` (required when the tar names none; with
    /// several images, it may not be given).
    ///
    /// # Errors
    /// A file that is not an OCI layout tar, a blob whose content does not match its digest, a missing blob, an
    /// unnamed image. Nothing is named in the store then.
    pub fn import(&self, file: &Path, reference: Option<&str>) -> Result<Vec<ImageSummary>> {
        let opened = File::open(file).map_err(io_error(format!("opening {}", file.display())))?;
        self.import_from(opened, file, reference)
    }

    /// As [`ImageStore::import`], reading the tar from `reader` (`file` names it in errors): a caller can count what
    /// is read, for a progress display.
    ///
    /// # Errors
    /// As [`ImageStore::import`].
    pub fn import_from(&self, reader: impl Read, file: &Path, reference: Option<&str>) -> Result<Vec<ImageSummary>> {
        let mut archive = tar::Archive::new(io::BufReader::new(reader));
        let mut index: Option<ImageIndex> = None;
        let mut layout_seen = false;
        let mut written: Vec<String> = Vec::new();
        let result = (|| -> Result<Vec<ImageSummary>> {
            let entries = archive.entries().map_err(io_error(format!("reading {}", file.display())))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| {
                    Error::Invalid(format!(
                        "{} is not a readable tar archive (an OCI image layout tar): {e}",
                        file.display()
                    ))
                })?;
                let path = entry.path().map_err(io_error(format!("reading {}", file.display())))?.into_owned();
                let path = path.strip_prefix("./").unwrap_or(&path).to_path_buf();
                let name = path.to_string_lossy().into_owned();
                if name == "oci-layout" {
                    let mut text = String::new();
                    entry
                        .read_to_string(&mut text)
                        .map_err(io_error(format!("reading {name} in {}", file.display())))?;
                    let version: Value = serde_json::from_str(&text)
                        .map_err(|e| Error::Invalid(format!("{}: oci-layout: {e}", file.display())))?;
                    if version["imageLayoutVersion"] != "1.0.0" {
                        return Err(Error::Invalid(format!(
                            "{}: unsupported OCI layout version {version}",
                            file.display()
                        )));
                    }
                    layout_seen = true;
                } else if name == "index.json" {
                    index = Some(
                        ImageIndex::from_reader(&mut entry)
                            .map_err(|e| Error::Invalid(format!("{}: index.json: {e}", file.display())))?,
                    );
                } else if let Some(hex) =
                    name.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty() && !h.contains('/'))
                {
                    let expected = format!("sha256:{hex}");
                    let (digest, _, new) = self.put_blob(&mut entry, Some(&expected)).map_err(|e| match e {
                        Error::Invalid(message) => Error::Invalid(format!("{}: {message}", file.display())),
                        other => other,
                    })?;
                    if new {
                        written.push(digest);
                    }
                }
            }
            if !layout_seen {
                return Err(Error::Invalid(format!(
                    "{} is not an OCI image layout (no oci-layout file); export images with `skopeo copy ... oci-archive:FILE` or `docker save`",
                    file.display()
                )));
            }
            let index = index.ok_or_else(|| Error::Invalid(format!("{} has no index.json", file.display())))?;
            let mut found = Vec::new();
            for descriptor in index.manifests() {
                let name = descriptor
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(CONTAINERD_NAME).or_else(|| a.get(REF_NAME)).cloned());
                let digest = descriptor.digest().to_string();
                let manifest_digest = self.platform_manifest(&digest, descriptor.media_type())?;
                found.push((name, manifest_digest));
            }
            if found.is_empty() {
                return Err(Error::Invalid(format!("{} holds no image", file.display())));
            }
            if reference.is_some() && found.len() > 1 {
                return Err(Error::Invalid(format!(
                    "{} holds {} images; --tag names one (leave it out to keep the names in the file)",
                    file.display(),
                    found.len()
                )));
            }
            // Check every image is complete before naming any.
            let mut named = Vec::new();
            for (name, digest) in found {
                let manifest = self.manifest(&digest)?;
                self.read_blob(manifest.config().digest().as_ref())?;
                for layer in manifest.layers() {
                    if !self.blob_path(layer.digest().as_ref())?.exists() {
                        return Err(Error::Invalid(format!("{}: layer {} is missing", file.display(), layer.digest())));
                    }
                }
                let given = reference.map(str::to_owned).or(name).ok_or_else(|| {
                    Error::Invalid(format!("{}: the image {digest} has no name; give one with --tag", file.display()))
                })?;
                let size = manifest.layers().iter().map(oci_spec::image::Descriptor::size).sum();
                named.push(ImageSummary { reference: normalize_reference(&given)?, digest, size });
            }
            for image in &named {
                let bytes = self.read_blob(&image.digest)?;
                self.tag(
                    &image.reference,
                    json!({ "mediaType": MANIFEST_MEDIA_TYPE, "digest": image.digest, "size": bytes.len() }),
                )?;
            }
            Ok(named)
        })();
        if result.is_err() {
            // Blobs only this import brought are unreferenced: take them away again.
            for digest in written {
                if let Ok(path) = self.blob_path(&digest) {
                    let _ = fs::remove_file(path);
                }
            }
        }
        result
    }

    /// The image manifest `digest` names: itself, or (for an index) the one for this machine's platform.
    fn platform_manifest(&self, digest: &str, media_type: &MediaType) -> Result<String> {
        let is_index = matches!(media_type, MediaType::ImageIndex)
            || media_type.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json";
        if !is_index {
            return Ok(digest.to_owned());
        }
        let index: ImageIndex = serde_json::from_slice(&self.read_blob(digest)?)
            .map_err(|e| Error::Invalid(format!("image index {digest}: {e}")))?;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let chosen = index
            .manifests()
            .iter()
            .find(|m| {
                m.platform()
                    .as_ref()
                    .is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
            })
            .or_else(|| (index.manifests().len() == 1).then(|| &index.manifests()[0]))
            .ok_or_else(|| Error::Invalid(format!("image index {digest} has no linux/{arch} image")))?;
        Ok(chosen.digest().to_string())
    }

    fn manifest(&self, digest: &str) -> Result<ImageManifest> {
        serde_json::from_slice(&self.read_blob(digest)?).map_err(|e| Error::Invalid(format!("manifest {digest}: {e}")))
    }

    /// The image named `reference`, its layers unpacked (once; later calls reuse them).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown image; a layer in a format that is not supported (zstd) or cannot be
    /// unpacked.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage> {
        let reference = normalize_reference(reference)?;
        let index = self.read_index()?;
        let digest = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"][REF_NAME].as_str() == Some(reference.as_str()))
            .and_then(|m| m["digest"].as_str())
            .ok_or_else(|| Error::NotFound(reference.clone()))?
            .to_owned();
        self.mark_used(&digest);
        let manifest = self.manifest(&digest)?;
        let config: ImageConfiguration = serde_json::from_slice(&self.read_blob(manifest.config().digest().as_ref())?)
            .map_err(|e| Error::Invalid(format!("image {reference}: config: {e}")))?;
        let mut layers = Vec::new();
        for layer in manifest.layers() {
            layers.push(self.unpacked(layer.digest().as_ref(), layer.media_type().as_ref())?);
        }
        Ok(ResolvedImage { reference, digest, layers, config })
    }

    /// The directory holding layer `digest` unpacked, unpacking it first if no one has.
    fn unpacked(&self, digest: &str, media_type: &str) -> Result<PathBuf> {
        let hex = self.blob_path(digest)?.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let target = self.root.join("layers/sha256").join(&hex);
        if target.is_dir() {
            return Ok(target);
        }
        let blob = File::open(self.blob_path(digest)?).map_err(io_error(format!("opening layer {digest}")))?;
        let reader: Box<dyn Read> = if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Box::new(GzDecoder::new(io::BufReader::new(blob)))
        } else if media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar") {
            Box::new(io::BufReader::new(blob))
        } else {
            return Err(Error::Invalid(format!(
                "layer {digest} has media type {media_type}, which is not supported (tar or tar+gzip)"
            )));
        };
        let temp = self.temp_path("unpack");
        fs::create_dir_all(&temp).map_err(io_error(format!("creating {}", temp.display())))?;
        if let Err(e) = unpack_layer(reader, &temp, MAX_UNPACKED_LAYER_BYTES) {
            let _ = fs::remove_dir_all(&temp);
            return Err(Error::Io { what: format!("unpacking layer {digest}"), source: e });
        }
        // What it takes on disk, for the collector (the file is swept with the layer).
        let size = crate::disk::usage(std::slice::from_ref(&temp));
        let _ = fs::write(self.root.join("layers/sha256").join(format!("{hex}.size")), size.to_string());
        match fs::rename(&temp, &target) {
            Ok(()) => Ok(target),
            // Another unpacker won the race: theirs is as good.
            Err(_) if target.is_dir() => {
                let _ = fs::remove_dir_all(&temp);
                Ok(target)
            }
            Err(e) => Err(Error::Io { what: format!("storing unpacked layer {digest}"), source: e }),
        }
    }
}

/// The most bytes one layer may unpack to (a gzip bomb stops here).
pub const MAX_UNPACKED_LAYER_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// A reader that fails once more than `left` bytes have come through it.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::other(format!("the layer unpacks to more than {} bytes, the most one layer may", self.limit))
        })?;
        Ok(n)
    }
}

/// Unpacks a layer tar into `dir`, turning OCI whiteouts into overlayfs ones: `.wh.NAME` becomes a 0/0 character
/// device `NAME`, and `.wh..wh..opq` marks its directory opaque (`trusted.overlay.opaque=y`).
///
/// A hostile layer is contained: an entry with `..` is refused; an absolute path lands inside `dir`; nothing is
/// written through a symbolic link that leads out of `dir`, and a hard link must point inside it; device nodes are
/// not created (a task gets its devices from the runtime, never from an image); the tar may unpack to at most
/// `limit` bytes. Set-user-ID bits are kept, as Docker keeps them, but grant nothing: every task runs with
/// `no_new_privs`.
///
/// # Errors
/// A broken tar, an entry that would land outside `dir`, a layer over `limit`, or a failed write.
pub fn unpack_layer(reader: impl Read, dir: &Path, limit: u64) -> io::Result<()> {
    let mut archive = tar::Archive::new(Bounded { inner: reader, left: limit, limit });
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    let mut opaque: Vec<PathBuf> = Vec::new();
    let mut whiteouts: Vec<PathBuf> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(io::Error::other(format!("layer entry {} leaves the layer", path.display())));
        }
        if matches!(entry.header().entry_type(), tar::EntryType::Block | tar::EntryType::Char) {
            continue;
        }
        if file_name == ".wh..wh..opq" {
            opaque.push(parent);
        } else if let Some(hidden) = file_name.strip_prefix(".wh.") {
            whiteouts.push(parent.join(hidden));
        } else if !entry.unpack_in(dir).map_err(with_causes)? {
            return Err(io::Error::other(format!("layer entry {} leaves the layer", path.display())));
        }
    }
    for directory in opaque {
        let at = dir.join(&directory);
        fs::create_dir_all(&at)?;
        rustix::fs::setxattr(&at, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())?;
    }
    for hidden in whiteouts {
        let at = dir.join(&hidden);
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent)?;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &at,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )?;
    }
    Ok(())
}

/// The error with its causes in its message (the tar crate puts the reason an entry failed in its source).
fn with_causes(e: io::Error) -> io::Error {
    let mut words = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        words.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    io::Error::new(e.kind(), words)
}

/// A suffix no other temporary name of this process has.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let counter = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:08x}{counter:x}")
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
