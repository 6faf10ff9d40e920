//! Authentication: which principal a request comes from.
//!
//! A request presents a bearer token. The apiserver's own token (its `--token-file`, or the one it made) is the
//! principal [`ADMIN_PRINCIPAL`], in the group [`MASTERS_GROUP`]. Any other token is looked up by its SHA-256 digest
//! among the [`Token`] objects of the store, which this module keeps in memory from a watch — so a token made by
//! `agora token create` works at once on every apiserver of the cluster, and a deleted (revoked) or expired one is
//! refused at once, its open watches and log streams ended ([`Authenticated::ends`]).
//!
//! Every authenticated principal is also in [`AUTHENTICATED_GROUP`]. Without a token configured (the insecure,
//! loopback-only mode) every request is [`UNSECURED_PRINCIPAL`], a master.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agora_schemas::{ADMIN_PRINCIPAL, AUTHENTICATED_GROUP, MASTERS_GROUP, Token};
use futures::StreamExt;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::store::{KeyLayout, KeyValue, RangeRequest, SharedStore, StoreError, WatchEvent};

/// Who every request is when the server requires no token (loopback only).
pub const UNSECURED_PRINCIPAL: &str = "system:unsecured";
/// How long a request waits for the tokens to be read after a start before it is refused.
const LOADING: Duration = Duration::from_secs(5);

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user name.
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
}

impl Principal {
    fn new(name: &str, groups: &[String], master: bool) -> Self {
        let mut all: Vec<String> = groups.to_vec();
        if master {
            all.push(MASTERS_GROUP.to_owned());
        }
        all.push(AUTHENTICATED_GROUP.to_owned());
        all.sort();
        all.dedup();
        Self { name: name.to_owned(), groups: all }
    }

    /// Whether it has every right (in [`MASTERS_GROUP`]).
    #[must_use]
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }
}

/// An authenticated request's principal, and when what it opened must end.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// Who.
    pub principal: Arc<Principal>,
    /// Cancelled when its token is revoked (none for the admin token, which is revoked by changing the file and
    /// restarting).
    revoked: Option<CancellationToken>,
    /// When its token expires.
    expires: Option<Timestamp>,
}

impl Authenticated {
    /// Completes when what the request opened (a watch, a followed log) must end: its token revoked or expired.
    pub async fn ends(self) {
        let expiry = async {
            match self.expires {
                Some(at) => tokio::time::sleep(until(at)).await,
                None => std::future::pending().await,
            }
        };
        match self.revoked {
            Some(revoked) => tokio::select! {
                () = revoked.cancelled_owned() => {}
                () = expiry => {}
            },
            None => expiry.await,
        }
    }

    /// Whether anything can end it.
    #[must_use]
    pub fn can_end(&self) -> bool {
        self.revoked.is_some() || self.expires.is_some()
    }
}

fn until(at: Timestamp) -> Duration {
    let now = Timestamp::now();
    if at > now { now.duration_until(at).unsigned_abs() } else { Duration::ZERO }
}

/// A token the store holds.
struct Known {
    principal: Arc<Principal>,
    expires: Option<Timestamp>,
    revoked: CancellationToken,
}

#[derive(Default)]
struct Index {
    /// By digest.
    by_digest: HashMap<[u8; 32], Known>,
    /// Object name → digest.
    names: HashMap<String, [u8; 32]>,
}

impl Index {
    fn put(&mut self, name: &str, token: &Token) {
        self.remove(name);
        let Some(digest) = parse_digest(&token.spec.sha256) else { return };
        let principal = Arc::new(Principal::new(&token.spec.principal, &token.spec.groups, false));
        let known = Known { principal, expires: token.spec.expires_at, revoked: CancellationToken::new() };
        if let Some(replaced) = self.by_digest.insert(digest, known) {
            replaced.revoked.cancel();
        }
        self.names.insert(name.to_owned(), digest);
    }

