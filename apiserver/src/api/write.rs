//! Writes: create, replace, patch (merge and JSON), and the scale subresource; every update goes through one
//! read-change-compare-and-swap loop.

use agora_schemas::{FieldError, FieldErrorKind, KindInfo, StatusReason};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use serde_json::{Map, Value, json};

use super::admission::{Admission, Format, SERVER_FIELDS, check_type, parse_body, parse_value};
use super::codec::{MAX_OBJECT_BYTES, encode_checked, meta_mut, meta_str, set_managed_fields, set_meta};
use super::decode;
use super::error::{ApiError, ApiResult};
use super::managed::{self, Manage, Scope};
use super::patch;
use super::route::Target;
use super::{PATCH_TYPES, ResourceApi, WRITE_ATTEMPTS, media_type, now, random_suffix};
use crate::store::{Compare, KeyValue, Op, Txn};

/// How an update turns the stored object into the desired one, and whether that (with the admission after it) can
/// cost far more than an ordinary request (JSON patches, large bodies): then it runs off the async workers.
pub(super) struct Change {
    apply: Box<ChangeFn>,
    heavy: bool,
}

pub(super) type ChangeFn = dyn Fn(&Value) -> ApiResult<Value> + Send + Sync;

impl Change {
    pub(super) fn inline(apply: impl Fn(&Value) -> ApiResult<Value> + Send + Sync + 'static) -> Self {
        Self { apply: Box::new(apply), heavy: false }
    }

    pub(super) fn heavy(apply: impl Fn(&Value) -> ApiResult<Value> + Send + Sync + 'static) -> Self {
        Self { apply: Box::new(apply), heavy: true }
    }
}

impl ResourceApi {
    pub(super) async fn create(
        &self,
        target: &Target,
        body: Bytes,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let mut object = parse_body(&body, admission).await?;
        check_type(target.kind, &mut object)?;
        self.create_object(target, object, admission, manage).await
    }

