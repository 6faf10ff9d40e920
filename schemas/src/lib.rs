//! # agora-schemas
//!
//! The vocabulary every part of Agora speaks: the API objects (`App`, `CronJob`, `Task`, `Framework`, `Offer`,
//! `Agent`, `Lease`, `Event`, `Secret`, `Token`) with Kubernetes-style metadata and the spec/status split, their server-side defaults
//! (Marathon's and Chronos'), validation that reports every violation with its JSON path, ISO 8601 schedules, the
//! manifest parser behind `agora apply`, and the JSON Schema / OpenAPI documents generated from the types.
//!
//! This crate does no I/O and knows nothing of HTTP or the store; the apiserver, client, controllers and agent
//! depend on it, never the other way round.

pub mod app;
pub mod auth;
pub mod cluster;
pub mod columns;
pub mod common;
pub mod coordination;
pub mod cronjob;
pub mod iso8601;
pub mod manifest;
pub mod meta;
pub mod names;
pub mod rbac;
pub mod resource;
pub mod schema;
pub mod secret;
pub mod status;
pub mod task;
pub mod validation;

pub use app::{
    APP_LABEL, APP_VERSION_LABEL, App, AppSpec, AppStatus, AppVersion, AppVersionSpec, Deployment, KillSelection,
    Scale, TaskFailure, UnreachableStrategy, UpgradeStrategy,
};
pub use auth::{ADMIN_PRINCIPAL, AUTHENTICATED_GROUP, MASTERS_GROUP, Token, TokenSpec, valid_principal};
pub use cluster::{
    Agent, AgentSpec, AgentStatus, Framework, FrameworkSpec, FrameworkStatus, Offer, OfferAcceptance, OfferPhase,
    OfferSpec, OfferStatus, Quota, QuotaResources, Role, RoleSpec, RoleStatus, TaskTemplate, role_object_name,
    role_of_object,
};
pub use common::{
    Constraint, ConstraintRule, ContainerSpec, DEFAULT_PIDS_LIMIT, FIT_SLACK, HealthCheck, HealthCheckProtocol, Limits,
    LocalObjectReference, PortDefinition, PortRange, Protocol, PullPolicy, Resources, Shortfall, shortfall,
};
pub use coordination::{Event, EventSource, EventType, Lease, LeaseSpec};
pub use cronjob::{
    ATTEMPT_LABEL, COVERS_FROM_ANNOTATION, CRONJOB_LABEL, ConcurrencyPolicy, CronJob, CronJobSpec, CronJobStatus,
    INSTANT_ANNOTATION, MAX_HISTORY_LIMIT, RUN_LABEL, RunRecord, RunResult, TRIGGER_ANNOTATION_PREFIX, find_cycle,
};
pub use manifest::{Document, ManifestError};
pub use meta::{Condition, ConditionStatus, List, ListMeta, ObjectMeta, ObjectReference, OwnerReference, WatchEvent};
pub use resource::{API_GROUP, API_GROUP_VERSION, API_VERSION, AdmitError, KindInfo, Resource, admit};
pub use secret::{DOCKER_CONFIG_KEY, Secret, SecretSpec, SecretType, registry_credentials};
pub use status::{Status, StatusCause, StatusDetails, StatusReason};
pub use task::{Task, TaskPort, TaskSpec, TaskState, TaskStatus};
pub use validation::{FieldError, FieldErrorKind, FieldErrors};

