//! Field management (`metadata.managedFields`) and server-side apply.
//!
//! Every write records which fields its manager set: an Update (POST, PUT, merge/JSON patch, `/scale`) takes the
//! fields it changed from whoever owned them; an Apply owns exactly the fields of its applied configuration. On the
//! next apply by the same manager, fields it applied before and now omits are removed (unless another manager also
//! owns them), and applying a value to a field another manager owns is a conflict unless forced.
//!
//! Ownership is tracked per leaf: a scalar, an empty object, or a list. Lists are atomic, as for Kubernetes custom
//! resources without `x-kubernetes-list-type`: whoever sets a list owns all of it. Field sets are written in the
//! `FieldsV1` trie format (`{"f:spec":{"f:cpus":{}}}`), which kubectl and the Kubernetes client libraries read.

use std::collections::BTreeSet;

use agora_schemas::{API_VERSION, KindInfo, StatusCause, StatusReason};
use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult};

/// A path to a field: object keys from the root.
pub type FieldPath = Vec<String>;

/// Metadata the server decides, never owned by a manager.
const SERVER_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The longest field manager name accepted.
const MAX_MANAGER_LEN: usize = 128;

/// A set of leaf field paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<FieldPath>);

impl FieldSet {
    /// The leaves of `value`: scalars, lists and empty objects.
    #[must_use]
    pub fn of(value: &Value) -> Self {
        let mut set = Self::default();
        collect_leaves(value, &mut Vec::new(), &mut set.0);
        set
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The paths, in order.
    pub fn iter(&self) -> impl Iterator<Item = &FieldPath> {
        self.0.iter()
    }

    /// Whether `path` itself is in the set.
    #[must_use]
    pub fn contains(&self, path: &FieldPath) -> bool {
        self.0.contains(path)
    }

    /// Whether the set holds `path`, one of its ancestors or one of its descendants.
    #[must_use]
    pub fn overlaps(&self, path: &FieldPath) -> bool {
        (0..=path.len()).any(|n| self.0.contains(&path[..n]))
            || self.0.range(path.clone()..).next().is_some_and(|next| next.starts_with(path))
    }

    fn insert(&mut self, path: FieldPath) {
        self.0.insert(path);
    }

    fn remove(&mut self, path: &FieldPath) {
        self.0.remove(path);
    }

    fn union(&mut self, other: &Self) {
        self.0.extend(other.0.iter().cloned());
    }

    /// The set in `FieldsV1` form. A path that is both a member and the parent of members carries a `"."` entry.
    #[must_use]
    pub fn to_fields_v1(&self) -> Value {
        /// The trie over borrowed keys, so each node's `f:` key is formatted once.
        #[derive(Default)]
        struct Node<'a> {
            member: bool,
            children: std::collections::BTreeMap<&'a str, Node<'a>>,
        }
        fn to_value(node: &Node<'_>) -> Value {
            let mut map = Map::new();
            if node.member && !node.children.is_empty() {
                map.insert(".".to_owned(), json!({}));
            }
            for (key, child) in &node.children {
                map.insert(format!("f:{key}"), to_value(child));
            }
            Value::Object(map)
        }
        let mut root = Node::default();
        for path in &self.0 {
            let node = path.iter().fold(&mut root, |node, key| node.children.entry(key).or_default());
            node.member = true;
        }
        to_value(&root)
    }

    /// Reads a `FieldsV1` trie. List element keys (`k:`, `v:`, `i:`), which other tools may write, are folded into
    /// their list, which Agora treats as one field.
    ///
    /// # Errors
    /// A node that is not an object, or a key with an unknown prefix.
    pub fn from_fields_v1(value: &Value) -> Result<Self, String> {
        let mut set = Self::default();
        read_trie(value, &mut Vec::new(), &mut set.0)?;
        Ok(set)
    }
}

/// `FieldSet::of(value).to_fields_v1()` in one pass: every leaf of `value` owned.
fn leaves_trie(value: &Value) -> Value {
    match value {
        Value::Object(map) if !map.is_empty() => {
            Value::Object(map.iter().map(|(key, child)| (format!("f:{key}"), leaves_trie(child))).collect())
        }
        _ => json!({}),
    }
}

