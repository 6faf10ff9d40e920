//! The garbage collector: objects whose owners are gone are deleted, as in Kubernetes.
//!
//! It follows one store watch over every kind, keeping an index of objects by uid and of dependents by owner uid,
//! and acts level-triggered on every change (so a restart, which lists everything again, converges):
//! - a dependent none of whose owners exists any more is deleted (Background propagation, and dangling references);
//! - an owner being deleted with the `foregroundDeletion` finalizer has its dependents deleted first, then the
//!   finalizer removed (which deletes it when no other finalizer remains);
//! - an owner being deleted with the `orphan` finalizer has its uid removed from its dependents' ownerReferences,
//!   then the finalizer removed.
//!
//! Every write is a compare-and-swap on the revision the collector saw; losing a race just means the next event
//! brings the new state.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::store::{
    Compare, KeyLayout, KeyValue, Op, RangeRequest, Revision, SharedStore, StoreError, Txn, WatchEvent,
};

/// The finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// What the collector knows of one object: only what its rules look at, so that the index costs little per object
/// (the object itself is read again in the rare case the collector writes it).
#[derive(Clone, Debug)]
struct Entry {
    uid: String,
    owners: Vec<String>,
    revision: Revision,
    deleting: bool,
    finalizers: Vec<String>,
}

impl Entry {
    fn of(kv: &KeyValue) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Object {
            metadata: Meta,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            uid: String,
            #[serde(default)]
            owner_references: Vec<Owner>,
            deletion_timestamp: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            finalizers: Vec<String>,
        }
        #[derive(serde::Deserialize)]
        struct Owner {
            uid: String,
        }
        let object: Object = serde_json::from_slice(&kv.value).ok()?;
        let meta = object.metadata;
        Some(Self {
            uid: meta.uid,
            owners: meta.owner_references.into_iter().map(|o| o.uid).collect(),
            revision: kv.mod_revision,
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers,
        })
    }

    fn deleting_with(&self, finalizer: &str) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == finalizer)
    }
}

