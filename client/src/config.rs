//! [`Config`]: where the apiserver is and how to talk to it — from a kubeconfig ([`Config::infer`], as kube-rs'
//! `Config::infer`), or from `--server`, `AGORA_SERVER`, `AGORA_TOKEN_FILE` and `AGORA_CA_FILE`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::kubeconfig::Kubeconfig;

/// The apiserver's address when nothing else is said (what `agora apiserver` listens on by default).
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:5050";
/// The kubeconfig `agora apiserver` writes with its default data dir, read when nothing else names a cluster.
pub const DEFAULT_KUBECONFIG: &str = "/var/lib/agora/kubeconfig";
/// The environment variable naming kubeconfig files (the first that exists is used), as for kubectl.
pub const KUBECONFIG_ENV: &str = "KUBECONFIG";
/// The environment variable naming the apiserver (what `--server` overrides).
pub const SERVER_ENV: &str = "AGORA_SERVER";
/// The environment variable naming a file holding the bearer token.
pub const TOKEN_FILE_ENV: &str = "AGORA_TOKEN_FILE";
/// The environment variable naming a file holding the CA certificate(s) to trust.
pub const CA_FILE_ENV: &str = "AGORA_CA_FILE";

/// How to reach the apiserver.
///
/// ```
/// use std::time::Duration;
/// use agora_client::Config;
///
/// let config = Config::new("https://127.0.0.1:5050").timeout(Duration::from_secs(10));
/// assert_eq!(config.server, "https://127.0.0.1:5050");
/// ```
#[derive(Clone)]
#[must_use]
pub struct Config {
    /// The apiserver's base URL, `https://host:port` (or `http://` for an apiserver on loopback run with
    /// `--insecure-allow-unauthenticated`).
    pub server: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// The CA certificates (PEM) the server's certificate must chain to; without them, the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The default namespace (a kubeconfig context's).
    pub namespace: Option<String>,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long a request (other than a watch or a followed log) may take in all.
    pub timeout: Duration,
    /// Sent as `User-Agent` (the apiserver's logs and metrics name the client by it).
    pub user_agent: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The apiserver at `server`, without a token.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into().trim_end_matches('/').to_owned(),
            token: None,
            ca_pem: None,
            namespace: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            user_agent: format!("agora-client/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The cluster a kubeconfig names: its `context` (or current context)'s server, CA and token.
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read or does not say enough (naming what is missing).
    pub fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<Self> {
        let resolved = Kubeconfig::read(path)?
            .resolve(context, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let mut config = Self::new(resolved.server);
        config.token = resolved.token;
        config.ca_pem = resolved.ca_pem;
        config.namespace = resolved.namespace;
        Ok(config)
    }

    /// The cluster the environment names, as kube-rs' `Config::infer`: the first existing file in `KUBECONFIG`;
    /// else `AGORA_SERVER` (with `AGORA_TOKEN_FILE` and `AGORA_CA_FILE`); else the kubeconfig `agora apiserver`
    /// writes in its default data dir ([`DEFAULT_KUBECONFIG`]).
    ///
    /// # Errors
    /// [`Error::Config`] when none of these names a cluster, or the one found cannot be used.
    pub fn infer() -> Result<Self> {
        Self::infer_context(None)
    }

    /// As [`Config::infer`], with the kubeconfig's `context` instead of its current one.
    ///
    /// # Errors
    /// As [`Config::infer`]; also a `context` the kubeconfig does not have, or one given where no kubeconfig is.
    pub fn infer_context(context: Option<&str>) -> Result<Self> {
        if let Some(paths) = std::env::var_os(KUBECONFIG_ENV).filter(|p| !p.is_empty()) {
            let found = std::env::split_paths(&paths).find(|p| p.is_file());
            return match found {
                Some(path) => Self::from_kubeconfig(&path, context),
                None => Err(Error::Config(format!(
                    "no file named by {KUBECONFIG_ENV} ({}) exists",
                    paths.to_string_lossy()
                ))),
            };
        }
        if std::env::var(SERVER_ENV).is_ok_and(|s| !s.is_empty()) {
            if let Some(context) = context {
                return Err(Error::Config(format!(
                    "context {context:?} names a kubeconfig's context, but {SERVER_ENV} names the server"
                )));
            }
            return Self::from_env();
        }
        let default = Path::new(DEFAULT_KUBECONFIG);
        if default.is_file() {
            return Self::from_kubeconfig(default, context);
        }
        Err(Error::Config(format!(
            "no cluster is configured: pass --kubeconfig, set {KUBECONFIG_ENV} or {SERVER_ENV} (the apiserver writes a \
             kubeconfig into its data dir; {DEFAULT_KUBECONFIG} with the default one)"
        )))
    }

    /// The apiserver named by `AGORA_SERVER` (or [`DEFAULT_SERVER`]), with the token in the file named by
    /// `AGORA_TOKEN_FILE` and the CA in the file named by `AGORA_CA_FILE`, if set.
    ///
    /// # Errors
    /// [`Error::Config`] when a named file cannot be read or is empty.
    pub fn from_env() -> Result<Self> {
        let server = std::env::var(SERVER_ENV).ok().filter(|s| !s.is_empty());
        let mut config = Self::new(server.as_deref().unwrap_or(DEFAULT_SERVER));
        if let Some(file) = std::env::var_os(TOKEN_FILE_ENV).filter(|f| !f.is_empty()) {
            config = config.token_file(Path::new(&file))?;
        }
        if let Some(file) = std::env::var_os(CA_FILE_ENV).filter(|f| !f.is_empty()) {
            config = config.ca_file(Path::new(&file))?;
        }
        Ok(config)
    }

    /// Sends this bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sends the bearer token held in `path` (surrounding whitespace is ignored).
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read or holds no token.
    pub fn token_file(self, path: &Path) -> Result<Self> {
        Ok(self.token(read_token(path)?))
    }

    /// Trusts the CA certificates (PEM) in `path` for the server's certificate.
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read.
    pub fn ca_file(mut self, path: &Path) -> Result<Self> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read the CA file {}: {e}", path.display())))?;
        self.ca_pem = Some(pem);
        Ok(self)
    }

    /// Trusts these CA certificates (PEM).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Gives up on connecting after `timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Gives up on a request (other than a watch or followed log) after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Identifies the client as `user_agent`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }
}

/// A rustls client configuration (aws-lc-rs) that trusts exactly the CA certificates in `ca_pem`.
///
/// # Errors
/// [`Error::Config`] when `ca_pem` holds no certificate or one that does not parse.
pub fn tls_client_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| Error::Config(format!("the CA is not PEM: {e}")))?;
        roots.add(cert).map_err(|e| Error::Config(format!("the CA certificate is unusable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Config("the CA holds no certificate".into()));
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The path of the kubeconfig in an apiserver data dir.
#[must_use]
pub fn kubeconfig_in(data_dir: &Path) -> PathBuf {
    data_dir.join("kubeconfig")
}

impl Default for Config {
    fn default() -> Self {
        Self::new(DEFAULT_SERVER)
    }
}

/// The bearer token held in `path`, surrounding whitespace trimmed (the apiserver and agents read theirs so too).
///
/// # Errors
/// [`Error::Config`] when the file cannot be read or holds no token.
pub fn read_token(path: &Path) -> Result<String> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read the token file {}: {e}", path.display())))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::Config(format!("the token file {} is empty", path.display())));
    }
    Ok(token.to_owned())
}
