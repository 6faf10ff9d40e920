//! What every kind has in common: the [`Resource`] trait (names, scope, subresources, defaulting, validation), the
//! [`KindInfo`] registry the apiserver dispatches on, and [`admit`], the one path from untrusted JSON to a stored
//! object.
//!
//! Defaults are declared once per struct with [`defaults!`](crate::defaults): that generates the defaulting code the
//! server runs, a read accessor that falls back to the default (so controllers never repeat a default), and the
//! `default` annotations in the published JSON Schema.

use std::fmt::Debug;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::meta::ObjectMeta;
use crate::validation::{FieldErrors, NameRule, Path, Validator, validate_meta};

/// The API group of every Agora kind.
pub const API_GROUP: &str = "agora";
/// The version of the group.
pub const API_GROUP_VERSION: &str = "v1";
/// `apiVersion` of every Agora object.
pub const API_VERSION: &str = "agora/v1";

/// A kind of object the apiserver stores.
pub trait Resource: Serialize + DeserializeOwned + JsonSchema + Clone + Debug + Send + Sync + 'static {
    /// Its API group: `agora`, or Kubernetes' own for the kinds Agora serves as Kubernetes defines them
    /// (`rbac.authorization.k8s.io`).
    const GROUP: &'static str = API_GROUP;
    /// Its `apiVersion`: `agora/v1`.
    const API_VERSION: &'static str = self::API_VERSION;
    /// `App`.
    const KIND: &'static str;
    /// `apps`: the path segment.
    const PLURAL: &'static str;
    /// `app`.
    const SINGULAR: &'static str;
    /// `kubectl get` short names.
    const SHORT_NAMES: &'static [&'static str];
    /// Namespaced (`/namespaces/{ns}/apps`) or cluster-scoped (`/agents`).
    const NAMESPACED: bool;
    /// Subresources served besides the object itself (`status`, `scale`, `accept`, `log`).
    const SUBRESOURCES: &'static [&'static str];
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    const FIELD_SELECTORS: &'static [&'static str];
    /// How names of this kind must look.
    const NAME_RULE: NameRule;
    /// The columns it is printed with, besides `Name` and `Age` ([`crate::columns`]).
    const COLUMNS: &'static [crate::columns::Column];
    /// The segment naming its objects in the store's keys: its plural, qualified by its group outside Agora's
    /// (`roles.rbac.authorization.k8s.io`, which no Agora plural can be).
    const STORAGE: &'static str = Self::PLURAL;

    /// The object's metadata.
    fn metadata(&self) -> &ObjectMeta;
    /// The object's metadata, for the server to fill in.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// Fills every unset defaulted field of the spec. Run by the server on create and update, never by clients.
    fn apply_defaults(&mut self);
    /// Checks the rules the schema cannot express, recording every violation.
    fn validate_spec(&self, v: &mut Validator);
    /// The `apiVersion` and `kind` the object claims.
    fn type_meta(&self) -> (&str, &str);

    /// Validates type meta, metadata and spec, returning every violation.
    ///
    /// # Errors
    /// All violations, each with its JSON path.
    fn validate(&self) -> Result<(), FieldErrors> {
        let mut v = Validator::new();
        let (api_version, kind) = self.type_meta();
        if api_version != Self::API_VERSION {
            v.invalid(&Path::root("apiVersion"), format!("must be \"{}\" (got \"{api_version}\")", Self::API_VERSION));
        }
        if kind != Self::KIND {
            v.invalid(&Path::root("kind"), format!("must be \"{}\" (got \"{kind}\")", Self::KIND));
        }
        validate_meta(&mut v, self.metadata(), Self::NAMESPACED, Self::NAME_RULE);
        self.validate_spec(&mut v);
        v.finish()
    }
}

/// Everything the apiserver needs to know about a kind, without knowing its Rust type.
#[derive(Clone, Copy)]
pub struct KindInfo {
    /// Its API group (`agora`).
    pub group: &'static str,
    /// Its `apiVersion` (`agora/v1`).
    pub api_version: &'static str,
    /// `App`.
    pub kind: &'static str,
    /// `apps`.
    pub plural: &'static str,
    /// `app`.
    pub singular: &'static str,
    /// Short names.
    pub short_names: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Subresources served.
    pub subresources: &'static [&'static str],
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    pub field_selectors: &'static [&'static str],
    /// The columns it is printed with, besides `Name` and `Age`.
    pub columns: &'static [crate::columns::Column],
    /// Decodes strictly, defaults and validates an object of this kind.
    pub admit: fn(serde_json::Value) -> Result<serde_json::Value, AdmitError>,
    /// The kind's JSON Schema, with nested types placed where the generator's settings say.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// The segment naming its objects in the store's keys ([`Resource::STORAGE`]).
    pub storage: &'static str,
}

impl Debug for KindInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindInfo").field("kind", &self.kind).field("plural", &self.plural).finish_non_exhaustive()
    }
}

impl KindInfo {
    /// The registry entry for `K`.
    #[must_use]
    pub const fn of<K: Resource>() -> Self {
        Self {
            group: K::GROUP,
            api_version: K::API_VERSION,
            kind: K::KIND,
            plural: K::PLURAL,
            singular: K::SINGULAR,
            short_names: K::SHORT_NAMES,
            namespaced: K::NAMESPACED,
            subresources: K::SUBRESOURCES,
            field_selectors: K::FIELD_SELECTORS,
            columns: K::COLUMNS,
            admit: admit::<K>,
            schema: |generator| generator.subschema_for::<K>(),
            storage: K::STORAGE,
        }
    }

