//! The etcd backend: etcd's own transactions, revisions, watches and compaction, through `etcd-client`.
//!
//! The client balances over every endpoint given, so a member going away is survived as long as a quorum remains.
//! Unary requests that fail with `Unavailable` are retried a few times (a transaction retried after its first
//! attempt was in fact applied reports a failed comparison — the usual etcd caveat, which callers that use
//! compare-and-swap already handle by re-reading). Watches re-establish themselves from the last revision they
//! delivered when the stream or the member behind it goes away, so consumers see neither gaps nor repeats.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions, Txn as EtcdTxn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::{
    Compare, KeyValue, Op, RangeRequest, RangeResponse, Result, Revision, Store, StoreError, Txn, TxnResponse,
    WatchEvent, WatchStream,
};

/// A store backed by an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

/// How many times an `Unavailable` request is tried in all: with the backoff below, about 5 s — longer than an etcd
/// leader election takes.
const ATTEMPTS: u32 = 10;
/// The first pause before a retry; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);
/// Keys read per request when a range is read in pages: 10,000 objects of about 1 KiB fit in one answer; larger ones
/// make the page shrink. Fewer, larger pages save a round trip through etcd per page (40 → 10 for a list of
/// 100,000).
const RANGE_PAGE: usize = 10_000;
/// The largest range answer accepted (the etcd client's default is 4 MiB); etcd itself sends answers of any size.
const RANGE_MESSAGE_LIMIT: usize = 64 << 20;

