//! Authorization by Kubernetes' RBAC rules, as pure functions: [`Policy`] is the RBAC objects of the store, indexed
//! by subject; [`Policy::authorize`] says whether a principal may do what a request asks ([`Request`]).
//!
//! The semantics are Kubernetes': a ClusterRoleBinding gives its ClusterRole's rules everywhere (every namespace,
//! cluster-scoped resources, non-resource URLs); a RoleBinding gives its Role's (or a ClusterRole's) rules in its own
//! namespace only. A rule allows a request when its verbs, API groups, resources (`apps`, `apps/scale`, `*`,
//! `*/scale`) and resource names (any, when none are listed) all match; a non-resource rule matches paths (`/healthz`,
//! or a prefix ending in `*`). Members of `system:masters` may do anything. Nothing else is allowed: RBAC only adds.

use std::collections::HashMap;

use agora_schemas::MASTERS_GROUP;
use agora_schemas::rbac::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};

use crate::auth::Principal;

/// What a request asks, in RBAC's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// A verb on a resource.
    Resource {
        /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, `use`, …
        verb: &'a str,
        /// The API group (`agora`; `""` for the core group).
        group: &'a str,
        /// The resource (`apps`).
        resource: &'a str,
        /// The subresource (`scale`), if any.
        subresource: Option<&'a str>,
        /// The namespace; `None` for a cluster-scoped resource or a request across namespaces.
        namespace: Option<&'a str>,
        /// The object's name, when the request names one.
        name: Option<&'a str>,
    },
    /// A verb (the HTTP method, lowercased) on a path that names no resource.
    Path {
        /// `get`, `post`, …
        verb: &'a str,
        /// `/healthz`.
        path: &'a str,
    },
}

/// The RBAC objects of the store, indexed for lookups by subject.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `(namespace, name)` → rules.
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    /// name → rules.
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// subject → the grants that name it.
    grants: HashMap<Who, Vec<Grant>>,
}

/// A subject as bindings name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Who {
    User(String),
    Group(String),
}

/// What a binding gives its subjects: a role's rules, everywhere or in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Grant {
    /// The binding's namespace (`None`: a ClusterRoleBinding, everywhere).
    namespace: Option<String>,
    /// A Role (in the binding's namespace) or a ClusterRole.
    role: RoleName,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RoleName {
    Role(String),
    ClusterRole(String),
}

fn who(subject: &Subject) -> Option<Who> {
    match subject.kind.as_str() {
        "User" => Some(Who::User(subject.name.clone())),
        "Group" => Some(Who::Group(subject.name.clone())),
        _ => None,
    }
}

impl Policy {
    /// Adds a Role.
    pub fn add_role(&mut self, role: &Role) {
        let key = (role.metadata.namespace.clone().unwrap_or_default(), role.metadata.name.clone().unwrap_or_default());
        self.roles.insert(key, role.rules.clone());
    }

    /// Adds a ClusterRole.
    pub fn add_cluster_role(&mut self, role: &ClusterRole) {
        self.cluster_roles.insert(role.metadata.name.clone().unwrap_or_default(), role.rules.clone());
    }

    /// Adds a RoleBinding.
    pub fn add_role_binding(&mut self, binding: &RoleBinding) {
        let namespace = binding.metadata.namespace.clone().unwrap_or_default();
        let role = match binding.role_ref.kind.as_str() {
            "Role" => RoleName::Role(binding.role_ref.name.clone()),
            _ => RoleName::ClusterRole(binding.role_ref.name.clone()),
        };
        for subject in binding.subjects.iter().filter_map(who) {
            self.grants
                .entry(subject)
                .or_default()
                .push(Grant { namespace: Some(namespace.clone()), role: role.clone() });
        }
    }

    /// Adds a ClusterRoleBinding.
    pub fn add_cluster_role_binding(&mut self, binding: &ClusterRoleBinding) {
        let role = RoleName::ClusterRole(binding.role_ref.name.clone());
        for subject in binding.subjects.iter().filter_map(who) {
            self.grants.entry(subject).or_default().push(Grant { namespace: None, role: role.clone() });
        }
    }

    /// Whether `principal` may do what `request` asks.
    #[must_use]
    pub fn authorize(&self, principal: &Principal, request: &Request<'_>) -> bool {
        if principal.groups.iter().any(|g| g == MASTERS_GROUP) {
            return true;
        }
        let subjects = std::iter::once(Who::User(principal.name.clone()))
            .chain(principal.groups.iter().map(|g| Who::Group(g.clone())));
        for subject in subjects {
            for grant in self.grants.get(&subject).into_iter().flatten() {
                // A namespace's grant covers only requests in that namespace.
                let in_scope = match (&grant.namespace, request) {
                    (None, _) => true,
                    (Some(bound), Request::Resource { namespace: Some(asked), .. }) => bound == asked,
                    (Some(_), _) => false,
                };
                if !in_scope {
                    continue;
                }
                let rules = match &grant.role {
                    RoleName::Role(name) => {
                        let namespace = grant.namespace.clone().unwrap_or_default();
                        self.roles.get(&(namespace, name.clone()))
                    }
                    RoleName::ClusterRole(name) => self.cluster_roles.get(name),
                };
                if rules.into_iter().flatten().any(|rule| allows(rule, request)) {
                    return true;
                }
            }
        }
        false
    }
}