fn collect_leaves(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect_leaves(child, path, out);
                path.pop();
            }
        }
        _ if path.is_empty() => {}
        _ => {
            out.insert(path.clone());
        }
    }
}

fn read_trie(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) -> Result<(), String> {
    let Some(map) = value.as_object() else {
        return Err(format!("the fields under {} must be an object", display(path)));
    };
    if (map.is_empty() || map.contains_key(".")) && !path.is_empty() {
        out.insert(path.clone());
    }
    for (key, child) in map {
        if key == "." {
            continue;
        }
        if let Some(name) = key.strip_prefix("f:") {
            path.push(name.to_owned());
            read_trie(child, path, out)?;
            path.pop();
        } else if key.starts_with("k:") || key.starts_with("v:") || key.starts_with("i:") {
            // An element of a list: Agora owns lists whole.
            if !path.is_empty() {
                out.insert(path.clone());
            }
        } else {
            return Err(format!("{key:?} under {} is not a FieldsV1 key (f:, k:, v:, i: or .)", display(path)));
        }
    }
    Ok(())
}

/// A field path as Kubernetes prints it in conflicts: `.spec.instances`.
#[must_use]
pub fn display(path: &FieldPath) -> String {
    if path.is_empty() { ".".to_owned() } else { path.iter().map(|p| format!(".{p}")).collect() }
}

/// Which part of an object a write covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The object through its main resource: everything but `status` when the kind has a status subresource.
    Main,
    /// `/status`: only `status`.
    Status,
    /// `/scale`: recorded with the `scale` subresource; covers what it changes (`spec.instances`).
    Scale,
}

impl Scope {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Self::Main => None,
            Self::Status => Some("status"),
            Self::Scale => Some("scale"),
        }
    }
}

/// The part of `object` a manager can own in `scope`: without apiVersion, kind and the server's metadata, and without
/// `status` (or only `status`).
#[must_use]
pub fn managed_view(object: &Value, kind: &KindInfo, scope: Scope) -> Value {
    let Some(map) = object.as_object() else { return json!({}) };
    let mut view = Map::new();
    for (key, value) in map {
        if in_view(key, kind, scope) {
            view.insert(key.clone(), value.clone());
        }
    }
    if let Some(meta) = view.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_METADATA {
            meta.remove(field);
        }
        if meta.is_empty() {
            view.remove("metadata");
        }
    }
    Value::Object(view)
}

/// Whether the top-level field `key` is in the managed view of `scope`.
fn in_view(key: &str, kind: &KindInfo, scope: Scope) -> bool {
    match (key, scope) {
        ("apiVersion" | "kind", _) => false,
        ("status", Scope::Status) => true,
        (_, Scope::Status) => false,
        ("status", _) => !kind.subresources.contains(&"status"),
        _ => true,
    }
}

/// `leaves_trie(&managed_view(object, kind, scope))`, without copying the object first.
fn view_trie(object: &Value, kind: &KindInfo, scope: Scope) -> Value {
    let Some(map) = object.as_object() else { return json!({}) };
    let mut trie = Map::new();
    for (key, value) in map.iter().filter(|(key, _)| in_view(key, kind, scope)) {
        let child = match (key.as_str(), value.as_object()) {
            ("metadata", Some(meta)) => {
                let fields: Map<String, Value> = meta
                    .iter()
                    .filter(|(field, _)| !SERVER_METADATA.contains(&field.as_str()))
                    .map(|(field, child)| (format!("f:{field}"), leaves_trie(child)))
                    .collect();
                if fields.is_empty() {
                    continue;
                }
                Value::Object(fields)
            }
            _ => leaves_trie(value),
        };
        trie.insert(format!("f:{key}"), child);
    }
    Value::Object(trie)
}

/// The value at `path`, if there is one.
fn value_at<'a>(value: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.as_object()?.get(key))
}

/// Equality that treats `1` and `1.0` as the same number (stored objects are re-serialized from their types).
#[must_use]
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// One manager's entry, decoded.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    subresource: Option<String>,
    time: Option<Value>,
    fields: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == subresource
    }

    fn to_json(&self) -> Value {
        entry_json(
            &self.manager,
            &self.operation,
            self.fields.to_fields_v1(),
            self.time.clone(),
            self.subresource.as_deref(),
        )
    }
}

