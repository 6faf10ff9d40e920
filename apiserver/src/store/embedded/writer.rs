//! The writer thread: group commit, and compaction between batches.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use tokio::sync::{oneshot, watch};

use super::layout::{
    META, META_COMPACT_PROGRESS, META_COMPACTED, META_REVISION, REVISIONS, Staged, apply, compact_chunk,
};
use super::{EmbeddedConfig, Shared, backend, now_millis, to_revision};
use crate::store::{Result, Revision, Txn, TxnResponse, WatchEvent};

/// What the store asks of its writer.
pub(super) enum Request {
    Txn(Txn, oneshot::Sender<Result<TxnResponse>>),
    Compact(u64, oneshot::Sender<Result<()>>),
}

/// (revision, unix ms) samples, about one per second, for time-based compaction.
pub(super) type TimeIndex = VecDeque<(u64, i64)>;
/// (last revision of a commit, bytes it wrote), oldest first, for the bound on history bytes.
pub(super) type History = VecDeque<(u64, u64)>;

/// The single writer: batches transactions into shared commits and runs compaction between batches.
pub(super) struct Writer {
    db: Arc<Database>,
    shared: Arc<Shared>,
    revision_tx: watch::Sender<Revision>,
    config: EmbeddedConfig,
    revision: u64,
    /// The advertised compaction point.
    compacted: u64,
    /// How far superseded versions have been physically removed.
    progress: u64,
    /// Compaction requests waiting for the physical work to reach their revision.
    waiting: Vec<(u64, oneshot::Sender<Result<()>>)>,
    time_index: TimeIndex,
    /// The commits after the compaction point, and their bytes in all.
    history: History,
    history_bytes: u64,
    last_check: Instant,
    /// The size of the previous batch: more than one means writers are concurrent.
    last_batch: usize,
}

/// How long a batch waits for more writers once the queue is empty (when writers have been concurrent).
const GATHER_QUIET: Duration = Duration::from_micros(60);
/// The longest a batch waits for more writers.
const GATHER_LIMIT: Duration = Duration::from_micros(800);

