//! The embedded backend: one redb file, etcd's semantics.
//!
//! Layout (three tables):
//! - `versions`: `(key, revision) → record`, every version of every key since the compaction point. A record is a
//!   value with its create revision and version, or a tombstone for a delete. The value of a key at revision R is its
//!   latest version ≤ R, so current reads and reads pinned at an older revision are the same lookup.
//! - `log`: `revision → (time, changed keys)`, so a watch can resume from any revision after the compaction point.
//! - `meta`: the revision counter and the compaction point, written in the same transaction as the data, so the
//!   counter never goes backwards.
//!
//! Writes go through one writer thread that drains every queued transaction into one redb write transaction and
//! commits it once (group commit): concurrent writers share one fsync, and each transaction is still acknowledged
//! only after its commit is durable. Each logical transaction gets its own revision and sees the writes before it.
//!
//! Watches pull: each keeps a cursor (the last revision it delivered) and wakes on a revision notification, reading
//! new events from an in-memory ring of recent revisions, or from the log when it has fallen behind the ring. A slow
//! watcher therefore costs no memory and never loses an event; one behind the compaction point gets
//! [`StoreError::Compacted`].
//!
//! Compaction first moves the advertised compaction point, then deletes superseded versions and old log entries in
//! bounded chunks between write batches; it resumes after a restart. The writer compacts on its own to keep
//! [`EmbeddedConfig::history`] of time, but never more than [`EmbeddedConfig::history_revisions`] revisions.

use std::collections::VecDeque;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition};
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Compare, KeyValue, Op, RangeRequest, RangeResponse, Result, Revision, Store, StoreError, Txn, TxnResponse,
    WatchEvent, WatchStream,
};

const VERSIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("versions");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
/// How far the physical compaction has got (≤ the compaction point).
const META_COMPACT_PROGRESS: &str = "compact_progress";

/// The file inside the data directory.
pub const DATA_FILE: &str = "agora.redb";

/// Settings of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    dir: PathBuf,
    history: Duration,
    history_revisions: u64,
    compaction_check: Duration,
    ring_events: usize,
    max_batch: usize,
}

impl EmbeddedConfig {
    /// Defaults: 5 minutes of history but at most 100,000 revisions, checked every 30 s; 16,384 recent events kept
    /// in memory for watchers; up to 1,024 transactions per commit.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            history: Duration::from_secs(300),
            history_revisions: 100_000,
            compaction_check: Duration::from_secs(30),
            ring_events: 16_384,
            max_batch: 1024,
        }
    }

    /// How long history is kept for resuming watches and paginated lists.
    #[must_use]
    pub fn history(mut self, history: Duration) -> Self {
        self.history = history;
        self
    }

    /// The most revisions of history kept, however recent.
    #[must_use]
    pub fn history_revisions(mut self, revisions: u64) -> Self {
        self.history_revisions = revisions;
        self
    }

    /// How often automatic compaction is considered.
    #[must_use]
    pub fn compaction_check(mut self, every: Duration) -> Self {
        self.compaction_check = every;
        self
    }

    /// How many recent events watchers can read from memory (older ones come from the file).
    #[must_use]
    pub fn ring_events(mut self, events: usize) -> Self {
        self.ring_events = events.max(1);
        self
    }

    /// The path of the database file.
    #[must_use]
    pub fn file(&self) -> PathBuf {
        self.dir.join(DATA_FILE)
    }
}

/// The embedded, durable, single-file store. Dropping it stops the writer once queued writes are done; use
/// [`close`](Self::close) to also wait until the file is released (for example, before reopening it).
pub struct EmbeddedStore {
    db: Arc<Database>,
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    writer: std::thread::JoinHandle<()>,
}

/// State the writer publishes and readers consult.
struct Shared {
    /// The latest committed revision; watchers wait on it. The writer holds the sender, so its exit ends every watch.
    revision: watch::Receiver<Revision>,
    /// The advertised compaction point.
    compacted: AtomicI64,
    /// Recent revisions with their events.
    ring: RwLock<Ring>,
    /// Durable commits made (each one fsync).
    commits: AtomicU64,
    /// Transactions acknowledged.
    transactions: AtomicU64,
}

/// Counters of the embedded store's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Durable commits made since the store was opened; each costs one fsync.
    pub commits: u64,
    /// Transactions acknowledged since the store was opened. More transactions than commits means writers shared
    /// commits (group commit).
    pub transactions: u64,
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<(Revision, Arc<[WatchEvent]>)>,
    events: usize,
}

enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnResponse>>),
    Compact(u64, oneshot::Sender<Result<()>>),
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Revisions are positive and far below `i64::MAX`; the conversions cannot fail in practice, and a corrupt value
/// saturates rather than wrapping.
fn to_revision(r: u64) -> Revision {
    Revision::try_from(r).unwrap_or(Revision::MAX)
}

fn to_u64(r: Revision) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// One stored version of a key.
struct Record {
    create: u64,
    version: u64,
    /// `None` for a tombstone.
    value: Option<Bytes>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(17 + value.len());
        out.push(u8::from(self.value.is_some()));
        out.extend_from_slice(&self.create.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 17 {
            return Err(StoreError::Backend(format!("corrupt version record ({} bytes)", bytes.len())));
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        Ok(Self {
            create: word(1),
            version: word(9),
            value: (bytes[0] == 1).then(|| Bytes::copy_from_slice(&bytes[17..])),
        })
    }

    fn into_kv(self, key: &str, revision: u64) -> Option<KeyValue> {
        Some(KeyValue {
            key: key.to_owned(),
            value: self.value?,
            create_revision: to_revision(self.create),
            mod_revision: to_revision(revision),
            version: i64::try_from(self.version).unwrap_or(i64::MAX),
        })
    }
}

/// A log entry: when the revision was written and which keys it put or deleted.
struct LogEntry {
    time_ms: i64,
    changes: Vec<(bool, String)>,
}

impl LogEntry {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.changes.iter().map(|(_, k)| 5 + k.len()).sum::<usize>());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.changes.len()).unwrap_or(u32::MAX).to_le_bytes());
        for (put, key) in &self.changes {
            out.push(u8::from(*put));
            out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = || StoreError::Backend("corrupt log entry".to_owned());
        let take = |at: usize, n: usize| bytes.get(at..at + n).ok_or_else(corrupt);
        let time_ms = i64::from_le_bytes(take(0, 8)?.try_into().map_err(|_| corrupt())?);
        let count = u32::from_le_bytes(take(8, 4)?.try_into().map_err(|_| corrupt())?);
        let mut at = 12;
        let mut changes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let put = take(at, 1)?[0] == 1;
            let len = u32::from_le_bytes(take(at + 1, 4)?.try_into().map_err(|_| corrupt())?) as usize;
            let key = std::str::from_utf8(take(at + 5, len)?).map_err(|_| corrupt())?.to_owned();
            changes.push((put, key));
            at += 5 + len;
        }
        Ok(Self { time_ms, changes })
    }
}

/// The latest version of `key` at or below `revision`, as `(revision, record)`.
fn version_at(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    revision: u64,
) -> Result<Option<(u64, Record)>> {
    let mut range = table.range((key, 0)..=(key, revision)).map_err(backend)?;
    match range.next_back() {
        None => Ok(None),
        Some(entry) => {
            let (k, v) = entry.map_err(backend)?;
            Ok(Some((k.value().1, Record::decode(v.value())?)))
        }
    }
}