    /// The version of its group (`v1`).
    #[must_use]
    pub fn version(&self) -> &'static str {
        self.api_version.rsplit('/').next().unwrap_or(self.api_version)
    }

    /// Whether it is one of Agora's own kinds (group `agora`), not one Kubernetes defines.
    #[must_use]
    pub fn is_agoras(&self) -> bool {
        self.group == API_GROUP
    }

    /// The resource as kubectl names it with its group: `apps.agora`, `roles.rbac.authorization.k8s.io`.
    #[must_use]
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

/// Why an object was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The JSON does not fit the kind's schema (unknown field, wrong type, missing field).
    #[error("{path}: {message}")]
    Decode {
        /// JSON path of the offending field (`.` for the whole document).
        path: String,
        /// What is wrong, naming the expected type.
        message: String,
    },
    /// The object decodes but breaks rules beyond the schema.
    #[error(transparent)]
    Invalid(#[from] FieldErrors),
}

/// Decodes `value` strictly as `K` (unknown fields rejected), applies the kind's defaults and validates it;
/// returns the defaulted object as JSON.
///
/// # Errors
/// [`AdmitError::Decode`] naming the first field that does not fit the schema, or [`AdmitError::Invalid`] with every
/// rule violation.
pub fn admit<K: Resource>(value: serde_json::Value) -> Result<serde_json::Value, AdmitError> {
    let mut object: K = serde_path_to_error::deserialize(value).map_err(|e| AdmitError::Decode {
        path: crate::manifest::display_path(e.path()),
        message: crate::manifest::humanize_serde_message(&e.inner().to_string()),
    })?;
    object.apply_defaults();
    object.validate()?;
    serde_json::to_value(&object).map_err(|e| AdmitError::Decode { path: ".".to_owned(), message: e.to_string() })
}

/// Declares the server-side defaults of a struct's `Option` fields, once.
///
/// ```ignore
/// defaults!(AppSpec { cpus: f64 = 1.0, mem: f64 = 128.0 });
/// ```
/// generates `fill_defaults(&mut self)` (sets each unset field), an accessor per field (`spec.cpus()` returns the
/// value or its default) and `schema_defaults`, a schemars transform adding `"default"` to the JSON Schema.
#[macro_export]
#[doc(hidden)]
macro_rules! defaults {
    ($ty:ident { $( $field:ident : $t:ty = $val:expr ),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("`", stringify!($field), "`, or its default when unset.")]
                #[must_use]
                pub fn $field(&self) -> $t {
                    match &self.$field {
                        Some(value) => value.clone(),
                        None => $val,
                    }
                }
            )*

            /// Sets every unset defaulted field to its default.
            pub fn fill_defaults(&mut self) {
                $( if self.$field.is_none() { self.$field = Some($val); } )*
            }

            /// Adds each default to the JSON Schema (a schemars transform).
            pub fn schema_defaults(schema: &mut schemars::Schema) {
                $( $crate::schema::set_property_default(schema, stringify!($field), &$val); )*
            }
        }
    };
}

/// Defines a top-level kind: the struct (`apiVersion`, `kind`, `metadata`, `spec`, and `status` when the kind has
/// one), a constructor, and its [`Resource`] implementation. The spec type provides `apply_defaults(&mut self)` and
/// `validate(&self, &mut Validator, &Path, &ObjectMeta)`.
#[macro_export]
#[doc(hidden)]
macro_rules! object {
    (
        $(#[$doc:meta])*
        $kind:ident {
            spec: $spec:ty,
            $(status: $status:ty,)?
            plural: $plural:literal,
            singular: $singular:literal,
            short_names: [$($short:literal),*],
            namespaced: $namespaced:literal,
            subresources: [$($sub:literal),*],
            field_selectors: [$($field:literal),*],
            name_rule: $rule:ident,
            columns: $columns:expr $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $kind {
            /// `agora/v1`.
            pub api_version: String,
            /// The kind's name.
            pub kind: String,
            /// Name, namespace, labels and the server-managed fields.
            pub metadata: $crate::meta::ObjectMeta,
            /// The desired state.
            pub spec: $spec,
            $(
            /// The observed state, written through the `/status` subresource.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<$status>,
            )?
        }

        impl $kind {
            /// A new object with this spec and no status.
            #[must_use]
            pub fn new(metadata: $crate::meta::ObjectMeta, spec: $spec) -> Self {
                Self {
                    api_version: $crate::API_VERSION.to_owned(),
                    kind: stringify!($kind).to_owned(),
                    metadata,
                    spec,
                    $(status: Option::<$status>::None,)?
                }
            }
        }

        impl $crate::Resource for $kind {
            const KIND: &'static str = stringify!($kind);
            const PLURAL: &'static str = $plural;
            const SINGULAR: &'static str = $singular;
            const SHORT_NAMES: &'static [&'static str] = &[$($short),*];
            const NAMESPACED: bool = $namespaced;
            const SUBRESOURCES: &'static [&'static str] = &[$($sub),*];
            const FIELD_SELECTORS: &'static [&'static str] = &[$($field),*];
            const NAME_RULE: $crate::validation::NameRule = $crate::validation::NameRule::$rule;
            const COLUMNS: &'static [$crate::columns::Column] = $columns;

            fn metadata(&self) -> &$crate::meta::ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut $crate::meta::ObjectMeta {
                &mut self.metadata
            }
            fn apply_defaults(&mut self) {
                self.spec.apply_defaults();
            }
            fn validate_spec(&self, v: &mut $crate::validation::Validator) {
                self.spec.validate(v, &$crate::validation::Path::root("spec"), &self.metadata);
            }
            fn type_meta(&self) -> (&str, &str) {
                (&self.api_version, &self.kind)
            }
        }
    };
}
