//! The `Status` object: how the apiserver reports every failure (and some successes), in the exact shape of
//! Kubernetes' `meta/v1` `Status`, so kubectl prints `Error from server (NotFound): apps.agora "web" not found`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ListMeta;
use crate::validation::FieldError;

/// An API result, almost always a failure: what went wrong (`reason`, `message`), on what (`details`), and which
/// fields (`details.causes`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always `v1`.
    pub api_version: String,
    /// Always `Status`.
    pub kind: String,
    /// Empty; present because clients expect it.
    #[serde(default)]
    pub metadata: ListMeta,
    /// `Failure` or `Success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A sentence for people, naming the object and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<StatusReason>,
    /// The object and fields concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code.
    #[serde(default)]
    pub code: u16,
}

/// Why a request failed, as Kubernetes names it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusReason {
    /// 400: the request itself is malformed.
    BadRequest,
    /// 401: no or wrong credentials.
    Unauthorized,
    /// 403: not allowed.
    Forbidden,
    /// 404: no such object, kind or path.
    NotFound,
    /// 405: the verb is not supported here.
    MethodNotAllowed,
    /// 406: no acceptable representation.
    NotAcceptable,
    /// 409: an object of that name exists.
    AlreadyExists,
    /// 409: a stale resourceVersion, a failed precondition, or a field-manager conflict.
    Conflict,
    /// 410: the requested revision was compacted away.
    Expired,
    /// 410: a resource that existed is gone.
    Gone,
    /// 413: the body is larger than the server accepts.
    RequestEntityTooLarge,
    /// 415: the Content-Type is not one the verb accepts.
    UnsupportedMediaType,
    /// 422: the object fails validation; see `details.causes`.
    Invalid,
    /// 429: slow down.
    TooManyRequests,
    /// 500: a server bug. Never expected; always reported.
    InternalError,
    /// 503: the server cannot answer now (store unavailable, shutting down).
    ServiceUnavailable,
    /// 504: the request timed out.
    Timeout,
    /// A reason this version does not know.
    #[serde(other)]
    Unknown,
}

impl StatusReason {
    /// The HTTP status code that goes with this reason.
    #[must_use]
    pub fn code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::NotAcceptable => 406,
            Self::AlreadyExists | Self::Conflict => 409,
            Self::Expired | Self::Gone => 410,
            Self::RequestEntityTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Invalid => 422,
            Self::TooManyRequests => 429,
            Self::InternalError | Self::Unknown => 500,
            Self::ServiceUnavailable => 503,
            Self::Timeout => 504,
        }
    }
}

/// What a [`Status`] is about.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// The object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The API group (`agora`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The resource (plural) or kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The object's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// One entry per offending field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// For 429/503: when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// One offending field of a failed request.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldManagerConflict`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong with the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The field's JSON path (`spec.healthChecks[0].portIndex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Status {
    /// A failure with the reason's HTTP code.
    #[must_use]
    pub fn failure(reason: StatusReason, message: impl Into<String>) -> Self {
        Self {
            api_version: "v1".to_owned(),
            kind: "Status".to_owned(),
            metadata: ListMeta::default(),
            status: Some("Failure".to_owned()),
            message: Some(message.into()),
            reason: Some(reason),
            details: None,
            code: reason.code(),
        }
    }

    /// A success, as returned by some deletes.
    #[must_use]
    pub fn success() -> Self {
        Self {
            api_version: "v1".to_owned(),
            kind: "Status".to_owned(),
            metadata: ListMeta::default(),
            status: Some("Success".to_owned()),
            message: None,
            reason: None,
            details: None,
            code: 200,
        }
    }

    /// Adds the object the status is about.
    #[must_use]
    pub fn with_object(mut self, resource: &str, name: Option<&str>) -> Self {
        let details = self.details.get_or_insert_with(StatusDetails::default);
        details.group = Some(crate::API_GROUP.to_owned());
        details.kind = Some(resource.to_owned());
        details.name = name.map(str::to_owned);
        self
    }

    /// Names the API group of the object the status is about (Agora's, unless said).
    #[must_use]
    pub fn in_group(mut self, group: &str) -> Self {
        self.details.get_or_insert_with(StatusDetails::default).group = Some(group.to_owned());
        self
    }

    /// Adds one cause per field error.
    #[must_use]
    pub fn with_causes(mut self, errors: &[FieldError]) -> Self {
        let details = self.details.get_or_insert_with(StatusDetails::default);
        details.causes.extend(errors.iter().map(|e| StatusCause {
            reason: Some(e.kind.as_str().to_owned()),
            message: Some(e.message.clone()),
            field: Some(e.path.clone()),
        }));
        self
    }

    /// `404 NotFound`: `apps.agora "web" not found`.
    #[must_use]
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::failure(StatusReason::NotFound, format!("{resource}.{} \"{name}\" not found", crate::API_GROUP))
            .with_object(resource, Some(name))
    }

    /// `422 Invalid` carrying every field error.
    #[must_use]
    pub fn invalid(kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let list = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        // As in Kubernetes, `details.kind` is what the message names: the kind here, the resource in NotFound.
        Self::failure(StatusReason::Invalid, format!("{kind}.{} \"{name}\" is invalid: {list}", crate::API_GROUP))
            .with_object(kind, Some(name))
            .with_causes(errors)
    }

    /// True when this is a failure with the given reason.
    #[must_use]
    pub fn is(&self, reason: StatusReason) -> bool {
        self.reason == Some(reason)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.reason, &self.message) {
            (Some(reason), Some(message)) => write!(f, "{reason:?} ({}): {message}", self.code),
            (None, Some(message)) => {
                write!(f, "{} ({}): {message}", self.status.as_deref().unwrap_or("Status"), self.code)
            }
            (reason, None) => write!(f, "{reason:?} ({})", self.code),
        }
    }
}

impl std::error::Error for Status {}
