//! The store conformance suite, written once and run against both backends: the embedded store, a real etcd
//! (started here on a free loopback port), and a 3-member etcd cluster that loses a member mid-suite. Then the
//! embedded store's own guarantees: group commit, automatic compaction, slow watchers, and durability under SIGKILL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agora_apiserver::store::{
    Compare, EmbeddedConfig, EmbeddedStore, EtcdStore, Op, RangeRequest, Revision, SharedStore, Store, StoreError, Txn,
    WatchEvent, WatchStream,
};
use agora_e2e::{EtcdCluster, EtcdProcess};
use bytes::Bytes;
use futures::StreamExt;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The next non-progress event, or a panic after 10 s.
async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a watch event within 10 s")
            .expect("the watch stream ended");
        match item.expect("a watch error") {
            WatchEvent::Progress { .. } => continue,
            event => return event,
        }
    }
}

/// The cases, each on its own key prefix so they can share a backend.
mod conformance {
    use super::*;

    /// A range of more than etcd's 4 MiB answer limit (60 values of 100 KiB), whole and with a limit, at one
    /// revision.
    pub async fn large_ranges_are_read_whole(store: &dyn Store, p: &str) {
        // 70 MiB in all: more than one etcd answer may carry (64 MiB), so the etcd backend must page, and halve pages.
        let value = Bytes::from(vec![b'v'; 1024 * 1024]);
        for i in 0..70 {
            store.put(&format!("{p}{i:02}"), value.clone()).await.unwrap();
        }
        let whole = store.range(RangeRequest::prefix(p)).await.unwrap();
        assert_eq!(whole.kvs.len(), 70);
        assert!(!whole.more);
        assert!(whole.kvs.iter().enumerate().all(|(i, kv)| kv.key == format!("{p}{i:02}") && kv.value == value));
        let limited = store.range(RangeRequest::prefix(p).limit(45).at(whole.revision)).await.unwrap();
        assert_eq!((limited.kvs.len(), limited.more, limited.revision), (45, true, whole.revision));
        let rest =
            store.range(RangeRequest::prefix(p).start_after(&limited.kvs[44].key).at(whole.revision)).await.unwrap();
        assert_eq!((rest.kvs.len(), rest.more), (25, false));
    }

    pub async fn cas(store: &dyn Store, p: &str) {
        let key = format!("{p}obj");
        let created =
            store.txn(Txn::new(vec![Compare::Absent(key.clone())], vec![Op::Put(key.clone(), b("v1"))])).await.unwrap();
        assert!(created.succeeded);
        let kv = store.get(&key).await.unwrap().unwrap();
        assert_eq!(
            (text(&kv.value), kv.mod_revision, kv.create_revision, kv.version),
            ("v1".into(), created.revision, created.revision, 1)
        );

        // Creating again conflicts and reports what is there.
        let again =
            store.txn(Txn::new(vec![Compare::Absent(key.clone())], vec![Op::Put(key.clone(), b("v2"))])).await.unwrap();
        assert!(!again.succeeded);
        assert_eq!(again.current, vec![Some(kv.clone())]);
        assert_eq!(text(&store.get(&key).await.unwrap().unwrap().value), "v1", "a failed CAS writes nothing");

        // Update with the right revision succeeds; with the stale one it conflicts.
        let updated = store
            .txn(Txn::new(
                vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
                vec![Op::Put(key.clone(), b("v2"))],
            ))
            .await
            .unwrap();
        assert!(updated.succeeded);
        assert!(updated.revision > kv.mod_revision);
        let stale = store
            .txn(Txn::new(
                vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
                vec![Op::Put(key.clone(), b("v3"))],
            ))
            .await
            .unwrap();
        assert!(!stale.succeeded);
        let now = store.get(&key).await.unwrap().unwrap();
        assert_eq!((text(&now.value), now.version, now.create_revision), ("v2".into(), 2, kv.create_revision));
        assert_eq!(stale.current, vec![Some(now.clone())]);

        // A compare on a missing key fails; delete with the right revision succeeds.
        let missing = format!("{p}missing");
        let on_missing = store
            .txn(Txn::new(vec![Compare::ModRevision(missing.clone(), 1)], vec![Op::Put(missing.clone(), b("x"))]))
            .await
            .unwrap();
        assert!(!on_missing.succeeded);
        assert_eq!(on_missing.current, vec![None]);
        assert!(store.get(&missing).await.unwrap().is_none());
        let deleted = store
            .txn(Txn::new(vec![Compare::ModRevision(key.clone(), now.mod_revision)], vec![Op::Delete(key.clone())]))
            .await
            .unwrap();
        assert!(deleted.succeeded);
        assert!(store.get(&key).await.unwrap().is_none());
        // Re-created, it starts over at version 1 with a new create revision.
        store.put(&key, b("again")).await.unwrap();
        let recreated = store.get(&key).await.unwrap().unwrap();
        assert_eq!(recreated.version, 1);
        assert!(recreated.create_revision > deleted.revision - 1);
    }

