//! Every failure the API reports, as a Kubernetes `Status` object with the matching HTTP code. Handlers return
//! [`ApiError`]; nothing reaches a client as a bare 500 or an empty body.

use agora_schemas::{FieldError, KindInfo, Status, StatusReason};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// A failed request, carrying the `Status` the client gets.
#[derive(Debug, Clone)]
pub struct ApiError(pub Box<Status>);

impl ApiError {
    /// A failure with `reason`'s code and `message`.
    #[must_use]
    pub fn new(reason: StatusReason, message: impl Into<String>) -> Self {
        Self(Box::new(Status::failure(reason, message)))
    }

    /// 400.
    #[must_use]
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusReason::BadRequest, message)
    }

    /// 404 for an object.
    #[must_use]
    pub fn not_found(kind: &KindInfo, name: &str) -> Self {
        let message = format!("{}.{} \"{name}\" not found", kind.plural, kind.group);
        Self(Box::new(
            Status::failure(StatusReason::NotFound, message).with_object(kind.plural, Some(name)).in_group(kind.group),
        ))
    }

    /// 404 for a path that names no resource.
    #[must_use]
    pub fn no_such_path(path: &str) -> Self {
        Self::new(StatusReason::NotFound, format!("the server could not find the requested resource ({path})"))
    }

    /// 405 for a verb a resource does not serve.
    #[must_use]
    pub fn method_not_allowed(method: &str, what: &str) -> Self {
        Self::new(StatusReason::MethodNotAllowed, format!("{method} is not supported on {what}"))
    }

    /// 409 AlreadyExists.
    #[must_use]
    pub fn already_exists(kind: &KindInfo, name: &str) -> Self {
        Self(Box::new(
            Status::failure(
                StatusReason::AlreadyExists,
                format!("{}.{} \"{name}\" already exists", kind.plural, kind.group),
            )
            .with_object(kind.plural, Some(name))
            .in_group(kind.group),
        ))
    }

    /// 409 Conflict for a stale resourceVersion or a failed precondition.
    #[must_use]
    pub fn conflict(kind: &KindInfo, name: &str, why: &str) -> Self {
        Self(Box::new(
            Status::failure(
                StatusReason::Conflict,
                format!("Operation cannot be fulfilled on {}.{} \"{name}\": {why}", kind.plural, kind.group),
            )
            .with_object(kind.plural, Some(name))
            .in_group(kind.group),
        ))
    }

    /// The usual optimistic-concurrency conflict.
    #[must_use]
    pub fn stale(kind: &KindInfo, name: &str) -> Self {
        Self::conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 with one cause per field.
    #[must_use]
    pub fn invalid(kind: &KindInfo, name: &str, errors: &[FieldError]) -> Self {
        let list = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        // As in Kubernetes, `details.kind` is what the message names: the kind here, the resource in NotFound.
        let message = format!("{}.{} \"{name}\" is invalid: {list}", kind.kind, kind.group);
        Self(Box::new(
            Status::failure(StatusReason::Invalid, message)
                .with_object(kind.kind, Some(name))
                .in_group(kind.group)
                .with_causes(errors),
        ))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { requested, compacted } => {
                Self::new(StatusReason::Expired, format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::FutureRevision { requested, current } => {
                let mut status = Status::failure(
                    StatusReason::Timeout,
                    format!("Too large resource version: {requested}, current: {current}"),
                );
                status.details =
                    Some(agora_schemas::StatusDetails { retry_after_seconds: Some(1), ..Default::default() });
                Self(Box::new(status))
            }
            StoreError::Unavailable(why) => {
                Self::new(StatusReason::ServiceUnavailable, format!("the store is unavailable: {why}"))
            }
            StoreError::Backend(why) => {
                tracing::error!(%why, "store failure");
                Self::new(StatusReason::InternalError, format!("the store failed: {why}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(self.0.as_ref()).unwrap_or_default();
        let mut response = (code, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

/// Result of a handler step.
pub type ApiResult<T> = Result<T, ApiError>;
