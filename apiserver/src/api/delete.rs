//! Deletes, with preconditions and propagation (finalizers hand an object to the garbage collector).

use axum::body::Bytes;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, ResourceApi, Target, WRITE_ATTEMPTS, encode, meta_str, now, set_meta};
use crate::store::{Compare, Op, Txn};

impl ResourceApi {
    pub(super) async fn delete(&self, target: &Target, body: Bytes) -> ApiResult<Value> {
        let kind = target.kind;
        let name = target.name();
        let options: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the delete options are not valid JSON: {e}")))?
        };
        // Foreground and Orphan hand the object to the garbage collector through a finalizer; Background (the
        // default) deletes it now, and the collector removes its dependents afterwards.
        let policy_finalizer = match options.get("propagationPolicy").and_then(Value::as_str) {
            None | Some("Background") => None,
            Some("Foreground") => Some(crate::gc::FOREGROUND),
            Some("Orphan") => Some(crate::gc::ORPHAN),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy must be Background, Foreground or Orphan, not {other:?}"
                )));
            }
        };
        for _ in 0..WRITE_ATTEMPTS {
            let (kv, mut current) = self.current(target).await?;
            if let Some(finalizer) = policy_finalizer {
                if let Some(list) = current.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
                    if !list.iter().any(|f| f == finalizer) {
                        list.push(json!(finalizer));
                    }
                } else {
                    set_meta(&mut current, "finalizers", json!([finalizer]));
                }
            }
            if let Some(uid) = options.pointer("/preconditions/uid").and_then(Value::as_str) {
                if Some(uid) != meta_str(&current, "uid") {
                    return Err(ApiError::conflict(
                        kind,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta_str(&current, "uid").unwrap_or_default()
                        ),
                    ));
                }
            }
            if let Some(rv) = options.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
                if rv != kv.mod_revision.to_string() {
                    return Err(ApiError::conflict(
                        kind,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            kv.mod_revision
                        ),
                    ));
                }
            }
            let key = self.key(target, name);
            let has_finalizers =
                current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
            if has_finalizers {
                // Marked for deletion; the object goes when its last finalizer is removed.
                if current.pointer("/metadata/deletionTimestamp").is_some() {
                    return Ok(current);
                }
                let mut marked = current.clone();
                set_meta(&mut marked, "deletionTimestamp", json!(now().to_string()));
                set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
                let response = self
                    .store
                    .txn(Txn::new(
                        vec![Compare::ModRevision(key.clone(), kv.mod_revision)],
                        vec![Op::Put(key, encode(&marked))],
                    ))
                    .await?;
                if response.succeeded {
                    set_meta(&mut marked, "resourceVersion", json!(response.revision.to_string()));
                    return Ok(marked);
                }
                continue;
            }
            let response = self
                .store
                .txn(Txn::new(vec![Compare::ModRevision(key.clone(), kv.mod_revision)], vec![Op::Delete(key)]))
                .await?;
            if response.succeeded {
                return Ok(current);
            }
        }
        Err(ApiError::conflict(kind, name, "the object kept changing; try again"))
    }
}