fn map_error(e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("required revision has been compacted") {
        // The caller fills in the revisions it knows.
        StoreError::Compacted { requested: 0, compacted: 0 }
    } else if text.contains("required revision is a future revision") {
        StoreError::FutureRevision { requested: 0, current: 0 }
    } else if matches!(&e, etcd_client::Error::TransportError(_))
        || matches!(&e, etcd_client::Error::GRpcStatus(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled))
        // A member's connection dropping mid-request (it was killed, or restarted): tonic reports the reset as an
        // `Unknown` status saying "transport error"; the next attempt goes to a member that is there.
        || matches!(&e, etcd_client::Error::GRpcStatus(s) if s.code() == Code::Unknown && s.message().contains("transport error"))
    {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:port`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no endpoint answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Unavailable(format!("connecting to etcd at {}: {e}", endpoints.join(","))))?;
        let store = Self { client };
        store.current_revision().await?;
        Ok(store)
    }

    /// A watch of `prefix` from `from_revision`, with events carrying previous values when `previous` (etcd then
    /// reads each previous value back for this watcher).
    async fn watch_from(&self, prefix: &str, from_revision: Revision, previous: bool) -> Result<WatchStream> {
        let from = if from_revision <= 0 { self.current_revision().await? + 1 } else { from_revision };
        let (events, receiver) = tokio::sync::mpsc::channel(256);
        let mut watch =
            EtcdWatch { client: self.client.clone(), prefix: prefix.to_owned(), next: from, previous, events };
        // Open the first stream here, so a compacted start revision is reported to the caller directly.
        let mut delay = FIRST_DELAY;
        let mut attempt = 1;
        let stream = loop {
            match watch.open().await {
                Err(StoreError::Unavailable(why)) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, %why, "etcd unavailable opening a watch, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                    attempt += 1;
                }
                other => break other?,
            }
        };
        tokio::spawn(async move { watch.run(Some(stream)).await });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    /// Runs `call` on a fresh handle of the client, retrying while etcd is unavailable.
    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut delay = FIRST_DELAY;
        for attempt in 1..=ATTEMPTS {
            match call(self.client.clone()).await.map_err(map_error) {
                Err(StoreError::Unavailable(why)) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, %why, "etcd unavailable, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                }
                other => return other,
            }
        }
        Err(StoreError::Unavailable("etcd did not answer".to_owned()))
    }

    /// etcd does not report its compaction point directly; a watch from revision 1 is refused with it.
    async fn compaction_point(&self) -> Result<Revision> {
        self.retry(|mut client| async move {
            let mut stream = client.watch("\0", Some(WatchOptions::new().with_start_revision(1))).await?;
            // etcd confirms the watch first, then cancels it naming the compaction point; a watch that stays open
            // means nothing was compacted.
            for _ in 0..2 {
                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                    Err(_) => return Ok(0),
                    Ok(message) => match message? {
                        Some(response) if response.compact_revision() > 0 => return Ok(response.compact_revision()),
                        Some(response) if response.created() && !response.canceled() => {}
                        _ => return Ok(0),
                    },
                }
            }
            Ok(0)
        })
        .await
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = self.retry(|mut c| async move { c.get(key, None).await }).await?;
        Ok(response.kvs().first().map(to_kv))
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        // A range is read in pages at one revision, each answer at most RANGE_MESSAGE_LIMIT; a page that is still
        // too large (values of up to 1.5 MiB each) is asked for again in halves.
        let mut start: Vec<u8> = match &request.start_after {
            // The smallest key after `after` is `after` followed by a NUL byte.
            Some(after) if after.as_str() >= request.prefix.as_str() => [after.as_bytes(), &[0]].concat(),
            _ => request.prefix.as_bytes().to_vec(),
        };
        let end = prefix_end(&request.prefix);
        let mut revision = request.revision.filter(|r| *r > 0);
        let mut page = RANGE_PAGE;
        let mut kvs = Vec::new();
        loop {
            let want = request.limit.map_or(page, |limit| limit.saturating_sub(kvs.len()).clamp(1, page));
            let response = self
                .retry(|c| {
                    let mut options =
                        GetOptions::new().with_range(end.clone()).with_limit(i64::try_from(want).unwrap_or(i64::MAX));
                    if let Some(revision) = revision {
                        options = options.with_revision(revision);
                    }
                    let start = start.clone();
                    async move {
                        c.kv_client().max_decoding_message_size(RANGE_MESSAGE_LIMIT).get(start, Some(options)).await
                    }
                })
                .await;
            let response = match response {
                Err(StoreError::Backend(why)) if why.contains("message length too large") && page > 1 => {
                    page /= 2;
                    continue;
                }
                Err(StoreError::Compacted { .. }) => {
                    let compacted = self.compaction_point().await?;
                    return Err(StoreError::Compacted { requested: request.revision.unwrap_or(0), compacted });
                }
                Err(StoreError::FutureRevision { .. }) => {
                    let current = self.current_revision().await?;
                    return Err(StoreError::FutureRevision { requested: request.revision.unwrap_or(0), current });
                }
                other => other?,
            };
            let revision =
                *revision.get_or_insert_with(|| response.header().map_or(0, etcd_client::ResponseHeader::revision));
            kvs.extend(response.kvs().iter().map(to_kv));
            let more = response.more();
            let full = request.limit.is_some_and(|limit| kvs.len() >= limit);
            match kvs.last() {
                Some(last) if more && !full => start = [last.key.as_bytes(), &[0]].concat(),
                _ => return Ok(RangeResponse { kvs, more, revision }),
            }
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision(key, revision) => {
                    EtcdCompare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
                }
                Compare::Absent(key) => EtcdCompare::version(key.as_str(), CompareOp::Equal, 0),
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put(key, value) => TxnOp::put(key.as_str(), value.to_vec(), None),
                Op::Delete(key) => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let reads: Vec<TxnOp> = txn.compares.iter().map(|c| TxnOp::get(c.key(), None)).collect();
        let response = self
            .retry(|mut c| {
                let request = EtcdTxn::new().when(compares.clone()).and_then(ops.clone()).or_else(reads.clone());
                async move { c.txn(request).await }
            })
            .await?;
        let revision = response.header().map_or(0, etcd_client::ResponseHeader::revision);
        let current = if response.succeeded() {
            Vec::new()
        } else {
            response
                .op_responses()
                .iter()
                .map(|r| match r {
                    TxnOpResponse::Get(get) => get.kvs().first().map(to_kv),
                    _ => None,
                })
                .collect()
        };
        Ok(TxnResponse { succeeded: response.succeeded(), revision, current })
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        self.watch_from(prefix, from_revision, true).await
    }

    async fn watch_changes(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        self.watch_from(prefix, from_revision, false).await
    }

    fn previous_values_are_cheap(&self) -> bool {
        false
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<Revision> {
        // A plain put is cheaper for etcd than a one-op transaction.
        let response = self
            .retry(|mut c| {
                let value = value.to_vec();
                async move { c.put(key, value, None).await }
            })
            .await?;
        response
            .header()
            .map(etcd_client::ResponseHeader::revision)
            .ok_or_else(|| StoreError::Backend("etcd answered without a header".to_owned()))
    }

    async fn snapshot(&self, out: &std::path::Path) -> Result<Revision> {
        use std::io::Write;
        let revision = self.current_revision().await?;
        let failed = |e: etcd_client::Error| StoreError::Backend(format!("etcd's snapshot: {e}"));
        let written = |e: std::io::Error| StoreError::Backend(format!("writing {}: {e}", out.display()));
        let mut stream = self.client.clone().snapshot().await.map_err(failed)?;
        let mut file = std::fs::File::create(out).map_err(written)?;
        while let Some(part) = stream.message().await.map_err(failed)? {
            file.write_all(part.blob()).map_err(written)?;
        }
        file.sync_all().map_err(written)?;
        Ok(revision)
    }

    async fn current_revision(&self) -> Result<Revision> {
        let response =
            self.retry(|mut c| async move { c.get("\0", Some(GetOptions::new().with_count_only())).await }).await?;
        response
            .header()
            .map(etcd_client::ResponseHeader::revision)
            .ok_or_else(|| StoreError::Backend("etcd answered without a header".to_owned()))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let result = self
            .retry(|mut c| async move { c.compact(revision, Some(CompactionOptions::new().with_physical())).await })
            .await;
        match result {
            Ok(_) | Err(StoreError::Compacted { .. }) => Ok(()),
            Err(StoreError::FutureRevision { .. }) => {
                let current = self.current_revision().await?;
                Err(StoreError::FutureRevision { requested: revision, current })
            }
            Err(e) => Err(e),
        }
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.compaction_point().await
    }
}

/// One watch, re-established from `next` whenever its stream breaks.
struct EtcdWatch {
    client: Client,
    prefix: String,
    /// The first revision not yet delivered.
    next: Revision,
    /// Whether events carry previous values.
    previous: bool,
    events: tokio::sync::mpsc::Sender<Result<WatchEvent>>,
}

impl EtcdWatch {
    async fn open(&mut self) -> Result<etcd_client::WatchStream> {
        let mut options = WatchOptions::new().with_prefix().with_progress_notify().with_start_revision(self.next);
        if self.previous {
            options = options.with_prev_key();
        }
        let mut stream = self.client.watch(self.prefix.as_str(), Some(options)).await.map_err(map_error)?;
        // The first message confirms creation, or refuses a compacted revision.
        match stream.message().await.map_err(map_error)? {
            Some(response) if response.compact_revision() > 0 => {
                Err(StoreError::Compacted { requested: self.next, compacted: response.compact_revision() })
            }
            Some(response) if response.canceled() => {
                Err(StoreError::Backend(format!("etcd cancelled the watch: {}", response.cancel_reason())))
            }
            Some(_) => Ok(stream),
            None => Err(StoreError::Unavailable("etcd closed the watch at once".to_owned())),
        }
    }

    async fn run(mut self, mut stream: Option<etcd_client::WatchStream>) {
        let mut delay = FIRST_DELAY;
        loop {
            let mut current = match stream.take() {
                Some(s) => s,
                None => match self.open().await {
                    Ok(s) => {
                        delay = FIRST_DELAY;
                        s
                    }
                    Err(StoreError::Unavailable(why)) => {
                        tracing::debug!(prefix = %self.prefix, %why, "etcd watch reconnecting");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = self.events.closed() => return,
                        }
                        delay = (delay * 2).min(MAX_DELAY);
                        continue;
                    }
                    Err(e) => {
                        let _ = self.events.send(Err(e)).await;
                        return;
                    }
                },
            };
            loop {
                let message = tokio::select! {
                    m = current.message() => m,
                    () = self.events.closed() => return,
                };
                let response = match message {
                    Ok(Some(response)) => response,
                    // The stream ended or broke: open a new one from `next`.
                    Ok(None) | Err(_) => break,
                };
                if response.compact_revision() > 0 {
                    let _ = self
                        .events
                        .send(Err(StoreError::Compacted {
                            requested: self.next,
                            compacted: response.compact_revision(),
                        }))
                        .await;
                    return;
                }
                if response.canceled() {
                    break;
                }
                if response.events().is_empty() {
                    let revision = response.header().map_or(0, etcd_client::ResponseHeader::revision);
                    if revision >= self.next {
                        self.next = revision + 1;
                        if self.events.send(Ok(WatchEvent::Progress { revision })).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let revision = kv.mod_revision();
                    if revision < self.next {
                        continue; // already delivered before a reconnect
                    }
                    let prev = event.prev_kv().map(to_kv);
                    let item = match event.event_type() {
                        etcd_client::EventType::Put => WatchEvent::Put { kv: to_kv(kv), prev },
                        etcd_client::EventType::Delete => WatchEvent::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            mod_revision: revision,
                            prev,
                        },
                    };
                    if self.events.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
                // Every event of a revision comes in one response: the next revision starts after the last seen.
                if let Some(last) = response.events().last().and_then(|e| e.kv()) {
                    self.next = self.next.max(last.mod_revision() + 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{StoreError, map_error, prefix_end};

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("ab"), b"ac".to_vec());
    }

    #[test]
    fn a_dropped_connection_is_unavailable_and_retried_and_a_refusal_is_not() {
        let reset = etcd_client::Error::GRpcStatus(tonic::Status::unknown("transport error"));
        assert!(matches!(map_error(reset), StoreError::Unavailable(_)));
        let unavailable = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("no leader"));
        assert!(matches!(map_error(unavailable), StoreError::Unavailable(_)));
        let refused = etcd_client::Error::GRpcStatus(tonic::Status::unknown("etcdserver: too many operations"));
        assert!(matches!(map_error(refused), StoreError::Backend(_)), "only a dropped connection is retried");
        let compacted = etcd_client::Error::GRpcStatus(tonic::Status::out_of_range(
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert!(matches!(map_error(compacted), StoreError::Compacted { .. }));
    }
}
