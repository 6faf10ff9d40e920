//! The embedded backend: one redb file, etcd's semantics.
//!
//! - [`layout`]: the tables (an index of `(key, revision)` versions, one appended record per revision with the
//!   values it wrote, and the counters) and the pure operations on them.
//! - [`writer`]: the one thread that writes. It drains every queued transaction into one redb write transaction and
//!   commits it once (group commit): concurrent writers share one fsync, and each transaction is acknowledged only
//!   after its commit is durable. Each logical transaction gets its own revision and sees the writes before it.
//!   Compaction first moves the advertised compaction point, then deletes superseded versions in bounded chunks
//!   between write batches, resuming after a restart; the writer compacts on its own to keep
//!   [`EmbeddedConfig::history`] of time, but never more than [`EmbeddedConfig::history_revisions`] revisions.
//! - [`watcher`]: watchers pull. Each keeps a cursor (the last revision it delivered) and wakes on a revision
//!   notification, reading new events from an in-memory ring of recent revisions, or replaying the records when it
//!   has fallen behind the ring. A slow watcher costs no memory and never loses an event; one behind the compaction
//!   point gets [`StoreError::Compacted`].

mod layout;
mod watcher;
mod writer;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::{oneshot, watch};

use self::layout::{
    KeyIndex, META, META_COMPACT_PROGRESS, META_COMPACTED, META_REVISION, REVISIONS, Record, Version, read_kv,
};
use self::writer::{History, Request, TimeIndex, Writer};
use super::{
    KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, StoreError, Txn, TxnResponse, WatchEvent,
    WatchStream,
};

/// The file inside the data directory.
pub const DATA_FILE: &str = "agora.redb";
/// Written beside [`DATA_FILE`] when a store is created: a directory that has it has held a cluster, so a missing
/// or empty data file there is lost data, never a new cluster.
pub const MARKER_FILE: &str = "agora-store.json";

/// What to do about a data file that cannot be used.
const RECOVERY: &str = "restore the last snapshot into a new directory (`agora store restore SNAPSHOT --data-dir \
                        NEW_DIR`, then start the apiserver with --data-dir NEW_DIR), or, to start an empty cluster, \
                        use --data-dir with a new directory (see docs/operations.md, \"Backups and recovery\")";

/// redb's file signature.
const REDB_MAGIC: &[u8] = b"redb\x1A\x0A\xA9\x0D\x0A";

/// Checks the data file of `dir` before redb touches it (redb would make an empty or missing file a new, empty
/// store); returns whether the store is new (no file and no marker: a fresh directory).
fn check_data_file(dir: &std::path::Path) -> Result<bool> {
    let (file, marker) = (dir.join(DATA_FILE), dir.join(MARKER_FILE));
    let created = || {
        std::fs::read_to_string(&marker)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| v.get("createdAt").and_then(serde_json::Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "at an unknown time".to_owned())
    };
    let refuse = |what: String| Err(StoreError::Backend(format!("{what}: {RECOVERY}")));
    match std::fs::metadata(&file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if marker.exists() {
                return refuse(format!(
                    "{} is missing, but {} held an Agora store (created {}): its data is gone",
                    file.display(),
                    dir.display(),
                    created()
                ));
            }
            Ok(true)
        }
        Err(e) => Err(StoreError::Backend(format!("reading {}: {e}", file.display()))),
        Ok(meta) if meta.len() == 0 => refuse(format!(
            "{} is empty (0 bytes): the store's data is gone (it was {}); the apiserver will not start an empty \
             cluster in its place",
            file.display(),
            if marker.exists() { format!("created {}", created()) } else { "made before this check".to_owned() }
        )),
        Ok(_) => {
            let mut head = [0u8; 9];
            let read = std::fs::File::open(&file).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
            if read.is_err() || head != REDB_MAGIC {
                return refuse(format!(
                    "{} does not begin with a store's header (it is truncated, overwritten or another file)",
                    file.display()
                ));
            }
            Ok(false)
        }
    }
}

/// Makes a data file (or snapshot) readable and writable by its owner only.
fn private(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::Backend(format!("making {} private: {e}", path.display())))
}

