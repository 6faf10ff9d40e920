//! How the embedded store lays data out, and the operations on that layout: reading a key at a revision, applying a
//! transaction, compacting, replaying events. Pure functions; no threads, no async.
//!
//! On disk (redb), two tables:
//! - `revisions`: `revision → record`. One record per revision, appended in order: when it was written and every key
//!   it changed, with the new value (or none, for a delete), the key's create revision and version. Appends touch
//!   only the rightmost pages — which matters, because redb copies every page a commit touches. The records double
//!   as the watch log, and they are the whole truth: everything else is derived from them.
//! - `meta`: the revision counter and the compaction point, written in the same commit as the data they describe.
//!
//! In memory, the [`KeyIndex`]: for every key, its versions `(revision, create, version, live)` since the compaction
//! point — rebuilt from the records when the store opens, as etcd does. The value of a key at revision R is in the
//! record of its latest version ≤ R, so current reads and reads pinned at an older revision are the same lookup, and
//! an ordered walk of the index serves prefix ranges.
//!
//! A batch stages its index changes ([`Staged`]) and they are applied only once its commit is durable, so readers
//! never see a version whose record is not on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;
use redb::{ReadableTable, Table, TableDefinition};

use super::super::{Compare, KeyValue, Op, Result, StoreError, Txn, TxnResponse, WatchEvent};
use super::{backend, to_revision, to_u64};

pub(super) const REVISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("revisions");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const META_REVISION: &str = "revision";
pub(super) const META_COMPACTED: &str = "compacted";
/// How far the physical compaction has got (≤ the compaction point).
pub(super) const META_COMPACT_PROGRESS: &str = "compact_progress";

pub(super) type Revisions<'a> = Table<'a, u64, &'static [u8]>;

/// One version of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Version {
    pub create: u64,
    pub version: u64,
    /// False for a tombstone (the key was deleted at this revision).
    pub live: bool,
}

/// Every key's versions since the compaction point, oldest first.
#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    keys: BTreeMap<String, Vec<(u64, Version)>>,
}

impl KeyIndex {
    /// Rebuilds the index from every record.
    pub(super) fn build(revisions: &impl ReadableTable<u64, &'static [u8]>) -> Result<Self> {
        let mut index = Self::default();
        for entry in revisions.range::<u64>(..).map_err(backend)? {
            let (revision, bytes) = entry.map_err(backend)?;
            for change in Record::decode(bytes.value())?.changes {
                let version = change.version();
                index.insert(change.key, revision.value(), version);
            }
        }
        Ok(index)
    }

    /// The latest version of `key` at or below `revision`.
    pub(super) fn version_at(&self, key: &str, revision: u64) -> Option<(u64, Version)> {
        let versions = self.keys.get(key)?;
        let after = versions.partition_point(|(r, _)| *r <= revision);
        after.checked_sub(1).map(|i| versions[i])
    }

    fn insert(&mut self, key: String, revision: u64, version: Version) {
        let versions = self.keys.entry(key).or_default();
        match versions.binary_search_by_key(&revision, |(r, _)| *r) {
            Ok(i) => versions[i] = (revision, version),
            Err(i) => versions.insert(i, (revision, version)),
        }
    }

