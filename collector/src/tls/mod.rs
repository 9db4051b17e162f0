//! TLS and mutual TLS for the TCP listener (rustls with the ring provider).
//!
//! The PEM files are read and checked when the collector starts, so a wrong
//! path or a file without a certificate is a clear start-up error instead of
//! a failure at the first handshake. Files given by path are read again
//! while the collector runs ([`reload`]): a renewed certificate (a
//! Kubernetes Secret updated by cert-manager or by hand) is used for new
//! connections, while connections already open keep theirs.

pub mod reload;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// A TLS handshake that takes longer than this is abandoned, so clients that
/// open connections and stall cannot hold them.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    #[error(
        "the TLS certificate and key do not go together, or the client CA is unusable: {detail}"
    )]
    Config { detail: String },
}

/// Where the PEM files came from: paths are watched for changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Server certificate and key, and optionally the CA that client
/// certificates must chain to (mutual TLS: clients without one are refused).
#[derive(Clone)]
pub struct TlsConfig {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    files: Option<TlsFiles>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsConfig")
            .field("mutual", &self.client_ca_pem.is_some())
            .field("files", &self.files)
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

fn certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        out.push(cert.map_err(|e| TlsError::BadPem {
            what,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?);
    }
    if out.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::NoKey {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

impl TlsConfig {
    /// From PEM bytes already in memory (not reloaded).
    pub fn from_pem(
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        client_ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, TlsError> {
        let c = Self {
            cert_pem,
            key_pem,
            client_ca_pem,
            files: None,
        };
        c.server_config()?;
        Ok(c)
    }

    /// Reads `--tls-cert`, `--tls-key` and optionally `--tls-client-ca`,
    /// and watches them for changes once serving.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        Self::load(&TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.map(Path::to_path_buf),
        })
    }

    /// Reads and checks the files.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let c = Self {
            cert_pem: read("--tls-cert", &files.cert)?,
            key_pem: read("--tls-key", &files.key)?,
            client_ca_pem: files
                .client_ca
                .as_deref()
                .map(|p| read("--tls-client-ca", p))
                .transpose()?,
            files: Some(files.clone()),
        };
        c.server_config()?;
        Ok(c)
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    pub fn files(&self) -> Option<&TlsFiles> {
        self.files.as_ref()
    }

    /// Whether `other` holds the same certificate, key and CA.
    pub fn same_pem(&self, other: &TlsConfig) -> bool {
        self.cert_pem == other.cert_pem
            && self.key_pem == other.key_pem
            && self.client_ca_pem == other.client_ca_pem
    }

    /// The rustls configuration: HTTP/2 only (gRPC), the certificate
    /// checked against its key, and with a client CA a client certificate
    /// required.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        install_crypto_provider();
        let path = |p: Option<&PathBuf>| p.cloned().unwrap_or_else(|| PathBuf::from("(in memory)"));
        let files = self.files.as_ref();
        let chain = certs("--tls-cert", &path(files.map(|f| &f.cert)), &self.cert_pem)?;
        let key = key(&path(files.map(|f| &f.key)), &self.key_pem)?;
        let config_err = |e: &dyn std::fmt::Display| TlsError::Config {
            detail: e.to_string(),
        };
        let builder = ServerConfig::builder();
        let mut cfg = match &self.client_ca_pem {
            Some(ca) => {
                let ca_path = path(files.and_then(|f| f.client_ca.as_ref()));
                let mut roots = RootCertStore::empty();
                for c in certs("--tls-client-ca", &ca_path, ca)? {
                    roots.add(c).map_err(|e| config_err(&e))?;
                }
                // Required, not optional: a client without a certificate
                // signed by this CA fails the handshake.
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| config_err(&e))?;
                builder
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
            }
            None => builder.with_no_client_auth().with_single_cert(chain, key),
        }
        .map_err(|e| config_err(&e))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// rustls needs a process-wide crypto provider when more than one could be
/// compiled in (an embedding binary may link aws-lc-rs too). Installing ring
/// here makes the choice explicit; if the embedder installed one first, that
/// one stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
