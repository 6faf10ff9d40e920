//! `Secret`: named, namespaced bytes a task's spec refers to without holding them — today registry credentials
//! (`type: DockerConfigJson`, a Docker `config.json` as `kubectl create secret docker-registry` writes it), named by
//! `container.imagePullSecrets`. The Task, its App or CronJob, their Events and the agent's messages carry only the
//! Secret's name; the agent reads the Secret when it pulls.
//!
//! [`registry_credentials`] is the one reading of a Docker `config.json`, for Secrets and for an agent's own file.

use std::collections::BTreeMap;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::ObjectMeta;
use crate::validation::{Path, Validator};

/// The key of a `DockerConfigJson` Secret's `config.json`, as Kubernetes names it.
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";
/// The most bytes a Secret's data may hold, decoded (Kubernetes' bound).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// How Secrets are printed: their type and how many keys they hold — never a value.
pub const SECRET_COLUMNS: &[crate::columns::Column] = {
    use crate::columns::{Cell, Column};
    &[
        Column::new("Type", "string", "What the data is.", Cell::Path("/spec/type")),
        Column::new(
            "Data",
            "integer",
            "How many keys it holds.",
            Cell::With(|o, _| {
                Value::from(o.pointer("/spec/data").and_then(Value::as_object).map_or(0, serde_json::Map::len))
            }),
        ),
    ]
};

crate::object! {
    /// Named bytes tasks refer to without holding them: registry credentials (`type: DockerConfigJson`, the key
    /// `.dockerconfigjson` holding a Docker `config.json`) named by a container's `imagePullSecrets`.
    Secret {
        spec: SecretSpec,
        plural: "secrets",
        singular: "secret",
        short_names: [],
        namespaced: true,
        subresources: [],
        field_selectors: ["spec.type"],
        name_rule: Subdomain,
        columns: SECRET_COLUMNS,
    }
}

/// What a Secret holds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = SecretSpec::schema_defaults)]
pub struct SecretSpec {
    /// `Opaque` (default): any keys. `DockerConfigJson`: registry credentials, the key `.dockerconfigjson` holding a
    /// Docker `config.json` (`{"auths": {"HOST:PORT": {"auth": base64("user:password")}}}`, or `username` and
    /// `password` instead of `auth`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<SecretType>,
    /// Each key's bytes, base64 (standard alphabet, padded). Keys: letters, digits, `-`, `_`, `.`.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

crate::defaults!(SecretSpec { type_: SecretType = SecretType::Opaque });

/// What a Secret's data is.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretType {
    /// Anything.
    #[default]
    Opaque,
    /// Registry credentials: a Docker `config.json` under `.dockerconfigjson`.
    DockerConfigJson,
}

impl SecretSpec {
    /// Sets every unset field to its default.
    pub fn apply_defaults(&mut self) {
        self.fill_defaults();
    }

    /// Keys well formed, values base64, at most [`MAX_SECRET_BYTES`] in all; a `DockerConfigJson` Secret holds a
    /// readable `config.json`. Messages name the key, never a value.
    pub fn validate(&self, v: &mut Validator, path: &Path, _meta: &ObjectMeta) {
        let data = path.field("data");
        let mut total = 0;
        for (key, value) in &self.data {
            let at = data.key(key);
            if key.is_empty()
                || key.len() > 253
                || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || key == "."
                || key == ".."
            {
                v.invalid(&at, "a key is letters, digits, '-', '_' and '.' (at most 253, not . or ..)");
            }
            match base64::engine::general_purpose::STANDARD.decode(value) {
                Ok(bytes) => {
                    total += bytes.len();
                    if key == DOCKER_CONFIG_KEY && self.type_() == SecretType::DockerConfigJson {
                        check_docker_config(v, &at, &bytes);
                    }
                }
                Err(_) => v.invalid(&at, "is not base64 (standard alphabet, padded): encode the value"),
            }
        }
        if total > MAX_SECRET_BYTES {
            v.invalid(&data, format!("holds {total} bytes; a Secret holds at most {MAX_SECRET_BYTES}"));
        }
        if self.type_() == SecretType::DockerConfigJson && !self.data.contains_key(DOCKER_CONFIG_KEY) {
            v.required(
                &data.key(DOCKER_CONFIG_KEY),
                "a DockerConfigJson Secret holds a Docker config.json under .dockerconfigjson",
            );
        }
    }

    /// The decoded bytes of `key`.
    #[must_use]
    pub fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.data.get(key).and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
    }
}

fn check_docker_config(v: &mut Validator, at: &Path, bytes: &[u8]) {
    let Ok(config) = serde_json::from_slice::<Value>(bytes) else {
        v.invalid(at, "is not a Docker config.json: not JSON");
        return;
    };
    let Some(auths) = config.get("auths").and_then(Value::as_object) else {
        v.invalid(at, "is not a Docker config.json: it has no \"auths\" object");
        return;
    };
    for registry in auths.keys() {
        if let Err(why) = registry_credentials(&config, registry_host(registry)) {
            v.invalid(at, why);
        }
    }
}