    pub async fn multi_key_atomicity(store: &dyn Store, p: &str) {
        let (a, bk, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
        let b_rev = store.put(&bk, b("b1")).await.unwrap();
        let before = store.current_revision().await.unwrap();
        // One failing compare: nothing is applied, no revision is used.
        let failed = store
            .txn(Txn::new(
                vec![Compare::Absent(a.clone()), Compare::ModRevision(bk.clone(), b_rev + 1000)],
                vec![Op::Put(a.clone(), b("a1")), Op::Put(c.clone(), b("c1")), Op::Delete(bk.clone())],
            ))
            .await
            .unwrap();
        assert!(!failed.succeeded);
        assert_eq!(failed.current.len(), 2);
        assert!(store.get(&a).await.unwrap().is_none());
        assert!(store.get(&c).await.unwrap().is_none());
        assert_eq!(text(&store.get(&bk).await.unwrap().unwrap().value), "b1");
        // All compares hold: every op is applied at one revision.
        let ok = store
            .txn(Txn::new(
                vec![Compare::Absent(a.clone()), Compare::ModRevision(bk.clone(), b_rev)],
                vec![Op::Put(a.clone(), b("a1")), Op::Put(c.clone(), b("c1")), Op::Delete(bk.clone())],
            ))
            .await
            .unwrap();
        assert!(ok.succeeded);
        let (ka, kc) = (store.get(&a).await.unwrap().unwrap(), store.get(&c).await.unwrap().unwrap());
        assert_eq!(
            (ka.mod_revision, kc.mod_revision),
            (ok.revision, ok.revision),
            "one revision for the whole transaction"
        );
        assert!(store.get(&bk).await.unwrap().is_none());
        assert!(ok.revision > before);
    }

    pub async fn pagination_is_consistent_while_writes_continue(store: Arc<dyn Store>, p: &str) {
        let mut expected = BTreeMap::new();
        for i in 0..50 {
            let key = format!("{p}k{i:03}");
            store.put(&key, b(&format!("v{i}"))).await.unwrap();
            expected.insert(key, format!("v{i}"));
        }
        // Keys outside the prefix, before and after it, must never show up.
        store.put(p, b("the prefix itself is a key too")).await.unwrap();
        expected.insert(p.to_owned(), "the prefix itself is a key too".into());
        let outside = format!("{}~after", p.trim_end_matches('/'));
        store.put(&outside, b("outside")).await.unwrap();

        let first = store.range(RangeRequest::prefix(p).limit(7)).await.unwrap();
        assert!(first.more);
        assert_eq!(first.kvs.len(), 7);
        let pinned = first.revision;

        // Writers change, delete and add keys while the pages are read.
        let writer = {
            let store = store.clone();
            let p = p.to_owned();
            tokio::spawn(async move {
                for round in 0..30 {
                    store.put(&format!("{p}k{:03}", round % 50), b("changed")).await.unwrap();
                    store.delete(&format!("{p}k{:03}", 49 - round)).await.unwrap();
                    store.put(&format!("{p}new{round:03}"), b("new")).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut seen: Vec<(String, String)> = first.kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect();
        let mut last = first.kvs.last().unwrap().key.clone();
        loop {
            let page = store.range(RangeRequest::prefix(p).limit(7).start_after(&last).at(pinned)).await.unwrap();
            assert_eq!(page.revision, pinned);
            seen.extend(page.kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))));
            if !page.more {
                break;
            }
            last = page.kvs.last().unwrap().key.clone();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        writer.await.unwrap();
        assert_eq!(
            seen,
            expected.into_iter().collect::<Vec<_>>(),
            "the pages form the snapshot at the first page's revision"
        );
        // The present is different.
        let now = store.range(RangeRequest::prefix(p)).await.unwrap();
        assert!(now.revision > pinned);
        let mut model: BTreeMap<String, String> = seen.into_iter().collect();
        for round in 0..30 {
            model.insert(format!("{p}k{:03}", round % 50), "changed".into());
            model.remove(&format!("{p}k{:03}", 49 - round));
            model.insert(format!("{p}new{round:03}"), "new".into());
        }
        let current: BTreeMap<String, String> = now.kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect();
        assert_eq!(current, model, "after the writers, the current state has all their changes");
        // A future revision is refused.
        let future = store.range(RangeRequest::prefix(p).at(now.revision + 1000)).await.unwrap_err();
        assert!(matches!(future, StoreError::FutureRevision { .. }), "{future:?}");
    }

    pub async fn watch_from_a_revision(store: &dyn Store, p: &str) {
        let (a, bk, c, d) = (format!("{p}a"), format!("{p}b"), format!("{p}c"), format!("{p}d"));
        store.put(&a, b("a1")).await.unwrap();
        store.put(&bk, b("b1")).await.unwrap();
        let from = store.put(&a, b("a2")).await.unwrap();
        store.put(&format!("{}-elsewhere", p.trim_end_matches('/')), b("not watched")).await.unwrap();
        let deleted_at = store.delete(&bk).await.unwrap();
        let c_at = store.put(&c, b("c1")).await.unwrap();

        let mut watch = store.watch(p, from).await.unwrap();
        match next_event(&mut watch).await {
            WatchEvent::Put { kv, prev } => {
                assert_eq!(
                    (kv.key.as_str(), text(&kv.value).as_str(), kv.mod_revision, kv.version),
                    (a.as_str(), "a2", from, 2)
                );
                assert_eq!(prev.map(|p| text(&p.value)), Some("a1".into()));
            }
            other => panic!("expected the put of a, got {other:?}"),
        }
        match next_event(&mut watch).await {
            WatchEvent::Delete { key, mod_revision, prev } => {
                assert_eq!((key.as_str(), mod_revision), (bk.as_str(), deleted_at));
                assert_eq!(prev.map(|p| text(&p.value)), Some("b1".into()), "deletes carry the previous value");
            }
            other => panic!("expected the delete of b, got {other:?}"),
        }
        match next_event(&mut watch).await {
            WatchEvent::Put { kv, prev } => {
                assert_eq!((kv.key.as_str(), kv.mod_revision), (c.as_str(), c_at));
                assert!(prev.is_none());
            }
            other => panic!("expected the put of c, got {other:?}"),
        }
        // Then live events, in order.
        let mut revisions = Vec::new();
        for i in 0..20 {
            revisions.push(store.put(&d, b(&format!("d{i}"))).await.unwrap());
        }
        for (i, revision) in revisions.iter().enumerate() {
            match next_event(&mut watch).await {
                WatchEvent::Put { kv, .. } => {
                    assert_eq!((kv.mod_revision, text(&kv.value)), (*revision, format!("d{i}")));
                }
                other => panic!("expected a put of d, got {other:?}"),
            }
        }
        // A watch from "now" sees only what follows.
        let mut fresh = store.watch(p, 0).await.unwrap();
        let next = store.put(&a, b("a3")).await.unwrap();
        assert_eq!(next_event(&mut fresh).await.revision(), next);
    }

    pub async fn watch_and_range_below_compaction_are_too_old(store: &dyn Store, p: &str) {
        let key = format!("{p}k");
        let mut revisions = Vec::new();
        for i in 0..10 {
            revisions.push(store.put(&key, b(&format!("v{i}"))).await.unwrap());
        }
        let at = revisions[5];
        store.compact(at).await.unwrap();
        assert!(store.compacted_revision().await.unwrap() >= at);

        let watch = store.watch(p, revisions[2]).await;
        match watch {
            Err(StoreError::Compacted { compacted, .. }) => assert!(compacted >= at),
            Err(other) => panic!("expected Compacted, got {other:?}"),
            Ok(mut stream) => match tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap() {
                Some(Err(StoreError::Compacted { .. })) => {}
                other => panic!("expected Compacted, got {other:?}"),
            },
        }
        let range = store.range(RangeRequest::prefix(p).at(revisions[2])).await.unwrap_err();
        assert!(matches!(range, StoreError::Compacted { .. }), "{range:?}");
        // At and after the compaction point, history is intact.
        for (i, revision) in revisions.iter().enumerate().skip(5) {
            let read = store.range(RangeRequest::prefix(p).at(*revision)).await.unwrap();
            assert_eq!(text(&read.kvs[0].value), format!("v{i}"));
        }
        let mut after = store.watch(p, at + 1).await.unwrap();
        assert_eq!(next_event(&mut after).await.revision(), revisions[6]);
        // Compacting at or below the point again is a no-op.
        store.compact(revisions[3]).await.unwrap();
        let future = store.compact(revisions[9] + 1000).await.unwrap_err();
        assert!(matches!(future, StoreError::FutureRevision { .. }), "{future:?}");
    }

    /// Random writes over a few keys; every revision's state is remembered. After compacting in the middle, every
    /// revision from the compaction point on must read back exactly as it was, and a watch from just after it must
    /// replay exactly the remaining changes.
    pub async fn history_matches_a_model_across_compaction(store: &dyn Store, p: &str) {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut model: BTreeMap<String, String> = BTreeMap::new();
        let mut history: BTreeMap<Revision, BTreeMap<String, String>> = BTreeMap::new();
        let start = store.current_revision().await.unwrap();
        history.insert(start, model.clone());
        for step in 0..240 {
            let key = format!("{p}k{}", random(6));
            let other = format!("{p}k{}", random(6));
            let ops = match random(4) {
                0 | 1 => vec![Op::Put(key.clone(), b(&format!("s{step}")))],
                2 => vec![Op::Delete(key.clone())],
                _ if key != other => vec![Op::Put(key.clone(), b(&format!("s{step}"))), Op::Delete(other.clone())],
                _ => vec![Op::Put(key.clone(), b(&format!("s{step}")))],
            };
            let response = store.txn(Txn::new(vec![], ops.clone())).await.unwrap();
            // A put always makes a revision; a transaction that only deletes missing keys makes none.
            let mut changed = false;
            for op in &ops {
                match op {
                    Op::Put(k, v) => {
                        model.insert(k.clone(), text(v));
                        changed = true;
                    }
                    Op::Delete(k) => changed |= model.remove(k).is_some(),
                }
            }
            if changed {
                history.insert(response.revision, model.clone());
            }
        }
        let revisions: Vec<Revision> = history.keys().copied().collect();
        let compact_at = revisions[revisions.len() / 2];
        store.compact(compact_at).await.unwrap();
        let state_at = |r: Revision| history.range(..=r).next_back().map(|(_, m)| m.clone()).unwrap_or_default();
        let current = store.current_revision().await.unwrap();
        for r in compact_at..=current {
            let read = store.range(RangeRequest::prefix(p).at(r)).await.unwrap();
            let got: BTreeMap<String, String> = read.kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect();
            assert_eq!(got, state_at(r), "state at revision {r} (compacted at {compact_at})");
        }
        let mut watch = store.watch(p, compact_at + 1).await.unwrap();
        let mut replayed = state_at(compact_at);
        let mut revision = compact_at;
        while revision < *revisions.last().unwrap() {
            let event = next_event(&mut watch).await;
            if event.revision() != revision {
                assert_eq!(replayed, state_at(revision), "replayed state at revision {revision}");
                revision = event.revision();
            }
            match event {
                WatchEvent::Put { kv, prev } => {
                    assert_eq!(prev.map(|p| text(&p.value)), replayed.get(&kv.key).cloned(), "prev of {}", kv.key);
                    replayed.insert(kv.key.clone(), text(&kv.value));
                }
                WatchEvent::Delete { key, prev, .. } => {
                    assert_eq!(prev.map(|p| text(&p.value)), replayed.remove(&key), "prev of deleted {key}");
                }
                WatchEvent::Progress { .. } => unreachable!("next_event skips progress"),
            }
        }
        assert_eq!(replayed, state_at(revision));
    }

    /// Acknowledged writes survive a restart, and the revision never goes backwards.
    pub async fn restart_keeps_writes(
        before: SharedStore,
        restart: impl AsyncFnOnce(SharedStore) -> SharedStore,
        p: &str,
    ) {
        let mut written = BTreeMap::new();
        for i in 0..30 {
            let key = format!("{p}k{i}");
            store_put(&before, &key, &format!("v{i}")).await;
            written.insert(key, format!("v{i}"));
        }
        let deleted = format!("{p}k0");
        before.delete(&deleted).await.unwrap();
        written.remove(&deleted);
        let revision = before.current_revision().await.unwrap();
        let after = restart(before).await;
        let read = after.range(RangeRequest::prefix(p)).await.unwrap();
        let got: BTreeMap<String, String> = read.kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect();
        assert_eq!(got, written);
        assert!(after.current_revision().await.unwrap() >= revision, "the revision never goes backwards");
        let next = after.put(&format!("{p}after"), b("x")).await.unwrap();
        assert!(next > revision);
    }

    async fn store_put(store: &SharedStore, key: &str, value: &str) {
        store.put(key, b(value)).await.unwrap();
    }
}

async fn embedded(dir: &std::path::Path) -> SharedStore {
    Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir)).await.unwrap())
}