fn any_or(list: &[String], wanted: &str) -> bool {
    list.iter().any(|item| item == "*" || item == wanted)
}

/// Whether one rule allows `request`.
#[must_use]
pub fn allows(rule: &PolicyRule, request: &Request<'_>) -> bool {
    match *request {
        Request::Resource { verb, group, resource, subresource, name, .. } => {
            let resource_matches = rule.resources.iter().any(|r| match subresource {
                None => r == "*" || r == resource,
                Some(sub) => r == "*" || *r == format!("{resource}/{sub}") || *r == format!("*/{sub}"),
            });
            let name_matches =
                rule.resource_names.is_empty() || name.is_some_and(|n| rule.resource_names.iter().any(|r| r == n));
            any_or(&rule.verbs, verb) && any_or(&rule.api_groups, group) && resource_matches && name_matches
        }
        Request::Path { verb, path } => {
            let path_matches = rule.non_resource_urls.iter().any(|url| match url.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => url == path,
            });
            any_or(&rule.verbs, verb) && path_matches
        }
    }
}

#[cfg(test)]
mod tests {
    use agora_schemas::rbac::{RBAC_API_VERSION, RoleRef};
    use agora_schemas::{AUTHENTICATED_GROUP, ObjectMeta};

    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let strings = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect();
        PolicyRule {
            verbs: strings(verbs),
            api_groups: strings(groups),
            resources: strings(resources),
            resource_names: strings(names),
            non_resource_urls: Vec::new(),
        }
    }

    fn principal(name: &str, groups: &[&str]) -> Principal {
        Principal { name: name.into(), groups: groups.iter().map(|g| (*g).to_owned()).collect() }
    }

    fn get<'a>(resource: &'a str, namespace: Option<&'a str>, name: Option<&'a str>) -> Request<'a> {
        Request::Resource { verb: "get", group: "agora", resource, subresource: None, namespace, name }
    }

    fn subject(kind: &str, name: &str) -> Subject {
        Subject { kind: kind.into(), name: name.into(), ..Subject::default() }
    }

    fn policy() -> Policy {
        let mut policy = Policy::default();
        policy.add_role(&Role {
            api_version: RBAC_API_VERSION.into(),
            kind: "Role".into(),
            metadata: ObjectMeta::named(Some("team-a"), "app-editor"),
            rules: vec![rule(&["get", "list", "update"], &["agora"], &["apps", "apps/scale"], &[])],
        });
        policy.add_cluster_role(&ClusterRole {
            api_version: RBAC_API_VERSION.into(),
            kind: "ClusterRole".into(),
            metadata: ObjectMeta::named(None, "viewer"),
            rules: vec![rule(&["get", "list", "watch"], &["*"], &["*"], &[])],
        });
        let mut health = rule(&["get"], &[], &[], &[]);
        health.non_resource_urls = vec!["/healthz".into(), "/apis/*".into()];
        policy.add_cluster_role(&ClusterRole {
            api_version: RBAC_API_VERSION.into(),
            kind: "ClusterRole".into(),
            metadata: ObjectMeta::named(None, "discovery"),
            rules: vec![health],
        });
        policy.add_cluster_role(&ClusterRole {
            api_version: RBAC_API_VERSION.into(),
            kind: "ClusterRole".into(),
            metadata: ObjectMeta::named(None, "framework-b"),
            rules: vec![rule(&["use"], &["agora"], &["frameworks"], &["b"])],
        });
        let role_ref = |kind: &str, name: &str| RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: name.into(),
        };
        policy.add_role_binding(&RoleBinding {
            api_version: RBAC_API_VERSION.into(),
            kind: "RoleBinding".into(),
            metadata: ObjectMeta::named(Some("team-a"), "alice-edits"),
            subjects: vec![subject("User", "alice")],
            role_ref: role_ref("Role", "app-editor"),
        });
        policy.add_role_binding(&RoleBinding {
            api_version: RBAC_API_VERSION.into(),
            kind: "RoleBinding".into(),
            metadata: ObjectMeta::named(Some("team-b"), "team-b-views"),
            subjects: vec![subject("Group", "team-b")],
            role_ref: role_ref("ClusterRole", "viewer"),
        });
        policy.add_cluster_role_binding(&ClusterRoleBinding {
            api_version: RBAC_API_VERSION.into(),
            kind: "ClusterRoleBinding".into(),
            metadata: ObjectMeta::named(None, "everyone-discovers"),
            subjects: vec![subject("Group", AUTHENTICATED_GROUP)],
            role_ref: role_ref("ClusterRole", "discovery"),
        });
        policy.add_cluster_role_binding(&ClusterRoleBinding {
            api_version: RBAC_API_VERSION.into(),
            kind: "ClusterRoleBinding".into(),
            metadata: ObjectMeta::named(None, "bob-is-b"),
            subjects: vec![subject("User", "bob"), subject("ServiceAccount", "bob")],
            role_ref: role_ref("ClusterRole", "framework-b"),
        });
        policy
    }

    #[test]
    fn a_role_binding_gives_its_rules_in_its_namespace_only() {
        let policy = policy();
        let alice = principal("alice", &[AUTHENTICATED_GROUP]);
        assert!(policy.authorize(&alice, &get("apps", Some("team-a"), Some("web"))));
        assert!(!policy.authorize(&alice, &get("apps", Some("team-b"), Some("web"))), "another namespace");
        assert!(!policy.authorize(&alice, &get("apps", None, None)), "across namespaces");
        assert!(!policy.authorize(&alice, &get("cronjobs", Some("team-a"), None)), "another resource");
        let delete = Request::Resource {
            verb: "delete",
            group: "agora",
            resource: "apps",
            subresource: None,
            namespace: Some("team-a"),
            name: Some("web"),
        };
        assert!(!policy.authorize(&alice, &delete), "another verb");
        let scale = Request::Resource {
            verb: "update",
            group: "agora",
            resource: "apps",
            subresource: Some("scale"),
            namespace: Some("team-a"),
            name: Some("web"),
        };
        assert!(policy.authorize(&alice, &scale), "a subresource listed as resource/subresource");
        let status = Request::Resource {
            verb: "update",
            group: "agora",
            resource: "apps",
            subresource: Some("status"),
            namespace: Some("team-a"),
            name: Some("web"),
        };
        assert!(!policy.authorize(&alice, &status), "a subresource not listed");
        let other_group = Request::Resource {
            verb: "get",
            group: "rbac.authorization.k8s.io",
            resource: "apps",
            subresource: None,
            namespace: Some("team-a"),
            name: None,
        };
        assert!(!policy.authorize(&alice, &other_group), "another API group");
    }

    #[test]
    fn groups_cluster_roles_names_and_paths_are_matched_as_kubernetes_does() {
        let policy = policy();
        let carol = principal("carol", &[AUTHENTICATED_GROUP, "team-b"]);
        assert!(policy.authorize(&carol, &get("tasks", Some("team-b"), None)), "a ClusterRole bound in a namespace");
        assert!(!policy.authorize(&carol, &get("tasks", Some("team-a"), None)));
        assert!(!policy.authorize(&carol, &get("agents", None, Some("n1"))), "not cluster-scoped resources");
        assert!(policy.authorize(&carol, &Request::Path { verb: "get", path: "/healthz" }));
        assert!(policy.authorize(&carol, &Request::Path { verb: "get", path: "/apis/agora/v1" }), "a prefix with *");
        assert!(!policy.authorize(&carol, &Request::Path { verb: "post", path: "/healthz" }));
        assert!(!policy.authorize(&carol, &Request::Path { verb: "get", path: "/metrics" }));

        let bob = principal("bob", &[AUTHENTICATED_GROUP]);
        let use_framework = |name| Request::Resource {
            verb: "use",
            group: "agora",
            resource: "frameworks",
            subresource: None,
            namespace: None,
            name,
        };
        assert!(policy.authorize(&bob, &use_framework(Some("b"))));
        assert!(!policy.authorize(&bob, &use_framework(Some("a"))), "only the names listed");
        assert!(!policy.authorize(&bob, &use_framework(None)), "resourceNames never match a request without a name");

        let nobody = principal("mallory", &[AUTHENTICATED_GROUP]);
        assert!(!policy.authorize(&nobody, &get("apps", Some("team-a"), None)), "nothing is allowed unless granted");
        assert!(policy.authorize(&principal("admin", &[MASTERS_GROUP]), &get("anything", None, None)));
        let service_account = principal("bob-sa", &[]);
        assert!(!policy.authorize(&service_account, &use_framework(Some("b"))), "ServiceAccount subjects name no one");
    }

    #[test]
    fn a_binding_to_a_role_that_does_not_exist_gives_nothing() {
        let mut policy = Policy::default();
        policy.add_role_binding(&RoleBinding {
            api_version: RBAC_API_VERSION.into(),
            kind: "RoleBinding".into(),
            metadata: ObjectMeta::named(Some("team-a"), "dangling"),
            subjects: vec![subject("User", "alice")],
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "gone".into(),
            },
        });
        assert!(!policy.authorize(&principal("alice", &[]), &get("apps", Some("team-a"), None)));
    }
}
