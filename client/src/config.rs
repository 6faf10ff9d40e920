//! [`Config`]: where the apiserver is and how to talk to it — from `--server`, `AGORA_SERVER` and a token file.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// The apiserver's address when nothing else is said (what `agora apiserver` listens on by default).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:5050";
/// The environment variable naming the apiserver (what `--server` overrides).
pub const SERVER_ENV: &str = "AGORA_SERVER";
/// The environment variable naming a file holding the bearer token.
pub const TOKEN_FILE_ENV: &str = "AGORA_TOKEN_FILE";

/// How to reach the apiserver.
///
/// ```
/// use std::time::Duration;
/// use agora_client::Config;
///
/// let config = Config::new("http://127.0.0.1:5050").timeout(Duration::from_secs(10));
/// assert_eq!(config.server, "http://127.0.0.1:5050");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Config {
    /// The apiserver's base URL, `http://host:port`.
    pub server: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long a request (other than a watch or a followed log) may take in all.
    pub timeout: Duration,
    /// Sent as `User-Agent` (the apiserver's logs and metrics name the client by it).
    pub user_agent: String,
}

impl Config {
    /// The apiserver at `server`, without a token.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into().trim_end_matches('/').to_owned(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            user_agent: format!("agora-client/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The apiserver named by `AGORA_SERVER` (or [`DEFAULT_SERVER`]), with the token in the file named by
    /// `AGORA_TOKEN_FILE`, if set.
    ///
    /// # Errors
    /// [`Error::Config`] when the token file cannot be read or is empty.
    pub fn from_env() -> Result<Self> {
        let server = std::env::var(SERVER_ENV).ok().filter(|s| !s.is_empty());
        let config = Self::new(server.as_deref().unwrap_or(DEFAULT_SERVER));
        match std::env::var_os(TOKEN_FILE_ENV).filter(|f| !f.is_empty()) {
            Some(file) => config.token_file(Path::new(&file)),
            None => Ok(config),
        }
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