async fn etcd(endpoints: &[String]) -> SharedStore {
    Arc::new(EtcdStore::connect(endpoints).await.unwrap())
}

macro_rules! suite {
    ($module:ident, $open:expr) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn cas() {
                let (_keep, store) = $open.await;
                conformance::cas(store.as_ref(), "/t/cas/").await;
            }

            #[tokio::test]
            async fn multi_key_atomicity() {
                let (_keep, store) = $open.await;
                conformance::multi_key_atomicity(store.as_ref(), "/t/atomic/").await;
            }

            #[tokio::test]
            async fn pagination_is_consistent_while_writes_continue() {
                let (_keep, store) = $open.await;
                conformance::pagination_is_consistent_while_writes_continue(store, "/t/pages/").await;
            }

            #[tokio::test]
            async fn watch_from_a_revision() {
                let (_keep, store) = $open.await;
                conformance::watch_from_a_revision(store.as_ref(), "/t/watch/").await;
            }

            #[tokio::test]
            async fn watch_and_range_below_compaction_are_too_old() {
                let (_keep, store) = $open.await;
                conformance::watch_and_range_below_compaction_are_too_old(store.as_ref(), "/t/compact/").await;
            }

            #[tokio::test]
            async fn large_ranges_are_read_whole() {
                let (_keep, store) = $open.await;
                conformance::large_ranges_are_read_whole(store.as_ref(), "/t/large/").await;
            }

            #[tokio::test]
            async fn history_matches_a_model_across_compaction() {
                let (_keep, store) = $open.await;
                conformance::history_matches_a_model_across_compaction(store.as_ref(), "/t/model/").await;
            }
        }
    };
}