/// The value of `key` at `revision` (`None` when absent or deleted).
fn kv_at(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    revision: u64,
) -> Result<Option<KeyValue>> {
    Ok(version_at(table, key, revision)?.and_then(|(rev, record)| record.into_kv(key, rev)))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `config`'s directory and starts its writer.
    ///
    /// # Errors
    /// The directory or file cannot be created or opened, or the file is not an Agora store.
    pub async fn open(config: EmbeddedConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config)).await.map_err(backend)?
    }

    fn open_blocking(config: EmbeddedConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", config.dir.display())))?;
        let path = config.file();
        let db =
            Database::create(&path).map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        let db = Arc::new(db);
        // Create the tables and read the counters.
        let (revision, compacted, progress) = {
            let write = db.begin_write().map_err(backend)?;
            let counters = {
                write.open_table(VERSIONS).map_err(backend)?;
                write.open_table(LOG).map_err(backend)?;
                let meta = write.open_table(META).map_err(backend)?;
                let read =
                    |name: &str| -> Result<u64> { Ok(meta.get(name).map_err(backend)?.map_or(0, |v| v.value())) };
                (read(META_REVISION)?, read(META_COMPACTED)?, read(META_COMPACT_PROGRESS)?)
            };
            write.commit().map_err(backend)?;
            counters
        };
        let time_index = Self::load_time_index(&db, progress)?;
        let (revision_tx, revision_rx) = watch::channel(to_revision(revision));
        let shared = Arc::new(Shared {
            revision: revision_rx,
            compacted: AtomicI64::new(to_revision(compacted)),
            ring: RwLock::new(Ring::default()),
            commits: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
        });
        let (requests, receiver) = mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            shared: shared.clone(),
            revision_tx,
            config: config.clone(),
            revision,
            compacted,
            progress,
            waiting: Vec::new(),
            time_index,
            last_check: Instant::now(),
            last_batch: 0,
        };
        let writer = std::thread::Builder::new()
            .name("agora-store-writer".to_owned())
            .spawn(move || writer.run(&receiver))
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        tracing::info!(path = %path.display(), revision, compacted, "embedded store open");
        Ok(Self { db, shared, requests, writer })
    }

    /// Samples of (revision, time) from the log, one per second, for time-based compaction.
    fn load_time_index(db: &Database, from: u64) -> Result<VecDeque<(u64, i64)>> {
        let read = db.begin_read().map_err(backend)?;
        let log = read.open_table(LOG).map_err(backend)?;
        let mut index: VecDeque<(u64, i64)> = VecDeque::new();
        for entry in log.range(from + 1..).map_err(backend)? {
            let (rev, bytes) = entry.map_err(backend)?;
            let time = LogEntry::decode(bytes.value())?.time_ms;
            if index.back().is_none_or(|(_, t)| time >= t + 1000) {
                index.push_back((rev.value(), time));
            }
        }
        Ok(index)
    }

    /// Finishes queued writes, ends every watch, and releases the file.
    ///
    /// # Errors
    /// The writer thread panicked.
    pub async fn close(self) -> Result<()> {
        let Self { db, shared, requests, writer } = self;
        drop(requests);
        drop(shared);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(backend)?
            .map_err(|_| StoreError::Backend("the store's writer panicked".to_owned()))?;
        // Reads in flight hold the database for a moment longer.
        let mut db = db;
        loop {
            match Arc::try_unwrap(db) {
                Ok(database) => {
                    drop(database);
                    return Ok(());
                }
                Err(shared) => {
                    db = shared;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// What the store has done since it was opened.
    #[must_use]
    pub fn stats(&self) -> EmbeddedStats {
        EmbeddedStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            transactions: self.shared.transactions.load(Ordering::Relaxed),
        }
    }

    /// The path of a store's file in `dir` (for tools that inspect it).
    #[must_use]
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join(DATA_FILE)
    }

    async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".to_owned()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the store's writer stopped before answering".to_owned()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let read = db.begin_read().map_err(backend)?;
            f(&read)
        })
        .await
        .map_err(backend)?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |read| {
            let versions = read.open_table(VERSIONS).map_err(backend)?;
            kv_at(&versions, &key, u64::MAX)
        })
        .await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.read(move |read| {
            let meta = read.open_table(META).map_err(backend)?;
            let counter = |name: &str| -> Result<u64> { Ok(meta.get(name).map_err(backend)?.map_or(0, |v| v.value())) };
            // Both from this snapshot: the compaction point is written in the same commit as the deletions.
            let (current, compacted) = (counter(META_REVISION)?, counter(META_COMPACTED)?);
            let revision = match request.revision {
                None | Some(0) => current,
                Some(r) if to_u64(r) > current => {
                    return Err(StoreError::FutureRevision { requested: r, current: to_revision(current) });
                }
                Some(r) if to_u64(r) < compacted => {
                    return Err(StoreError::Compacted { requested: r, compacted: to_revision(compacted) });
                }
                Some(r) => to_u64(r),
            };
            let versions = read.open_table(VERSIONS).map_err(backend)?;
            let limit = request.limit.unwrap_or(usize::MAX);
            let mut kvs = Vec::new();
            let mut more = false;
            // Walk distinct keys: from each key, jump past all of its versions to the next key. Keys under the prefix
            // are contiguous, so the first key outside it ends the walk.
            let mut after = request.start_after.clone().filter(|a| a.as_str() >= request.prefix.as_str());
            loop {
                let start = match &after {
                    Some(key) => Bound::Excluded((key.as_str(), u64::MAX)),
                    None => Bound::Included((request.prefix.as_str(), 0)),
                };
                let key = match versions.range::<(&str, u64)>((start, Bound::Unbounded)).map_err(backend)?.next() {
                    None => break,
                    Some(entry) => entry.map_err(backend)?.0.value().0.to_owned(),
                };
                if !key.starts_with(&request.prefix) {
                    break;
                }
                if let Some(kv) = kv_at(&versions, &key, revision)? {
                    if kvs.len() == limit {
                        more = true;
                        break;
                    }
                    kvs.push(kv);
                }
                after = Some(key);
            }
            Ok(RangeResponse { kvs, more, revision: to_revision(revision) })
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let mut seen = std::collections::HashSet::new();
        if let Some(op) = txn.ops.iter().find(|op| !seen.insert(op.key().to_owned())) {
            return Err(StoreError::Backend(format!("key {:?} is written twice in one transaction", op.key())));
        }
        self.request(|reply| Request::Txn(txn, reply)).await
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        let current = *self.shared.revision.borrow();
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        let from = if from_revision <= 0 { current + 1 } else { from_revision };
        if from <= compacted {
            return Err(StoreError::Compacted { requested: from, compacted });
        }
        let (events, receiver) = tokio::sync::mpsc::channel(256);
        let watcher = Watcher {
            db: Arc::downgrade(&self.db),
            shared: self.shared.clone(),
            prefix: prefix.to_owned(),
            cursor: from - 1,
            events,
        };
        tokio::spawn(watcher.run());
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(*self.shared.revision.borrow())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let current = *self.shared.revision.borrow();
        if revision > current {
            return Err(StoreError::FutureRevision { requested: revision, current });
        }
        self.request(|reply| Request::Compact(to_u64(revision), reply)).await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }
}

