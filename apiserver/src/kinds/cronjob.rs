//! CronJobs: their parents must not close a dependency cycle among the jobs of their namespace.

use std::collections::HashMap;

use agora_schemas::{FieldError, FieldErrorKind, find_cycle};
use serde_json::Value;

/// A job's `spec.parents`.
#[must_use]
pub fn parents(object: &Value) -> Vec<String> {
    object
        .pointer("/spec/parents")
        .and_then(Value::as_array)
        .map(|p| p.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether a write can close a cycle: a new job with parents, or a change of a job's parents.
#[must_use]
pub fn parents_changed(current: Option<&Value>, admitted: &Value) -> bool {
    match current {
        None => !parents(admitted).is_empty(),
        Some(current) => parents(current) != parents(admitted),
    }
}

/// Whether job `name` with `admitted`'s parents, among the namespace's `jobs` (each name with its parents), closes a
/// cycle.
///
/// # Errors
/// `spec.parents`, naming the cycle.
pub fn check_cycle(
    name: &str,
    admitted: &Value,
    mut jobs: HashMap<String, Vec<String>>,
) -> Result<(), Vec<FieldError>> {
    jobs.insert(name.to_owned(), parents(admitted));
    match find_cycle(name, |job| jobs.get(job).cloned()) {
        None => Ok(()),
        Some(cycle) => Err(vec![FieldError {
            path: "spec.parents".into(),
            kind: FieldErrorKind::Invalid,
            message: format!("the parents form a dependency cycle: {}", cycle.join(" → ")),
        }]),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_new_parents_need_the_namespace_and_a_cycle_is_named() {
        let orphan = json!({"spec": {}});
        let child = json!({"spec": {"parents": ["a"]}});
        assert!(!parents_changed(None, &orphan));
        assert!(parents_changed(None, &child));
        assert!(!parents_changed(Some(&child), &child));
        assert!(parents_changed(Some(&orphan), &child));
        let jobs: HashMap<String, Vec<String>> = [("a".to_owned(), vec!["b".to_owned()])].into();
        assert!(check_cycle("c", &child, jobs.clone()).is_ok());
        let errors = check_cycle("b", &child, jobs).unwrap_err();
        assert!(errors[0].message.contains("dependency cycle"), "{}", errors[0].message);
    }
}
