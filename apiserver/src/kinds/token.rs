//! Tokens: a token's spec never changes. What a principal's token proves is fixed when it is made; to change it,
//! revoke it and make another (so a token seen working once cannot be re-pointed at another principal).

use agora_schemas::FieldError;
use serde_json::Value;

/// An update may not change a Token's spec.
///
/// # Errors
/// `spec`, forbidden.
pub fn check_write(current: Option<&Value>, admitted: &Value) -> Result<(), Vec<FieldError>> {
    super::immutable(
        current,
        admitted,
        "spec",
        "a token's spec is immutable: revoke it (agora token revoke) and create another",
    )
}

#[cfg(test)]
mod tests {
    use agora_schemas::FieldErrorKind;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_tokens_spec_is_fixed_once_made() {
        let made = json!({"metadata": {"name": "t"}, "spec": {"principal": "alice", "sha256": "a"}});
        assert!(check_write(None, &made).is_ok());
        let mut labelled = made.clone();
        labelled["metadata"]["labels"] = json!({"team": "a"});
        assert!(check_write(Some(&made), &labelled).is_ok(), "its metadata may change");
        let repointed = json!({"metadata": {"name": "t"}, "spec": {"principal": "admin", "sha256": "a"}});
        let errors = check_write(Some(&made), &repointed).unwrap_err();
        assert_eq!((errors[0].path.as_str(), errors[0].kind), ("spec", FieldErrorKind::Forbidden));
    }
}
