//! Kubernetes-style object metadata shared by every kind: [`ObjectMeta`], [`ListMeta`], [`OwnerReference`],
//! [`ManagedFieldsEntry`], [`Condition`], lists and watch events.
//!
//! These mirror `meta/v1` closely enough that kubectl, kube-rs and the Kubernetes Python client read Agora's objects
//! without special cases. The server owns `uid`, `resourceVersion`, `generation`, `creationTimestamp`,
//! `deletionTimestamp` and `managedFields`; clients may send them but the apiserver decides their values.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::Status;

/// Metadata every persisted object carries.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Unique within the namespace (or the cluster, for cluster-scoped kinds); a DNS-1123 name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When `name` is empty, the server appends a random suffix to this prefix to make one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// The namespace of a namespaced object; must be empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Set by the server at creation; never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The store revision of the last write to this object. Opaque to clients: pass it back, never compute with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Incremented by the server on every change of `spec` (not of `status` or `metadata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When the server created the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Timestamp>,
    /// When deletion was requested; the object stays until its finalizers are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Timestamp>,
    /// The grace period the deletion was requested with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    /// Identifying key/value pairs, used by selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Non-identifying key/value pairs for tools and people.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Keys of controllers that must clean up before the object is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Objects this one belongs to; deleting the owner deletes the dependent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Which field manager set which fields (server-side apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<ManagedFieldsEntry>,
}

impl ObjectMeta {
    /// Metadata with just a name and, for namespaced kinds, a namespace.
    #[must_use]
    pub fn named(namespace: Option<&str>, name: &str) -> Self {
        Self { name: Some(name.to_owned()), namespace: namespace.map(str::to_owned), ..Self::default() }
    }

    /// `namespace/name` or `name`, for messages and logs.
    #[must_use]
    pub fn display_name(&self) -> String {
        let name = self.name.as_deref().or(self.generate_name.as_deref()).unwrap_or("<unnamed>");
        match &self.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        }
    }
}

/// A link from a dependent object to its owner.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    /// The owner's `apiVersion`.
    pub api_version: String,
    /// The owner's kind.
    pub kind: String,
    /// The owner's name (same namespace as the dependent).
    pub name: String,
    /// The owner's uid; a reference to a deleted-and-recreated owner of the same name does not match.
    pub uid: String,
    /// True for the one owner that manages this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// With foreground deletion, the owner waits for this dependent to be gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

impl OwnerReference {
    /// `owner` as the controller of a dependent in its namespace; with `block_owner_deletion`, a foreground deletion
    /// of the owner waits for the dependent to be gone.
    #[must_use]
    pub fn controller<K: crate::Resource>(owner: &K, block_owner_deletion: bool) -> Self {
        let meta = owner.metadata();
        Self {
            api_version: crate::API_VERSION.to_owned(),
            kind: K::KIND.to_owned(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: block_owner_deletion.then_some(true),
        }
    }
}

/// One field manager's claim on an object's fields, as recorded by server-side apply.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedFieldsEntry {
    /// The manager's name (`fieldManager` of the request).
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version of the fields listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// When the manager last changed the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// Always `FieldsV1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_type: Option<String>,
    /// The set of fields, in the `FieldsV1` trie format (`{"f:spec":{"f:cpus":{}}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_v1: Option<serde_json::Value>,
    /// The subresource the change went through (`status`, `scale`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
}

/// Metadata of a list response.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListMeta {
    /// The store revision the list was read at; start a watch from here to miss nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Pass as `continue` to get the next page, read at the same revision.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_: Option<String>,
    /// How many items are left after this page, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_item_count: Option<i64>,
}

/// A list of objects of one kind (`AppList`, `TaskList`, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct List<K> {
    /// `agora/v1`.
    pub api_version: String,
    /// `<Kind>List`.
    pub kind: String,
    /// Revision and continuation.
    pub metadata: ListMeta,
    /// The objects.
    pub items: Vec<K>,
}

/// A standard condition, as in Kubernetes: one aspect of an object's state with the time it last changed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// What this condition is about, in PascalCase (`Ready`, `Unreachable`, `Progressing`).
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// A PascalCase word saying why it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Timestamp>,
    /// The `metadata.generation` the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Whether a [`Condition`] holds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not hold.
    False,
    /// Not known (for example, the reporter is unreachable).
    Unknown,
}

/// A reference to another object, as used by events and tasks.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    /// The object's `apiVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The object's kind.
    pub kind: String,
    /// The object's namespace, for namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
    /// The object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The revision the reference was taken at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// A path inside the object (`spec.healthChecks[0]`), when the reference is to a part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
}

/// One event of a watch stream: `{"type": "ADDED", "object": {...}}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", content = "object", rename_all = "UPPERCASE")]
pub enum WatchEvent<K> {
    /// The object was created (or exists when the watch started without a revision).
    Added(K),
    /// The object changed.
    Modified(K),
    /// The object was deleted; this is its last state.
    Deleted(K),
    /// Progress: every event up to this revision has been sent.
    Bookmark(Bookmark),
    /// The watch failed; `410 Expired` means the revision is too old and the client must list again.
    Error(Status),
}

/// The object of a BOOKMARK watch event: only the revision (and, at the end of initial events, an annotation).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Bookmark {
    /// `agora/v1`.
    pub api_version: String,
    /// The watched kind.
    pub kind: String,
    /// Carries `resourceVersion` and, at the end of `sendInitialEvents`, the annotation
    /// `k8s.io/initial-events-end: "true"`.
    pub metadata: BookmarkMeta,
}

/// Metadata of a [`Bookmark`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BookmarkMeta {
    /// The revision every earlier event belongs to.
    pub resource_version: String,
    /// `k8s.io/initial-events-end: "true"` on the bookmark that ends the initial events.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The annotation on the bookmark that ends `sendInitialEvents`.
pub const INITIAL_EVENTS_END_ANNOTATION: &str = "k8s.io/initial-events-end";
