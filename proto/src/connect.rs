//! Connecting to an agent or a collector: `unix:///path/to.sock`,
//! `http://host:port` or `https://host:port` (TLS, optionally with a client
//! certificate for mutual TLS), and presenting a bearer token with every
//! call ([`Bearer`]). Shared by the CLI, the agent's pusher and the tests.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Request, Status,
};

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

/// How a connection is opened and kept.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// Give up a TCP connect that takes longer (a black-holed address).
    pub connect_timeout: Option<Duration>,
    /// HTTP/2 pings this often (also while idle) find a peer that vanished
    /// without closing; 20 s without an answer closes the connection.
    pub keepalive: Option<Duration>,
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
    #[error(
        "the token in {path} is not usable as an HTTP header value (empty, or not printable ASCII)"
    )]
    BadToken { path: String },
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
    connect_with(target, tls, &ConnectOptions::default()).await
}

/// [`connect`], with timeouts and keepalive.
pub async fn connect_with(
    target: &str,
    tls: Option<&ClientTls>,
    opts: &ConnectOptions,
) -> Result<Channel, ConnectError> {
    let tune = |mut e: Endpoint| {
        if let Some(t) = opts.connect_timeout {
            e = e.connect_timeout(t);
        }
        if let Some(k) = opts.keepalive {
            e = e
                .http2_keep_alive_interval(k)
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(true);
        }
        e
    };
    let transport = |source| ConnectError::Transport {
        target: target.to_string(),
        source,
    };
    if let Some(path) = target.strip_prefix("unix://") {
        let path = PathBuf::from(path);
        // The URI is required by the API but not used: the connector below
        // decides where to connect.
        return tune(Endpoint::from_static("http://agent.local"))
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
    tune(endpoint).connect().await.map_err(transport)
}

/// A bearer token sent with every call as `authorization: Bearer <token>`
/// (a Kubernetes ServiceAccount token for the collector), or nothing.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.write_str(if self.0.is_some() {
            "Bearer(..)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// No token: calls are anonymous.
    pub fn none() -> Self {
        Self(None)
    }

    /// `token` (surrounding whitespace, such as a file's final newline, is
    /// not part of it); `source` names where it came from for the error.
    pub fn from_token(token: &str, source: &str) -> Result<Self, ConnectError> {
        let t = token.trim();
        let bad = || ConnectError::BadToken {
            path: source.to_string(),
        };
        if t.is_empty() {
            return Err(bad());
        }
        let mut v: MetadataValue<Ascii> = format!("Bearer {t}").parse().map_err(|_| bad())?;
        v.set_sensitive(true);
        Ok(Self(Some(v)))
    }

    /// The token in `path`, read now: projected ServiceAccount tokens are
    /// replaced by the kubelet before they expire, so read it again for
    /// each new connection.
    pub fn from_file(path: &Path) -> Result<Self, ConnectError> {
        let t = std::fs::read_to_string(path).map_err(|source| ConnectError::File {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_token(&t, &path.display().to_string())
    }

    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A channel that presents a [`Bearer`] token with every call.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

pub fn with_bearer(channel: Channel, bearer: Bearer) -> AuthChannel {
    InterceptedService::new(channel, bearer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_becomes_a_bearer_header_and_bad_ones_are_refused() {
        let header = |b: &mut Bearer| {
            let r = b.call(Request::new(())).unwrap();
            r.metadata()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
        };
        let mut b = Bearer::from_token("abc.def\n", "t").unwrap();
        assert_eq!(header(&mut b).as_deref(), Some("Bearer abc.def"));
        assert!(Bearer::from_token(" \n", "t").is_err());
        assert!(Bearer::from_token("a\u{7}b", "t").is_err());
        assert_eq!(header(&mut Bearer::none()), None);
        assert_eq!(
            format!("{:?}", Bearer::from_token("secret", "t").unwrap()),
            "Bearer(..)"
        );
    }
}