    /// Creates `object` (a POST body, or the configuration of an apply that finds nothing to update).
    pub(super) async fn create_object(
        &self,
        target: &Target,
        mut object: Value,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let kind = target.kind;
        let requested = object.pointer("/metadata/managedFields").cloned();
        let meta = meta_mut(&mut object);
        match (&target.namespace, meta.get("namespace").and_then(Value::as_str)) {
            (Some(path_ns), Some(body_ns)) if path_ns != body_ns => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({body_ns}) does not match the namespace on the request ({path_ns})"
                )));
            }
            (Some(path_ns), _) => {
                meta.insert("namespace".to_owned(), json!(path_ns));
            }
            (None, _) if kind.namespaced => {
                return Err(ApiError::bad_request(format!(
                    "{} are namespaced: create them under /namespaces/{{ns}}/",
                    kind.plural
                )));
            }
            (None, _) => {}
        }
        for field in SERVER_FIELDS {
            meta.remove(field);
        }
        meta.insert("uid".to_owned(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".to_owned(), json!(now().to_string()));
        meta.insert("generation".to_owned(), json!(1));
        let generate = meta.get("generateName").and_then(Value::as_str).map(str::to_owned);
        crate::kinds::on_create(kind, &mut object);
        if kind.subresources.contains(&"status")
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        let heavy = patch::encoded_len(&object, decode::INLINE_BYTES).is_none();
        for _ in 0..WRITE_ATTEMPTS {
            let mut candidate = object.clone();
            let name = match (meta_str(&candidate, "name"), &generate) {
                (Some(name), _) => name.to_owned(),
                (None, Some(prefix)) => {
                    let name = format!("{prefix}{}", random_suffix());
                    set_meta(&mut candidate, "name", json!(name));
                    name
                }
                (None, None) => String::new(),
            };
            // Admission of a large object is heavy: off the async workers, as its decoding was.
            let (admitted, bytes) = decode::in_place(heavy, || {
                let mut admitted = admission.admit(kind, &name, candidate)?;
                kind_rules(kind, &name, None, &admitted)?;
                let managed = managed::record(kind, &name, None, requested.as_ref(), &admitted, manage)?;
                set_managed_fields(&mut admitted, managed);
                let bytes = encode_checked(kind, &name, &admitted)?;
                Ok::<_, ApiError>((admitted, bytes))
            })
            .await?;
            self.check_namespace(target, &name, None, &admitted).await?;
            let key = self.key(target, &name);
            if admission.dry_run {
                // What a create would store, unwritten: a taken name is still AlreadyExists (or, for a generated
                // name, another try), and the object has no resourceVersion, as in Kubernetes.
                if self.store.get(&key).await?.is_none() {
                    return Ok(admitted);
                }
            } else {
                let response =
                    self.store.txn(Txn::new(vec![Compare::Absent(key.clone())], vec![Op::Put(key, bytes)])).await?;
                if response.succeeded {
                    let mut created = admitted;
                    set_meta(&mut created, "resourceVersion", json!(response.revision.to_string()));
                    return Ok(created);
                }
            }
            if meta_str(&object, "name").is_some() {
                return Err(ApiError::already_exists(kind, &name));
            }
        }
        Err(ApiError::new(StatusReason::AlreadyExists, "could not generate a unique name; try again"))
    }

    /// PUT of the object (`status_only` false: status is kept from the stored object) or of `/status` (only status
    /// is taken from the body).
    pub(super) async fn replace(
        &self,
        target: &Target,
        body: Bytes,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let mut object = parse_body(&body, admission).await?;
        check_type(target.kind, &mut object)?;
        if let Some(name) = meta_str(&object, "name").filter(|n| *n != target.name()) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                target.name()
            )));
        }
        if let (Some(ns), Some(body_ns)) = (&target.namespace, meta_str(&object, "namespace"))
            && ns != body_ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({body_ns}) does not match the namespace on the request ({ns})"
            )));
        }
        let precondition = meta_str(&object, "resourceVersion").map(str::to_owned);
        self.update(target, precondition, Change::inline(move |_| Ok(object.clone())), admission, manage).await
    }

    pub(super) async fn patch(
        &self,
        target: &Target,
        headers: &HeaderMap,
        body: Bytes,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let media = media_type(headers);
        if !PATCH_TYPES.contains(&media.as_str()) {
            return Err(ApiError::new(
                StatusReason::UnsupportedMediaType,
                format!(
                    "the body of the request was in an unknown format ({media:?}) - accepted media types include: {}",
                    PATCH_TYPES.join(", ")
                ),
            ));
        }
        let patch = parse_value(&body, "the patch", Format::Json, admission).await?;
        let json_patch = if media == PATCH_TYPES[1] {
            Some(serde_json::from_value::<json_patch::Patch>(patch.clone()).map_err(|e| {
                ApiError::bad_request(format!("the patch is not a JSON patch (a list of {{op, path, value}}): {e}"))
            })?)
        } else {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            None
        };
        let kind = target.kind;
        let name = target.name().to_owned();
        // A resourceVersion in a merge patch is a precondition, as in Kubernetes (a JSON patch that sets one is
        // checked against the stored object in `update`).
        let precondition = patch.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
        // A JSON patch's operations can cost far more than its size: they run on the blocking pool, bounded.
        let heavy = json_patch.is_some() || body.len() > decode::INLINE_BYTES;
        let change = move |current: &Value| {
            let mut patched = current.clone();
            match &json_patch {
                Some(ops) => patch::apply(&mut patched, ops, MAX_OBJECT_BYTES).map_err(|e| match e {
                    patch::Error::TooLarge { op, limit } => ApiError::new(
                        StatusReason::RequestEntityTooLarge,
                        format!("the JSON patch would make the object larger than {limit} bytes (at operation {op})"),
                    ),
                    patch::Error::Invalid(message) => ApiError::invalid(
                        kind,
                        &name,
                        &[FieldError {
                            path: ".".into(),
                            kind: FieldErrorKind::Invalid,
                            message: format!("the JSON patch cannot be applied: {message}"),
                        }],
                    ),
                })?,
                None => json_patch::merge(&mut patched, &patch),
            }
            if !patched.is_object() {
                return Err(ApiError::bad_request("the patch must leave an object"));
            }
            Ok(patched)
        };
        let change = if heavy { Change::heavy(change) } else { Change::inline(change) };
        self.update(target, precondition, change, admission, manage).await
    }

    /// PUT or PATCH of `/scale`: the change is made to the `Scale` view and lands in `spec.instances`.
    pub(super) async fn scale(
        &self,
        target: &Target,
        method: &Method,
        headers: &HeaderMap,
        body: Bytes,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let request = parse_body(&body, admission).await?;
        let kind = target.kind;
        let name = target.name().to_owned();
        let merge = method == Method::PUT || media_type(headers) == PATCH_TYPES[0];
        if !merge {
            return Err(ApiError::new(
                StatusReason::UnsupportedMediaType,
                format!("the scale subresource accepts {} (or PUT of a Scale)", PATCH_TYPES[0]),
            ));
        }
        let precondition = request.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
        self.update(
            target,
            precondition,
            Change::inline(move |current: &Value| {
                let mut scale = scale_of(current);
                json_patch::merge(&mut scale, &request);
                let replicas = match scale.pointer("/spec/replicas") {
                    Some(Value::Number(n)) if n.as_i64().is_some_and(|r| (0..=i64::from(i32::MAX)).contains(&r)) => {
                        n.clone()
                    }
                    other => {
                        let message = format!(
                            "must be a non-negative integer, got {}",
                            other.map_or("nothing".to_owned(), Value::to_string)
                        );
                        return Err(ApiError::invalid(
                            kind,
                            &name,
                            &[FieldError { path: "spec.replicas".into(), kind: FieldErrorKind::Invalid, message }],
                        ));
                    }
                };
                let mut next = current.clone();
                next["spec"]["instances"] = Value::Number(replicas);
                Ok(next)
            }),
            admission,
            manage,
        )
        .await
    }

    /// The synchronous heart of an update: the change, its checks, admission, managed fields, the bytes to store.
    /// `None` when nothing would change. Runs where [`decode::in_place`] puts it.
    #[allow(clippy::too_many_arguments, reason = "the parts of one update")]
    pub(super) fn prepare(
        &self,
        target: &Target,
        precondition: Option<&str>,
        kv: &KeyValue,
        current: &Value,
        change: &Change,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Option<(Value, String, Op)>> {
        let kind = target.kind;
        let name = target.name();
        let status_only = manage.scope() == Scope::Status;
        let mut desired = (change.apply)(current)?;
        check_type(kind, &mut desired)?;
        // A JSON patch may set the resourceVersion: it is a precondition, as with a PUT.
        if precondition.is_none()
            && let Some(rv) = meta_str(&desired, "resourceVersion").filter(|rv| *rv != kv.mod_revision.to_string())
        {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!(
                    "the object has been modified (resourceVersion {rv} is not the stored {}); please apply your changes to the latest version and try again",
                    kv.mod_revision
                ),
            ));
        }
        for (field, stored) in [("name", Some(name)), ("namespace", target.namespace.as_deref())] {
            if let Some(asked) = meta_str(&desired, field).filter(|asked| Some(*asked) != stored) {
                return Err(ApiError::invalid(
                    kind,
                    name,
                    &[FieldError {
                        path: format!("metadata.{field}"),
                        kind: FieldErrorKind::Invalid,
                        message: format!(
                            "is immutable: the object's {field} is {:?}, not {asked:?} (another name is another \
                             object: create it)",
                            stored.unwrap_or_default()
                        ),
                    }],
                ));
            }
        }
        let requested = desired.pointer("/metadata/managedFields").cloned();
        if let Some(uid) = meta_str(&desired, "uid").filter(|uid| Some(*uid) != meta_str(current, "uid")) {
            return Err(ApiError::conflict(kind, name, &format!("the uid in the request ({uid}) is not the object's")));
        }
        let mut next = if status_only {
            let mut next = current.clone();
            match desired.get("status") {
                Some(status) => next["status"] = status.clone(),
                None => {
                    if let Some(map) = next.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            next
        } else {
            let mut next = desired;
            let kept_status = current.get("status").cloned();
            if let Some(map) = next.as_object_mut() {
                match kept_status {
                    Some(status) if kind.subresources.contains(&"status") => {
                        map.insert("status".to_owned(), status);
                    }
                    _ if kind.subresources.contains(&"status") => {
                        map.remove("status");
                    }
                    _ => {}
                }
            }
            next
        };
        // The server's fields come from the stored object, whatever the client sent.
        for field in SERVER_FIELDS {
            match current.get("metadata").and_then(|m| m.get(field)) {
                Some(value) => set_meta(&mut next, field, value.clone()),
                None => {
                    meta_mut(&mut next).remove(field);
                }
            }
        }
        set_meta(&mut next, "name", json!(name));
        if let Some(ns) = &target.namespace {
            set_meta(&mut next, "namespace", json!(ns));
        }
        let mut admitted = admission.admit(kind, name, next)?;
        kind_rules(kind, name, Some(current), &admitted)?;
        if admitted.get("spec") != current.get("spec") {
            let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            set_meta(&mut admitted, "generation", json!(generation));
        }
        let managed = managed::record(kind, name, Some(current), requested.as_ref(), &admitted, manage)?;
        set_managed_fields(&mut admitted, managed);
        meta_mut(&mut admitted).remove("resourceVersion");
        let mut unchanged = current.clone();
        meta_mut(&mut unchanged).remove("resourceVersion");
        if admitted == unchanged {
            return Ok(None);
        }
        let key = self.key(target, name);
        let deleting = current.pointer("/metadata/deletionTimestamp").is_some()
            && admitted.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
        let op = if deleting {
            Op::Delete(key.clone())
        } else {
            Op::Put(key.clone(), encode_checked(kind, name, &admitted)?)
        };
        Ok(Some((admitted, key, op)))
    }

    /// Read, change, compare-and-swap; retried when another writer got there first, unless the client pinned a
    /// resourceVersion (then it is a 409).
    pub(super) async fn update(
        &self,
        target: &Target,
        precondition: Option<String>,
        change: Change,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let kind = target.kind;
        let name = target.name();
        // The first read is answered from the watch cache where it keeps the objects (etcd), as Kubernetes'
        // GuaranteedUpdate does; whatever a possibly stale copy decides without a compare-and-swap (a conflict with
        // the client's resourceVersion, nothing to change, a dry run) is decided again from the store.
        let mut from_cache = !admission.dry_run;
        for _ in 0..WRITE_ATTEMPTS {
            let cached = if from_cache { self.cached(target) } else { None };
            let (kv, current, cached) = match cached {
                Some((kv, current)) => (kv, current, true),
                None => {
                    let (kv, current) = self.current(target).await?;
                    (kv, current, false)
                }
            };
            from_cache = false;
            if precondition.as_ref().is_some_and(|rv| *rv != kv.mod_revision.to_string()) {
                if cached {
                    continue;
                }
                return Err(ApiError::stale(kind, name));
            }
            let prepared = decode::in_place(change.heavy, || {
                self.prepare(target, precondition.as_deref(), &kv, &current, &change, admission, manage)
            });
            let prepared = match prepared.await {
                Ok(None) | Err(_) if cached => continue,
                prepared => prepared?,
            };
            let Some((mut admitted, key, op)) = prepared else { return Ok(current) };
            if matches!(op, Op::Put(..)) {
                self.check_namespace(target, name, Some(&current), &admitted).await?;
            }
            if admission.dry_run {
                // What the update would store, unwritten, at the revision it was decided against.
                set_meta(&mut admitted, "resourceVersion", json!(kv.mod_revision.to_string()));
                return Ok(admitted);
            }
            let written = match &op {
                Op::Put(_, value) => Some(value.clone()),
                Op::Delete(_) => None,
            };
            let response =
                self.store.txn(Txn::new(vec![Compare::ModRevision(key.clone(), kv.mod_revision)], vec![op])).await?;
            if response.succeeded {
                self.watches.wrote(kind, &key, written, response.revision);
                set_meta(&mut admitted, "resourceVersion", json!(response.revision.to_string()));
                return Ok(admitted);
            }
            if precondition.is_some() {
                return Err(ApiError::stale(kind, name));
            }
        }
        Err(ApiError::conflict(kind, name, "the object kept changing; try again"))
    }
}

/// The `autoscaling/v1` `Scale` view of an App: `spec.replicas` is `spec.instances`, `status.replicas` the running
/// tasks.
pub(super) fn scale_of(object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let keep = ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"];
    let metadata: Map<String, Value> = meta
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| keep.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": metadata,
        "spec": { "replicas": object.pointer("/spec/instances").cloned().unwrap_or(json!(1)) },
        "status": { "replicas": object.pointer("/status/tasksRunning").cloned().unwrap_or(json!(0)) },
    })
}

/// The rules of the object's kind on a write ([`crate::kinds::check_write`]), as a 422.
fn kind_rules(kind: &KindInfo, name: &str, current: Option<&Value>, admitted: &Value) -> ApiResult<()> {
    crate::kinds::check_write(kind, current, admitted).map_err(|errors| ApiError::invalid(kind, name, &errors))
}
