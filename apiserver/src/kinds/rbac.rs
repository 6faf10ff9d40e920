//! RBAC's bindings: a binding's `roleRef` never changes (as in Kubernetes: giving subjects another role is another
//! binding, so a binding seen granting one role cannot silently grant a wider one).

use agora_schemas::FieldError;
use serde_json::Value;

/// An update may not change a binding's `roleRef`.
///
/// # Errors
/// `roleRef`, forbidden.
pub fn check_write(current: Option<&Value>, admitted: &Value) -> Result<(), Vec<FieldError>> {
    super::immutable(
        current,
        admitted,
        "roleRef",
        "a binding's roleRef is immutable: delete the binding and create another",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_bindings_role_is_fixed_once_made() {
        let made = json!({"roleRef": {"kind": "Role", "name": "view"}, "subjects": []});
        let more_subjects =
            json!({"roleRef": {"kind": "Role", "name": "view"}, "subjects": [{"kind": "User", "name": "a"}]});
        assert!(check_write(None, &made).is_ok());
        assert!(check_write(Some(&made), &more_subjects).is_ok(), "its subjects may change");
        let wider = json!({"roleRef": {"kind": "ClusterRole", "name": "admin"}, "subjects": []});
        assert_eq!(check_write(Some(&made), &wider).unwrap_err()[0].path, "roleRef");
    }
}