    fn remove(&mut self, key: &str, revision: u64) {
        if let Some(versions) = self.keys.get_mut(key) {
            versions.retain(|(r, _)| *r != revision);
            if versions.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// Up to `limit` keys under `prefix` (after `after`) that are live at `revision`, with the version to read; and
    /// whether more follow.
    pub(super) fn live_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        revision: u64,
        limit: usize,
    ) -> (Vec<(String, u64, Version)>, bool) {
        let start = match after.filter(|a| *a >= prefix) {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        let mut found = Vec::new();
        for (key, _) in self.keys.range::<str, _>((start, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if let Some((at, version)) = self.version_at(key, revision).filter(|(_, v)| v.live) {
                if found.len() == limit {
                    return (found, true);
                }
                found.push((key.clone(), at, version));
            }
        }
        (found, false)
    }

    /// Applies a committed batch's changes.
    pub(super) fn apply(&mut self, staged: Staged) {
        for (key, revision, version) in staged.inserts {
            self.insert(key, revision, version);
        }
        for (key, revision) in staged.removals {
            self.remove(&key, revision);
        }
    }

    /// How many keys (live or with history) the index holds.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Index changes of a batch not yet committed, and the newest staged version of each key so later transactions in
/// the batch see earlier ones.
#[derive(Debug, Default)]
pub(super) struct Staged {
    inserts: Vec<(String, u64, Version)>,
    latest: HashMap<String, (u64, Version)>,
    removals: Vec<(String, u64)>,
}

impl Staged {
    fn latest(&self, index: &KeyIndex, key: &str) -> Option<(u64, Version)> {
        self.latest.get(key).copied().or_else(|| index.version_at(key, u64::MAX))
    }

    fn insert(&mut self, key: &str, revision: u64, version: Version) {
        self.inserts.push((key.to_owned(), revision, version));
        self.latest.insert(key.to_owned(), (revision, version));
    }
}

/// One key a revision changed.
#[derive(Clone, Debug)]
pub(super) struct Change {
    pub key: String,
    /// The new value; `None` for a delete.
    pub value: Option<Bytes>,
    pub create: u64,
    pub version: u64,
}

impl Change {
    fn version(&self) -> Version {
        Version { create: self.create, version: self.version, live: self.value.is_some() }
    }
}

/// Everything a revision did.
#[derive(Clone, Debug)]
pub(super) struct Record {
    pub time_ms: i64,
    pub changes: Vec<Change>,
}

impl Record {
    pub(super) fn encode(&self) -> Vec<u8> {
        let size =
            12 + self.changes.iter().map(|c| 25 + c.key.len() + c.value.as_ref().map_or(0, Bytes::len)).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&len32(self.changes.len()).to_le_bytes());
        for change in &self.changes {
            out.push(u8::from(change.value.is_some()));
            out.extend_from_slice(&change.create.to_le_bytes());
            out.extend_from_slice(&change.version.to_le_bytes());
            out.extend_from_slice(&len32(change.key.len()).to_le_bytes());
            out.extend_from_slice(change.key.as_bytes());
            let value = change.value.as_deref().unwrap_or_default();
            out.extend_from_slice(&len32(value.len()).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = || StoreError::Backend("corrupt revision record".to_owned());
        let take = |at: usize, n: usize| bytes.get(at..at + n).ok_or_else(corrupt);
        let u32_at = |at: usize| -> Result<usize> {
            Ok(u32::from_le_bytes(take(at, 4)?.try_into().map_err(|_| corrupt())?) as usize)
        };
        let u64_at =
            |at: usize| -> Result<u64> { Ok(u64::from_le_bytes(take(at, 8)?.try_into().map_err(|_| corrupt())?)) };
        let time_ms = i64::from_le_bytes(take(0, 8)?.try_into().map_err(|_| corrupt())?);
        let count = u32_at(8)?;
        let mut at = 12;
        let mut changes = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let put = take(at, 1)?[0] == 1;
            let (create, version) = (u64_at(at + 1)?, u64_at(at + 9)?);
            let key_len = u32_at(at + 17)?;
            let key = std::str::from_utf8(take(at + 21, key_len)?).map_err(|_| corrupt())?.to_owned();
            at += 21 + key_len;
            let value_len = u32_at(at)?;
            let value = Bytes::copy_from_slice(take(at + 4, value_len)?);
            at += 4 + value_len;
            changes.push(Change { key, value: put.then_some(value), create, version });
        }
        Ok(Self { time_ms, changes })
    }

    /// Only the time, without decoding the changes.
    pub(super) fn time_of(bytes: &[u8]) -> Result<i64> {
        bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_le_bytes)
            .ok_or_else(|| StoreError::Backend("corrupt revision record".to_owned()))
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Reads the value of `key`'s version at revision `at` from its record.
pub(super) fn read_kv(
    revisions: &impl ReadableTable<u64, &'static [u8]>,
    key: &str,
    at: u64,
    version: Version,
) -> Result<KeyValue> {
    let record = revisions
        .get(at)
        .map_err(backend)?
        .ok_or_else(|| StoreError::Backend(format!("the record of revision {at} is missing (key {key:?})")))?;
    let value = Record::decode(record.value())?
        .changes
        .into_iter()
        .find(|c| c.key == key)
        .and_then(|c| c.value)
        .ok_or_else(|| StoreError::Backend(format!("revision {at} holds no value for {key:?}")))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value,
        create_revision: to_revision(version.create),
        mod_revision: to_revision(at),
        version: i64::try_from(version.version).unwrap_or(i64::MAX),
    })
}

/// The current value of `key`, as a batch in progress sees it.
fn current(
    index: &KeyIndex,
    staged: &Staged,
    revisions: &impl ReadableTable<u64, &'static [u8]>,
    key: &str,
) -> Result<Option<KeyValue>> {
    match staged.latest(index, key) {
        Some((at, version)) if version.live => Ok(Some(read_kv(revisions, key, at, version)?)),
        _ => Ok(None),
    }
}

/// Applies one transaction on top of `revision`, staging its index changes; returns its response and events (none
/// when it failed or changed nothing — then no revision is used).
pub(super) fn apply(
    index: &KeyIndex,
    staged: &mut Staged,
    revisions: &mut Revisions<'_>,
    txn: &Txn,
    revision: u64,
    now: i64,
) -> Result<(TxnResponse, Vec<WatchEvent>)> {
    let holds = txn.compares.iter().all(|compare| {
        let found = staged.latest(index, compare.key()).filter(|(_, v)| v.live);
        match (compare, found) {
            (Compare::ModRevision(_, expected), Some((at, _))) => to_revision(at) == *expected,
            (Compare::ModRevision(..), None) => false,
            (Compare::Absent(_), found) => found.is_none(),
        }
    });
    if !holds {
        let current =
            txn.compares.iter().map(|c| current(index, staged, revisions, c.key())).collect::<Result<Vec<_>>>()?;
        return Ok((TxnResponse { succeeded: false, revision: to_revision(revision), current }, Vec::new()));
    }
    let next = revision + 1;
    let mut events = Vec::new();
    let mut changes = Vec::new();
    for op in &txn.ops {
        let prev = current(index, staged, revisions, op.key())?;
        match op {
            Op::Put(key, value) => {
                let version = Version {
                    create: prev.as_ref().map_or(next, |p| to_u64(p.create_revision)),
                    version: prev.as_ref().map_or(1, |p| u64::try_from(p.version).unwrap_or(0) + 1),
                    live: true,
                };
                staged.insert(key, next, version);
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: to_revision(version.create),
                    mod_revision: to_revision(next),
                    version: i64::try_from(version.version).unwrap_or(i64::MAX),
                };
                events.push(WatchEvent::Put { kv, prev });
                changes.push(Change {
                    key: key.clone(),
                    value: Some(value.clone()),
                    create: version.create,
                    version: version.version,
                });
            }
            Op::Delete(key) => {
                let Some(prev) = prev else { continue };
                let tombstone = Version { create: to_u64(prev.create_revision), version: 0, live: false };
                staged.insert(key, next, tombstone);
                events.push(WatchEvent::Delete { key: key.clone(), mod_revision: to_revision(next), prev: Some(prev) });
                changes.push(Change { key: key.clone(), value: None, create: tombstone.create, version: 0 });
            }
        }
    }
    if changes.is_empty() {
        return Ok((TxnResponse { succeeded: true, revision: to_revision(revision), current: Vec::new() }, events));
    }
    // Re-inserting a record of this revision would mean two transactions got one revision: never.
    revisions.insert(next, Record { time_ms: now, changes }.encode().as_slice()).map_err(backend)?;
    Ok((TxnResponse { succeeded: true, revision: to_revision(next), current: Vec::new() }, events))
}

/// Physically compacts the revisions after `progress`, at most `chunk` of them, towards `target`: every version
/// superseded at or before `target` is dropped, and so is a tombstone that is its key's latest version at or before
/// it. Records left without a live version are deleted; records with some are rewritten to hold only those. The
/// index removals are staged. Returns the new progress.
pub(super) fn compact_chunk(
    index: &KeyIndex,
    staged: &mut Staged,
    revisions: &mut Revisions<'_>,
    (progress, target, chunk, chunk_bytes): (u64, u64, u64, usize),
) -> Result<u64> {
    let mut upto = target.min(progress + chunk);
    let mut window = Vec::new();
    let mut read = 0;
    for entry in revisions.range(progress + 1..=upto).map_err(backend)? {
        let (revision, bytes) = entry.map_err(backend)?;
        read += bytes.value().len();
        window.push((revision.value(), Record::decode(bytes.value())?));
        // Large records end the window early: a chunk never holds more than about `chunk_bytes` in memory.
        if read >= chunk_bytes {
            upto = revision.value();
            break;
        }
    }
    // Records that may lose versions: the window's own, and older ones whose versions are superseded now.
    let mut touched: BTreeSet<u64> = window.iter().map(|(r, _)| *r).collect();
    let mut removed: HashSet<(String, u64)> = HashSet::new();
    for (revision, record) in &window {
        for change in &record.changes {
            let versions = index.keys.get(&change.key).map_or(&[][..], Vec::as_slice);
            // Every older version is superseded by this one, which is at or before the target.
            for (old, _) in versions.iter().take_while(|(r, _)| r < revision) {
                if removed.insert((change.key.clone(), *old)) {
                    touched.insert(*old);
                }
            }
            // A tombstone that is the latest version at the target serves no read at or after the target.
            let superseded = versions.iter().any(|(r, _)| r > revision && *r <= target);
            if change.value.is_none() && !superseded {
                removed.insert((change.key.clone(), *revision));
            }
        }
    }
    for revision in touched {
        let Some(bytes) = revisions.get(revision).map_err(backend)?.map(|b| b.value().to_vec()) else { continue };
        let mut record = Record::decode(&bytes)?;
        let before = record.changes.len();
        record.changes.retain(|c| c.value.is_some() && !removed.contains(&(c.key.clone(), revision)));
        if record.changes.is_empty() {
            revisions.remove(revision).map_err(backend)?;
        } else if record.changes.len() < before {
            revisions.insert(revision, record.encode().as_slice()).map_err(backend)?;
        }
    }
    staged.removals.extend(removed);
    Ok(upto)
}

/// Rebuilds the events of revisions `from..=upto` under `prefix` from the records (and the index, for previous
/// values).
pub(super) fn replay(
    index: &KeyIndex,
    revisions: &impl ReadableTable<u64, &'static [u8]>,
    from: u64,
    upto: u64,
    prefix: &str,
) -> Result<Vec<WatchEvent>> {
    let mut events = Vec::new();
    for entry in revisions.range(from..=upto).map_err(backend)? {
        let (revision, bytes) = entry.map_err(backend)?;
        let revision = revision.value();
        for change in Record::decode(bytes.value())?.changes {
            if !change.key.starts_with(prefix) {
                continue;
            }
            let prev = match index.version_at(&change.key, revision - 1) {
                Some((at, version)) if version.live => Some(read_kv(revisions, &change.key, at, version)?),
                _ => None,
            };
            let mod_revision = to_revision(revision);
            events.push(match change.value {
                Some(value) => WatchEvent::Put {
                    kv: KeyValue {
                        key: change.key,
                        value,
                        create_revision: to_revision(change.create),
                        mod_revision,
                        version: i64::try_from(change.version).unwrap_or(i64::MAX),
                    },
                    prev,
                },
                None => WatchEvent::Delete { key: change.key, mod_revision, prev },
            });
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = Record {
            time_ms: 1_700_000_000_000,
            changes: vec![
                Change { key: "/a".into(), value: Some(Bytes::from_static(b"one")), create: 3, version: 2 },
                Change { key: "/b".into(), value: None, create: 1, version: 0 },
                Change { key: "/c".into(), value: Some(Bytes::new()), create: 9, version: 1 },
            ],
        };
        let encoded = record.encode();
        let decoded = Record::decode(&encoded).unwrap();
        assert_eq!(decoded.time_ms, record.time_ms);
        assert_eq!(Record::time_of(&encoded).unwrap(), record.time_ms);
        let got: Vec<(&str, Option<&[u8]>, u64, u64)> =
            decoded.changes.iter().map(|c| (c.key.as_str(), c.value.as_deref(), c.create, c.version)).collect();
        assert_eq!(got, [("/a", Some(&b"one"[..]), 3, 2), ("/b", None, 1, 0), ("/c", Some(&b""[..]), 9, 1)]);
        assert!(Record::decode(&encoded[..20]).is_err(), "truncated records are reported, not misread");
    }

    #[test]
    fn index_finds_the_version_at_a_revision() {
        let mut index = KeyIndex::default();
        let live = |v| Version { create: 2, version: v, live: true };
        index.insert("/k".into(), 2, live(1));
        index.insert("/k".into(), 5, live(2));
        index.insert("/k".into(), 9, Version { create: 2, version: 0, live: false });
        assert_eq!(index.version_at("/k", 1), None);
        assert_eq!(index.version_at("/k", 4), Some((2, live(1))));
        assert_eq!(index.version_at("/k", 5), Some((5, live(2))));
        assert!(!index.version_at("/k", u64::MAX).unwrap().1.live);
        index.insert("/j".into(), 3, live(1));
        index.insert("/l".into(), 4, live(1));
        let (keys, more) = index.live_range("/", None, 6, 2);
        assert_eq!(keys.iter().map(|(k, ..)| k.as_str()).collect::<Vec<_>>(), ["/j", "/k"]);
        assert!(more);
        let (keys, more) = index.live_range("/", Some("/k"), 10, 10);
        assert_eq!(keys.iter().map(|(k, ..)| k.as_str()).collect::<Vec<_>>(), ["/l"], "/k is deleted at 9");
        assert!(!more);
        index.remove("/k", 2);
        index.remove("/k", 5);
        index.remove("/k", 9);
        assert_eq!(index.len(), 2, "a key without versions leaves the index");
    }
}
