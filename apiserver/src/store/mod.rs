//! The store: where the cluster's desired and observed state lives. One trait with the semantics of etcd's v3
//! key-value API, two backends:
//!
//! - [`EmbeddedStore`] (the default): one durable redb file, a global revision counter, group commit, a watch ring
//!   buffer and automatic compaction. For a single machine.
//! - [`EtcdStore`]: an etcd cluster through `etcd-client`; etcd's revision is the revision.
//!
//! Both pass the same conformance suite (`apiserver/tests/store.rs`). Everything above the store — the apiserver's
//! REST handlers and watch cache — sees only the trait. Keys are `/<prefix>/<group>/<plural>/[<namespace>/]<name>`
//! ([`KeyLayout`]); values are opaque bytes (the apiserver stores JSON).

mod embedded;
mod etcd;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use embedded::{DATA_FILE, EmbeddedConfig, EmbeddedStats, EmbeddedStore, HISTORY_BYTES, RING_BYTES, restore};
pub use etcd::EtcdStore;

/// A store revision: a counter that grows by one with every write transaction that changes something. Every key
/// remembers the revision that created it and the one that last modified it. It is the `resourceVersion` of the API.
pub type Revision = i64;

/// A key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// The revision of the write that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the write that last changed it.
    pub mod_revision: Revision,
    /// How many times it was written since it was created (1 after creation).
    pub version: i64,
}

/// A read of the keys under a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// Keys starting with this.
    pub prefix: String,
    /// Only keys strictly after this one (the continuation of a previous page).
    pub start_after: Option<String>,
    /// At most this many keys; `None` for all.
    pub limit: Option<usize>,
    /// Read at this revision; `None` for the current one. Pass the revision of the first page to every following
    /// page, and all pages come from one consistent snapshot.
    pub revision: Option<Revision>,
}

impl RangeRequest {
    /// Every key under `prefix`, now.
    #[must_use]
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), ..Self::default() }
    }

    /// At most `limit` keys.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Keys after `key`.
    #[must_use]
    pub fn start_after(mut self, key: impl Into<String>) -> Self {
        self.start_after = Some(key.into());
        self
    }

    /// Read at `revision`.
    #[must_use]
    pub fn at(mut self, revision: Revision) -> Self {
        self.revision = Some(revision);
        self
    }
}

/// The keys read, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// Up to `limit` keys.
    pub kvs: Vec<KeyValue>,
    /// More keys follow the last one.
    pub more: bool,
    /// The revision the read was made at.
    pub revision: Revision,
}

/// A condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key exists and was last modified at this revision.
    ModRevision(String, Revision),
    /// The key does not exist.
    Absent(String),
}

impl Compare {
    /// The key the condition is about.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Self::ModRevision(key, _) | Self::Absent(key) => key,
        }
    }
}

/// A write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set the key's value.
    Put(String, Bytes),
    /// Remove the key (nothing happens when it does not exist).
    Delete(String),
}

impl Op {
    /// The key the write is about.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Self::Put(key, _) | Self::Delete(key) => key,
        }
    }
}

/// Compare-then-write, atomically: when every comparison holds, every op is applied (at one new revision);
/// otherwise nothing is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Writes applied when they do.
    pub ops: Vec<Op>,
}

impl Txn {
    /// A transaction with these conditions and writes.
    #[must_use]
    pub fn new(compares: Vec<Compare>, ops: Vec<Op>) -> Self {
        Self { compares, ops }
    }
}

