//! Deletes of one object or of a collection, with preconditions, propagation (finalizers hand an object to the
//! garbage collector) and dry runs.

use agora_schemas::{KindInfo, StatusCause, StatusDetails, StatusReason};
use axum::body::Bytes;
use serde_json::{Value, json};

use super::admission::dry_run;
use super::codec::{encode, meta_str, set_meta};
use super::error::{ApiError, ApiResult};
use super::read::Filter;
use super::route::{Query, Target};
use super::{ResourceApi, WRITE_ATTEMPTS, now};
use crate::store::{Compare, Op, Txn};

/// A `DeleteOptions` body with the query parameters that may stand in for its fields.
pub(super) struct DeleteOptions {
    /// The finalizer Foreground or Orphan propagation puts on the object; `None` for Background.
    policy_finalizer: Option<&'static str>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    /// Reads the body (empty, or a `DeleteOptions` object) and the query's `propagationPolicy`, `orphanDependents`
    /// and `dryRun`; the body wins where both say something.
    pub(super) fn parse(body: &Bytes, query: &Query) -> ApiResult<Self> {
        let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the delete options are not valid JSON: {e}")))?
        };
        if !options.is_object() {
            return Err(ApiError::bad_request("the delete options must be a JSON object (a DeleteOptions)"));
        }
        let orphan = match options.get("orphanDependents") {
            Some(Value::Bool(orphan)) => Some(*orphan),
            None | Some(Value::Null) => query.get("orphanDependents").map(|v| v == "true"),
            Some(other) => {
                return Err(ApiError::bad_request(format!("orphanDependents must be true or false, not {other}")));
            }
        };
        let policy = match options.get("propagationPolicy") {
            None | Some(Value::Null) => query.get("propagationPolicy").map(String::as_str),
            Some(Value::String(policy)) => Some(policy.as_str()),
            Some(other) => {
                return Err(ApiError::bad_request(format!("propagationPolicy must be a string, not {other}")));
            }
        };
        // Foreground and Orphan hand the object to the garbage collector through a finalizer; Background (the
        // default) deletes it now, and the collector removes its dependents afterwards.
        let policy_finalizer = match (policy, orphan) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request("propagationPolicy and orphanDependents cannot both be set"));
            }
            (None | Some("Background" | ""), None) | (None, Some(false)) => None,
            (Some("Foreground"), _) => Some(crate::gc::FOREGROUND),
            (Some("Orphan"), _) | (None, Some(true)) => Some(crate::gc::ORPHAN),
            (Some(other), _) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy must be Background, Foreground or Orphan, not {other:?}"
                )));
            }
        };
        let dry_run = match options.get("dryRun") {
            None | Some(Value::Null) => dry_run(query)?,
            Some(Value::Array(values)) => match values.as_slice() {
                [] => dry_run(query)?,
                [value] if value == "All" => true,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "dryRun must be [\"All\"] (the only value served), not {}",
                        Value::Array(values.clone())
                    )));
                }
            },
            Some(other) => {
                return Err(ApiError::bad_request(format!("dryRun must be a list, such as [\"All\"], not {other}")));
            }
        };
        let precondition = |field: &str| options.pointer(&format!("/preconditions/{field}")).and_then(Value::as_str);
        Ok(Self {
            policy_finalizer,
            uid: precondition("uid").map(str::to_owned),
            resource_version: precondition("resourceVersion").map(str::to_owned),
            dry_run,
        })
    }
}

