//! [`Kubeconfig`]: the file kubectl and Agora share to find a cluster — its server, the CA to trust, the token to
//! present. The apiserver writes one (`DATA_DIR/kubeconfig`, `0600`); [`Config::infer`](crate::Config::infer) and
//! [`Config::from_kubeconfig`](crate::Config::from_kubeconfig) read one, as kube-rs' `Config::infer` does.
//!
//! What is read: `current-context` (or a context named by the caller) → its cluster's `server`,
//! `certificate-authority-data` or `certificate-authority` (a path, relative to the file) and `insecure-skip-tls-verify`
//! (refused: Agora does not talk to a server it cannot verify) → its user's `token` or `tokenFile`. Client
//! certificates and exec plugins are not supported and say so.

use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A kubeconfig file's contents (the parts Agora reads and writes).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// `v1`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "apiVersion")]
    pub api_version: Option<String>,
    /// `Config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The clusters, by name.
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    /// The users (credentials), by name.
    #[serde(default)]
    pub users: Vec<NamedUser>,
    /// The contexts (cluster + user + namespace), by name.
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    /// The context used unless another is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
}

/// A named cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedCluster {
    /// Its name.
    pub name: String,
    /// Where it is.
    #[serde(default)]
    pub cluster: Cluster,
}

/// Where a cluster is and how to trust it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// `https://host:port`.
    #[serde(default)]
    pub server: String,
    /// The CA certificate(s), PEM, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// A file holding the CA certificate(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// Skip verifying the server (refused by Agora's client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
}

/// A named user.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// Its credentials.
    #[serde(default)]
    pub user: AuthInfo,
}

/// A user's credentials.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct AuthInfo {
    /// A bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "tokenFile")]
    pub token_file: Option<String>,
    /// A client certificate (not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// A credential plugin (not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<serde_yaml_ng::Value>,
}

/// A named context.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedContext {
    /// Its name.
    pub name: String,
    /// What it joins.
    #[serde(default)]
    pub context: Context,
}

/// A cluster, a user and a namespace.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    /// The cluster's name.
    #[serde(default)]
    pub cluster: String,
    /// The user's name.
    #[serde(default)]
    pub user: String,
    /// The default namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a kubeconfig says about reaching one cluster, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The server URL.
    pub server: String,
    /// The CA certificates to trust, PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// The bearer token.
    pub token: Option<String>,
    /// The context's namespace.
    pub namespace: Option<String>,
}