/// Whatever must outlive the store in a test (a temporary directory, an etcd process).
enum Keep {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Etcd(#[allow(dead_code)] EtcdProcess),
}

async fn open_embedded() -> (Keep, SharedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path()).await;
    (Keep::Dir(dir), store)
}

async fn open_etcd() -> (Keep, SharedStore) {
    let process = tokio::task::spawn_blocking(EtcdProcess::start).await.unwrap();
    let store = etcd(&[process.endpoint()]).await;
    (Keep::Etcd(process), store)
}

suite!(embedded_store, open_embedded());
suite!(etcd_store, open_etcd());

#[tokio::test]
async fn embedded_restart_keeps_writes() {
    let dir = tempfile::tempdir().unwrap();
    let before = embedded(dir.path()).await;
    let path = dir.path().to_owned();
    conformance::restart_keeps_writes(
        before,
        async move |store: SharedStore| {
            drop(store);
            // The writer thread lets go of the file when its last handle is dropped; redb refuses a second opener.
            for _ in 0..200 {
                match EmbeddedStore::open(EmbeddedConfig::new(&path)).await {
                    Ok(store) => return Arc::new(store) as SharedStore,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            panic!("the store did not reopen");
        },
        "/t/restart/",
    )
    .await;
}

#[tokio::test]
async fn etcd_restart_keeps_writes() {
    let process = tokio::task::spawn_blocking(EtcdProcess::start).await.unwrap();
    let endpoint = process.endpoint();
    let before = etcd(std::slice::from_ref(&endpoint)).await;
    let process = Arc::new(std::sync::Mutex::new(process));
    let handle = process.clone();
    conformance::restart_keeps_writes(
        before,
        async move |store: SharedStore| {
            drop(store);
            tokio::task::spawn_blocking(move || handle.lock().unwrap().restart()).await.unwrap();
            etcd(&[endpoint]).await
        },
        "/t/restart/",
    )
    .await;
    drop(process);
}

/// The whole suite through a 3-member cluster; one member is killed half-way and the rest of the suite, and a watch
/// opened before the kill, carry on through the remaining quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_survives_losing_a_member() {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3)).await.unwrap();
    let store = etcd(&cluster.endpoints()).await;
    let mut watch = store.watch("/t/", 0).await.unwrap();
    let watched = tokio::spawn(async move {
        let mut seen: Vec<(Revision, String)> = Vec::new();
        while let Some(item) = watch.next().await {
            match item.expect("the watch survives the lost member") {
                WatchEvent::Progress { .. } => {}
                event if event.key() == Some("/t/end") => break,
                event => seen.push((event.revision(), event.key().unwrap_or_default().to_owned())),
            }
        }
        seen
    });
    conformance::cas(store.as_ref(), "/t/cas/").await;
    conformance::multi_key_atomicity(store.as_ref(), "/t/atomic/").await;
    conformance::watch_from_a_revision(store.as_ref(), "/t/watch/").await;

    cluster.members[0].kill();
    let killed_at = store.current_revision().await.unwrap();

    conformance::pagination_is_consistent_while_writes_continue(store.clone(), "/t/pages/").await;
    conformance::history_matches_a_model_across_compaction(store.as_ref(), "/t/model/").await;
    conformance::watch_and_range_below_compaction_are_too_old(store.as_ref(), "/t/compact/").await;
    store.put("/t/end", b("done")).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), watched).await.unwrap().unwrap();
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "in revision order");
    let unique: std::collections::HashSet<&(Revision, String)> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event delivered twice");
    assert!(seen.iter().any(|(r, _)| *r > killed_at), "events after the kill still arrive");
    drop(cluster);
}