/// The outcome of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Every comparison held and the ops were applied.
    pub succeeded: bool,
    /// The store's revision after the transaction (the revision of its writes when it succeeded with any).
    pub revision: Revision,
    /// When it failed: the current value of each compared key, in the order of the comparisons, so a caller can
    /// explain the conflict without another read.
    pub current: Vec<Option<KeyValue>>,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed.
    Put {
        /// The key, its new value and revisions.
        kv: KeyValue,
        /// Its value before, if it existed.
        prev: Option<KeyValue>,
    },
    /// A key was deleted.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        mod_revision: Revision,
        /// Its last value.
        prev: Option<KeyValue>,
    },
    /// Nothing under the prefix changed up to this revision (the store went on with other keys).
    Progress {
        /// Every event up to here has been delivered.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision the event belongs to.
    #[must_use]
    pub fn revision(&self) -> Revision {
        match self {
            Self::Put { kv, .. } => kv.mod_revision,
            Self::Delete { mod_revision, .. } => *mod_revision,
            Self::Progress { revision } => *revision,
        }
    }

    /// The key changed (`None` for progress).
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Put { kv, .. } => Some(&kv.key),
            Self::Delete { key, .. } => Some(key),
            Self::Progress { .. } => None,
        }
    }

    /// The bytes the event holds: its key and values, the new one and the previous one (what keeping it in memory
    /// costs, give or take a few fixed-size fields).
    #[must_use]
    pub fn bytes(&self) -> usize {
        let kv_bytes = |kv: &KeyValue| kv.key.len() + kv.value.len();
        match self {
            Self::Put { kv, prev } => kv_bytes(kv) + prev.as_ref().map_or(0, kv_bytes),
            Self::Delete { key, prev, .. } => key.len() + prev.as_ref().map_or(0, kv_bytes),
            Self::Progress { .. } => 0,
        }
    }

    /// The bytes the change writes: its key and new value (what its record adds to the store's history).
    #[must_use]
    pub fn written_bytes(&self) -> usize {
        match self {
            Self::Put { kv, .. } => kv.key.len() + kv.value.len(),
            Self::Delete { key, .. } => key.len(),
            Self::Progress { .. } => 0,
        }
    }
}

/// A stream of watch events. It ends with an error when the watch cannot go on ([`StoreError::Compacted`] when the
/// consumer fell behind the compaction point); it never skips an event silently.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The revision asked for is older than the compaction point: list again from the current revision.
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction point.
        compacted: Revision,
    },
    /// The revision asked for does not exist yet.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// The backend cannot be reached (etcd members down, the store is shutting down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend failed (I/O error, corruption, an unexpected answer).
    #[error("store failure: {0}")]
    Backend(String),
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage API the apiserver is built on.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current value.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under a prefix, in key order, optionally paginated and pinned at a revision.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Applies a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Watches the keys under `prefix`, delivering every change with revision `>= from_revision` in revision order
    /// (`0`: changes after now). Deletes carry the previous value.
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream>;

    /// As [`watch`](Store::watch), but events need not carry previous values (`prev` may be `None` for puts and
    /// deletes alike): cheaper where the store must fetch them, as etcd does, reading each previous value back for
    /// every watcher that asks. For watchers that keep their own index (the garbage collector).
    async fn watch_changes(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        self.watch(prefix, from_revision).await
    }

    /// Whether [`watch`](Store::watch)'s previous values cost little. When they do not (etcd reads each one back, per
    /// watcher, and it doubles its put → event p99 here), the watch cache keeps the current objects itself instead.
    fn previous_values_are_cheap(&self) -> bool {
        true
    }

    /// The revision of the latest write.
    async fn current_revision(&self) -> Result<Revision>;

    /// Forgets the history before `revision`: reads and watches below it fail with [`StoreError::Compacted`].
    /// Compacting at or below the current compaction point does nothing.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The current compaction point (0 when nothing was compacted).
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Writes a consistent snapshot of the whole store to `out` while it serves: for the embedded store a data file
    /// `agora store restore` makes a data directory of; for etcd, etcd's own snapshot (`etcdctl snapshot restore`).
    /// Returns the revision it holds (at least).
    async fn snapshot(&self, out: &std::path::Path) -> Result<Revision>;

    /// Sets `key` unconditionally; returns the revision of the write.
    async fn put(&self, key: &str, value: Bytes) -> Result<Revision> {
        Ok(self.txn(Txn::new(vec![], vec![Op::Put(key.to_owned(), value)])).await?.revision)
    }

    /// Deletes `key` unconditionally; returns the store's revision afterwards.
    async fn delete(&self, key: &str) -> Result<Revision> {
        Ok(self.txn(Txn::new(vec![], vec![Op::Delete(key.to_owned())])).await?.revision)
    }
}

