//! Certificates: a CA and a serving certificate made in a directory on first start, or files the operator gives.
//!
//! Layout of a [`TlsFiles`] directory (made `0700`): `ca.crt`, `ca.key` (the CA, ten years), `server.crt`,
//! `server.key` (a year, the names it covers in `server.json`). Keys are written `0600`, every file by rename, so a
//! crash never leaves half a key. A restart reuses all of it; the serving certificate is reissued (by the same CA,
//! so clients keep trusting it) when a name it must cover is missing or it has less than 30 days left.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// How long a generated CA lasts.
const CA_DAYS: i64 = 3650;
/// How long a generated serving certificate lasts.
const SERVING_DAYS: i64 = 365;
/// A serving certificate with less left than this is reissued at start.
const RENEW_DAYS: i64 = 30;

/// What went wrong with certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key is unusable.
    #[error("{0}")]
    Invalid(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A serving certificate with its key, and the CA that clients must trust for it (all PEM).
#[derive(Clone)]
pub struct ServingCert {
    /// The certificate chain, leaf first.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The CA certificate clients verify it with.
    pub ca_pem: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").finish_non_exhaustive()
    }
}

/// What `server.json` records of the serving certificate.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Issued {
    names: Vec<String>,
    not_after: jiff::Timestamp,
}

/// A directory of generated TLS material.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    dir: PathBuf,
}

impl TlsFiles {
    /// The material in `dir` (made on [`ensure`](Self::ensure)).
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The CA certificate's path.
    #[must_use]
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA and a serving certificate covering `names` (DNS names and IP addresses), made or reused.
    ///
    /// # Errors
    /// A file that cannot be read or written, or material that does not parse (named, with what to do).
    pub fn ensure(&self, names: &[String]) -> Result<ServingCert, Error> {
        std::fs::create_dir_all(&self.dir).map_err(io(format!("creating {}", self.dir.display())))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("restricting {}", self.dir.display())))?;
        let (ca_pem, ca_key) = self.ca()?;
        let (cert, key, info) =
            (self.dir.join("server.crt"), self.dir.join("server.key"), self.dir.join("server.json"));
        let now = jiff::Timestamp::now();
        if let (Ok(cert_pem), Ok(key_pem), Ok(recorded)) =
            (std::fs::read_to_string(&cert), std::fs::read_to_string(&key), std::fs::read(&info))
        {
            let issued: Option<Issued> = serde_json::from_slice(&recorded).ok();
            let fresh = issued.is_some_and(|i| {
                names.iter().all(|n| i.names.contains(n))
                    && i.not_after.duration_since(now).as_secs() > RENEW_DAYS * 86_400
            });
            if fresh {
                return Ok(ServingCert { cert_pem, key_pem, ca_pem });
            }
        }
        let issuer = Issuer::new(ca_params(now)?, ca_key);
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| Error::Invalid(format!("a serving certificate for {names:?}: {e}")))?;
        params.distinguished_name = name("agora");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let not_after = now + jiff::SignedDuration::from_hours(24 * SERVING_DAYS);
        (params.not_before, params.not_after) = validity(now, not_after)?;
        let key_pair = KeyPair::generate().map_err(|e| Error::Invalid(format!("generating a key: {e}")))?;
        let signed = params
            .signed_by(&key_pair, &issuer)
            .map_err(|e| Error::Invalid(format!("signing the certificate: {e}")))?;
        let (cert_pem, key_pem) = (signed.pem(), key_pair.serialize_pem());
        write(&key, key_pem.as_bytes(), 0o600)?;
        write(&cert, cert_pem.as_bytes(), 0o644)?;
        let issued = Issued { names: names.to_vec(), not_after };
        write(&info, &serde_json::to_vec(&issued).unwrap_or_default(), 0o644)?;
        tracing::info!(dir = %self.dir.display(), ?names, "issued a serving certificate");
        Ok(ServingCert { cert_pem, key_pem, ca_pem })
    }

    /// The CA's certificate and key: loaded, or made now.
    fn ca(&self) -> Result<(String, KeyPair), Error> {
        let (cert, key) = (self.dir.join("ca.crt"), self.dir.join("ca.key"));
        if cert.exists() || key.exists() {
            let cert_pem = std::fs::read_to_string(&cert).map_err(io(format!("reading {}", cert.display())))?;
            let key_pem = std::fs::read_to_string(&key).map_err(io(format!("reading {}", key.display())))?;
            let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| {
                Error::Invalid(format!(
                    "{} is not a usable key ({e}); restore it from a backup, or remove {} to make a new CA (every \
                     kubeconfig must then be replaced)",
                    key.display(),
                    self.dir.display()
                ))
            })?;
            return Ok((cert_pem, key_pair));
        }
        let now = jiff::Timestamp::now();
        let key_pair = KeyPair::generate().map_err(|e| Error::Invalid(format!("generating the CA key: {e}")))?;
        let mut params = ca_params(now)?;
        (params.not_before, params.not_after) = validity(now, now + jiff::SignedDuration::from_hours(24 * CA_DAYS))?;
        let certificate =
            params.self_signed(&key_pair).map_err(|e| Error::Invalid(format!("signing the CA certificate: {e}")))?;
        write(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
        write(&cert, certificate.pem().as_bytes(), 0o644)?;
        tracing::info!(dir = %self.dir.display(), "made a cluster CA");
        Ok((certificate.pem(), key_pair))
    }
}