/// The single writer: batches transactions into shared commits and runs compaction between batches.
struct Writer {
    db: Arc<Database>,
    shared: Arc<Shared>,
    revision_tx: watch::Sender<Revision>,
    config: EmbeddedConfig,
    revision: u64,
    /// The advertised compaction point.
    compacted: u64,
    /// How far versions and log entries have been physically removed.
    progress: u64,
    /// Compaction requests waiting for the physical work to reach their revision.
    waiting: Vec<(u64, oneshot::Sender<Result<()>>)>,
    /// (revision, unix ms) samples, about one per second.
    time_index: VecDeque<(u64, i64)>,
    last_check: Instant,
    /// The size of the previous batch: more than one means writers are concurrent.
    last_batch: usize,
}

/// How long a batch waits for more writers once the queue is empty (when writers have been concurrent).
const GATHER_QUIET: Duration = Duration::from_micros(60);
/// The longest a batch waits for more writers.
const GATHER_LIMIT: Duration = Duration::from_micros(800);

/// Log revisions compacted per batch, so compaction never stalls writers for long.
const COMPACTION_CHUNK: u64 = 2_000;

impl Writer {
    fn run(mut self, requests: &mpsc::Receiver<Request>) {
        loop {
            let pending_work = self.progress < self.compacted;
            let first = if pending_work {
                match requests.try_recv() {
                    Ok(request) => Some(request),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            } else {
                match requests.recv_timeout(self.config.compaction_check) {
                    Ok(request) => Some(request),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            let batch = self.gather(first, requests);
            if self.last_check.elapsed() >= self.config.compaction_check {
                self.last_check = Instant::now();
                self.plan_automatic_compaction();
            }
            self.run_batch(batch);
        }
        tracing::debug!("embedded store writer stopped");
    }

    /// Collects a batch: everything queued, and — when writers have been concurrent — whatever else arrives until the
    /// queue has been quiet for [`GATHER_QUIET`] (at most [`GATHER_LIMIT`] in all). Writers that were just answered
    /// come back within microseconds; without the wait they would form a second, alternating batch and every commit
    /// would carry half the writers. A lone writer never waits.
    fn gather(&mut self, first: Option<Request>, requests: &mpsc::Receiver<Request>) -> Vec<Request> {
        let mut batch: Vec<Request> = first.into_iter().collect();
        if batch.is_empty() {
            return batch;
        }
        let concurrent = self.last_batch > 1;
        let deadline = Instant::now() + GATHER_LIMIT;
        while batch.len() < self.config.max_batch {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) if !concurrent => break,
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match requests.recv_timeout(GATHER_QUIET.min(left)) {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
            }
        }
        self.last_batch = batch.len();
        batch
    }

    /// Moves the compaction point so that the configured history is kept.
    fn plan_automatic_compaction(&mut self) {
        let cutoff = now_millis() - i64::try_from(self.config.history.as_millis()).unwrap_or(i64::MAX);
        let by_time = self.time_index.iter().take_while(|(_, t)| *t <= cutoff).last().map_or(0, |(rev, _)| *rev);
        let by_count = self.revision.saturating_sub(self.config.history_revisions);
        let target = by_time.max(by_count).min(self.revision);
        if target > self.compacted {
            tracing::debug!(target, "automatic compaction");
            self.compacted = target;
        }
    }

    fn run_batch(&mut self, batch: Vec<Request>) {
        let mut txns = Vec::new();
        for request in batch {
            match request {
                Request::Txn(txn, reply) => txns.push((txn, reply)),
                Request::Compact(revision, reply) => {
                    self.compacted = self.compacted.max(revision);
                    self.waiting.push((revision, reply));
                }
            }
        }
        // Advertise the compaction point before anything below it is deleted.
        self.publish_compaction();
        if txns.is_empty() && self.progress >= self.compacted {
            self.finish_compactions();
            return;
        }
        let now = now_millis();
        match self.write(&txns, now) {
            Ok((results, committed, progress)) => {
                self.progress = progress;
                if let Some((last, _)) = committed.last() {
                    self.revision = *last;
                    if self.time_index.back().is_none_or(|(_, t)| now >= t + 1000) {
                        self.time_index.push_back((*last, now));
                    }
                }
                self.publish(committed);
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared.transactions.fetch_add(results.len() as u64, Ordering::Relaxed);
                for ((_, reply), result) in txns.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
                self.finish_compactions();
            }
            Err(e) => {
                tracing::error!(error = %e, "store write failed");
                for (_, reply) in txns {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Answers the compaction requests the physical work has reached, and drops time samples it has passed.
    fn finish_compactions(&mut self) {
        let progress = self.progress;
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting).into_iter().partition(|(revision, _)| *revision <= progress);
        self.waiting = waiting;
        for (_, reply) in done {
            let _ = reply.send(Ok(()));
        }
        while self.time_index.front().is_some_and(|(rev, _)| *rev <= progress) {
            self.time_index.pop_front();
        }
    }

    /// Applies the batch and a chunk of compaction in one write transaction, committed once.
    #[allow(clippy::type_complexity)]
    fn write(
        &self,
        batch: &[(Txn, oneshot::Sender<Result<TxnResponse>>)],
        now: i64,
    ) -> Result<(Vec<TxnResponse>, Vec<(u64, Arc<[WatchEvent]>)>, u64)> {
        let mut write = self.db.begin_write().map_err(backend)?;
        write.set_durability(Durability::Immediate).map_err(backend)?;
        let mut results = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        let mut revision = self.revision;
        let mut progress = self.progress;
        {
            let mut versions = write.open_table(VERSIONS).map_err(backend)?;
            let mut log = write.open_table(LOG).map_err(backend)?;
            let mut meta = write.open_table(META).map_err(backend)?;
            for (txn, _) in batch {
                let (response, events) = apply(&mut versions, &mut log, txn, revision, now)?;
                if !events.is_empty() {
                    revision += 1;
                    committed.push((revision, events.into()));
                }
                results.push(response);
            }
            if progress < self.compacted {
                progress = compact_chunk(&mut versions, &mut log, progress, self.compacted)?;
            }
            meta.insert(META_REVISION, revision).map_err(backend)?;
            meta.insert(META_COMPACTED, self.compacted).map_err(backend)?;
            meta.insert(META_COMPACT_PROGRESS, progress).map_err(backend)?;
        }
        write.commit().map_err(backend)?;
        Ok((results, committed, progress))
    }

    /// Makes committed revisions visible to watchers.
    fn publish(&self, committed: Vec<(u64, Arc<[WatchEvent]>)>) {
        let Some(last) = committed.last().map(|(r, _)| *r) else { return };
        {
            let mut ring = self.shared.ring.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (revision, events) in committed {
                ring.events += events.len();
                ring.entries.push_back((to_revision(revision), events));
            }
            while ring.events > self.config.ring_events && ring.entries.len() > 1 {
                if let Some((_, events)) = ring.entries.pop_front() {
                    ring.events -= events.len();
                }
            }
        }
        self.revision_tx.send_replace(to_revision(last));
    }

    fn publish_compaction(&self) {
        self.shared.compacted.store(to_revision(self.compacted), Ordering::Release);
    }
}

type Versions<'a> = Table<'a, (&'static str, u64), &'static [u8]>;
type Log<'a> = Table<'a, u64, &'static [u8]>;

/// Applies one transaction on top of `revision`; returns its response and events (none when it failed or changed
/// nothing, in which case no revision is used).
fn apply(
    versions: &mut Versions<'_>,
    log: &mut Log<'_>,
    txn: &Txn,
    revision: u64,
    now: i64,
) -> Result<(TxnResponse, Vec<WatchEvent>)> {
    let mut holds = true;
    let mut current = Vec::with_capacity(txn.compares.len());
    for compare in &txn.compares {
        let kv = kv_at(versions, compare.key(), u64::MAX)?;
        holds &= match (compare, &kv) {
            (Compare::ModRevision(_, expected), Some(kv)) => kv.mod_revision == *expected,
            (Compare::ModRevision(..), None) => false,
            (Compare::Absent(_), found) => found.is_none(),
        };
        current.push(kv);
    }
    if !holds {
        return Ok((TxnResponse { succeeded: false, revision: to_revision(revision), current }, Vec::new()));
    }
    let next = revision + 1;
    let mut events = Vec::new();
    let mut changes = Vec::new();
    for op in &txn.ops {
        match op {
            Op::Put(key, value) => {
                let prev = kv_at(versions, key, u64::MAX)?;
                let record = Record {
                    create: prev.as_ref().map_or(next, |p| to_u64(p.create_revision)),
                    version: prev.as_ref().map_or(1, |p| u64::try_from(p.version).unwrap_or(0) + 1),
                    value: Some(value.clone()),
                };
                versions.insert((key.as_str(), next), record.encode().as_slice()).map_err(backend)?;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: to_revision(record.create),
                    mod_revision: to_revision(next),
                    version: i64::try_from(record.version).unwrap_or(i64::MAX),
                };
                events.push(WatchEvent::Put { kv, prev });
                changes.push((true, key.clone()));
            }
            Op::Delete(key) => {
                let Some(prev) = kv_at(versions, key, u64::MAX)? else { continue };
                let tombstone = Record { create: to_u64(prev.create_revision), version: 0, value: None };
                versions.insert((key.as_str(), next), tombstone.encode().as_slice()).map_err(backend)?;
                events.push(WatchEvent::Delete { key: key.clone(), mod_revision: to_revision(next), prev: Some(prev) });
                changes.push((false, key.clone()));
            }
        }
    }
    if events.is_empty() {
        return Ok((TxnResponse { succeeded: true, revision: to_revision(revision), current: Vec::new() }, events));
    }
    log.insert(next, LogEntry { time_ms: now, changes }.encode().as_slice()).map_err(backend)?;
    Ok((TxnResponse { succeeded: true, revision: to_revision(next), current: Vec::new() }, events))
}

/// Physically compacts the log revisions after `progress`, at most [`COMPACTION_CHUNK`] of them, towards `target`:
/// every version superseded at or before `target` is removed, and so is a tombstone that is a key's latest version at
/// or before it. Returns the new progress.
fn compact_chunk(versions: &mut Versions<'_>, log: &mut Log<'_>, progress: u64, target: u64) -> Result<u64> {
    let upto = target.min(progress + COMPACTION_CHUNK);
    let mut entries = Vec::new();
    for entry in log.range(progress + 1..=upto).map_err(backend)? {
        let (revision, bytes) = entry.map_err(backend)?;
        entries.push((revision.value(), LogEntry::decode(bytes.value())?));
    }
    for (revision, entry) in &entries {
        for (put, key) in &entry.changes {
            // Everything older than this version is superseded by it (it is at or before the target).
            let older: Vec<u64> = versions
                .range((key.as_str(), 0)..(key.as_str(), *revision))
                .map_err(backend)?
                .map(|e| e.map(|(k, _)| k.value().1))
                .collect::<std::result::Result<_, _>>()
                .map_err(backend)?;
            for old in older {
                versions.remove((key.as_str(), old)).map_err(backend)?;
            }
            // A tombstone that is its key's latest version at the target carries nothing a read at or after the
            // target needs. (One superseded before the target goes with the sweep of the version after it.)
            if !put
                && versions
                    .range((key.as_str(), revision + 1)..=(key.as_str(), target))
                    .map_err(backend)?
                    .next()
                    .is_none()
            {
                versions.remove((key.as_str(), *revision)).map_err(backend)?;
            }
        }
        log.remove(*revision).map_err(backend)?;
    }
    Ok(upto)
}

/// One watch: delivers events after `cursor` under `prefix`, in order, until the consumer goes away.
struct Watcher {
    /// Weak, so an idle watch never keeps a closed store's file open.
    db: std::sync::Weak<Database>,
    shared: Arc<Shared>,
    prefix: String,
    cursor: Revision,
    events: tokio::sync::mpsc::Sender<Result<WatchEvent>>,
}

/// Revisions read from the file per step when a watcher is behind the ring.
const REPLAY_CHUNK: Revision = 1_000;
/// A watcher that sees revisions pass without a matching event says so at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl Watcher {
    async fn run(mut self) {
        let mut revisions = self.shared.revision.clone();
        let mut last_progress = Instant::now();
        loop {
            let latest = *revisions.borrow_and_update();
            while self.cursor < latest {
                let upto = latest.min(self.cursor + REPLAY_CHUNK);
                let batch = match self.read(upto).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        let _ = self.events.send(Err(e)).await;
                        return;
                    }
                };
                let mut delivered = false;
                for event in batch {
                    if event.key().is_some_and(|k| k.starts_with(&self.prefix)) {
                        delivered = true;
                        if self.events.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                self.cursor = upto;
                if delivered {
                    last_progress = Instant::now();
                } else if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    if self.events.send(Ok(WatchEvent::Progress { revision: upto })).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                changed = revisions.changed() => if changed.is_err() { return },
                () = self.events.closed() => return,
            }
        }
    }

    /// The events of revisions `(cursor, upto]`: from the ring when it reaches back far enough (even below the
    /// compaction point: what memory still holds is delivered), else from the file.
    async fn read(&self, upto: Revision) -> Result<Vec<WatchEvent>> {
        {
            let ring = self.shared.ring.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let oldest = ring.entries.front().map(|(r, _)| *r);
            if oldest.is_some_and(|oldest| oldest <= self.cursor + 1) {
                let skip = ring.entries.partition_point(|(r, _)| *r <= self.cursor);
                return Ok(ring
                    .entries
                    .range(skip..)
                    .take_while(|(r, _)| *r <= upto)
                    .flat_map(|(_, events)| events.iter().cloned())
                    .collect());
            }
        }
        let db = self.db.upgrade().ok_or_else(|| StoreError::Unavailable("the store was closed".to_owned()))?;
        let (from, prefix) = (to_u64(self.cursor + 1), self.prefix.clone());
        let upto = to_u64(upto);
        tokio::task::spawn_blocking(move || replay(&db, from, upto, &prefix)).await.map_err(backend)?
    }
}

/// Rebuilds the events of revisions `from..=upto` touching `prefix` from the log and the versions.
fn replay(db: &Database, from: u64, upto: u64, prefix: &str) -> Result<Vec<WatchEvent>> {
    let read = db.begin_read().map_err(backend)?;
    let compacted =
        read.open_table(META).map_err(backend)?.get(META_COMPACTED).map_err(backend)?.map_or(0, |v| v.value());
    if from <= compacted {
        return Err(StoreError::Compacted { requested: to_revision(from), compacted: to_revision(compacted) });
    }
    let log = read.open_table(LOG).map_err(backend)?;
    let versions = read.open_table(VERSIONS).map_err(backend)?;
    let mut events = Vec::new();
    for entry in log.range(from..=upto).map_err(backend)? {
        let (revision, bytes) = entry.map_err(backend)?;
        let revision = revision.value();
        for (put, key) in LogEntry::decode(bytes.value())?.changes {
            if !key.starts_with(prefix) {
                continue;
            }
            let prev = kv_at(&versions, &key, revision - 1)?;
            if put {
                let kv = kv_at(&versions, &key, revision)?.ok_or_else(|| {
                    StoreError::Backend(format!("log names {key:?} at {revision}, but the version is gone"))
                })?;
                events.push(WatchEvent::Put { kv, prev });
            } else {
                events.push(WatchEvent::Delete { key, mod_revision: to_revision(revision), prev });
            }
        }
    }
    Ok(events)
}