/// A shared store.
pub type SharedStore = Arc<dyn Store>;

/// Where objects live in the key space: `/<prefix>/<group>/<plural>/<namespace>/<name>`, or without the namespace for
/// cluster-scoped kinds. A different prefix per cluster lets several Agora clusters share one etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    root: String,
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "registry";

impl Default for KeyLayout {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl KeyLayout {
    /// A layout under `/<prefix>/<group>/`. Slashes around the prefix are ignored.
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self { root: format!("/{}/{}/", prefix.trim_matches('/'), agora_schemas::API_GROUP) }
    }

    /// Every object of every kind: `/registry/agora/`.
    #[must_use]
    pub fn root(&self) -> &str {
        &self.root
    }

    /// All objects of a kind: `/registry/agora/apps/`.
    #[must_use]
    pub fn kind_prefix(&self, plural: &str) -> String {
        format!("{}{plural}/", self.root)
    }

    /// All objects of a kind in one namespace: `/registry/agora/apps/default/`.
    #[must_use]
    pub fn namespace_prefix(&self, plural: &str, namespace: &str) -> String {
        format!("{}{plural}/{namespace}/", self.root)
    }

    /// One object: `/registry/agora/apps/default/web` or `/registry/agora/agents/node-1`.
    #[must_use]
    pub fn object_key(&self, plural: &str, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) => format!("{}{plural}/{ns}/{name}", self.root),
            None => format!("{}{plural}/{name}", self.root),
        }
    }
}

/// Which backend to open, from `--data-dir DIR` or `--store etcd://host:port[,host:port...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded store in this directory.
    Embedded(std::path::PathBuf),
    /// An etcd cluster at these endpoints (`http://host:port`).
    Etcd(Vec<String>),
}

impl StoreConfig {
    /// Parses `etcd://h1:2379,h2:2379`.
    ///
    /// # Errors
    /// A message naming what is wrong with the URL.
    pub fn parse_etcd(url: &str) -> std::result::Result<Self, String> {
        let Some(hosts) = url.strip_prefix("etcd://") else {
            return Err(format!("\"{url}\": a store URL looks like etcd://127.0.0.1:2379[,host:port...]"));
        };
        let mut endpoints = Vec::new();
        for host in hosts.split(',').map(str::trim) {
            let valid = host.rsplit_once(':').is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(format!("\"{host}\" in \"{url}\" is not host:port"));
            }
            endpoints.push(format!("http://{host}"));
        }
        Ok(Self::Etcd(endpoints))
    }

    /// Opens the configured backend.
    ///
    /// # Errors
    /// The backend cannot be opened or reached.
    pub async fn open(&self) -> Result<SharedStore> {
        Ok(match self {
            Self::Embedded(dir) => Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir)).await?),
            Self::Etcd(endpoints) => Arc::new(EtcdStore::connect(endpoints).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        let keys = KeyLayout::new("/clusters/a/");
        assert_eq!(keys.object_key("apps", Some("default"), "web"), "/clusters/a/agora/apps/default/web");
        assert_eq!(keys.object_key("agents", None, "n1"), "/clusters/a/agora/agents/n1");
        assert_eq!(keys.kind_prefix("apps"), "/clusters/a/agora/apps/");
        assert_eq!(KeyLayout::default().namespace_prefix("tasks", "ns"), "/registry/agora/tasks/ns/");
    }

    #[test]
    fn etcd_urls() {
        assert_eq!(
            StoreConfig::parse_etcd("etcd://127.0.0.1:2379,h2:2380").unwrap(),
            StoreConfig::Etcd(vec!["http://127.0.0.1:2379".into(), "http://h2:2380".into()])
        );
        assert!(StoreConfig::parse_etcd("http://x:1").unwrap_err().contains("etcd://"));
        assert!(StoreConfig::parse_etcd("etcd://x").unwrap_err().contains("\"x\" in"));
        assert!(StoreConfig::parse_etcd("etcd://x:99999").is_err());
    }
}
