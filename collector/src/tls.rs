//! TLS and mutual TLS for the TCP listener (rustls with the ring provider,
//! through tonic).
//!
//! The PEM files are read and checked when the collector starts, so a wrong
//! path or a file without a certificate is a clear start-up error instead of
//! a failure at the first handshake.

use std::path::{Path, PathBuf};

use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// A TLS handshake that takes longer than this is abandoned, so clients that
/// open connections and stall cannot hold them.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} has no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what} {path} is not valid PEM: {detail}")]
    BadPem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("--tls-key {path} has no PEM private key (PKCS#8, PKCS#1 or SEC1): {detail}")]
    NoKey { path: PathBuf, detail: String },
}

/// Server certificate and key, and optionally the CA that client
/// certificates must chain to (mutual TLS: clients without one are refused).
#[derive(Clone)]
pub struct TlsConfig {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsConfig")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn check_certs(what: &'static str, path: &Path, pem: &[u8]) -> Result<(), TlsError> {
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| TlsError::BadPem {
            what,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

impl TlsConfig {
    /// From PEM bytes already in memory; `path`s are only for messages.
    pub fn from_pem(
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        client_ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, TlsError> {
        let here = Path::new("(in memory)");
        check_certs("--tls-cert", here, &cert_pem)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
            path: here.to_path_buf(),
            detail: e.to_string(),
        })?;
        if let Some(ca) = &client_ca_pem {
            check_certs("--tls-client-ca", here, ca)?;
        }
        Ok(Self {
            cert_pem,
            key_pem,
            client_ca_pem,
        })
    }

    /// Reads `--tls-cert`, `--tls-key` and optionally `--tls-client-ca`.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let cert_pem = read("--tls-cert", cert)?;
        check_certs("--tls-cert", cert, &cert_pem)?;
        let key_pem = read("--tls-key", key)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
            path: key.to_path_buf(),
            detail: e.to_string(),
        })?;
        let client_ca_pem = match client_ca {
            Some(p) => {
                let pem = read("--tls-client-ca", p)?;
                check_certs("--tls-client-ca", p, &pem)?;
                Some(pem)
            }
            None => None,
        };
        Ok(Self {
            cert_pem,
            key_pem,
            client_ca_pem,
        })
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        install_crypto_provider();
        let mut cfg = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca_pem {
            // Required, not optional: a client without a certificate signed
            // by this CA fails the handshake.
            cfg = cfg
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(false);
        }
        cfg
    }
}

/// rustls needs a process-wide crypto provider when more than one could be
/// compiled in (an embedding binary may link aws-lc-rs too). Installing ring
/// here makes the choice explicit; if the embedder installed one first, that
/// one stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
