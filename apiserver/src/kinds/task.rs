//! Tasks: fields only the server stamps, and the finalizer a bound task carries from its creation.

use agora_schemas::names::AGENT_FINALIZER;
use agora_schemas::{FieldError, FieldErrorKind};
use serde_json::{Value, json};

/// A Task bound to an agent (`spec.agent`) carries the agent's finalizer from its creation: its deletion waits until
/// the agent has said nothing of it runs there (as a Pod bound to a node waits for its kubelet) — even when it is
/// deleted before the agent first saw it — and the agent never spends a write adding it.
pub fn on_create(object: &mut Value) {
    let bound = object.pointer("/spec/agent").and_then(Value::as_str).is_some_and(|agent| !agent.is_empty());
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut).filter(|_| bound) else { return };
    match meta.get_mut("finalizers").and_then(Value::as_array_mut) {
        Some(list) if list.iter().any(|f| f == AGENT_FINALIZER) => {}
        Some(list) => list.push(json!(AGENT_FINALIZER)),
        None => {
            meta.insert("finalizers".to_owned(), json!([AGENT_FINALIZER]));
        }
    }
}

/// A Task's `spec.offer` names the offer it was launched from, and only accepting that offer (`POST
/// offers/NAME/accept`) sets it — so a framework can tell its own Tasks from ones written directly under a name it
/// would use. No create or update may set or change it.
///
/// # Errors
/// `spec.offer`, forbidden.
pub fn check_write(current: Option<&Value>, admitted: &Value) -> Result<(), Vec<FieldError>> {
    let offer = |object: &Value| object.pointer("/spec/offer").cloned().filter(|o| !o.is_null());
    let (before, after) = (current.and_then(offer), offer(admitted));
    if before == after {
        return Ok(());
    }
    let message = match &before {
        None => "is set by the apiserver when a framework accepts an offer (POST offers/NAME/accept); a Task \
                 written directly has none"
            .to_owned(),
        Some(was) => format!("is immutable: the task was launched from offer {was}"),
    };
    Err(vec![FieldError { path: "spec.offer".to_owned(), kind: FieldErrorKind::Forbidden, message }])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_bound_task_carries_the_agents_finalizer_from_its_creation() {
        let mut bound = json!({"metadata": {"name": "t"}, "spec": {"agent": "a1"}});
        on_create(&mut bound);
        assert_eq!(bound["metadata"]["finalizers"], json!([AGENT_FINALIZER]));
        on_create(&mut bound);
        assert_eq!(bound["metadata"]["finalizers"], json!([AGENT_FINALIZER]), "once");
        let mut theirs = json!({"metadata": {"finalizers": ["x/y"]}, "spec": {"agent": "a1"}});
        on_create(&mut theirs);
        assert_eq!(theirs["metadata"]["finalizers"], json!(["x/y", AGENT_FINALIZER]), "beside the user's own");
        for mut unbound in [json!({"metadata": {}, "spec": {}}), json!({"metadata": {}, "spec": {"agent": ""}})] {
            on_create(&mut unbound);
            assert!(unbound["metadata"].get("finalizers").is_none(), "{unbound}");
        }
    }

    #[test]
    fn only_the_server_sets_or_changes_the_offer() {
        let plain = json!({"spec": {"cmd": "true"}});
        let launched = json!({"spec": {"cmd": "true", "offer": "o1"}});
        assert!(check_write(None, &plain).is_ok());
        assert!(check_write(Some(&launched), &launched).is_ok(), "kept as it was");
        let set = check_write(None, &launched).unwrap_err();
        assert_eq!((set[0].path.as_str(), set[0].kind), ("spec.offer", FieldErrorKind::Forbidden));
        let moved = check_write(Some(&launched), &json!({"spec": {"offer": "o2"}})).unwrap_err();
        assert!(moved[0].message.contains("launched from offer \"o1\""), "{}", moved[0].message);
        assert!(check_write(Some(&launched), &plain).is_err(), "nor removed");
    }
}