/// The CA's parameters: what signing needs of it (name, key usages, key identifier) is the same every time.
fn ca_params(now: jiff::Timestamp) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name("agora-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (params.not_before, params.not_after) = validity(now, now)?;
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// From an hour before `now` (clocks differ) to `until`, as rcgen's dates.
fn validity(
    now: jiff::Timestamp,
    until: jiff::Timestamp,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), Error> {
    let date = |t: jiff::Timestamp| {
        let day = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(day.year()), day.month().unsigned_abs(), day.day().unsigned_abs())
    };
    let from = date(now - jiff::SignedDuration::from_hours(24));
    Ok((from, date(until)))
}

/// Writes `bytes` to `path` by rename, with `mode`.
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let temp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(io(format!("writing {}", temp.display())))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io(format!("writing {}", temp.display())))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting the mode of {}", temp.display())))?;
    std::fs::rename(&temp, path).map_err(io(format!("writing {}", path.display())))
}

/// A rustls server configuration (aws-lc-rs; HTTP/2 and HTTP/1.1 by ALPN) presenting `cert_pem` with `key_pem`.
///
/// # Errors
/// When either does not parse or they do not belong together.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Invalid(format!("the certificate is not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Invalid("the certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Invalid(format!("the private key is not a PEM key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Invalid(format!("the certificate and key do not make a TLS identity: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config`] from files (`--tls-cert-file`, `--tls-private-key-file`).
///
/// # Errors
/// A file that cannot be read, or contents that do not parse (naming the files).
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    let cert_pem = std::fs::read(cert).map_err(io(format!("reading {}", cert.display())))?;
    let key_pem = std::fs::read(key).map_err(io(format!("reading {}", key.display())))?;
    server_config(&cert_pem, &key_pem)
        .map_err(|e| Error::Invalid(format!("{} and {}: {e}", cert.display(), key.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_is_made_once_kept_and_reissued_for_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::new(dir.path().join("pki"));
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = files.ensure(&names).unwrap();
        assert!(server_config(first.cert_pem.as_bytes(), first.key_pem.as_bytes()).is_ok());
        let mode = |f: &str| std::fs::metadata(dir.path().join("pki").join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("ca.key"), mode("server.key"), mode("")), (0o600, 0o600, 0o700));
        let again = files.ensure(&names).unwrap();
        assert_eq!((again.cert_pem.as_str(), again.ca_pem.as_str()), (first.cert_pem.as_str(), first.ca_pem.as_str()));
        // A name it does not cover: a new certificate from the same CA.
        let wider = files.ensure(&[names.clone(), vec!["10.0.0.5".to_owned()]].concat()).unwrap();
        assert_ne!(wider.cert_pem, first.cert_pem);
        assert_eq!(wider.ca_pem, first.ca_pem);
    }

    #[test]
    fn a_broken_key_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::new(dir.path());
        files.ensure(&["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join("ca.key"), "garbage").unwrap();
        let error = files.ensure(&["elsewhere".to_owned()]).unwrap_err().to_string();
        assert!(error.contains("ca.key is not a usable key") && error.contains("restore it"), "{error}");
        assert!(server_config(b"nope", b"nope").is_err());
    }
}