impl Kubeconfig {
    /// A kubeconfig for one cluster named `name`: `server`, trusting `ca_pem`, with `token` — what the apiserver
    /// writes.
    #[must_use]
    pub fn single(name: &str, server: &str, ca_pem: Option<&str>, token: Option<&str>) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: name.into(),
                cluster: Cluster {
                    server: server.into(),
                    certificate_authority_data: ca_pem.map(|pem| b64.encode(pem)),
                    ..Cluster::default()
                },
            }],
            users: vec![NamedUser {
                name: name.into(),
                user: AuthInfo { token: token.map(str::to_owned), ..AuthInfo::default() },
            }],
            contexts: vec![NamedContext {
                name: name.into(),
                context: Context { cluster: name.into(), user: name.into(), namespace: Some("default".into()) },
            }],
            current_context: Some(name.into()),
        }
    }

    /// The file at `path`.
    ///
    /// # Errors
    /// [`Error::Config`] when it cannot be read or is not a kubeconfig (with the YAML error's line).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read the kubeconfig {}: {e}", path.display())))?;
        serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::Config(format!("{} is not a kubeconfig: {e}", path.display())))
    }

    /// As YAML.
    #[must_use]
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// The cluster, CA, token and namespace of `context` (or the current context); relative file names are taken
    /// from `base`, the kubeconfig's directory.
    ///
    /// # Errors
    /// [`Error::Config`] naming what is missing or unsupported.
    pub fn resolve(&self, context: Option<&str>, base: &Path) -> Result<Resolved> {
        let wanted = context
            .or(self.current_context.as_deref())
            .ok_or_else(|| Error::Config("the kubeconfig names no current-context (and none was given)".into()))?;
        let context = &self
            .contexts
            .iter()
            .find(|c| c.name == wanted)
            .ok_or_else(|| Error::Config(format!("the kubeconfig has no context {wanted:?}")))?
            .context;
        let cluster = &self
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .ok_or_else(|| {
                Error::Config(format!(
                    "context {wanted:?} names cluster {:?}, which is not in the kubeconfig",
                    context.cluster
                ))
            })?
            .cluster;
        if cluster.insecure_skip_tls_verify == Some(true) {
            return Err(Error::Config(format!(
                "cluster {:?} sets insecure-skip-tls-verify, which Agora's client refuses: give its CA as \
                 certificate-authority-data",
                context.cluster
            )));
        }
        let path = |file: &str| if Path::new(file).is_absolute() { file.into() } else { base.join(file) };
        let ca_pem = match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
            (Some(data), _) => Some(base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| {
                Error::Config(format!("cluster {:?}: certificate-authority-data is not base64: {e}", context.cluster))
            })?),
            (None, Some(file)) => Some(std::fs::read(path(file)).map_err(|e| {
                Error::Config(format!("cluster {:?}: cannot read certificate-authority {file}: {e}", context.cluster))
            })?),
            (None, None) => None,
        };
        let user = self.users.iter().find(|u| u.name == context.user).map(|u| &u.user);
        if let Some(user) = user
            && (user.client_certificate_data.is_some() || user.exec.is_some())
        {
            return Err(Error::Config(format!(
                "user {:?} authenticates with a client certificate or an exec plugin, which Agora does not \
                     support: use a token",
                context.user
            )));
        }
        let token = match user {
            Some(AuthInfo { token: Some(token), .. }) => Some(token.trim().to_owned()),
            Some(AuthInfo { token_file: Some(file), .. }) => Some(crate::config::read_token(&path(file))?),
            _ => None,
        };
        Ok(Resolved { server: cluster.server.clone(), ca_pem, token, namespace: context.namespace.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_apiserver_writes_reads_back() {
        let written = Kubeconfig::single("agora", "https://127.0.0.1:5050", Some("PEM"), Some("t0ken"));
        let read: Kubeconfig = serde_yaml_ng::from_str(&written.to_yaml()).unwrap();
        assert_eq!(read, written);
        let resolved = read.resolve(None, Path::new("/")).unwrap();
        assert_eq!(resolved.server, "https://127.0.0.1:5050");
        assert_eq!(resolved.ca_pem.as_deref(), Some(b"PEM".as_slice()));
        assert_eq!(resolved.token.as_deref(), Some("t0ken"));
        assert_eq!(resolved.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn kubectls_own_files_resolve_and_mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "CA").unwrap();
        std::fs::write(dir.path().join("token"), "  from-file\n").unwrap();
        let text = "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: c\n  cluster:\n    server: \
                    https://h:1\n    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n    tokenFile: \
                    token\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n- name: b\n  context: {cluster: \
                    nope, user: u}\n";
        std::fs::write(dir.path().join("config"), text).unwrap();
        let config = Kubeconfig::read(&dir.path().join("config")).unwrap();
        let resolved = config.resolve(None, dir.path()).unwrap();
        assert_eq!(
            (resolved.ca_pem.as_deref(), resolved.token.as_deref()),
            (Some(b"CA".as_slice()), Some("from-file"))
        );
        let missing = config.resolve(Some("b"), dir.path()).unwrap_err().to_string();
        assert!(missing.contains("names cluster \"nope\""), "{missing}");
        assert!(config.resolve(Some("zz"), dir.path()).unwrap_err().to_string().contains("no context \"zz\""));
        std::fs::write(dir.path().join("bad"), "clusters: 7\n").unwrap();
        assert!(Kubeconfig::read(&dir.path().join("bad")).unwrap_err().to_string().contains("is not a kubeconfig"));
    }
}
