//! `Token`: a bearer token of a principal (a person, a team's pipeline, a framework, an agent), stored as the SHA-256
//! digest of the token — the token itself is shown once, by whoever made it (`agora token create`), and never stored.
//! Every apiserver of a cluster authenticates with the Tokens of the store, so a new token works, and a deleted one
//! stops working (its open watches and log streams closed), at once and everywhere, without a restart.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validation::{Path, Validator};

/// The principal of the apiserver's own token (its `--token-file`, or the one it made): full rights.
pub const ADMIN_PRINCIPAL: &str = "admin";
/// The group the admin principal belongs to (Kubernetes' superuser group).
pub const MASTERS_GROUP: &str = "system:masters";
/// The group every authenticated principal belongs to, as in Kubernetes.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The longest principal or group name.
pub const MAX_PRINCIPAL_LENGTH: usize = 253;

/// How Tokens are printed: whose, which groups, until when — never the digest.
pub const TOKEN_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new("Principal", "string", "Who presents it.", Cell::Path("/spec/principal")),
        Column::new("Groups", "string", "The groups the principal has with it.", Cell::Path("/spec/groups")),
        Column::new("Expires", "string", "When it stops working.", Cell::Path("/spec/expiresAt")),
    ]
};

crate::object! {
    /// A bearer token of a principal, stored as its SHA-256 digest. Deleting it revokes it.
    Token {
        spec: TokenSpec,
        plural: "tokens",
        singular: "token",
        short_names: [],
        namespaced: false,
        subresources: [],
        field_selectors: ["spec.principal"],
        name_rule: Subdomain,
        columns: TOKEN_COLUMNS,
    }
}

/// Whose token it is and what proves it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSpec {
    /// The principal (user name) a request presenting the token acts as.
    pub principal: String,
    /// Groups the principal belongs to with this token (RBAC bindings may name groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The SHA-256 digest of the token, 64 lowercase hex digits.
    pub sha256: String,
    /// When it stops working; never, without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// Whether `name` may name a principal or group: 1 to 253 printable ASCII characters without spaces (what a user name
/// in a Kubernetes RBAC subject may be, less what would make log lines and tables ambiguous).
#[must_use]
pub fn valid_principal(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_PRINCIPAL_LENGTH && name.bytes().all(|b| b.is_ascii_graphic())
}

impl TokenSpec {
    /// Tokens have no defaults.
    pub fn apply_defaults(&mut self) {}

    /// A principal and groups that can be named, a digest that is one.
    pub fn validate(&self, v: &mut Validator, path: &Path, _meta: &ObjectMeta) {
        let why = "must be 1 to 253 printable ASCII characters, without spaces";
        if self.principal.is_empty() {
            v.required(&path.field("principal"), "the principal the token is for");
        } else if !valid_principal(&self.principal) {
            v.invalid(&path.field("principal"), why);
        }
        for (i, group) in self.groups.iter().enumerate() {
            if !valid_principal(group) {
                v.invalid(&path.field("groups").index(i), why);
            }
        }
        if self.sha256.is_empty() {
            v.required(&path.field("sha256"), "the SHA-256 digest of the token (the token itself is never stored)");
        } else if self.sha256.len() != 64
            || !self.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            v.invalid(&path.field("sha256"), "must be a SHA-256 digest: 64 lowercase hex digits");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;

    fn token(principal: &str, groups: &[&str], sha256: &str) -> Token {
        let spec = TokenSpec {
            principal: principal.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            sha256: sha256.into(),
            expires_at: None,
        };
        Token::new(ObjectMeta::named(None, "alice-1"), spec)
    }

    #[test]
    fn a_token_names_its_principal_and_holds_only_a_digest() {
        let digest = "a".repeat(64);
        assert!(token("alice", &["team-a"], &digest).validate().is_ok());
        assert!(token("system:serviceaccount:ci", &[], &digest).validate().is_ok());
        let errors = token("", &["bad group"], "ABC").validate().unwrap_err();
        let paths: Vec<&str> = errors.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["spec.principal", "spec.groups[0]", "spec.sha256"]);
        assert!(token("alice", &[], &"A".repeat(64)).validate().is_err(), "lowercase hex only");
        assert!(token(&"x".repeat(254), &[], &digest).validate().is_err());
    }
}