/// Revisions compacted per batch, so compaction never stalls writers for long.
const COMPACTION_CHUNK: u64 = 2_000;
/// Bytes of records compacted per batch at most (about), for the same reason and to bound the memory it takes.
const COMPACTION_CHUNK_BYTES: usize = 16 * 1024 * 1024;

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        shared: Arc<Shared>,
        revision_tx: watch::Sender<Revision>,
        config: EmbeddedConfig,
        (revision, compacted, progress): (u64, u64, u64),
        (time_index, history): (TimeIndex, History),
    ) -> Self {
        let history_bytes = history.iter().map(|(_, bytes)| bytes).sum();
        Self {
            db,
            shared,
            revision_tx,
            config,
            revision,
            compacted,
            progress,
            waiting: Vec::new(),
            time_index,
            history,
            history_bytes,
            last_check: Instant::now(),
            last_batch: 0,
        }
    }

    pub(super) fn run(mut self, requests: &mpsc::Receiver<Request>) {
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

    /// Moves the compaction point so that the configured history (in time) is kept.
    fn plan_automatic_compaction(&mut self) {
        let cutoff = now_millis() - i64::try_from(self.config.history.as_millis()).unwrap_or(i64::MAX);
        let by_time = self.time_index.iter().take_while(|(_, t)| *t <= cutoff).last().map_or(0, |(rev, _)| *rev);
        self.compact_to(by_time, "time");
    }

    /// Moves the compaction point so that no more than the configured revisions and bytes of history are kept;
    /// cheap, so it runs after every commit.
    fn bound_history(&mut self) {
        let by_count = self.revision.saturating_sub(self.config.history_revisions);
        self.compact_to(by_count, "revisions");
        let (target, _) = bytes_bound(&self.history, self.history_bytes, self.config.history_bytes);
        self.compact_to(target, "bytes");
    }

    fn compact_to(&mut self, target: u64, bound: &'static str) {
        let target = target.min(self.revision);
        if target > self.compacted {
            tracing::debug!(target, bound, "automatic compaction");
            self.compacted = target;
        }
        while let Some(&(revision, bytes)) = self.history.front() {
            if revision > self.compacted {
                break;
            }
            self.history.pop_front();
            self.history_bytes -= bytes;
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
            Ok((results, committed, progress, staged)) => {
                self.progress = progress;
                // Durable now: let readers see the new versions, then announce the revisions.
                self.shared.index.write().unwrap_or_else(PoisonError::into_inner).apply(staged);
                if let Some((last, _)) = committed.last() {
                    self.revision = *last;
                    if self.time_index.back().is_none_or(|(_, t)| now >= t + 1000) {
                        self.time_index.push_back((*last, now));
                    }
                    let written: usize =
                        committed.iter().flat_map(|(_, events)| events.iter()).map(WatchEvent::written_bytes).sum();
                    self.history.push_back((*last, written as u64));
                    self.history_bytes += written as u64;
                }
                self.publish(committed);
                self.bound_history();
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

    /// Applies the batch and a chunk of compaction in one write transaction, committed once. The index changes come
    /// back staged, to be applied once the commit is durable.
    #[allow(clippy::type_complexity)]
    fn write(
        &self,
        batch: &[(Txn, oneshot::Sender<Result<TxnResponse>>)],
        now: i64,
    ) -> Result<(Vec<TxnResponse>, Vec<(u64, Arc<[WatchEvent]>)>, u64, Staged)> {
        let mut write = self.db.begin_write().map_err(backend)?;
        write.set_durability(Durability::Immediate).map_err(backend)?;
        let mut results = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        let mut revision = self.revision;
        let mut progress = self.progress;
        let mut staged = Staged::default();
        {
            // Only this thread changes the index, so reading it under the shared lock is consistent.
            let index = self.shared.index.read().unwrap_or_else(PoisonError::into_inner);
            let mut revisions = write.open_table(REVISIONS).map_err(backend)?;
            let mut meta = write.open_table(META).map_err(backend)?;
            for (txn, _) in batch {
                let (response, events) = apply(&index, &mut staged, &mut revisions, txn, revision, now)?;
                if !events.is_empty() {
                    revision += 1;
                    committed.push((revision, events.into()));
                }
                results.push(response);
            }
            if progress < self.compacted {
                let chunk = (COMPACTION_CHUNK, COMPACTION_CHUNK_BYTES);
                progress =
                    compact_chunk(&index, &mut staged, &mut revisions, (progress, self.compacted, chunk.0, chunk.1))?;
            }
            meta.insert(META_REVISION, revision).map_err(backend)?;
            meta.insert(META_COMPACTED, self.compacted).map_err(backend)?;
            meta.insert(META_COMPACT_PROGRESS, progress).map_err(backend)?;
        }
        write.commit().map_err(backend)?;
        Ok((results, committed, progress, staged))
    }

    /// Makes committed revisions visible to watchers.
    fn publish(&self, committed: Vec<(u64, Arc<[WatchEvent]>)>) {
        let Some(last) = committed.last().map(|(r, _)| *r) else { return };
        {
            let mut ring = self.shared.ring.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (revision, events) in committed {
                ring.events += events.len();
                ring.bytes += events.iter().map(WatchEvent::bytes).sum::<usize>();
                ring.entries.push_back((to_revision(revision), events));
            }
            while (ring.events > self.config.ring_events || ring.bytes > self.config.ring_bytes)
                && ring.entries.len() > 1
            {
                if let Some((_, events)) = ring.entries.pop_front() {
                    ring.events -= events.len();
                    ring.bytes -= events.iter().map(WatchEvent::bytes).sum::<usize>();
                }
            }
        }
        self.revision_tx.send_replace(to_revision(last));
    }

    fn publish_compaction(&self) {
        self.shared.compacted.store(to_revision(self.compacted), Ordering::Release);
    }
}

/// The compaction point that keeps at most `limit` bytes of `history` ((last revision of a commit, bytes), oldest
/// first, `total` in all): the last revision of the oldest commits that must go, and the bytes then kept. 0 when the
/// history is within the limit.
pub(super) fn bytes_bound(history: &History, total: u64, limit: u64) -> (u64, u64) {
    let (mut target, mut kept) = (0, total);
    for &(revision, bytes) in history {
        if kept <= limit {
            break;
        }
        kept -= bytes;
        target = revision;
    }
    (target, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_bound_drops_the_oldest_commits_until_the_rest_fits() {
        let history: History = [(3, 100), (5, 100), (6, 50), (9, 10)].into_iter().collect();
        assert_eq!(bytes_bound(&history, 260, 1_000), (0, 260), "within the limit: nothing goes");
        assert_eq!(bytes_bound(&history, 260, 260), (0, 260), "exactly the limit is within it");
        assert_eq!(bytes_bound(&history, 260, 200), (3, 160));
        assert_eq!(bytes_bound(&history, 260, 60), (5, 60), "whole commits go, oldest first");
        assert_eq!(bytes_bound(&history, 260, 59), (6, 10));
        assert_eq!(bytes_bound(&history, 260, 0), (9, 0), "a zero limit keeps no history");
        assert_eq!(bytes_bound(&VecDeque::new(), 0, 0), (0, 0));
    }
}