/// Copies every record and counter, as one read transaction sees them, into a new redb file at `out`: a data file
/// as of one revision, which the writer goes on appending to meanwhile without disturbing it.
fn snapshot_blocking(db: &Database, out: &std::path::Path) -> Result<Revision> {
    let read = db.begin_read().map_err(backend)?;
    let (revisions, meta) = (read.open_table(REVISIONS).map_err(backend)?, read.open_table(META).map_err(backend)?);
    let _ = std::fs::remove_file(out);
    let copy = Database::builder()
        .set_cache_size(PAGE_CACHE_BYTES)
        .create(out)
        .map_err(|e| StoreError::Backend(format!("creating {}: {e}", out.display())))?;
    private(out)?;
    let write = copy.begin_write().map_err(backend)?;
    let revision = {
        let mut to = write.open_table(REVISIONS).map_err(backend)?;
        for entry in revisions.range::<u64>(..).map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            to.insert(key.value(), value.value()).map_err(backend)?;
        }
        let mut to = write.open_table(META).map_err(backend)?;
        for entry in meta.range::<&str>(..).map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            to.insert(key.value(), value.value()).map_err(backend)?;
        }
        meta.get(META_REVISION).map_err(backend)?.map_or(0, |v| v.value())
    };
    write.commit().map_err(backend)?;
    Ok(to_revision(revision))
}

