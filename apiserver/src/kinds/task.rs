//! Tasks: fields only the server stamps.

use agora_schemas::{FieldError, FieldErrorKind};
use serde_json::Value;

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
