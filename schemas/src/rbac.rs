//! Kubernetes' RBAC API, as Kubernetes defines it (`rbac.authorization.k8s.io/v1`): `Role` and `ClusterRole` (rules:
//! verbs on resources), `RoleBinding` and `ClusterRoleBinding` (subjects — users and groups — given a role), so
//! `kubectl create role`, `kubectl create rolebinding` and manifests written for Kubernetes work unchanged.
//!
//! These kinds have no `spec`: their fields sit at the top level, as in Kubernetes. The Rust type of RBAC's `Role` is
//! [`Role`] in this module; Agora's own `Role` (a DRF role's weight and quota, `agora/v1`) is [`crate::cluster::Role`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validation::{NameRule, Path, Validator};

/// RBAC's API group.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// RBAC's `apiVersion`.
pub const RBAC_API_VERSION: &str = "rbac.authorization.k8s.io/v1";

/// One rule: these verbs on these resources (of these groups, with these names), or on these non-resource URLs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, `use`, or `*`.
    pub verbs: Vec<String>,
    /// The API groups of the resources (`agora`, `""` for the core group, `*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources (`apps`), subresources (`apps/scale`, `offers/accept`, `tasks/log`), or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Only objects of these names (any, when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Paths that name no resource (`/healthz`, `/metrics`, `/apis/*`); ClusterRoles only.
    #[serde(default, rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

/// Who a binding gives its role to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    /// `User` or `Group` (`ServiceAccount` is Kubernetes' and names no Agora principal).
    pub kind: String,
    /// The principal's or group's name.
    pub name: String,
    /// `rbac.authorization.k8s.io` for users and groups (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// A ServiceAccount's namespace (unused by Agora).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The role a binding gives.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRef {
    /// `rbac.authorization.k8s.io`.
    pub api_group: String,
    /// `Role` (a RoleBinding's, in its namespace) or `ClusterRole`.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