/// Makes `dir` (new, or empty) a data directory holding the snapshot at `snapshot`: checks it is a store's data
/// file, copies it in and marks the directory. Returns the revision the snapshot holds.
///
/// # Errors
/// A directory that already holds a store, or a file that is not a snapshot (nothing is left behind then).
pub async fn restore(snapshot: &std::path::Path, dir: &std::path::Path) -> Result<Revision> {
    let file = dir.join(DATA_FILE);
    if file.exists() || dir.join(MARKER_FILE).exists() {
        return Err(StoreError::Backend(format!(
            "{} already holds a store: restore into a new directory, then point --data-dir at it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
    let mut head = [0u8; 9];
    let header = std::fs::File::open(snapshot).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    if header.is_err() || head != REDB_MAGIC {
        return Err(StoreError::Backend(format!("{} is not an Agora store snapshot", snapshot.display())));
    }
    let temp = dir.join(format!("{DATA_FILE}.restoring"));
    std::fs::copy(snapshot, &temp)
        .and_then(|_| std::fs::File::open(&temp)?.sync_all())
        .and_then(|()| std::fs::rename(&temp, &file))
        .map_err(|e| StoreError::Backend(format!("copying {} into {}: {e}", snapshot.display(), dir.display())))?;
    // Opening it proves it whole: the records are read back into the key index.
    let opened = EmbeddedStore::open(EmbeddedConfig::new(dir)).await;
    match opened {
        Ok(store) => {
            let revision = store.current_revision().await?;
            store.close().await?;
            Ok(revision)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(dir.join(MARKER_FILE));
            Err(StoreError::Backend(format!("{} is not a usable snapshot: {e}", snapshot.display())))
        }
    }
}

/// Free space in the data file that makes opening it shrink the file: more than half of it, and at least this.
const SHRINK_FREE_BYTES: u64 = 16 * 1024 * 1024;

/// Gives the free space of the data file back to the file system when most of the file is free. While the store
/// runs, compaction frees the pages of old history and later writes reuse them, so the file stops growing; it only
/// shrinks here, when nothing else holds the file (as `etcdctl defrag` does for etcd, but on its own).
fn shrink(db: &mut Database, path: &std::path::Path) -> Result<()> {
    let file_bytes =
        std::fs::metadata(path).map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?.len();
    let used = {
        let write = db.begin_write().map_err(backend)?;
        let stats = write.stats().map_err(backend)?;
        write.abort().map_err(backend)?;
        stats.allocated_pages() * stats.page_size() as u64
    };
    let free = file_bytes.saturating_sub(used);
    if free < SHRINK_FREE_BYTES || free < file_bytes / 2 {
        return Ok(());
    }
    let started = std::time::Instant::now();
    // Each pass moves pages toward the start of the file; a few are enough to give most of the space back.
    for _ in 0..3 {
        if !db.compact().map_err(|e| StoreError::Backend(format!("shrinking {}: {e}", path.display())))? {
            break;
        }
    }
    let after = std::fs::metadata(path).map_or(0, |m| m.len());
    tracing::info!(
        path = %path.display(),
        before = file_bytes,
        after,
        ms = started.elapsed().as_millis() as u64,
        "data file shrunk: most of it was free (history compacted away)"
    );
    Ok(())
}

/// Records that `dir` holds a store (see [`MARKER_FILE`]).
fn write_marker(dir: &std::path::Path) -> Result<()> {
    let marker = dir.join(MARKER_FILE);
    let body = serde_json::json!({
        "store": "embedded",
        "file": DATA_FILE,
        "createdAt": jiff::Timestamp::now().to_string(),
    });
    let temp = marker.with_extension("tmp");
    std::fs::write(&temp, body.to_string())
        .and_then(|()| std::fs::rename(&temp, &marker))
        .map_err(|e| StoreError::Backend(format!("writing {}: {e}", marker.display())))
}

/// redb's page cache.
const PAGE_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// The default bound of the history kept: 256 MiB of written keys and values.
pub const HISTORY_BYTES: u64 = 256 * 1024 * 1024;
/// The default bound of the recent events kept in memory: 64 MiB.
pub const RING_BYTES: usize = 64 * 1024 * 1024;

/// Settings of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    dir: PathBuf,
    history: Duration,
    history_revisions: u64,
    history_bytes: u64,
    compaction_check: Duration,
    ring_events: usize,
    ring_bytes: usize,
    max_batch: usize,
}

impl EmbeddedConfig {
    /// Defaults: 5 minutes of history, but at most 100,000 revisions and [`HISTORY_BYTES`] of written values (the
    /// time is checked every 30 s, the two bounds after every commit); 16,384 recent events, at most [`RING_BYTES`],
    /// kept in memory for watchers; up to 1,024 transactions per commit.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            history: Duration::from_secs(300),
            history_revisions: 100_000,
            history_bytes: HISTORY_BYTES,
            compaction_check: Duration::from_secs(30),
            ring_events: 16_384,
            ring_bytes: RING_BYTES,
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

    /// The most bytes of history kept (keys and values written since the compaction point), however recent: under
    /// churn — a large object rewritten again and again — this, not the time, is what stops the file from growing.
    #[must_use]
    pub fn history_bytes(mut self, bytes: u64) -> Self {
        self.history_bytes = bytes;
        self
    }

    /// How often time-based compaction is considered.
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

    /// How many bytes of recent events watchers can read from memory (the newest revision is always kept).
    #[must_use]
    pub fn ring_bytes(mut self, bytes: usize) -> Self {
        self.ring_bytes = bytes;
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
    /// Every key's versions since the compaction point; updated only after the records are durable.
    index: RwLock<KeyIndex>,
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

/// Recent revisions and their events, oldest first.
#[derive(Default)]
struct Ring {
    entries: VecDeque<(Revision, Arc<[WatchEvent]>)>,
    events: usize,
    bytes: usize,
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
        let fresh = check_data_file(&config.dir)?;
        // redb's page cache defaults to 1 GiB and would hold every record written; values are read back rarely (the
        // watch cache and the operating system's page cache serve most reads), so a small cache keeps memory flat.
        let db = Database::builder().set_cache_size(PAGE_CACHE_BYTES).create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
                "{} is already open in another process (an apiserver on this data dir?)",
                path.display()
            )),
            e => StoreError::Backend(format!(
                "opening {}: {e}. The file is damaged or not an Agora store: {RECOVERY}",
                path.display()
            )),
        })?;
        // It holds every object, Secrets included: its owner's only.
        private(&path)?;
        let mut db = db;
        shrink(&mut db, &path)?;
        // A store made before the marker existed gets one now.
        if fresh || !config.dir.join(MARKER_FILE).exists() {
            write_marker(&config.dir)?;
        }
        let db = Arc::new(db);
        // Create the tables and read the counters.
        let (revision, compacted, progress) = {
            let write = db.begin_write().map_err(backend)?;
            let counters = {
                write.open_table(REVISIONS).map_err(backend)?;
                let meta = write.open_table(META).map_err(backend)?;
                let read =
                    |name: &str| -> Result<u64> { Ok(meta.get(name).map_err(backend)?.map_or(0, |v| v.value())) };
                (read(META_REVISION)?, read(META_COMPACTED)?, read(META_COMPACT_PROGRESS)?)
            };
            write.commit().map_err(backend)?;
            counters
        };
        let (index, time_index, history) = Self::load(&db, progress, compacted).map_err(|e| {
            StoreError::Backend(format!(
                "reading the records of {}: {e}. The file is damaged: {RECOVERY}",
                path.display()
            ))
        })?;
        let (revision_tx, revision_rx) = watch::channel(to_revision(revision));
        let shared = Arc::new(Shared {
            revision: revision_rx,
            compacted: AtomicI64::new(to_revision(compacted)),
            ring: RwLock::new(Ring::default()),
            index: RwLock::new(index),
            commits: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
        });
        let (requests, receiver) = mpsc::channel();
        let writer = Writer::new(
            db.clone(),
            shared.clone(),
            revision_tx,
            config,
            (revision, compacted, progress),
            (time_index, history),
        );
        let writer = std::thread::Builder::new()
            .name("agora-store-writer".to_owned())
            .spawn(move || writer.run(&receiver))
            .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?;
        tracing::info!(path = %path.display(), revision, compacted, "embedded store open");
        Ok(Self { db, shared, requests, writer })
    }

    /// Rebuilds the key index from the records; samples (revision, time) about once a second after `progress`, for
    /// time-based compaction; and sizes the records after the compaction point, for the bound on history bytes.
    fn load(db: &Database, progress: u64, compacted: u64) -> Result<(KeyIndex, TimeIndex, History)> {
        let read = db.begin_read().map_err(backend)?;
        let revisions = read.open_table(REVISIONS).map_err(backend)?;
        let index = KeyIndex::build(&revisions)?;
        let (mut times, mut history): (TimeIndex, History) = Default::default();
        for entry in revisions.range(progress + 1..).map_err(backend)? {
            let (rev, bytes) = entry.map_err(backend)?;
            let time = Record::time_of(bytes.value())?;
            if times.back().is_none_or(|(_, t)| time >= t + 1000) {
                times.push_back((rev.value(), time));
            }
            if rev.value() > compacted {
                history.push_back((rev.value(), bytes.value().len() as u64));
            }
        }
        tracing::debug!(keys = index.len(), "key index rebuilt");
        Ok((index, times, history))
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

    async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".to_owned()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the store's writer stopped before answering".to_owned()))?
    }

    /// Reads at `revision` (the current one when `None`): `plan` picks versions from the index, their values come
    /// from a snapshot of the records, and the compaction point is checked afterwards — a compaction that overtook
    /// the read is reported as such, never as a silently wrong answer.
    async fn read_versions(
        &self,
        revision: Option<Revision>,
        plan: impl FnOnce(&KeyIndex, u64) -> (Vec<(String, u64, Version)>, bool) + Send + 'static,
    ) -> Result<(Vec<KeyValue>, bool, Revision)> {
        let (db, shared) = (self.db.clone(), self.shared.clone());
        tokio::task::spawn_blocking(move || {
            let current = *shared.revision.borrow();
            let at = match revision {
                None | Some(0) => current,
                Some(r) if r > current => return Err(StoreError::FutureRevision { requested: r, current }),
                Some(r) => r,
            };
            let overtaken = || {
                let compacted = shared.compacted.load(Ordering::Acquire);
                (at < compacted).then_some(StoreError::Compacted { requested: at, compacted })
            };
            if let Some(e) = overtaken() {
                return Err(e);
            }
            let (versions, more) = plan(&shared.index.read().unwrap_or_else(PoisonError::into_inner), to_u64(at));
            let read = db.begin_read().map_err(backend)?;
            let revisions = read.open_table(REVISIONS).map_err(backend)?;
            let kvs: Result<Vec<KeyValue>> =
                versions.iter().map(|(key, rev, version)| read_kv(&revisions, key, *rev, *version)).collect();
            match (overtaken(), kvs) {
                (Some(e), _) => Err(e),
                (None, kvs) => Ok((kvs?, more, at)),
            }
        })
        .await
        .map_err(backend)?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn snapshot(&self, out: &std::path::Path) -> Result<Revision> {
        let (db, out) = (self.db.clone(), out.to_path_buf());
        tokio::task::spawn_blocking(move || snapshot_blocking(&db, &out)).await.map_err(backend)?
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        let (mut kvs, ..) = self
            .read_versions(None, move |index, at| {
                let found = index.version_at(&key, at).filter(|(_, v)| v.live);
                (found.map(|(rev, version)| (key, rev, version)).into_iter().collect(), false)
            })
            .await?;
        Ok(kvs.pop())
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let RangeRequest { prefix, start_after, limit, revision } = request;
        let (kvs, more, revision) = self
            .read_versions(revision, move |index, at| {
                index.live_range(&prefix, start_after.as_deref(), at, limit.unwrap_or(usize::MAX))
            })
            .await?;
        Ok(RangeResponse { kvs, more, revision })
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
        Ok(watcher::start(Arc::downgrade(&self.db), self.shared.clone(), prefix, from - 1))
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
