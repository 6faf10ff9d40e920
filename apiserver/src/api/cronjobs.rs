//! What the apiserver knows of CronJobs beyond one object: `POST cronjobs/{name}/trigger` (a manual run, claimed
//! by chronos exactly once per trigger id), and the admission check that a job's `parents` close no cycle in its
//! namespace (a 422 naming the cycle).

use agora_schemas::{FieldError, FieldErrorKind, TRIGGER_ANNOTATION_PREFIX};
use axum::body::Bytes;
use serde_json::{Value, json};

use super::admission::Admission;
use super::codec::{meta_str, stored_object};
use super::error::{ApiError, ApiResult};
use super::managed::Manage;
use super::route::Target;
use super::write::Change;
use super::{ResourceApi, now, random_suffix};
use crate::store::RangeRequest;

/// The longest trigger id (it becomes part of a Task's name and of an annotation's key).
const MAX_TRIGGER_ID: usize = 20;

/// What a trigger request may carry.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerRequest {
    /// The trigger's id (lowercase letters, digits and `-`); the server makes one when it is absent. Sending the
    /// same id again answers the same single run.
    #[serde(default)]
    id: Option<String>,
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_TRIGGER_ID {
        return Err(format!("must be 1 to {MAX_TRIGGER_ID} characters, not {}", id.len()));
    }
    if !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(format!("{id:?} may hold only lowercase letters, digits and '-'"));
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err(format!("{id:?} must start and end with a letter or digit"));
    }
    Ok(())
}

/// Whether the job already knows trigger `id`: pending (its annotation) or run (a record in `status.runs`, kept
/// while the run is in the job's history). Such a trigger is not recorded again.
fn trigger_known(job: &Value, id: &str) -> bool {
    let pending = job
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(&format!("{TRIGGER_ANNOTATION_PREFIX}{id}")));
    let recorded = job
        .pointer("/status/runs")
        .and_then(Value::as_array)
        .is_some_and(|runs| runs.iter().any(|r| r.get("trigger").and_then(Value::as_str) == Some(id)));
    pending || recorded
}

impl ResourceApi {
    /// `POST cronjobs/{name}/trigger`: records the request on the job (`trigger.agora.dev/<id>: <now>`), which
    /// chronos turns into one run named `<job>-manual-<id>-0` — whatever the schedule, even when the job is disabled —
    /// and then removes. Answers the job as stored. The id is an idempotency key: sending it again while its run is
    /// pending, running or in the job's history answers the same way and starts nothing.
    pub(super) async fn trigger(
        &self,
        target: &Target,
        body: Bytes,
        admission: &Admission,
        manage: &Manage,
    ) -> ApiResult<Value> {
        let kind = target.kind;
        let name = target.name().to_owned();
        let request: TriggerRequest = if body.iter().all(u8::is_ascii_whitespace) {
            TriggerRequest::default()
        } else {
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)).map_err(|e| {
                if e.inner().is_syntax() || e.inner().is_eof() {
                    return ApiError::bad_request(format!("the trigger request is not JSON: {}", e.inner()));
                }
                let path = agora_schemas::manifest::display_path(e.path());
                let message = agora_schemas::manifest::humanize_serde_message(&e.inner().to_string());
                ApiError::invalid(kind, &name, &[FieldError { path, kind: FieldErrorKind::Invalid, message }])
            })?
        };
        let id = match request.id {
            Some(id) => {
                check_id(&id).map_err(|message| {
                    ApiError::invalid(
                        kind,
                        &name,
                        &[FieldError { path: "id".into(), kind: FieldErrorKind::Invalid, message }],
                    )
                })?;
                id
            }
            None => random_suffix(),
        };
        // An idempotency key: whatever the id's run is doing — pending, running, finished — the same request
        // answers the same single run. Only an id never seen is recorded.
        let task = format!("{name}-manual-{id}-0");
        let namespace = target.namespace.as_deref();
        if self.store.get(&self.keys.object_key("tasks", namespace, &task)).await?.is_some() {
            let (_, current) = self.current(target).await?;
            return Ok(current);
        }
        let annotation = format!("{TRIGGER_ANNOTATION_PREFIX}{id}");
        let requested = now().to_string();
        self.update(
            target,
            None,
            Change::inline(move |current: &Value| {
                let mut next = current.clone();
                if trigger_known(current, &id) {
                    return Ok(next);
                }
                let meta = next["metadata"].as_object_mut().ok_or_else(|| ApiError::bad_request("no metadata"))?;
                let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
                annotations[&annotation] = json!(requested);
                Ok(next)
            }),
            admission,
            manage,
        )
        .await
    }

    /// The kind's rules that need the other objects of its kind in the namespace ([`crate::kinds`]): a CronJob's
    /// parents must not close a dependency cycle. Read only when the write can break them.
    pub(super) async fn check_namespace(
        &self,
        target: &Target,
        name: &str,
        current: Option<&Value>,
        admitted: &Value,
    ) -> ApiResult<()> {
        if !crate::kinds::needs_namespace_check(target.kind, current, admitted) {
            return Ok(());
        }
        let namespace = meta_str(admitted, "namespace").or(target.namespace.as_deref()).unwrap_or("default");
        let prefix = self.keys.namespace_prefix(target.kind.storage, namespace);
        let mut jobs = std::collections::HashMap::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    start_after: after.take(),
                    limit: Some(500),
                    revision: None,
                })
                .await?;
            for kv in &page.kvs {
                let object = stored_object(kv)?;
                if let Some(job) = meta_str(&object, "name") {
                    jobs.insert(job.to_owned(), crate::kinds::cronjob::parents(&object));
                }
            }
            match (page.more, page.kvs.last()) {
                (true, Some(last)) => after = Some(last.key.clone()),
                _ => break,
            }
        }
        crate::kinds::cronjob::check_cycle(name, admitted, jobs)
            .map_err(|errors| ApiError::invalid(target.kind, name, &errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_ids_are_checked() {
        assert!(check_id("abc-12").is_ok());
        assert!(check_id("").unwrap_err().contains("1 to 20"));
        assert!(check_id("a".repeat(21).as_str()).is_err());
        assert!(check_id("Abc").unwrap_err().contains("lowercase"));
        assert!(check_id("-a").unwrap_err().contains("start and end"));
    }

    #[test]
    fn a_trigger_pending_or_run_is_known_and_not_recorded_again() {
        let fresh = json!({"metadata": {"name": "j"}});
        assert!(!trigger_known(&fresh, "now"));
        let pending = json!({"metadata": {"annotations": {"trigger.agora.dev/now": "2026-01-01T00:00:00Z"}}});
        assert!(trigger_known(&pending, "now"));
        assert!(!trigger_known(&pending, "later"));
        let run = json!({"metadata": {}, "status": {"runs": [{"task": "j-manual-now-0", "trigger": "now"}]}});
        assert!(trigger_known(&run, "now"));
        assert!(!trigger_known(&run, "no"));
    }
}
