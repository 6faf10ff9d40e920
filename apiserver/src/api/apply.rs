//! Server-side apply (`application/apply-patch+yaml`): create from the configuration, or merge it under the
//! field-ownership rules of [`super::managed`].

use agora_schemas::StatusReason;
use axum::body::Bytes;
use serde_json::{Value, json};

use super::admission::{Admission, Format, check_type, parse_object};
use super::codec::{meta_str, set_meta};
use super::decode;
use super::error::{ApiError, ApiResult};
use super::managed::{self, Manage, Scope};
use super::route::Target;
use super::write::Change;
use super::{ResourceApi, WRITE_ATTEMPTS};

impl ResourceApi {
    /// Server-side apply: creates the object from the configuration, or merges the configuration into it under the
    /// field-ownership rules of [`managed`]. Returns whether it created the object.
    pub(super) async fn apply(
        &self,
        target: &Target,
        body: Bytes,
        admission: &Admission,
        manager: &str,
        scope: Scope,
        force: bool,
    ) -> ApiResult<(bool, Value)> {
        let kind = target.kind;
        let name = target.name();
        let mut applied = parse_object(&body, "the applied configuration", Format::Yaml, admission).await?;
        for field in ["apiVersion", "kind"] {
            if applied.get(field).is_none_or(Value::is_null) {
                return Err(ApiError::bad_request(format!("{field} must be set in an applied configuration")));
            }
        }
        check_type(kind, &mut applied)?;
        if let Some(body_name) = meta_str(&applied, "name").filter(|n| *n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let (Some(ns), Some(body_ns)) = (&target.namespace, meta_str(&applied, "namespace"))
            && ns != body_ns
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({body_ns}) does not match the namespace on the request ({ns})"
            )));
        }
        if applied.pointer("/metadata/managedFields").is_some_and(|m| !m.is_null()) {
            return Err(ApiError::bad_request("metadata.managedFields must be nil in an applied configuration"));
        }
        admission.prune(kind, &mut applied);
        let precondition = meta_str(&applied, "resourceVersion").map(str::to_owned);
        // A uid in an applied configuration is a precondition, as in Kubernetes.
        let uid = meta_str(&applied, "uid").map(str::to_owned);
        let heavy = body.len() > decode::INLINE_BYTES;
        let (view, fields) = decode::in_place(heavy, || {
            let view = managed::managed_view(&applied, kind, scope);
            let fields = managed::FieldSet::of(&view);
            (view, fields)
        })
        .await;
        let manage = Manage::Apply { manager: manager.to_owned(), scope, fields: fields.clone(), force };
        let (view, fields, owner) = (std::sync::Arc::new(view), std::sync::Arc::new(fields), manager.to_owned());
        for _ in 0..WRITE_ATTEMPTS {
            let (view, fields, owner, uid) = (view.clone(), fields.clone(), owner.clone(), uid.clone());
            let object = name.to_owned();
            let change = move |current: &Value| {
                if let Some(uid) = uid.as_deref().filter(|uid| Some(*uid) != meta_str(current, "uid")) {
                    return Err(ApiError::conflict(
                        kind,
                        &object,
                        &format!("the uid in the applied configuration ({uid}) is not the object's"),
                    ));
                }
                Ok(managed::apply_to(current, &view, &fields, &owner, scope))
            };
            let change = if heavy { Change::heavy(change) } else { Change::inline(change) };
            let updated = self.update(target, precondition.clone(), change, admission, &manage).await;
            match updated {
                Err(e) if e.0.code == 404 && scope == Scope::Main && precondition.is_none() => {
                    let mut object = applied.clone();
                    set_meta(&mut object, "name", json!(name));
                    match self.create_object(target, object, admission, &manage).await {
                        Err(e) if e.0.reason == Some(StatusReason::AlreadyExists) => {}
                        created => return created.map(|object| (true, object)),
                    }
                }
                updated => return updated.map(|object| (false, object)),
            }
        }
        Err(ApiError::conflict(kind, name, "the object kept being created and deleted; try again"))
    }
}
