//! How a request body becomes an admitted object: decoding (JSON or YAML, duplicate keys), the type check,
//! `fieldValidation`, and the kind's strict decoding, defaults and validation.

use agora_schemas::{AdmitError, FieldError, FieldErrorKind, KindInfo, StatusReason};
use axum::body::Bytes;
use axum::http::header;
use axum::response::Response;
use serde_json::Value;

use super::MAX_BODY_BYTES;
use super::decode;
use super::error::{ApiError, ApiResult};
use super::route::Query;

/// Server-managed metadata a client may send but never decides.
pub(super) const SERVER_FIELDS: [&str; 7] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
];

pub(super) async fn parse_body(body: &Bytes, admission: &Admission) -> ApiResult<Value> {
    parse_object(body, "the request body", Format::Json, admission).await
}

/// What a body is written in.
#[derive(Clone, Copy)]
pub(super) enum Format {
    Json,
    Yaml,
}

impl Format {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Yaml => "YAML or JSON",
        }
    }
}

/// Decodes a body as `format` (a large one on the blocking pool), with its duplicate keys refused or warned about
/// per `fieldValidation`; `what` names it in errors.
pub(super) async fn parse_value(body: &Bytes, what: &str, format: Format, admission: &Admission) -> ApiResult<Value> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusReason::RequestEntityTooLarge,
            format!("{what} is {} bytes; the limit is {MAX_BODY_BYTES}", body.len()),
        ));
    }
    let run = move |bytes: Bytes| match format {
        Format::Json => decode::json(&bytes),
        Format::Yaml => decode::yaml(&bytes),
    };
    let decoded = if body.len() <= decode::INLINE_BYTES {
        run(body.clone())
    } else {
        let bytes = body.clone();
        decode::heavy(move || run(bytes)).await.map_err(|e| ApiError::new(StatusReason::InternalError, e))?
    };
    let decoded = decoded.map_err(|e| ApiError::bad_request(format!("{what} is not valid {}: {e}", format.name())))?;
    admission.duplicates(what, &decoded.duplicates)?;
    Ok(decoded.value)
}

/// [`parse_value`] for a body that must be one object.
pub(super) async fn parse_object(body: &Bytes, what: &str, format: Format, admission: &Admission) -> ApiResult<Value> {
    let value = parse_value(body, what, format, admission).await?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!("{what} must be a {} object", format.name())));
    }
    Ok(value)
}

/// Checks the body names this kind (`apiVersion` and `kind` are required, as in Kubernetes).
pub(super) fn check_type(kind: &KindInfo, object: &mut Value) -> ApiResult<()> {
    for (field, expected) in [("apiVersion", kind.api_version), ("kind", kind.kind)] {
        match object.get(field) {
            None | Some(Value::Null) => {
                return Err(ApiError::bad_request(format!(
                    "{field} is missing from the body: it must be {expected:?} (this path serves {})",
                    kind.plural
                )));
            }
            Some(Value::String(s)) if s == expected => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "the body's {field} is {other}, but this path serves {expected} ({})",
                    kind.plural
                )));
            }
        }
    }
    Ok(())
}

/// How a write's fields are checked (`fieldValidation`), and the warnings it produced.
pub(super) struct Admission {
    mode: FieldValidation,
    /// `dryRun=All`: every step of the write runs but the store's; nothing is written.
    pub(super) dry_run: bool,
    warnings: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldValidation {
    /// Unknown fields are errors (the default, and what kubectl sends).
    Strict,
    /// Unknown fields are dropped, each with a `Warning` header.
    Warn,
    /// Unknown fields are dropped silently.
    Ignore,
}

impl Admission {
    pub(super) fn from_query(query: &Query) -> ApiResult<Self> {
        let mode = match query.get("fieldValidation").map(String::as_str) {
            None | Some("" | "Strict") => FieldValidation::Strict,
            Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation must be Strict, Warn or Ignore, not {other:?}"
                )));
            }
        };
        Ok(Self { mode, dry_run: dry_run(query)?, warnings: std::sync::Mutex::default() })
    }

    /// Prunes unknown fields unless strict, then decodes strictly, defaults and validates.
    pub(super) fn admit(&self, kind: &KindInfo, name: &str, mut object: Value) -> ApiResult<Value> {
        self.prune(kind, &mut object);
        admit(kind, name, object)
    }

    /// Drops unknown fields from a partial object (an applied configuration) unless strict; in strict mode they
    /// are left for admission to reject with their paths.
    pub(super) fn prune(&self, kind: &KindInfo, object: &mut Value) {
        if self.mode != FieldValidation::Strict {
            let removed = agora_schemas::schema::prune_unknown_fields(kind, object);
            if self.mode == FieldValidation::Warn {
                let mut warnings = self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                warnings.extend(removed.into_iter().map(|path| format!("unknown field \"{path}\"")));
            }
        }
    }

    /// Duplicate keys of a body: refused when strict (as Kubernetes does), a warning each when warning.
    pub(super) fn duplicates(&self, what: &str, paths: &[String]) -> ApiResult<()> {
        let Some(first) = paths.first() else { return Ok(()) };
        match self.mode {
            FieldValidation::Strict => Err(ApiError::bad_request(format!(
                "{what} has a duplicate field \"{first}\"{} (fieldValidation=Strict refuses duplicate fields)",
                if paths.len() > 1 { format!(" (and {} more)", paths.len() - 1) } else { String::new() }
            ))),
            FieldValidation::Warn => {
                let mut warnings = self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                warnings.extend(paths.iter().map(|path| format!("duplicate field \"{path}\"")));
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        }
    }

    /// Adds a `Warning: 299` header per warning.
    pub(super) fn decorate(&self, mut response: Response) -> Response {
        let warnings = self.warnings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for warning in warnings.iter() {
            let text = format!("299 - \"{}\"", warning.replace('\\', "\\\\").replace('"', "\\\""));
            if let Ok(value) = header::HeaderValue::from_str(&text) {
                response.headers_mut().append(header::WARNING, value);
            }
        }
        response
    }
}

/// Whether the request asks for a dry run. `All` is the one value Kubernetes defines; anything else is refused rather
/// than read as a real write.
pub(super) fn dry_run(query: &Query) -> ApiResult<bool> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("dryRun must be All (the only value served), not {other:?}"))),
    }
}

/// Decodes strictly, defaults and validates; maps failures to 422 with field causes.
pub(super) fn admit(kind: &KindInfo, name: &str, object: Value) -> ApiResult<Value> {
    (kind.admit)(object).map_err(|e| match e {
        AdmitError::Decode { path, message } => {
            ApiError::invalid(kind, name, &[FieldError { path, kind: FieldErrorKind::Invalid, message }])
        }
        AdmitError::Invalid(errors) => ApiError::invalid(kind, name, errors.errors()),
    })
}