/// Declares the kinds once: the registry the apiserver dispatches on and the [`AnyObject`] enum manifests decode to.
macro_rules! kinds {
    ($($variant:ident => $kind:ty),* $(,)?) => {
        /// Every kind the apiserver serves, in the order discovery lists them.
        pub const KINDS: &[KindInfo] = &[$(KindInfo::of::<$kind>()),*];

        /// An object of any kind, as decoded from a manifest.
        #[derive(Clone, Debug, PartialEq)]
        #[allow(missing_docs)]
        pub enum AnyObject {
            $($variant($kind)),*
        }

        impl AnyObject {
            /// Decodes `value` strictly as the kind named `kind` of `api_version`; `None` for a kind Agora does not
            /// serve.
            pub(crate) fn decode<'de, D: serde::Deserializer<'de>>(
                api_version: &str,
                kind: &str,
                deserializer: D,
            ) -> Option<Result<Self, serde_path_to_error::Error<D::Error>>> {
                $(
                    if api_version == <$kind as Resource>::API_VERSION && kind == <$kind as Resource>::KIND {
                        return Some(serde_path_to_error::deserialize(deserializer).map(Self::$variant));
                    }
                )*
                None
            }

            /// The registry entry of the object's kind.
            #[must_use]
            pub fn info(&self) -> &'static KindInfo {
                match self {
                    $(Self::$variant(_) => {
                        const INFO: KindInfo = KindInfo::of::<$kind>();
                        &INFO
                    })*
                }
            }

            /// The object's metadata.
            #[must_use]
            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Self::$variant(o) => o.metadata(),)*
                }
            }

            /// Applies the kind's server-side defaults (what the apiserver does on create).
            pub fn apply_defaults(&mut self) {
                match self {
                    $(Self::$variant(o) => o.apply_defaults(),)*
                }
            }

            /// Validates the object, returning every violation.
            ///
            /// # Errors
            /// Every violation, each with its JSON path.
            pub fn validate(&self) -> Result<(), FieldErrors> {
                match self {
                    $(Self::$variant(o) => o.validate(),)*
                }
            }

            /// The object as JSON.
            #[must_use]
            pub fn to_json(&self) -> serde_json::Value {
                let encoded = match self {
                    $(Self::$variant(o) => serde_json::to_value(o),)*
                };
                // Serializing plain data structs to a Value cannot fail (no non-string map keys, no I/O).
                encoded.unwrap_or(serde_json::Value::Null)
            }
        }
    };
}

kinds!(
    App => App,
    AppVersion => AppVersion,
    CronJob => CronJob,
    Task => Task,
    Framework => Framework,
    Offer => Offer,
    Agent => Agent,
    Role => Role,
    Lease => Lease,
    Event => Event,
    Secret => Secret,
    Token => Token,
    RbacRole => rbac::Role,
    ClusterRole => rbac::ClusterRole,
    RoleBinding => rbac::RoleBinding,
    ClusterRoleBinding => rbac::ClusterRoleBinding,
);

/// The registry entry for a kind name (`App`); Agora's own where Kubernetes' RBAC has one of the same name (`Role`).
#[must_use]
pub fn kind_info(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The registry entry for a kind of an `apiVersion` (`rbac.authorization.k8s.io/v1`, `Role`).
#[must_use]
pub fn kind_of(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.api_version == api_version && k.kind == kind)
}

/// The registry entry for a resource of an `apiVersion` (`rbac.authorization.k8s.io/v1`, `roles`).
#[must_use]
pub fn resource_of(api_version: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.api_version == api_version && k.plural == plural)
}

/// The registry entry for a resource name: plural (`apps`), singular (`app`) or a short name — Agora's kind first
/// where another group has one of the same name, as kubectl prefers a group — or qualified by its group
/// (`roles.rbac.authorization.k8s.io`, `role.rbac.authorization.k8s.io`, `apps.agora`).
#[must_use]
pub fn resource_info(name: &str) -> Option<&'static KindInfo> {
    let name = name.to_ascii_lowercase();
    let (bare, group) = match KINDS.iter().find(|k| name.ends_with(&format!(".{}", k.group))) {
        Some(k) => (&name[..name.len() - k.group.len() - 1], Some(k.group)),
        None => (name.as_str(), None),
    };
    KINDS
        .iter()
        .filter(|k| group.is_none_or(|g| k.group == g))
        .find(|k| k.plural == bare || k.singular == bare || k.short_names.contains(&bare))
}
