//! What particular kinds add to the generic API, as Kubernetes' per-kind strategies do: rules on a write that the
//! schema cannot state because they depend on what the object replaces, or on the other objects of its namespace.
//!
//! A kind's module sees objects as JSON and answers with field errors; it never reaches into the API (the store, the
//! handlers, their errors). The API calls [`on_create`] on every object it creates (what the server adds to a new
//! object of the kind), [`check_write`] on every create and update, and — when
//! [`needs_namespace_check`] says so — reads the namespace and hands it to the kind (a CronJob's parents must not
//! close a cycle). Subresources are declared with each kind in `agora-schemas` (`SUBRESOURCES`).

pub mod cronjob;
pub mod rbac;
pub mod task;
pub mod token;

use agora_schemas::{FieldError, KindInfo};
use serde_json::Value;

/// An update may not change `field` (a top-level field: `spec`, `roleRef`): its error says `why`.
///
/// # Errors
/// `field`, forbidden.
fn immutable(current: Option<&Value>, admitted: &Value, field: &str, why: &str) -> Result<(), Vec<FieldError>> {
    match current {
        Some(current) if current.get(field) != admitted.get(field) => Err(vec![FieldError {
            path: field.to_owned(),
            kind: agora_schemas::FieldErrorKind::Forbidden,
            message: why.to_owned(),
        }]),
        _ => Ok(()),
    }
}

/// What the server adds to a new object of `kind` before it is admitted (Kubernetes' `PrepareForCreate`).
pub fn on_create(kind: &KindInfo, object: &mut Value) {
    if kind.group == agora_schemas::API_GROUP && kind.kind == "Task" {
        task::on_create(object);
    }
}

/// Whether `admitted` may replace `current` (`None` on a create), by the rules of its kind.
///
/// # Errors
/// The fields that break them.
pub fn check_write(kind: &KindInfo, current: Option<&Value>, admitted: &Value) -> Result<(), Vec<FieldError>> {
    match (kind.group, kind.kind) {
        (agora_schemas::API_GROUP, "Task") => task::check_write(current, admitted),
        (agora_schemas::API_GROUP, "Token") => token::check_write(current, admitted),
        (agora_schemas::rbac::RBAC_GROUP, "RoleBinding" | "ClusterRoleBinding") => rbac::check_write(current, admitted),
        _ => Ok(()),
    }
}

/// Whether the write must also be checked against the other objects of its kind in the namespace.
#[must_use]
pub fn needs_namespace_check(kind: &KindInfo, current: Option<&Value>, admitted: &Value) -> bool {
    match kind.kind {
        "CronJob" => cronjob::parents_changed(current, admitted),
        _ => false,
    }
}
