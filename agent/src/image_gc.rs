//! Garbage collection of the image store: what it holds (blobs, and the layers unpacked from them) kept within a byte
//! budget by removing the least recently used images, never one a task uses; and the blobs and unpacked layers no
//! image needs any more swept away.
//!
//! - **In use** is what a task directory names: the agent writes `tasks/<id>/image` (the manifest digest) when it
//!   resolves a task's image, and removes it once the task's root file system is unmounted, so a running task's
//!   layers — even of an image since re-pulled under a new digest or removed by name — are never collected. It is
//!   read under the collection lock.
//! - **Last used** is the modification time of `images/used/<hex>`, touched when an image is named (built, imported,
//!   pulled) or resolved for a task.
//! - **Locking:** changes take `images/gc.lock` exclusively; a launch (from its pull until the task's directory
//!   names its image) and `agora image pull`, `import` and `build` hold it shared ([`ImageStore::hold`]), so nothing they have fetched but
//!   not yet named or leased is swept. The agent's collector does not wait for it: it tries again later.
//! - **Budget:** `--image-gc-budget` bytes, and the file system's share: above `--image-gc-high-percent` used, images
//!   go until it is back at `--image-gc-low-percent` (the kubelet's rule). [`plan`] and [`budget`] decide, purely.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::images::{Error, Hold, ImageStore};

/// The name of the file in a task's directory naming the manifest its root file system is made of.
pub const TASK_IMAGE_FILE: &str = "image";

/// One image (a manifest, under all its names) as the collector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The manifest's digest.
    pub digest: String,
    /// Its names (none for an image a task still uses after its name moved on).
    pub names: Vec<String>,
    /// When a task or a pull last used it.
    pub last_used: SystemTime,
    /// The blobs it needs: the manifest, the config, the layers.
    pub blobs: Vec<String>,
}

/// Which images to remove (manifest digests, least recently used first) so that the bytes of the blobs the rest need
/// fit `budget`, never one in `in_use`; and the bytes that then remain. `sizes` are each blob's bytes, with those of
/// its unpacked layer.
#[must_use]
pub fn plan(
    images: &[Candidate],
    sizes: &HashMap<String, u64>,
    in_use: &HashSet<String>,
    budget: u64,
) -> (Vec<String>, u64) {
    let mut users: HashMap<&str, usize> = HashMap::new();
    for image in images {
        for blob in unique(&image.blobs) {
            *users.entry(blob).or_default() += 1;
        }
    }
    let size = |blob: &str| sizes.get(blob).copied().unwrap_or(0);
    let mut total: u64 = users.keys().map(|b| size(b)).sum();
    let mut order: Vec<&Candidate> = images.iter().filter(|i| !in_use.contains(&i.digest)).collect();
    order.sort_by(|a, b| a.last_used.cmp(&b.last_used).then_with(|| a.digest.cmp(&b.digest)));
    let mut removed = Vec::new();
    for image in order {
        if total <= budget {
            break;
        }
        for blob in unique(&image.blobs) {
            if let Some(count) = users.get_mut(blob) {
                *count -= 1;
                if *count == 0 {
                    total -= size(blob);
                }
            }
        }
        removed.push(image.digest.clone());
    }
    (removed, total)
}

fn unique(blobs: &[String]) -> impl Iterator<Item = &str> {
    let mut seen = HashSet::new();
    blobs.iter().map(String::as_str).filter(move |b| seen.insert(*b))
}

/// How a file system is used, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsUsage {
    /// Its size.
    pub size: u64,
    /// In use (by anything).
    pub used: u64,
}

/// How the collector is bounded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GcPolicy {
    /// The most bytes the store may hold (`--image-gc-budget`); `None` for no fixed bound.
    pub budget: Option<u64>,
    /// Above this share of the file system used, images are removed …
    pub high_percent: f64,
    /// … until it is back at this share.
    pub low_percent: f64,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self { budget: None, high_percent: 85.0, low_percent: 80.0 }
    }
}

/// The bytes the store may keep now: the policy's budget, and — when the file system is fuller than the high mark —
/// what it holds less what must go for the file system to come back to the low mark.
#[must_use]
pub fn budget(policy: &GcPolicy, fs: Option<FsUsage>, held: u64) -> u64 {
    let fixed = policy.budget.unwrap_or(u64::MAX);
    let Some(fs) = fs.filter(|fs| fs.size > 0) else { return fixed };
    let share = |percent: f64| (fs.size as f64 * percent / 100.0) as u64;
    if fs.used <= share(policy.high_percent) {
        return fixed;
    }
    let excess = fs.used.saturating_sub(share(policy.low_percent));
    fixed.min(held.saturating_sub(excess))
}

/// What a collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The names removed.
    pub removed: Vec<String>,
    /// Blobs deleted (of removed images, and any no image needed).
    pub blobs_deleted: usize,
    /// Bytes the store held before and after.
    pub before: u64,
    /// After.
    pub after: u64,
    /// The budget it was held to.
    pub budget: u64,
}

