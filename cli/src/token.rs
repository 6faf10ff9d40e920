//! `agora token create|list|revoke`: bearer tokens of principals. The token is made here from the kernel's random
//! bytes and printed once; the cluster stores only its SHA-256 digest (a `Token` object), so no one — not an admin
//! reading the store — can read it back.

use std::io::Read;

use agora_client::{Api, Client, DeleteParams, ListParams, PostParams};
use agora_schemas::{ObjectMeta, Token, TokenSpec};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// What every token starts with, so a token pasted where it should not be is recognisable (by secret scanners too).
pub const PREFIX: &str = "agora_";

/// A new random token.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a new token")?;
    Ok(format!("{PREFIX}{}", hex(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `30d`, `12h`, `1h30m`, `P90D`: how long a token lasts.
///
/// # Errors
/// A duration that does not parse, or is not positive, saying what is accepted.
pub fn parse_ttl(text: &str) -> Result<jiff::SignedDuration> {
    let span: jiff::Span =
        text.parse().with_context(|| format!("--ttl {text:?}: give a duration such as 30d, 12h, 1h30m or P90D"))?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .with_context(|| format!("--ttl {text:?}: years and months have no fixed length; use days"))?;
    anyhow::ensure!(duration.is_positive(), "--ttl {text:?}: must be longer than zero");
    Ok(duration)
}

/// Makes a token for `principal` and prints it (stdout, alone, so it can be captured).
///
/// # Errors
/// A principal or group that cannot be named, a TTL past the end of time, or the server's answer.
pub fn create(client: &Client, principal: &str, groups: &[String], ttl: Option<&str>) -> Result<bool> {
    anyhow::ensure!(
        agora_schemas::valid_principal(principal),
        "principal {principal:?}: 1 to 253 printable ASCII characters, without spaces"
    );
    let expires_at = match ttl {
        Some(ttl) => {
            Some(jiff::Timestamp::now().checked_add(parse_ttl(ttl)?).context("--ttl: that is past the end of time")?)
        }
        None => None,
    };
    let token = random_token()?;
    let mut meta = ObjectMeta::default();
    // Object names are DNS subdomains; a principal may be any user name: the object is named for it where it can be.
    let base: String = principal
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let base = base.trim_matches('-');
    meta.generate_name = Some(format!("{}-", if base.is_empty() { "token" } else { base }));
    let spec = TokenSpec {
        principal: principal.to_owned(),
        groups: groups.to_vec(),
        sha256: hex(&Sha256::digest(token.as_bytes())),
        expires_at,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let created =
        runtime.block_on(Api::<Token>::all(client.clone()).create(&PostParams::default(), &Token::new(meta, spec)))?;
    let name = created.metadata.name.unwrap_or_default();
    let until = expires_at.map_or_else(|| "never expires".to_owned(), |at| format!("expires {at}"));
    eprintln!("token.agora/{name} created for {principal} ({until}); it is shown once:");
    println!("{token}");
    Ok(true)
}

/// Prints the tokens (never a digest): `agora get tokens`, with the principal first.
///
/// # Errors
/// The server's answer.
pub fn list(client: &Client) -> Result<bool> {
    let get = crate::get::Get {
        kind: "tokens".into(),
        name: None,
        namespace: None,
        all_namespaces: false,
        selector: None,
        output: crate::get::Format::Table,
        watch: false,
    };
    crate::get::run(client, &get)
}

/// Revokes every token of `principal`: effective at once on every apiserver, and their open watches end.
///
/// # Errors
/// No token of that principal, or the server's answer.
pub fn revoke(client: &Client, principal: &str) -> Result<bool> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let tokens = Api::<Token>::all(client.clone());
        let selector = format!("spec.principal={principal}");
        let found = tokens.list(&ListParams::default().fields(&selector)).await?;
        anyhow::ensure!(
            !found.items.is_empty(),
            "principal {principal:?} has no tokens (agora token list shows who has)"
        );
        for token in &found.items {
            let name = token.metadata.name.as_deref().unwrap_or_default();
            match tokens.delete(name, &DeleteParams::default()).await {
                Ok(_) => println!("token.agora/{name} revoked"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_people_write_them() {
        assert_eq!(parse_ttl("30d").unwrap(), jiff::SignedDuration::from_hours(720));
        assert_eq!(parse_ttl("1h30m").unwrap(), jiff::SignedDuration::from_mins(90));
        assert_eq!(parse_ttl("P2D").unwrap(), jiff::SignedDuration::from_hours(48));
        for bad in ["", "soon", "-1h", "0s", "1y"] {
            let message = parse_ttl(bad).unwrap_err().to_string();
            assert!(message.contains("--ttl"), "{bad:?}: {message}");
        }
    }

    #[test]
    fn tokens_are_random_and_recognisable() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64, "{a}");
    }
}