impl ResourceApi {
    /// Deletes the object the target names: now, or (when it has finalizers, or propagation asks for the garbage
    /// collector) by marking it with a `deletionTimestamp`. Answers with its last state.
    pub(super) async fn delete(&self, target: &Target, options: &DeleteOptions) -> ApiResult<Value> {
        let kind = target.kind;
        let name = target.name();
        for _ in 0..WRITE_ATTEMPTS {
            let (kv, mut current) = self.current(target).await?;
            if let Some(finalizer) = options.policy_finalizer {
                if let Some(list) = current.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
                    if !list.iter().any(|f| f == finalizer) {
                        list.push(json!(finalizer));
                    }
                } else {
                    set_meta(&mut current, "finalizers", json!([finalizer]));
                }
            }
            if let Some(uid) = options.uid.as_deref().filter(|uid| Some(*uid) != meta_str(&current, "uid")) {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&current, "uid").unwrap_or_default()
                    ),
                ));
            }
            if let Some(rv) = options.resource_version.as_deref().filter(|rv| *rv != kv.mod_revision.to_string()) {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
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
                if options.dry_run {
                    return Ok(marked); // what the mark would store; the collector never sees it
                }
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
            if options.dry_run {
                return Ok(current); // what the delete would remove, still stored
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

    /// `DELETE` on a collection: every object the namespace and selectors take, each deleted as [`Self::delete`]
    /// does. Answers with the list of what was deleted (or marked); when some could not be, a `Status` naming each of
    /// them and why, with the reason of the first.
    pub(super) async fn delete_collection(
        &self,
        target: &Target,
        query: &Query,
        options: &DeleteOptions,
    ) -> ApiResult<Value> {
        if target.kind.namespaced && target.namespace.is_none() {
            // As in Kubernetes: one request does not empty every namespace.
            return Err(ApiError::method_not_allowed(
                "DELETE",
                &format!(
                    "{} of every namespace: delete one namespace's collection (/namespaces/{{ns}}/{})",
                    target.kind.plural, target.kind.plural
                ),
            ));
        }
        if options.uid.is_some() || options.resource_version.is_some() {
            return Err(ApiError::bad_request(
                "preconditions name one object: they cannot be used when deleting a collection",
            ));
        }
        let kind = target.kind;
        let filter = Filter::new(target, query)?;
        let (selected, revision) = self.select(target, &filter, |object| object).await?;
        let mut deleted = Vec::new();
        let mut failed: Vec<(String, ApiError)> = Vec::new();
        for object in &selected {
            let one = Target {
                kind,
                namespace: meta_str(object, "namespace").map(str::to_owned),
                name: meta_str(object, "name").map(str::to_owned),
                subresource: None,
            };
            match self.delete(&one, options).await {
                Ok(object) => deleted.push(object),
                // Deleted by someone else since the list: that is what was asked.
                Err(e) if e.0.code == 404 => {}
                Err(e) => failed.push((one.name().to_owned(), e)),
            }
        }
        if failed.is_empty() {
            return Ok(json!({
                "apiVersion": kind.api_version,
                "kind": format!("{}List", kind.kind),
                "metadata": { "resourceVersion": revision.to_string() },
                "items": deleted,
            }));
        }
        Err(partial_failure(kind, deleted.len(), &failed))
    }
}

/// The answer to a delete-collection that could not delete everything: the reason of the first failure, a message
/// counting what was and was not deleted and naming the latter, and a cause per object not deleted.
fn partial_failure(kind: &KindInfo, deleted: usize, failed: &[(String, ApiError)]) -> ApiError {
    let reason = failed.first().and_then(|(_, e)| e.0.reason).unwrap_or(StatusReason::InternalError);
    let names: Vec<&str> = failed.iter().map(|(name, _)| name.as_str()).collect();
    let mut status = agora_schemas::Status::failure(
        reason,
        format!(
            "deleted {deleted} of the {} {} selected; not deleted: {}",
            deleted + failed.len(),
            kind.plural,
            names.join(", ")
        ),
    );
    status.details = Some(StatusDetails {
        group: Some(kind.group.to_owned()),
        kind: Some(kind.plural.to_owned()),
        causes: failed
            .iter()
            .map(|(name, e)| StatusCause {
                reason: e.0.reason.map(|r| format!("{r:?}")),
                message: e.0.message.clone(),
                field: Some(format!("metadata.name={name}")),
            })
            .collect(),
        ..StatusDetails::default()
    });
    ApiError(Box::new(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_failure_names_what_was_not_deleted() {
        let kind = agora_schemas::kind_info("App").unwrap();
        let failed = vec![
            ("b".to_owned(), ApiError::conflict(kind, "b", "the object kept changing; try again")),
            ("d".to_owned(), ApiError::new(StatusReason::ServiceUnavailable, "the store is unavailable: gone")),
        ];
        let status = partial_failure(kind, 3, &failed).0;
        assert_eq!((status.code, status.reason), (409, Some(StatusReason::Conflict)));
        assert_eq!(status.message.as_deref(), Some("deleted 3 of the 5 apps selected; not deleted: b, d"));
        let causes = status.details.unwrap().causes;
        assert_eq!(causes.len(), 2);
        assert_eq!(causes[1].field.as_deref(), Some("metadata.name=d"));
        assert_eq!(causes[1].reason.as_deref(), Some("ServiceUnavailable"));
        assert!(causes[0].message.as_deref().unwrap().contains("kept changing"));
    }
}
