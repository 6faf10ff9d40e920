//! How much disk a task uses, measured as Mesos' `disk/du` isolator measures it: the blocks of everything under the
//! directories it writes to — its sandbox, its `/tmp`, and an image task's writable layer — each file counted once
//! (hard links), never following a link or crossing into another mount. The agent measures every running task with
//! a disk limit at its usage interval and kills one over its limit ([`over_limit`] decides).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The bytes of disk the files under `roots` take (their allocated blocks; a missing root counts nothing).
#[must_use]
pub fn usage(roots: &[PathBuf]) -> u64 {
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    for root in roots {
        let Ok(top) = std::fs::symlink_metadata(root) else { continue };
        let device = top.dev();
        let mut pending: Vec<(PathBuf, std::fs::Metadata)> = vec![(root.clone(), top)];
        while let Some((path, meta)) = pending.pop() {
            // Another file system mounted below (a task's root file system never is; this is the guard).
            if meta.dev() != device {
                continue;
            }
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                let Ok(entries) = std::fs::read_dir(&path) else { continue };
                for entry in entries.flatten() {
                    if let Ok(meta) = entry.metadata() {
                        pending.push((entry.path(), meta));
                    }
                }
            }
        }
    }
    total
}

/// Why a task using `used` bytes is over its limit of `limit_mib` MiB (0: no limit), if it is.
#[must_use]
pub fn over_limit(used: u64, limit_mib: f64) -> Option<String> {
    if limit_mib <= 0.0 {
        return None;
    }
    let used_mib = used as f64 / 1_048_576.0;
    (used_mib > limit_mib).then(|| {
        format!(
            "the task used {used_mib:.1} MiB of disk (its sandbox, /tmp and writable layer), more than its limit of {} \
             MiB (spec.disk)",
            agora_schemas::columns::number(limit_mib)
        )
    })
}

/// The directories a task writes to, under its task directory `dir`.
#[must_use]
pub fn written_by(dir: &Path) -> Vec<PathBuf> {
    ["sandbox", "tmp", "upper"].iter().map(|d| dir.join(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_counted_by_their_blocks_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(sandbox.join("deep/er")).unwrap();
        std::fs::write(sandbox.join("deep/er/a"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(sandbox.join("deep/er/a"), sandbox.join("b")).unwrap();
        std::os::unix::fs::symlink("/usr", sandbox.join("link")).unwrap();
        let used = usage(&written_by(dir.path()));
        assert!((1 << 20..(1 << 20) + (64 << 10)).contains(&used), "one MiB once, plus directories: {used}");
        // A sparse file takes only what it holds.
        let sparse = std::fs::File::create(sandbox.join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        assert!(usage(&written_by(dir.path())) < (2 << 20));
    }

    #[test]
    fn over_the_limit_is_said_with_both_numbers() {
        assert_eq!(over_limit(20 << 20, 0.0), None, "no limit");
        assert_eq!(over_limit(10 << 20, 10.0), None, "at the limit");
        let message = over_limit(25 << 20, 10.0).unwrap();
        assert!(message.contains("used 25.0 MiB") && message.contains("limit of 10 MiB"), "{message}");
    }
}