/// The `host[:port]` an `auths` key names (`https://index.docker.io/v1/` names `index.docker.io`).
fn registry_host(key: &str) -> &str {
    let key = key.trim_start_matches("https://").trim_start_matches("http://");
    key.split('/').next().unwrap_or(key)
}

/// Docker Hub answers to several names; its credentials are filed under any of them.
fn same_registry(a: &str, b: &str) -> bool {
    const HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    a == b || (HUB.contains(&a) && HUB.contains(&b))
}

/// The user and password a Docker `config.json` holds for `registry` (`host[:port]`), if any.
///
/// # Errors
/// An entry for the registry that cannot be read, in words that name the registry and never the entry's content.
pub fn registry_credentials(config: &Value, registry: &str) -> Result<Option<(String, String)>, String> {
    let Some(entry) = config
        .get("auths")
        .and_then(Value::as_object)
        .and_then(|auths| auths.iter().find(|(key, _)| same_registry(registry_host(key), registry)))
        .map(|(_, entry)| entry)
    else {
        return Ok(None);
    };
    if let Some(encoded) = entry.get("auth").and_then(Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| Some((u.to_owned(), p.to_owned()))))
            .ok_or_else(|| {
                format!("the credentials for registry {registry}: \"auth\" is not base64 of user:password")
            });
    }
    match (entry.get("username").and_then(Value::as_str), entry.get("password").and_then(Value::as_str)) {
        (Some(user), Some(password)) => Ok(Some((user.to_owned(), password.to_owned()))),
        _ => {
            Err(format!("the credentials for registry {registry}: neither \"auth\" nor \"username\" and \"password\""))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Resource as _;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(type_: SecretType, data: &[(&str, String)]) -> Secret {
        let meta = ObjectMeta { name: Some("regcred".into()), namespace: Some("default".into()), ..Default::default() };
        let mut s = Secret::new(
            meta,
            SecretSpec { type_: Some(type_), data: data.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect() },
        );
        s.apply_defaults();
        s
    }

    fn errors(s: &Secret) -> Vec<String> {
        s.validate().err().map(|e| e.errors().iter().map(ToString::to_string).collect()).unwrap_or_default()
    }

    #[test]
    fn credentials_are_found_by_registry_in_either_form() {
        let config = json!({ "auths": {
            "127.0.0.1:5000": { "auth": b64("team:s3cret") },
            "https://index.docker.io/v1/": { "username": "hub", "password": "pw" },
        }});
        assert_eq!(registry_credentials(&config, "127.0.0.1:5000"), Ok(Some(("team".into(), "s3cret".into()))));
        assert_eq!(registry_credentials(&config, "docker.io"), Ok(Some(("hub".into(), "pw".into()))));
        assert_eq!(registry_credentials(&config, "127.0.0.1:5001"), Ok(None));
        let broken = json!({ "auths": { "r:1": { "auth": b64("no-colon") } } });
        let why = registry_credentials(&broken, "r:1").unwrap_err();
        assert!(why.contains("r:1") && !why.contains("no-colon"), "{why}");
    }

    #[test]
    fn a_docker_config_secret_must_hold_a_readable_config() {
        let good = b64(&json!({ "auths": { "r:1": { "auth": b64("u:p") } } }).to_string());
        assert!(errors(&secret(SecretType::DockerConfigJson, &[(DOCKER_CONFIG_KEY, good)])).is_empty());

        let missing = errors(&secret(SecretType::DockerConfigJson, &[]));
        assert!(missing.iter().any(|e| e.contains("spec.data[.dockerconfigjson]")), "{missing:?}");

        let not_json = errors(&secret(SecretType::DockerConfigJson, &[(DOCKER_CONFIG_KEY, b64("hunter2"))]));
        assert!(not_json.iter().any(|e| e.contains("not JSON")), "{not_json:?}");
        assert!(not_json.iter().all(|e| !e.contains("hunter2")), "{not_json:?}");

        let bad_entry = b64(&json!({ "auths": { "r:1": { "auth": "hunter2" } } }).to_string());
        let bad = errors(&secret(SecretType::DockerConfigJson, &[(DOCKER_CONFIG_KEY, bad_entry)]));
        assert!(bad.iter().any(|e| e.contains("registry r:1")), "{bad:?}");
        assert!(bad.iter().all(|e| !e.contains("hunter2")), "{bad:?}");
    }

    #[test]
    fn keys_and_values_are_checked_and_the_size_bounded() {
        let bad = errors(&secret(SecretType::Opaque, &[("a/b", b64("x")), ("token", "not base64!".into())]));
        assert!(bad.iter().any(|e| e.contains("spec.data[a/b]")), "{bad:?}");
        assert!(bad.iter().any(|e| e.contains("spec.data[token]") && e.contains("base64")), "{bad:?}");
        let big = errors(&secret(SecretType::Opaque, &[("blob", b64(&"x".repeat(MAX_SECRET_BYTES + 1)))]));
        assert!(big.iter().any(|e| e.contains("at most")), "{big:?}");
        assert_eq!(secret(SecretType::Opaque, &[("token", b64("abc"))]).spec.bytes("token"), Some(b"abc".to_vec()));
    }
}
