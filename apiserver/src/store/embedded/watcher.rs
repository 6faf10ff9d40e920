//! Watchers: pull-based, from the ring of recent revisions or by replaying records from the file.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase};
use tokio_stream::wrappers::ReceiverStream;

use super::layout::{REVISIONS, replay};
use super::{Shared, backend, to_revision, to_u64};
use crate::store::{Result, Revision, StoreError, WatchEvent, WatchStream};

/// Starts a watch delivering the events after `cursor` under `prefix`.
pub(super) fn start(db: Weak<Database>, shared: Arc<Shared>, prefix: &str, cursor: Revision) -> WatchStream {
    let (events, receiver) = tokio::sync::mpsc::channel(256);
    tokio::spawn(Watcher { db, shared, prefix: prefix.to_owned(), cursor, events }.run());
    Box::pin(ReceiverStream::new(receiver))
}

/// One watch: delivers events after `cursor` under `prefix`, in order, until the consumer goes away.
struct Watcher {
    /// Weak, so an idle watch never keeps a closed store's file open.
    db: Weak<Database>,
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
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let overtaken = || {
                let compacted = to_u64(shared.compacted.load(Ordering::Acquire));
                (from <= compacted)
                    .then(|| StoreError::Compacted { requested: to_revision(from), compacted: to_revision(compacted) })
            };
            if let Some(e) = overtaken() {
                return Err(e);
            }
            let read = db.begin_read().map_err(backend)?;
            let revisions = read.open_table(REVISIONS).map_err(backend)?;
            let events =
                replay(&shared.index.read().unwrap_or_else(PoisonError::into_inner), &revisions, from, upto, &prefix);
            // Checked after reading, so a compaction that overtook the replay is reported, not half-delivered.
            match (overtaken(), events) {
                (Some(e), _) => Err(e),
                (None, events) => events,
            }
        })
        .await
        .map_err(backend)?
    }
}