#[derive(Default)]
struct Index {
    by_key: HashMap<String, Entry>,
    by_uid: HashMap<String, String>,
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Index {
    fn put(&mut self, key: String, entry: Entry) {
        self.remove(&key);
        for owner in &entry.owners {
            self.dependents.entry(owner.clone()).or_default().insert(key.clone());
        }
        self.by_uid.insert(entry.uid.clone(), key.clone());
        self.by_key.insert(key, entry);
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.by_key.remove(key)?;
        self.by_uid.remove(&entry.uid);
        for owner in &entry.owners {
            if let Some(set) = self.dependents.get_mut(owner) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
        Some(entry)
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

/// The collector over a store.
pub struct GarbageCollector {
    store: SharedStore,
    root: String,
}

impl GarbageCollector {
    /// A collector for the objects under `keys`.
    #[must_use]
    pub fn new(store: SharedStore, keys: &KeyLayout) -> Self {
        Self { store, root: keys.root().to_owned() }
    }

    /// Runs forever, starting over (after a pause) whenever the store watch breaks.
    pub async fn run(self) {
        loop {
            if let Err(e) = self.run_once().await {
                tracing::warn!(error = %e, "garbage collector restarting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn run_once(&self) -> Result<(), StoreError> {
        let listed = self.store.range(RangeRequest::prefix(&self.root)).await?;
        let mut index = Index::default();
        for kv in &listed.kvs {
            if let Some(entry) = Entry::of(kv) {
                index.put(kv.key.clone(), entry);
            }
        }
        let keys: Vec<String> = index.by_key.keys().cloned().collect();
        for key in keys {
            self.reconcile(&index, &key).await?;
        }
        // Its own index knows what each key held: no previous values needed.
        let mut stream = self.store.watch_changes(&self.root, listed.revision + 1).await?;
        while let Some(event) = stream.next().await {
            match event? {
                WatchEvent::Put { kv, .. } => {
                    if let Some(entry) = Entry::of(&kv) {
                        // Owners it had and owners it has: either may be released by this change.
                        let mut owners: BTreeSet<String> = entry.owners.iter().cloned().collect();
                        if let Some(before) = index.by_key.get(&kv.key) {
                            owners.extend(before.owners.iter().cloned());
                        }
                        index.put(kv.key.clone(), entry);
                        self.reconcile(&index, &kv.key).await?;
                        for owner in owners {
                            if let Some(owner_key) = index.by_uid.get(&owner).cloned() {
                                self.reconcile(&index, &owner_key).await?;
                            }
                        }
                    }
                }
                WatchEvent::Delete { key, .. } => {
                    if let Some(gone) = index.remove(&key) {
                        for dependent in index.dependents_of(&gone.uid) {
                            self.reconcile(&index, &dependent).await?;
                        }
                        for owner in &gone.owners {
                            if let Some(owner_key) = index.by_uid.get(owner).cloned() {
                                self.reconcile(&index, &owner_key).await?;
                            }
                        }
                    }
                }
                WatchEvent::Progress { .. } => {}
            }
        }
        Err(StoreError::Unavailable("the store watch ended".to_owned()))
    }

    /// Brings one object in line with the rules.
    async fn reconcile(&self, index: &Index, key: &str) -> Result<(), StoreError> {
        let Some(entry) = index.by_key.get(key) else { return Ok(()) };
        // A dependent whose owners are all gone goes too.
        if !entry.owners.is_empty() && entry.owners.iter().all(|owner| !index.by_uid.contains_key(owner)) {
            return self.delete(key, entry).await;
        }
        if entry.deleting_with(FOREGROUND) {
            let dependents = index.dependents_of(&entry.uid);
            for dependent in &dependents {
                if let Some(d) = index.by_key.get(dependent)
                    && !d.deleting
                {
                    self.delete(dependent, d).await?;
                }
            }
            if dependents.is_empty() {
                self.release(key, entry, FOREGROUND).await?;
            }
        }
        if entry.deleting_with(ORPHAN) {
            for dependent in index.dependents_of(&entry.uid) {
                if let Some(d) = index.by_key.get(&dependent) {
                    let Some(mut orphaned) = self.read(&dependent, d).await? else { continue };
                    if let Some(refs) = orphaned.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(entry.uid.as_str()));
                        if refs.is_empty()
                            && let Some(meta) = orphaned.get_mut("metadata").and_then(Value::as_object_mut)
                        {
                            meta.remove("ownerReferences");
                        }
                    }
                    self.write(&dependent, d.revision, Some(&orphaned)).await?;
                }
            }
            if index.dependents_of(&entry.uid).is_empty() {
                self.release(key, entry, ORPHAN).await?;
            }
        }
        Ok(())
    }

    /// Deletes an object as the API does: marked when it has finalizers, removed otherwise.
    async fn delete(&self, key: &str, entry: &Entry) -> Result<(), StoreError> {
        if entry.finalizers.is_empty() {
            tracing::debug!(%key, "garbage collecting");
            return self.write(key, entry.revision, None).await;
        }
        if entry.deleting {
            return Ok(());
        }
        let Some(mut marked) = self.read(key, entry).await? else { return Ok(()) };
        if let Some(meta) = marked.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("deletionTimestamp".to_owned(), json!(crate::api::now().to_string()));
            meta.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
        }
        self.write(key, entry.revision, Some(&marked)).await
    }

    /// Removes `finalizer`; the object goes when it was the last.
    async fn release(&self, key: &str, entry: &Entry, finalizer: &str) -> Result<(), StoreError> {
        let Some(mut released) = self.read(key, entry).await? else { return Ok(()) };
        let mut remaining = 0;
        if let Some(list) = released.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
            list.retain(|f| f != finalizer);
            remaining = list.len();
        }
        if remaining == 0 {
            return self.write(key, entry.revision, None).await;
        }
        self.write(key, entry.revision, Some(&released)).await
    }

    /// The object as the collector last saw it; `None` when it has changed since (its event is on the way).
    async fn read(&self, key: &str, entry: &Entry) -> Result<Option<Value>, StoreError> {
        let Some(kv) = self.store.get(key).await? else { return Ok(None) };
        if kv.mod_revision != entry.revision {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&kv.value).ok())
    }

    /// Compare-and-swap: put `object` (or delete when `None`) if the key is still at `revision`.
    async fn write(&self, key: &str, revision: Revision, object: Option<&Value>) -> Result<(), StoreError> {
        let op = match object {
            Some(object) => Op::Put(key.to_owned(), bytes::Bytes::from(serde_json::to_vec(object).unwrap_or_default())),
            None => Op::Delete(key.to_owned()),
        };
        let response = self.store.txn(Txn::new(vec![Compare::ModRevision(key.to_owned(), revision)], vec![op])).await?;
        if !response.succeeded {
            tracing::debug!(%key, "garbage collector lost a race; the next event brings the new state");
        }
        Ok(())
    }
}