/// A `managedFields` entry, built in place: `json!` would copy `fields` through serde.
fn entry_json(manager: &str, operation: &str, fields: Value, time: Option<Value>, sub: Option<&str>) -> Value {
    let mut entry = Map::with_capacity(7);
    entry.insert("manager".into(), Value::String(manager.to_owned()));
    entry.insert("operation".into(), Value::String(operation.to_owned()));
    entry.insert("apiVersion".into(), Value::String(API_VERSION.to_owned()));
    entry.insert("fieldsType".into(), Value::String("FieldsV1".to_owned()));
    entry.insert("fieldsV1".into(), fields);
    if let Some(time) = time {
        entry.insert("time".into(), time);
    }
    if let Some(sub) = sub {
        entry.insert("subresource".into(), Value::String(sub.to_owned()));
    }
    Value::Object(entry)
}

/// Decodes `metadata.managedFields`, checking each entry. Entries without a manager are dropped (so a client can
/// clear the list by writing `[{}]`, as in Kubernetes).
fn decode_entries(list: &Value) -> Result<Vec<Entry>, String> {
    let Some(items) = list.as_array() else { return Err("must be a list".to_owned()) };
    let mut entries = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(map) = item.as_object() else { return Err(format!("[{i}] must be an object")) };
        let manager = match map.get("manager") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(m)) => m.clone(),
            Some(other) => return Err(format!("[{i}].manager must be a string, not {other}")),
        };
        if manager.is_empty() {
            continue;
        }
        let operation = match map.get("operation").and_then(Value::as_str) {
            Some(op @ ("Apply" | "Update")) => op.to_owned(),
            other => return Err(format!("[{i}].operation must be Apply or Update, not {other:?}")),
        };
        if let Some(t) = map.get("fieldsType").and_then(Value::as_str).filter(|t| *t != "FieldsV1") {
            return Err(format!("[{i}].fieldsType must be FieldsV1, not {t:?}"));
        }
        let fields = match map.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(trie) => FieldSet::from_fields_v1(trie).map_err(|e| format!("[{i}].fieldsV1: {e}"))?,
        };
        let subresource = map.get("subresource").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let time = map.get("time").filter(|t| !t.is_null()).cloned();
        if time.as_ref().is_some_and(|t| t.as_str().is_none_or(|t| t.parse::<jiff::Timestamp>().is_err())) {
            return Err(format!("[{i}].time must be an RFC 3339 timestamp"));
        }
        entries.push(Entry { manager, operation, subresource, time, fields });
    }
    Ok(entries)
}

/// The entries stored on `object` (written by this server, so they decode; anything else reads as none).
fn stored_entries(object: &Value) -> Vec<Entry> {
    object.pointer("/metadata/managedFields").and_then(|list| decode_entries(list).ok()).unwrap_or_default()
}

fn encode_entries(entries: &[Entry]) -> Value {
    Value::Array(entries.iter().filter(|e| !e.fields.is_empty()).map(Entry::to_json).collect())
}

