//! On etcd the read half of an update comes from the watch cache, which may lag the store. Here it lags on purpose:
//! one apiserver's store delivers etcd's watch events 300 ms late, and every write through the other is followed at
//! once by a write through it. Nothing a stale copy could get wrong does: a current resourceVersion is not a
//! conflict, a change the cache thinks is already made is still made, a stale resourceVersion is still a 409, and an
//! object deleted meanwhile is a 404.

mod common;

use std::sync::Arc;

use agora_apiserver::server::ApiConfig;
use agora_apiserver::store::{
    EtcdStore, KeyValue, RangeRequest, RangeResponse, Result as StoreResult, Revision, SharedStore, Store, Txn,
    TxnResponse, WatchStream,
};
use common::{APPS, Server, app, status};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

/// etcd, with every watch event delivered `LAG` after etcd sent it.
struct Lagging(Arc<EtcdStore>);

const LAG: std::time::Duration = std::time::Duration::from_millis(300);

fn late(stream: WatchStream) -> WatchStream {
    Box::pin(
        stream
            .map(|item| {
                let due = tokio::time::Instant::now() + LAG;
                async move {
                    tokio::time::sleep_until(due).await;
                    item
                }
            })
            .buffered(4096),
    )
}

#[async_trait::async_trait]
impl Store for Lagging {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.0.get(key).await
    }
    async fn range(&self, request: RangeRequest) -> StoreResult<RangeResponse> {
        self.0.range(request).await
    }
    async fn txn(&self, txn: Txn) -> StoreResult<TxnResponse> {
        self.0.txn(txn).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<WatchStream> {
        Ok(late(self.0.watch(prefix, from).await?))
    }
    async fn watch_changes(&self, prefix: &str, from: Revision) -> StoreResult<WatchStream> {
        Ok(late(self.0.watch_changes(prefix, from).await?))
    }
    fn previous_values_are_cheap(&self) -> bool {
        self.0.previous_values_are_cheap()
    }
    async fn current_revision(&self) -> StoreResult<Revision> {
        self.0.current_revision().await
    }
    async fn compact(&self, revision: Revision) -> StoreResult<()> {
        self.0.compact(revision).await
    }
    async fn compacted_revision(&self) -> StoreResult<Revision> {
        self.0.compacted_revision().await
    }
    async fn snapshot(&self, out: &std::path::Path) -> StoreResult<Revision> {
        self.0.snapshot(out).await
    }
}

#[tokio::test]
async fn updates_read_from_a_lagging_cache_are_still_right() {
    let etcd = tokio::task::spawn_blocking(agora_e2e::EtcdProcess::start).await.unwrap();
    let store = Arc::new(EtcdStore::connect(&[etcd.endpoint()]).await.unwrap());
    let one = Server::on(store.clone(), Box::new(()), ApiConfig::default()).await;
    let lagging: SharedStore = Arc::new(Lagging(store));
    let other = Server::on(lagging, Box::new(etcd), ApiConfig::default()).await;
    let (code, created) = one.post(APPS, app("web")).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    // The lagging cache has the object (it is read from there from now on).
    tokio::time::sleep(LAG * 2).await;
    let web = format!("{APPS}/web");
    let merge = "application/merge-patch+json";
    for round in 0..10 {
        // Written through one; at once through the other, with the resourceVersion the first answered.
        let (code, written) = one.patch(&web, merge, json!({"spec": {"instances": round + 100}})).await;
        assert_eq!(code, StatusCode::OK, "{written}");
        let rv = written["metadata"]["resourceVersion"].clone();
        let pinned = json!({"metadata": {"resourceVersion": rv}, "spec": {"instances": round}});
        let (code, answer) = other.patch(&web, merge, pinned).await;
        assert_eq!(code, StatusCode::OK, "round {round}: a current resourceVersion was refused: {answer}");
        // Back to what the other's cache may still hold: the change must still be made.
        let (_, back) = one.patch(&web, merge, json!({"spec": {"instances": round + 100}})).await;
        assert_eq!(back["spec"]["instances"], round + 100);
        let (code, answer) = other.patch(&web, merge, json!({"spec": {"instances": round}})).await;
        assert_eq!(code, StatusCode::OK, "{answer}");
        let (_, stored) = one.get(&web).await;
        assert_eq!(stored["spec"]["instances"], round, "round {round}: the change was lost");
    }
    let stale = json!({"metadata": {"resourceVersion": "2"}, "spec": {"instances": 1}});
    status(&other.patch(&web, merge, stale).await, 409, "Conflict");
    // Deleted through one: the other's update is a 404, however its cache lags.
    one.delete(&web).await;
    status(&other.patch(&web, merge, json!({"spec": {"instances": 1}})).await, 404, "NotFound");
}

/// etcd's count of the range requests it has served (its Prometheus metrics).
async fn ranges(endpoint: &str) -> u64 {
    let text = reqwest::get(format!("{endpoint}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains("grpc_method=\"Range\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn updates_on_etcd_do_not_read_etcd() {
    let etcd = tokio::task::spawn_blocking(agora_e2e::EtcdProcess::start).await.unwrap();
    let endpoint = etcd.endpoint();
    let store: SharedStore = Arc::new(EtcdStore::connect(std::slice::from_ref(&endpoint)).await.unwrap());
    let server = Server::on(store, Box::new(etcd), ApiConfig::default()).await;
    server.post(APPS, app("web")).await;
    let web = format!("{APPS}/web");
    let merge = "application/merge-patch+json";
    // The first may miss (the cache has not seen the create yet); after that every read is the cache's.
    server.patch(&web, merge, json!({"spec": {"instances": 1}})).await;
    let before = ranges(&endpoint).await;
    for instances in 2..22 {
        let (code, body) = server.patch(&web, merge, json!({"spec": {"instances": instances}})).await;
        assert_eq!((code, body["spec"]["instances"].as_i64()), (StatusCode::OK, Some(instances)), "{body}");
    }
    let read = ranges(&endpoint).await - before;
    assert!(read <= 1, "20 back-to-back patches read etcd {read} times");
}