    fn remove(&mut self, name: &str) {
        if let Some(digest) = self.names.remove(name)
            && let Some(gone) = self.by_digest.remove(&digest)
        {
            gone.revoked.cancel();
        }
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 digest of `token`, as [`Token`] objects hold it (lowercase hex).
#[must_use]
pub fn digest_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a request was not authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token, or one nobody issued (or revoked, or expired).
    Unauthorized,
    /// The tokens have not been read from the store yet.
    Loading,
}

/// Tells who presents a token.
pub struct Authenticator {
    admin: Option<Arc<str>>,
    admin_principal: Arc<Principal>,
    index: RwLock<Index>,
    loaded: tokio::sync::watch::Sender<bool>,
}

impl Authenticator {
    /// An authenticator for the apiserver's own token `admin` (none: every request is [`UNSECURED_PRINCIPAL`]).
    /// With a token, [`Self::follow`] must run for other tokens to be known.
    #[must_use]
    pub fn new(admin: Option<Arc<str>>) -> Arc<Self> {
        let admin_principal = match admin {
            Some(_) => Principal::new(ADMIN_PRINCIPAL, &[], true),
            None => Principal::new(UNSECURED_PRINCIPAL, &[], true),
        };
        Arc::new(Self {
            admin,
            admin_principal: Arc::new(admin_principal),
            index: RwLock::default(),
            loaded: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Who presents `token` (`None`: no `Authorization: Bearer` header).
    ///
    /// # Errors
    /// [`Refusal::Unauthorized`] for no token or an unknown, revoked or expired one; [`Refusal::Loading`] when the
    /// store's tokens are still not read after a few seconds.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Authenticated, Refusal> {
        let Some(admin) = &self.admin else {
            return Ok(Authenticated { principal: self.admin_principal.clone(), revoked: None, expires: None });
        };
        let Some(token) = token else { return Err(Refusal::Unauthorized) };
        if agora_tls::token_matches(token, admin) {
            return Ok(Authenticated { principal: self.admin_principal.clone(), revoked: None, expires: None });
        }
        if !*self.loaded.borrow() {
            let mut loaded = self.loaded.subscribe();
            if tokio::time::timeout(LOADING, loaded.wait_for(|l| *l)).await.is_err() {
                return Err(Refusal::Loading);
            }
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let index = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = index.by_digest.get(&digest).ok_or(Refusal::Unauthorized)?;
        if known.expires.is_some_and(|at| at <= Timestamp::now()) {
            return Err(Refusal::Unauthorized);
        }
        Ok(Authenticated {
            principal: known.principal.clone(),
            revoked: Some(known.revoked.clone()),
            expires: known.expires,
        })
    }

    /// Keeps the index of the store's Tokens current, for as long as the server runs: a list, then a watch from it,
    /// started over (after a pause) whenever the watch breaks.
    pub async fn follow(self: Arc<Self>, store: SharedStore, keys: KeyLayout) {
        if self.admin.is_none() {
            return;
        }
        let prefix = keys.kind_prefix("tokens");
        loop {
            if let Err(e) = self.follow_once(&store, &prefix).await {
                tracing::warn!(error = %e, "reading the tokens again");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow_once(&self, store: &SharedStore, prefix: &str) -> Result<(), StoreError> {
        let listed = store.range(RangeRequest::prefix(prefix)).await?;
        {
            let mut fresh = Index::default();
            for kv in &listed.kvs {
                if let Some((name, token)) = decode(prefix, kv) {
                    fresh.put(&name, &token);
                }
            }
            let mut index = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Whatever the new list lacks was revoked while the watch was down.
            for (digest, known) in &index.by_digest {
                if !fresh.by_digest.contains_key(digest) {
                    known.revoked.cancel();
                }
            }
            *index = fresh;
        }
        self.loaded.send_replace(true);
        let mut changes = store.watch_changes(prefix, listed.revision + 1).await?;
        while let Some(change) = changes.next().await {
            let mut index = self.index.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            match change? {
                WatchEvent::Put { kv, .. } => {
                    if let Some((name, token)) = decode(prefix, &kv) {
                        index.put(&name, &token);
                    }
                }
                WatchEvent::Delete { key, .. } => index.remove(key.strip_prefix(prefix).unwrap_or(&key)),
                WatchEvent::Progress { .. } => {}
            }
        }
        Err(StoreError::Unavailable("the watch of the tokens ended".to_owned()))
    }
}

fn decode(prefix: &str, kv: &KeyValue) -> Option<(String, Token)> {
    let name = kv.key.strip_prefix(prefix)?.to_owned();
    let token: Token = serde_json::from_slice(&kv.value).ok()?;
    Some((name, token))
}

#[cfg(test)]
mod tests {
    use agora_schemas::{ObjectMeta, TokenSpec};

    use super::*;

    fn token(principal: &str, secret: &str, expires_at: Option<Timestamp>) -> Token {
        let spec = TokenSpec {
            principal: principal.into(),
            groups: vec!["team-a".into()],
            sha256: digest_hex(secret),
            expires_at,
        };
        Token::new(ObjectMeta::named(None, principal), spec)
    }

    #[tokio::test]
    async fn the_admin_token_and_the_stores_tokens_name_their_principals() {
        let auth = Authenticator::new(Some(Arc::from("root-secret")));
        auth.loaded.send_replace(true);
        let admin = auth.authenticate(Some("root-secret")).await.unwrap();
        assert_eq!(admin.principal.name, ADMIN_PRINCIPAL);
        assert!(admin.principal.is_master() && !admin.can_end());
        assert_eq!(auth.authenticate(None).await.unwrap_err(), Refusal::Unauthorized);
        assert_eq!(auth.authenticate(Some("alice-secret")).await.unwrap_err(), Refusal::Unauthorized);

        auth.index.write().unwrap().put("alice", &token("alice", "alice-secret", None));
        let alice = auth.authenticate(Some("alice-secret")).await.unwrap();
        assert_eq!(alice.principal.name, "alice");
        assert_eq!(alice.principal.groups, [AUTHENTICATED_GROUP, "team-a"]);
        assert!(!alice.principal.is_master());
        let ends = tokio::spawn(alice.ends());
        auth.index.write().unwrap().remove("alice");
        tokio::time::timeout(Duration::from_secs(1), ends).await.expect("revoked: what it opened ends").unwrap();
        assert_eq!(auth.authenticate(Some("alice-secret")).await.unwrap_err(), Refusal::Unauthorized);

        let past = Timestamp::now() - jiff::SignedDuration::from_secs(1);
        auth.index.write().unwrap().put("old", &token("old", "old-secret", Some(past)));
        assert_eq!(auth.authenticate(Some("old-secret")).await.unwrap_err(), Refusal::Unauthorized, "expired");
        let soon = Timestamp::now() + jiff::SignedDuration::from_millis(200);
        auth.index.write().unwrap().put("brief", &token("brief", "brief-secret", Some(soon)));
        let brief = auth.authenticate(Some("brief-secret")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), brief.ends()).await.expect("ends when it expires");
    }

    #[tokio::test]
    async fn without_a_token_every_request_is_the_unsecured_master() {
        let auth = Authenticator::new(None);
        let anyone = auth.authenticate(None).await.unwrap();
        assert_eq!(anyone.principal.name, UNSECURED_PRINCIPAL);
        assert!(anyone.principal.is_master());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_before_the_tokens_are_read_waits_then_is_told_so() {
        let auth = Authenticator::new(Some(Arc::from("root-secret")));
        assert!(auth.authenticate(Some("root-secret")).await.is_ok(), "the admin never waits");
        assert_eq!(auth.authenticate(Some("other")).await.unwrap_err(), Refusal::Loading);
    }

    #[test]
    fn digests_are_read_only_when_well_formed() {
        assert_eq!(parse_digest(&digest_hex("x")).map(|d| d.len()), Some(32));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
        assert_eq!(parse_digest(&"é".repeat(32)), None, "no panic on multi-byte characters");
    }
}