/// The images tasks under `work_dir` use: manifest digest → a task using it.
#[must_use]
pub fn in_use(work_dir: &Path) -> HashMap<String, String> {
    let mut used = HashMap::new();
    for entry in fs::read_dir(work_dir.join("tasks")).into_iter().flatten().flatten() {
        if let Ok(digest) = fs::read_to_string(entry.path().join(TASK_IMAGE_FILE)) {
            used.insert(digest.trim().to_owned(), entry.file_name().to_string_lossy().into_owned());
        }
    }
    used
}

/// The file system holding `dir`.
#[must_use]
pub fn fs_usage(dir: &Path) -> Option<FsUsage> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    let size = stat.f_blocks.saturating_mul(stat.f_frsize);
    let free = stat.f_bfree.saturating_mul(stat.f_frsize);
    Some(FsUsage { size, used: size.saturating_sub(free) })
}

/// The store's collection lock, exclusively: waiting for it, or `None` when it is taken.
fn lock(store: &ImageStore, wait: bool) -> Result<Option<Hold>, Error> {
    let how = if wait {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    };
    store.lock("gc.lock", how)
}

/// The store as the collector sees it: every image (named, or in use), and every blob's size with its unpacked
/// layer.
fn survey(
    store: &ImageStore,
    in_use: &HashMap<String, String>,
) -> Result<(Vec<Candidate>, HashMap<String, u64>), Error> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, digest) in store.names()? {
        names.entry(digest).or_default().push(name);
    }
    for digest in in_use.keys() {
        names.entry(digest.clone()).or_default();
    }
    let mut images = Vec::new();
    for (digest, names) in names {
        let Ok(blobs) = store.blobs_of(&digest) else { continue }; // an in-use image already gone: nothing to keep
        images.push(Candidate { last_used: store.last_used(&digest), digest, names, blobs });
    }
    let mut sizes = HashMap::new();
    for image in &images {
        for blob in &image.blobs {
            if !sizes.contains_key(blob) {
                sizes.insert(blob.clone(), store.held_bytes(blob));
            }
        }
    }
    Ok((images, sizes))
}

/// Removes the least recently used images no task under `work_dir` uses until the store fits `policy`, then sweeps
/// what no image needs. Returns `None` when the store is busy (a pull or another collection holds it): try again later.
///
/// # Errors
/// An unreadable store, or a failed write.
pub fn collect(store: &ImageStore, policy: &GcPolicy, work_dir: &Path) -> Result<Option<Report>, Error> {
    let Some(_lock) = lock(store, false)? else { return Ok(None) };
    // Read under the lock: a task that recorded its image before it is taken is seen; one after, waited for.
    let in_use = &in_use(work_dir);
    let (images, sizes) = survey(store, in_use)?;
    let held: u64 = sizes.values().sum();
    let budget = budget(policy, fs_usage(store.root()), held);
    let used: HashSet<String> = in_use.keys().cloned().collect();
    let (remove, _) = plan(&images, &sizes, &used, budget);
    let gone: HashSet<&String> = remove.iter().collect();
    let removed: Vec<String> =
        images.iter().filter(|i| gone.contains(&i.digest)).flat_map(|i| i.names.iter().cloned()).collect();
    if !removed.is_empty() {
        store.unname(&removed)?;
    }
    let blobs_deleted = sweep(store, in_use)?;
    let (_, sizes) = survey(store, in_use)?;
    Ok(Some(Report { removed, blobs_deleted, before: held, after: sizes.values().sum(), budget }))
}

/// `agora image rm`: removes the names `references` (the image goes when its last name does, unless a task under
/// `work_dir` uses it), then sweeps. Waits for a pull in progress.
///
/// # Errors
/// An image that does not exist or that a task uses (naming the task), before anything is removed.
pub fn remove(store: &ImageStore, references: &[String], work_dir: &Path) -> Result<Report, Error> {
    let _lock = lock(store, true)?;
    let in_use = &in_use(work_dir);
    let names = store.names()?;
    let mut removed = Vec::new();
    for reference in references {
        let wanted = crate::images::normalize_reference(reference)?;
        let full = reference.parse::<oci_client::Reference>().ok().map(|r| r.whole());
        let Some((name, digest)) = names.iter().find(|(n, _)| *n == wanted || Some(n) == full.as_ref()) else {
            return Err(Error::NotFound(wanted));
        };
        if let Some(task) = in_use.get(digest) {
            return Err(Error::Invalid(format!(
                "image {name} is used by task {task}: it can be removed once the task has ended"
            )));
        }
        removed.push(name.clone());
    }
    let (_, before) = survey(store, in_use)?;
    store.unname(&removed)?;
    let blobs_deleted = sweep(store, in_use)?;
    let (_, after) = survey(store, in_use)?;
    Ok(Report { removed, blobs_deleted, before: before.values().sum(), after: after.values().sum(), budget: u64::MAX })
}