/// Declares an RBAC kind: the struct (type meta, metadata, its own top-level fields) and its `Resource`
/// implementation in `rbac.authorization.k8s.io/v1`.
macro_rules! rbac_kind {
    (
        $(#[$doc:meta])*
        $kind:ident {
            $( $(#[$fdoc:meta])* $vis:vis $field:ident : $ty:ty ),* $(,)?
        }
        plural: $plural:literal,
        singular: $singular:literal,
        namespaced: $namespaced:literal,
        validate: $validate:path $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $kind {
            /// `rbac.authorization.k8s.io/v1`.
            pub api_version: String,
            /// The kind's name.
            pub kind: String,
            /// Name, namespace, labels and the server-managed fields.
            pub metadata: ObjectMeta,
            $( $(#[$fdoc])* $vis $field: $ty, )*
        }

        impl crate::Resource for $kind {
            const GROUP: &'static str = RBAC_GROUP;
            const API_VERSION: &'static str = RBAC_API_VERSION;
            const KIND: &'static str = stringify!($kind);
            const PLURAL: &'static str = $plural;
            const SINGULAR: &'static str = $singular;
            const SHORT_NAMES: &'static [&'static str] = &[];
            const NAMESPACED: bool = $namespaced;
            const SUBRESOURCES: &'static [&'static str] = &[];
            const FIELD_SELECTORS: &'static [&'static str] = &[];
            const NAME_RULE: NameRule = NameRule::PathSegment;
            const COLUMNS: &'static [crate::columns::Column] = &[];
            const STORAGE: &'static str = concat!($plural, ".rbac.authorization.k8s.io");

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn apply_defaults(&mut self) {
                defaults(self);
            }
            fn validate_spec(&self, v: &mut Validator) {
                $validate(self, v);
            }
            fn type_meta(&self) -> (&str, &str) {
                (&self.api_version, &self.kind)
            }
        }
    };
}

rbac_kind! {
    /// What may be done in one namespace: rules of verbs on resources.
    Role {
        /// The rules; a request is allowed when any rule allows it.
        #[serde(default)]
        pub rules: Vec<PolicyRule>,
    }
    plural: "roles",
    singular: "role",
    namespaced: true,
    validate: validate_role,
}

rbac_kind! {
    /// What may be done in any namespace (when bound by a ClusterRoleBinding) or one (by a RoleBinding), and on
    /// cluster-scoped resources and non-resource URLs.
    ClusterRole {
        /// The rules; a request is allowed when any rule allows it.
        #[serde(default)]
        pub rules: Vec<PolicyRule>,
    }
    plural: "clusterroles",
    singular: "clusterrole",
    namespaced: false,
    validate: validate_cluster_role,
}

rbac_kind! {
    /// Gives a Role (or a ClusterRole's rules) to subjects, in the binding's namespace.
    RoleBinding {
        /// Who.
        #[serde(default)]
        pub subjects: Vec<Subject>,
        /// Which role (immutable).
        pub role_ref: RoleRef,
    }
    plural: "rolebindings",
    singular: "rolebinding",
    namespaced: true,
    validate: validate_role_binding,
}

rbac_kind! {
    /// Gives a ClusterRole to subjects, everywhere.
    ClusterRoleBinding {
        /// Who.
        #[serde(default)]
        pub subjects: Vec<Subject>,
        /// Which ClusterRole (immutable).
        pub role_ref: RoleRef,
    }
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    namespaced: false,
    validate: validate_cluster_role_binding,
}

/// The defaults Kubernetes fills: a user's or group's `apiGroup`.
trait Defaults {
    fn subjects_mut(&mut self) -> Option<&mut Vec<Subject>> {
        None
    }
}

impl Defaults for Role {}
impl Defaults for ClusterRole {}
impl Defaults for RoleBinding {
    fn subjects_mut(&mut self) -> Option<&mut Vec<Subject>> {
        Some(&mut self.subjects)
    }
}
impl Defaults for ClusterRoleBinding {
    fn subjects_mut(&mut self) -> Option<&mut Vec<Subject>> {
        Some(&mut self.subjects)
    }
}

fn defaults(object: &mut impl Defaults) {
    for subject in object.subjects_mut().into_iter().flatten() {
        if matches!(subject.kind.as_str(), "User" | "Group") && subject.api_group.is_none() {
            subject.api_group = Some(RBAC_GROUP.to_owned());
        }
    }
}

fn validate_rules(v: &mut Validator, rules: &[PolicyRule], cluster: bool) {
    let path = Path::root("rules");
    for (i, rule) in rules.iter().enumerate() {
        let at = path.index(i);
        if rule.verbs.is_empty() {
            v.required(
                &at.field("verbs"),
                "at least one verb (get, list, watch, create, update, patch, delete, use, or *)",
            );
        }
        for (j, verb) in rule.verbs.iter().enumerate() {
            if verb.is_empty() || verb.contains(char::is_whitespace) {
                v.invalid(&at.field("verbs").index(j), "a verb is one word");
            }
        }
        if !rule.non_resource_urls.is_empty() {
            if !cluster {
                v.forbidden(&at.field("nonResourceURLs"), "only a ClusterRole's rules may name non-resource URLs");
            }
            if !rule.resources.is_empty() || !rule.api_groups.is_empty() {
                v.invalid(&at.field("nonResourceURLs"), "a rule names resources or non-resource URLs, not both");
            }
            for (j, url) in rule.non_resource_urls.iter().enumerate() {
                if !url.starts_with('/') && url != "*" {
                    v.invalid(&at.field("nonResourceURLs").index(j), "a path beginning with /, or *");
                }
            }
        } else if rule.resources.is_empty() {
            v.required(&at.field("resources"), "the resources the rule is about (apps, apps/scale, or *)");
        } else if rule.api_groups.is_empty() {
            v.required(
                &at.field("apiGroups"),
                "the API groups of the resources (agora, \"\" for the core group, or *)",
            );
        }
    }
}

fn validate_role(role: &Role, v: &mut Validator) {
    validate_rules(v, &role.rules, false);
}

fn validate_cluster_role(role: &ClusterRole, v: &mut Validator) {
    validate_rules(v, &role.rules, true);
}

fn validate_subjects(v: &mut Validator, subjects: &[Subject]) {
    let path = Path::root("subjects");
    for (i, subject) in subjects.iter().enumerate() {
        let at = path.index(i);
        match subject.kind.as_str() {
            "User" | "Group" => {
                if subject.api_group.as_deref().is_some_and(|g| g != RBAC_GROUP) {
                    v.invalid(&at.field("apiGroup"), format!("must be {RBAC_GROUP} for a {}", subject.kind));
                }
                if !crate::auth::valid_principal(&subject.name) {
                    v.invalid(&at.field("name"), "1 to 253 printable ASCII characters, without spaces");
                }
            }
            "ServiceAccount" => v.invalid(
                &at.field("kind"),
                "Agora has no ServiceAccounts: bind the User a token names (agora token create NAME)",
            ),
            other => v.invalid(&at.field("kind"), format!("must be User or Group (got {other:?})")),
        }
    }
}

fn validate_role_ref(v: &mut Validator, role_ref: &RoleRef, kinds: &[&str]) {
    let path = Path::root("roleRef");
    if role_ref.api_group != RBAC_GROUP {
        v.invalid(&path.field("apiGroup"), format!("must be {RBAC_GROUP}"));
    }
    if !kinds.contains(&role_ref.kind.as_str()) {
        v.invalid(&path.field("kind"), format!("must be {} (got {:?})", kinds.join(" or "), role_ref.kind));
    }
    if role_ref.name.is_empty() {
        v.required(&path.field("name"), "the role's name");
    }
}

fn validate_role_binding(binding: &RoleBinding, v: &mut Validator) {
    validate_subjects(v, &binding.subjects);
    validate_role_ref(v, &binding.role_ref, &["Role", "ClusterRole"]);
}

fn validate_cluster_role_binding(binding: &ClusterRoleBinding, v: &mut Validator) {
    validate_subjects(v, &binding.subjects);
    validate_role_ref(v, &binding.role_ref, &["ClusterRole"]);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Resource;

    fn paths(errors: &crate::FieldErrors) -> Vec<&str> {
        errors.errors().iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn what_kubectl_create_role_sends_is_admitted() {
        let sent = json!({"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "app-reader", "namespace": "team-a", "creationTimestamp": null},
            "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["agora"], "resources": ["apps", "apps/scale"]}]});
        let admitted = crate::admit::<Role>(sent).unwrap();
        assert_eq!(admitted["rules"][0]["resources"], json!(["apps", "apps/scale"]));
        let binding = json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
            "metadata": {"name": "alice-reads", "namespace": "team-a"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app-reader"},
            "subjects": [{"kind": "User", "name": "alice"}]});
        let admitted = crate::admit::<RoleBinding>(binding).unwrap();
        assert_eq!(admitted["subjects"][0]["apiGroup"], RBAC_GROUP, "defaulted as Kubernetes does");
    }

    #[test]
    fn broken_rules_and_bindings_are_named_by_field() {
        let rule = |verbs: &[&str], groups: &[&str], resources: &[&str], urls: &[&str]| PolicyRule {
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            api_groups: groups.iter().map(|s| (*s).to_owned()).collect(),
            resources: resources.iter().map(|s| (*s).to_owned()).collect(),
            resource_names: vec![],
            non_resource_urls: urls.iter().map(|s| (*s).to_owned()).collect(),
        };
        let role = Role {
            api_version: RBAC_API_VERSION.into(),
            kind: "Role".into(),
            metadata: ObjectMeta::named(Some("d"), "r"),
            rules: vec![
                rule(&[], &["agora"], &["apps"], &[]),
                rule(&["get"], &[], &[], &["/healthz"]),
                rule(&["get"], &[], &["apps"], &[]),
            ],
        };
        assert_eq!(
            paths(&role.validate().unwrap_err()),
            ["rules[0].verbs", "rules[1].nonResourceURLs", "rules[2].apiGroups"]
        );
        let binding = ClusterRoleBinding {
            api_version: RBAC_API_VERSION.into(),
            kind: "ClusterRoleBinding".into(),
            metadata: ObjectMeta::named(None, "b"),
            subjects: vec![
                Subject { kind: "ServiceAccount".into(), name: "x".into(), ..Subject::default() },
                Subject { kind: "User".into(), name: "has space".into(), ..Subject::default() },
            ],
            role_ref: RoleRef { api_group: RBAC_GROUP.into(), kind: "Role".into(), name: String::new() },
        };
        assert_eq!(
            paths(&binding.validate().unwrap_err()),
            ["subjects[0].kind", "subjects[1].name", "roleRef.kind", "roleRef.name"]
        );
        let mut wrong = binding.clone();
        wrong.api_version = "agora/v1".into();
        wrong.subjects.clear();
        wrong.role_ref = RoleRef { api_group: RBAC_GROUP.into(), kind: "ClusterRole".into(), name: "view".into() };
        assert_eq!(paths(&wrong.validate().unwrap_err()), ["apiVersion"]);
    }
}