/// The manager of a request: `fieldManager`, else the client's program name from its `User-Agent` (as Kubernetes
/// does).
///
/// # Errors
/// A name longer than 128 characters or with control characters.
pub fn manager_name(field_manager: Option<&str>, user_agent: Option<&str>) -> ApiResult<String> {
    let name = match field_manager.filter(|m| !m.is_empty()) {
        Some(name) => name.to_owned(),
        None => {
            let agent = user_agent.unwrap_or_default();
            let program = agent.split('/').next().unwrap_or_default().trim();
            let program: String = program.chars().filter(|c| !c.is_control()).take(MAX_MANAGER_LEN).collect();
            return Ok(if program.is_empty() { "unknown".to_owned() } else { program });
        }
    };
    if name.chars().count() > MAX_MANAGER_LEN {
        return Err(ApiError::bad_request(format!("fieldManager must be at most {MAX_MANAGER_LEN} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request("fieldManager must not contain control characters"));
    }
    Ok(name)
}

/// What a write does to field ownership.
#[derive(Clone, Debug)]
pub enum Manage {
    /// An update: the manager takes the fields it changed.
    Update {
        /// Who.
        manager: String,
        /// Through which part of the object.
        scope: Scope,
    },
    /// A server-side apply.
    Apply {
        /// Who.
        manager: String,
        /// Main resource or `/status`.
        scope: Scope,
        /// The fields of the applied configuration.
        fields: FieldSet,
        /// Take conflicting fields from their managers instead of failing.
        force: bool,
    },
}

impl Manage {
    /// The part of the object the write goes through.
    #[must_use]
    pub fn scope(&self) -> Scope {
        match self {
            Self::Update { scope, .. } | Self::Apply { scope, .. } => *scope,
        }
    }
}

/// For an apply by `manager`: `current` with the applied configuration `view` merged in (objects key by key, lists
/// and scalars replaced), minus the fields the manager applied last time, omits now, and nobody else owns.
#[must_use]
pub fn apply_to(current: &Value, view: &Value, applied: &FieldSet, manager: &str, scope: Scope) -> Value {
    let entries = stored_entries(current);
    let sub = scope.subresource();
    let mut previous = FieldSet::default();
    let mut others = FieldSet::default();
    for entry in &entries {
        if entry.is(manager, "Apply", sub) {
            previous.union(&entry.fields);
        } else {
            others.union(&entry.fields);
        }
    }
    let mut merged = current.clone();
    merge(&mut merged, view);
    for path in previous.iter() {
        if !applied.overlaps(path) && !others.overlaps(path) {
            remove_path(&mut merged, path);
        }
    }
    merged
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => merge(existing, value),
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn remove_path(value: &mut Value, path: &FieldPath) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = value;
    for key in parents {
        match node.as_object_mut().and_then(|m| m.get_mut(key)) {
            Some(child) => node = child,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

/// The `managedFields` of `next`, the object a write by `manage` is about to store in place of `current` (`None` on
/// create).
///
/// `requested` is the `managedFields` the client sent with an update: when present, not empty and different from the
/// stored list, it replaces the stored list (this is how kubectl migrates client-side-apply ownership to server-side
/// apply) before the write's own changes are recorded.
///
/// # Errors
/// 422 for a malformed requested list; 409 with `FieldManagerConflict` causes when an apply would change fields other
/// managers own and is not forced.
pub fn record(
    kind: &KindInfo,
    name: &str,
    current: Option<&Value>,
    requested: Option<&Value>,
    next: &Value,
    manage: &Manage,
) -> ApiResult<Value> {
    let mut entries = record_entries(kind, name, current, requested, next, manage)?;
    // Entries are built in Agora's version; another group's kind names its own.
    if !kind.is_agoras()
        && let Some(list) = entries.as_array_mut()
    {
        for entry in list.iter_mut().filter_map(Value::as_object_mut) {
            entry.insert("apiVersion".into(), Value::String(kind.api_version.to_owned()));
        }
    }
    Ok(entries)
}

fn record_entries(
    kind: &KindInfo,
    name: &str,
    current: Option<&Value>,
    requested: Option<&Value>,
    next: &Value,
    manage: &Manage,
) -> ApiResult<Value> {
    let scope = manage.scope();
    let sub = scope.subresource();
    let view_scope = if scope == Scope::Scale { Scope::Main } else { scope };
    // A create by an update owns every field it sets: the trie is the object's shape (the common case, made cheap).
    if let (None, Manage::Update { manager, .. }) = (current, manage)
        && requested.is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
    {
        let trie = view_trie(next, kind, view_scope);
        if trie.as_object().is_some_and(Map::is_empty) {
            return Ok(json!([]));
        }
        let time = Value::String(super::now().to_string());
        return Ok(Value::Array(vec![entry_json(manager, "Update", trie, Some(time), sub)]));
    }
    let stored = current.map(stored_entries).unwrap_or_default();
    let stored_json = current.and_then(|c| c.pointer("/metadata/managedFields")).cloned();
    let mut entries = match requested.filter(|r| r.as_array().is_some_and(|a| !a.is_empty())) {
        Some(list) if Some(list) != stored_json.as_ref() => decode_entries(list).map_err(|message| {
            ApiError::invalid(
                kind,
                name,
                &[agora_schemas::FieldError {
                    path: "metadata.managedFields".into(),
                    kind: agora_schemas::FieldErrorKind::Invalid,
                    message,
                }],
            )
        })?,
        _ => stored.clone(),
    };
    let before = current.map_or_else(|| json!({}), |c| managed_view(c, kind, view_scope));
    let after = managed_view(next, kind, view_scope);
    match manage {
        Manage::Update { manager, .. } => {
            let (changed, removed) = diff(&before, &after);
            for entry in &mut entries {
                let own = entry.is(manager, "Update", sub);
                for path in removed.iter().chain(changed.iter().filter(|_| !own)) {
                    entry.fields.remove(path);
                }
            }
            if !changed.is_empty() {
                match entries.iter_mut().find(|e| e.is(manager, "Update", sub)) {
                    Some(entry) => entry.fields.union(&changed),
                    None => entries.push(Entry {
                        manager: manager.clone(),
                        operation: "Update".to_owned(),
                        subresource: sub.map(str::to_owned),
                        time: None,
                        fields: changed,
                    }),
                }
            }
        }
        Manage::Apply { manager, fields, force, .. } => {
            let mut conflicts = Vec::new();
            for entry in &mut entries {
                if entry.is(manager, "Apply", sub) {
                    continue;
                }
                let taken: Vec<FieldPath> = fields
                    .iter()
                    .filter(|path| entry.fields.contains(path))
                    .filter(|path| match (value_at(&before, path), value_at(&after, path)) {
                        (Some(a), Some(b)) => !same(a, b),
                        (None, None) => false,
                        _ => true,
                    })
                    .cloned()
                    .collect();
                for path in taken {
                    if *force {
                        entry.fields.remove(&path);
                    } else {
                        conflicts.push((entry.manager.clone(), path));
                    }
                }
            }
            if !conflicts.is_empty() {
                return Err(conflict(kind, name, &conflicts));
            }
            entries.retain(|e| !e.is(manager, "Apply", sub));
            // The applied fields the server dropped (say, a status sent to the main resource) are not owned.
            let mut owned = FieldSet::default();
            for path in fields.iter().filter(|p| value_at(&after, p).is_some()) {
                owned.insert(path.clone());
            }
            let previous = stored.iter().find(|e| e.is(manager, "Apply", sub));
            entries.push(Entry {
                manager: manager.clone(),
                operation: "Apply".to_owned(),
                subresource: sub.map(str::to_owned),
                time: previous.and_then(|p| p.time.clone()),
                fields: owned,
            });
        }
    }
    // Entries whose fields changed carry the time of this write; the rest keep theirs, so a write that changes
    // nothing leaves the list exactly as it was.
    let now = json!(super::now().to_string());
    for entry in &mut entries {
        let unchanged = stored.iter().any(|s| {
            s.manager == entry.manager
                && s.operation == entry.operation
                && s.subresource == entry.subresource
                && s.fields == entry.fields
        });
        if !unchanged || entry.time.is_none() {
            entry.time = Some(now.clone());
        }
    }
    let encoded = encode_entries(&entries);
    match &stored_json {
        Some(stored) if same_entries(stored, &encoded) => Ok(stored.clone()),
        _ => Ok(encoded),
    }
}

/// Whether two encoded lists hold the same entries (ignoring times), so a no-op write keeps the stored list.
fn same_entries(stored: &Value, encoded: &Value) -> bool {
    let strip = |list: &Value| -> Vec<Value> {
        list.as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| {
                        let mut item = item.clone();
                        if let Some(map) = item.as_object_mut() {
                            map.remove("time");
                        }
                        item
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(stored) == strip(encoded)
}

/// The leaves of `after` that differ from `before`, and the leaves of `before` gone from `after`.
fn diff(before: &Value, after: &Value) -> (FieldSet, FieldSet) {
    let mut changed = FieldSet::default();
    for path in FieldSet::of(after).0 {
        let same_value = match (value_at(before, &path), value_at(after, &path)) {
            (Some(a), Some(b)) => same(a, b),
            _ => false,
        };
        if !same_value {
            changed.insert(path);
        }
    }
    let mut removed = FieldSet::default();
    for path in FieldSet::of(before).0 {
        if value_at(after, &path).is_none() {
            removed.insert(path);
        }
    }
    (changed, removed)
}

/// 409 Conflict with one `FieldManagerConflict` cause per field, worded as Kubernetes words it.
fn conflict(kind: &KindInfo, name: &str, conflicts: &[(String, FieldPath)]) -> ApiError {
    let count = conflicts.len();
    let plural = if count == 1 { "conflict" } else { "conflicts" };
    let mut message = format!("Apply failed with {count} {plural}:");
    let mut causes = Vec::new();
    for (manager, path) in conflicts {
        let what = format!("conflict with \"{manager}\" using {}", kind.api_version);
        message.push_str(&format!(" {what}: {}", display(path)));
        causes.push(StatusCause {
            reason: Some("FieldManagerConflict".to_owned()),
            message: Some(what),
            field: Some(display(path)),
        });
    }
    let mut status =
        agora_schemas::Status::failure(StatusReason::Conflict, message).with_object(kind.plural, Some(name));
    if let Some(details) = status.details.as_mut() {
        details.causes = causes;
    }
    ApiError(Box::new(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> FieldSet {
        let mut set = FieldSet::default();
        for p in paths {
            set.insert(p.split('.').map(str::to_owned).collect());
        }
        set
    }

    #[test]
    fn fields_v1_round_trips_and_marks_parents() {
        let fields = set(&["spec.cpus", "spec.upgradeStrategy", "spec.upgradeStrategy.maximumOverCapacity"]);
        let trie = fields.to_fields_v1();
        assert_eq!(
            trie,
            json!({"f:spec": {"f:cpus": {}, "f:upgradeStrategy": {".": {}, "f:maximumOverCapacity": {}}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&trie).unwrap(), fields);
    }

    #[test]
    fn list_element_keys_fold_into_the_list() {
        let trie = json!({"f:spec": {"f:healthChecks": {"k:{\"name\":\"a\"}": {".": {}, "f:path": {}}}}});
        assert_eq!(FieldSet::from_fields_v1(&trie).unwrap(), set(&["spec.healthChecks"]));
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
    }

    #[test]
    fn overlaps_finds_ancestors_and_descendants() {
        let fields = set(&["metadata.labels.a", "spec.cpus"]);
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<FieldPath>();
        assert!(fields.overlaps(&path("metadata.labels")));
        assert!(fields.overlaps(&path("spec.cpus")));
        assert!(fields.overlaps(&path("spec.cpus.x")));
        assert!(!fields.overlaps(&path("spec.mem")));
        assert!(!fields.overlaps(&path("metadata.labels.b")));
    }

    #[test]
    fn the_trie_of_a_created_object_is_its_shape() {
        let object = json!({"metadata": {"labels": {"a": "b"}, "annotations": {}}, "spec": {"cpus": 1, "ports": [1, 2], "upgradeStrategy": {"maximumOverCapacity": 1}}});
        assert_eq!(leaves_trie(&object), FieldSet::of(&object).to_fields_v1());
        assert_eq!(leaves_trie(&json!({})), json!({}));
    }

    #[test]
    fn the_view_trie_is_the_trie_of_the_view() {
        let objects = [
            json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"name": "a", "uid": "u", "resourceVersion": "3", "labels": {"x": "y"}}, "spec": {"cmd": "c"}, "status": {"phase": "Running"}}),
            json!({"apiVersion": "agora/v1", "kind": "App", "metadata": {"uid": "u", "creationTimestamp": "t"}, "spec": {}}),
            json!({"metadata": "odd", "spec": 1}),
            json!({}),
        ];
        for kind in agora_schemas::KINDS {
            for scope in [Scope::Main, Scope::Status] {
                for object in &objects {
                    assert_eq!(
                        view_trie(object, kind, scope),
                        leaves_trie(&managed_view(object, kind, scope)),
                        "{object}"
                    );
                }
            }
        }
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(same(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!same(&json!(1), &json!(1.5)));
    }
}