/// Deletes every blob, unpacked layer and use mark no named or in-use image needs; returns how many blobs went.
fn sweep(store: &ImageStore, in_use: &HashMap<String, String>) -> Result<usize, Error> {
    let mut keep: HashSet<String> = HashSet::new();
    let named = store.names()?.into_iter().map(|(_, digest)| digest);
    for digest in named.chain(in_use.keys().cloned()) {
        match store.blobs_of(&digest) {
            Ok(blobs) => keep.extend(blobs),
            // A named image whose manifest cannot be read keeps what it names, as far as is known.
            Err(_) => {
                keep.insert(digest);
            }
        }
    }
    let hex_kept: HashSet<&str> = keep.iter().filter_map(|d| d.strip_prefix("sha256:")).collect();
    let mut deleted = 0;
    for (dir, is_blob) in [("blobs/sha256", true), ("layers/sha256", false), ("used", false)] {
        let dir = store.root().join(dir);
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name.strip_suffix(".size").unwrap_or(&name);
            if hex_kept.contains(hex) {
                continue;
            }
            let path = entry.path();
            let result = if path.is_dir() { remove_layer_dir(store, &path) } else { fs::remove_file(&path) };
            match result {
                Ok(()) => deleted += usize::from(is_blob),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io { what: format!("removing {}", path.display()), source: e }),
            }
        }
    }
    Ok(deleted)
}

/// Removes an unpacked layer: renamed into the store's `tmp` first (so no one finds half of it), then deleted the
/// way task directories are, refusing if anything is mounted below it (nothing should be: overlayfs mounts layers
/// read-only elsewhere, and no task uses this one — its image is neither named nor in use).
fn remove_layer_dir(store: &ImageStore, path: &Path) -> io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let doomed: PathBuf = store.root().join("tmp").join(format!("gc-{name}-{}", std::process::id()));
    fs::rename(path, &doomed)?;
    crate::container::remove_task_dir(&doomed).map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn image(digest: &str, age: u64, blobs: &[&str]) -> Candidate {
        Candidate {
            digest: digest.into(),
            names: vec![format!("{digest}:1")],
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(1000 - age),
            blobs: blobs.iter().map(|b| (*b).to_owned()).collect(),
        }
    }

    fn sizes(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(b, s)| ((*b).to_owned(), *s)).collect()
    }

    #[test]
    fn the_least_recently_used_go_first_until_the_rest_fit() {
        // a (oldest) and b share the base; c is newest.
        let images = [
            image("a", 30, &["ma", "base", "la"]),
            image("b", 20, &["mb", "base", "lb"]),
            image("c", 10, &["mc", "lc"]),
        ];
        let sizes = sizes(&[("ma", 1), ("mb", 1), ("mc", 1), ("base", 100), ("la", 10), ("lb", 20), ("lc", 30)]);
        let none = HashSet::new();
        assert_eq!(plan(&images, &sizes, &none, 1000), (vec![], 163), "within the budget: nothing goes");
        // Removing a frees only its own layer: the base stays for b.
        assert_eq!(plan(&images, &sizes, &none, 160), (vec!["a".into()], 152));
        // Removing b too frees the base.
        assert_eq!(plan(&images, &sizes, &none, 100), (vec!["a".into(), "b".into()], 31));
        assert_eq!(plan(&images, &sizes, &none, 0), (vec!["a".into(), "b".into(), "c".into()], 0));
    }

    #[test]
    fn an_image_in_use_is_never_removed_even_over_budget() {
        let images = [image("a", 30, &["ma", "la"]), image("b", 20, &["mb", "lb"])];
        let sizes = sizes(&[("ma", 1), ("mb", 1), ("la", 50), ("lb", 50)]);
        let used: HashSet<String> = ["a".to_owned()].into();
        assert_eq!(plan(&images, &sizes, &used, 0), (vec!["b".into()], 51));
    }

    #[test]
    fn the_budget_shrinks_when_the_file_system_is_past_its_high_mark() {
        let policy = GcPolicy { budget: Some(500), high_percent: 85.0, low_percent: 80.0 };
        let fs = |used| Some(FsUsage { size: 1000, used });
        assert_eq!(budget(&policy, fs(850), 300), 500, "at the high mark: the fixed budget");
        assert_eq!(budget(&policy, fs(900), 300), 200, "100 over the low mark: 100 fewer than held");
        assert_eq!(budget(&policy, fs(990), 100), 0, "more to free than the images hold: all of them");
        assert_eq!(budget(&GcPolicy::default(), fs(100), 300), u64::MAX, "no budget, room: no bound");
        assert_eq!(budget(&GcPolicy::default(), None, 300), u64::MAX);
    }
}
