//! TLS for the HTTPS listener (HTTP/2 and HTTP/1.1 by ALPN), from PEM files or a generated
//! self-signed development certificate.
//!
//! Self-signed certificates are ECDSA P-256. The HTTPS listener's lives a year
//! ([`TlsMaterial::self_signed_https`]): it is never rotated, and a gateway may run that long.
//! WebTransport pins its certificate with `serverCertificateHashes`, which browsers accept only
//! for certificates valid at most 14 days, so it gets its own 13-day one
//! ([`TlsMaterial::self_signed`]) and renews it.
//!
//! The rustls configuration does not hold the certificate itself but a [`CertResolver`] that
//! every handshake asks for it, so a certificate loaded from PEM files can be replaced while
//! the gateway runs ([`TlsMaterial::reload_pem_files`], on SIGHUP): new connections get the new
//! one, connections already established keep the one they shook hands with.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

/// Validity of a generated certificate pinned by hash (WebTransport), in days.
pub const SELF_SIGNED_DAYS: i64 = 13;
/// Validity of the generated HTTPS certificate, in days.
pub const SELF_SIGNED_HTTPS_DAYS: i64 = 365;

/// A certificate chain, its key, and the rustls configuration built from them.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The server configuration (ALPN `h2`, `http/1.1`). Its certificate comes from
    /// [`TlsMaterial::resolver`] at each handshake; clones of it (WebTransport's) share it.
    pub server_config: Arc<ServerConfig>,
    /// The leaf certificate at start-up, DER ([`CertResolver::certificate`] is the current).
    pub certificate: CertificateDer<'static>,
    /// SHA-256 of the leaf certificate at start-up (what `serverCertificateHashes` pins).
    pub certificate_sha256: [u8; 32],
    /// Whether the certificate was generated at start-up.
    pub self_signed: bool,
    /// The certificate served to new handshakes, replaced by [`TlsMaterial::reload_pem_files`].
    pub resolver: Arc<CertResolver>,
}

/// Hands every TLS handshake the current certificate, and lets it be replaced in place.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    fn new(key: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(key)),
        }
    }

    /// The certificate and key new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole `Arc`: the writer only assigns it.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The leaf certificate new handshakes get, DER.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current().cert[0].clone()
    }

    /// SHA-256 of [`CertResolver::certificate`].
    pub fn certificate_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.certificate().as_ref()).into()
    }

    fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Lowercase hex of a SHA-256.
pub fn sha256_hex(sha256: &[u8; 32]) -> String {
    sha256.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why TLS could not be set up. Fatal at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The development certificate could not be generated.
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A reload was asked for where there is nothing to reload from (TLS is off, or its
    /// certificate is generated rather than read from files).
    #[error("{0}")]
    NotReloadable(&'static str),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // One explicit provider: with two compiled in (aws-lc-rs and ring can both be present
    // through dependencies), `ServerConfig::builder()` cannot choose and panics.
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// Loads a PEM certificate chain and private key.
    ///
    /// # Errors
    /// [`TlsError`] naming the file and what is wrong with it.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::build(certified_key_from_pem_files(cert, key)?, false)
    }

    /// Reads the PEM files again and serves what they hold to every new handshake, HTTPS and
    /// (when it shares this configuration) WebTransport. Connections already established are
    /// untouched. On any error nothing changes: the current certificate stays.
    ///
    /// Returns the SHA-256 of the new leaf certificate.
    ///
    /// # Errors
    /// [`TlsError::Pem`] naming the file and what is wrong with it (unreadable, no
    /// certificate, no key, a key that does not match the certificate).
    pub fn reload_pem_files(&self, cert: &Path, key: &Path) -> Result<[u8; 32], TlsError> {
        let certified = certified_key_from_pem_files(cert, key)?;
        let sha256 = Sha256::digest(certified.cert[0].as_ref()).into();
        self.resolver.replace(certified);
        Ok(sha256)
    }

    /// Generates a self-signed ECDSA P-256 certificate for `localhost`, `127.0.0.1` and `::1`,
    /// valid from an hour ago for [`SELF_SIGNED_DAYS`] days (short enough to be pinned by
    /// hash in a browser).
    ///
    /// # Errors
    /// [`TlsError::Generate`] if key or certificate generation fails.
    pub fn self_signed() -> Result<Self, TlsError> {
        Self::self_signed_for_days(SELF_SIGNED_DAYS)
    }

    /// The HTTPS listener's development certificate: as [`TlsMaterial::self_signed`], valid
    /// [`SELF_SIGNED_HTTPS_DAYS`] days.
    ///
    /// # Errors
    /// [`TlsError::Generate`] if key or certificate generation fails.
    pub fn self_signed_https() -> Result<Self, TlsError> {
        Self::self_signed_for_days(SELF_SIGNED_HTTPS_DAYS)
    }

    fn self_signed_for_days(days: i64) -> Result<Self, TlsError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(days);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "streamgate development certificate",
        );
        let certificate = params.self_signed(&key_pair)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let certified = CertifiedKey::from_der(vec![certificate.der().clone()], key, &provider())?;
        Self::build(certified, true)
    }

    fn build(certified: CertifiedKey, self_signed: bool) -> Result<Self, TlsError> {
        let certificate = certified.cert[0].clone();
        let certificate_sha256 = Sha256::digest(certificate.as_ref()).into();
        let resolver = Arc::new(CertResolver::new(certified));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            server_config: Arc::new(config),
            certificate,
            certificate_sha256,
            self_signed,
            resolver,
        })
    }

    /// The certificate's SHA-256 in lowercase hex.
    pub fn certificate_sha256_hex(&self) -> String {
        sha256_hex(&self.certificate_sha256)
    }
}

/// A certificate chain and its private key from PEM files, checked to belong together.
fn certified_key_from_pem_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let pem_error = |path: &Path, reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no certificate found".to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e.to_string()))?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        pem_error(
            key,
            format!("unusable with the certificate in {}: {e}", cert.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_short_lived_p256() {
        let material = TlsMaterial::self_signed().unwrap();
        assert!(material.self_signed);
        assert_eq!(material.certificate_sha256_hex().len(), 64);
        assert_eq!(
            material.server_config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn pem_errors_name_the_file() {
        let err = TlsMaterial::from_pem_files(Path::new("/nonexistent.pem"), Path::new("/k.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/nonexistent.pem: "), "{err}");
    }
}
