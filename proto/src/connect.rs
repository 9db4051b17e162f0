//! Connecting to an agent or a collector: `unix:///path/to.sock`,
//! `http://host:port` or `https://host:port` (TLS, optionally with a client
//! certificate for mutual TLS). Shared by the CLI, the agent's pusher and
//! the tests.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// TLS settings for `https://` targets.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA certificate (PEM) to trust; the system roots are not used.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to expect in the server certificate, when it differs from the
    /// host in the target.
    pub domain: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("target {0:?}: expected unix:///path, http://host:port or https://host:port")]
    Target(String),
    #[error("cannot read {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach {target}")]
    Transport {
        target: String,
        #[source]
        source: tonic::transport::Error,
    },
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::File {
        path: path.display().to_string(),
        source,
    })
}

/// Opens a channel to `target`. Fails fast when the target cannot be
/// reached, so a CLI can say so.
pub async fn connect(target: &str, tls: Option<&ClientTls>) -> Result<Channel, ConnectError> {
    let transport = |source| ConnectError::Transport {
        target: target.to_string(),
        source,
    };
    if let Some(path) = target.strip_prefix("unix://") {
        let path = PathBuf::from(path);
        // The URI is required by the API but not used: the connector below
        // decides where to connect.
        return Endpoint::from_static("http://agent.local")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(transport);
    }
    if !(target.starts_with("http://") || target.starts_with("https://")) {
        return Err(ConnectError::Target(target.to_string()));
    }
    let mut endpoint = Endpoint::from_shared(target.to_string())
        .map_err(|_| ConnectError::Target(target.to_string()))?;
    if target.starts_with("https://") {
        let mut cfg = ClientTlsConfig::new();
        if let Some(t) = tls {
            if let Some(ca) = &t.ca {
                cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                cfg = cfg.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            if let Some(d) = &t.domain {
                cfg = cfg.domain_name(d.clone());
            }
        }
        endpoint = endpoint.tls_config(cfg).map_err(transport)?;
    }
    endpoint.connect().await.map_err(transport)
}
