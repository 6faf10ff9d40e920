//! [`Error`]: what failed, on which object, and — when the server answered — its [`Status`] (reason, code, message,
//! causes), so callers branch on `is_not_found()` or `is_conflict()` instead of parsing messages.

use std::fmt;

use agora_schemas::{Status, StatusReason};

/// The result of every client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a request was about: its verb and object, for messages (`patch app default/web`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// `get`, `list`, `create`, `replace`, `patch`, `delete`, `watch`, `get status`, `accept`, ...
    pub verb: &'static str,
    /// `app default/web`, `apps in namespace default`, `agents`.
    pub object: String,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.object)
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver answered with a failure `Status`.
    #[error("{operation}: {} ({} {})", describe(status), status.code, reason(status))]
    Api {
        /// The request.
        operation: Operation,
        /// The server's answer.
        status: Box<Status>,
    },
    /// The apiserver could not be reached, or the connection broke or timed out.
    #[error("{operation}: no answer from the apiserver at {server}: {source}")]
    Transport {
        /// The request.
        operation: Operation,
        /// The apiserver's base URL.
        server: String,
        /// What the HTTP layer saw.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the API promises (a client/server version mismatch, or a broken proxy).
    #[error("{operation}: the answer is not a valid {expected}: {message}")]
    Decode {
        /// The request.
        operation: Operation,
        /// What the answer should have been (`App`, `watch event`).
        expected: &'static str,
        /// What did not fit, with its JSON path when known.
        message: String,
    },
    /// The request could not be made as asked (an object without a name, a namespaced call without a namespace).
    #[error("{operation}: {message}")]
    Request {
        /// The request.
        operation: Operation,
        /// What to change.
        message: String,
    },
    /// The client configuration is unusable (a bad server URL, an unreadable token file).
    #[error("client configuration: {0}")]
    Config(String),
}

fn describe(status: &Status) -> String {
    let mut message = status.message.clone().unwrap_or_else(|| "request failed".to_owned());
    let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    for cause in causes {
        let Some(text) = cause.message.as_deref().filter(|t| !message.contains(*t)) else { continue };
        let text = text.to_owned();
        match &cause.field {
            Some(field) => message.push_str(&format!("; {field}: {text}")),
            None => message.push_str(&format!("; {text}")),
        }
    }
    message
}

fn reason(status: &Status) -> String {
    status.reason.map_or_else(|| "Unknown".to_owned(), |r| format!("{r:?}"))
}

impl Error {
    /// The server's `Status`, when it answered with one.
    #[must_use]
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::Api { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The HTTP status code of the server's answer, when there was one.
    #[must_use]
    pub fn code(&self) -> Option<u16> {
        self.status().map(|s| s.code)
    }

    /// The server's reason, when it answered.
    #[must_use]
    pub fn reason(&self) -> Option<StatusReason> {
        self.status().and_then(|s| s.reason)
    }

    /// 404: the object (or kind) does not exist.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// 409 Conflict: a stale resourceVersion, a failed precondition or `test`, or a field-manager conflict.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        self.reason() == Some(StatusReason::Conflict)
    }

    /// 409 AlreadyExists: a create of a name that is taken.
    #[must_use]
    pub fn is_already_exists(&self) -> bool {
        self.reason() == Some(StatusReason::AlreadyExists)
    }

    /// 410: the resourceVersion is too old (list again) or the object is gone.
    #[must_use]
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }

    /// 422: the object failed validation; `status().details.causes` names each field.
    #[must_use]
    pub fn is_invalid(&self) -> bool {
        self.code() == Some(422)
    }

    /// Whether trying again later may succeed: no answer, a timeout, 429, or a 5xx.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Api { status, .. } => status.code == 429 || status.code >= 500,
            _ => false,
        }
    }

    /// The operation that failed, if the error belongs to one.
    #[must_use]
    pub fn operation(&self) -> Option<&Operation> {
        match self {
            Self::Api { operation, .. }
            | Self::Transport { operation, .. }
            | Self::Decode { operation, .. }
            | Self::Request { operation, .. } => Some(operation),
            Self::Config(_) => None,
        }
    }
}
