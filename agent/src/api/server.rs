//! Serves the agent API: on a unix socket private to root (the default,
//! for the CLI on the node), and optionally on TCP with TLS or mutual TLS.
//! Both carry the standard gRPC health service and server reflection, so
//! grpcurl and other generic clients work.

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use sockeye_proto::{v1::agent_service_server::AgentServiceServer, FILE_DESCRIPTOR_SET};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::service::AgentApi;

/// Default unix socket of the agent API.
pub const DEFAULT_SOCKET: &str = "/run/sockeye/agent.sock";
/// Largest request accepted (filters are small); larger ones get
/// `OUT_OF_RANGE`/`RESOURCE_EXHAUSTED` from tonic, not a crash.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub unix: Option<PathBuf>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the API socket {path}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for the API")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read TLS file {path}")]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad TLS configuration")]
    Tls(#[source] tonic::transport::Error),
    #[error("server reflection")]
    Reflection(#[source] tonic_reflection::server::Error),
}

/// Listeners bound and ready: binding happens before the agent reports
/// itself ready, so a bad address is an error at start-up.
pub struct Bound {
    unix: Option<(UnixListener, PathBuf)>,
    tcp: Option<TcpListener>,
    tls: Option<ServerTlsConfig>,
}

pub async fn bind(opts: &ServeOptions) -> Result<Bound, ServeError> {
    let unix = match &opts.unix {
        Some(path) => Some((bind_unix(path)?, path.clone())),
        None => None,
    };
    let tcp = match opts.tcp {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Tcp { addr, source })?,
        ),
        None => None,
    };
    let tls = opts.tls.as_ref().map(tls_config).transpose()?;
    Ok(Bound { unix, tcp, tls })
}

fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket left by a previous run would make bind fail.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // Root only: the API shows every connection of the node.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

fn read(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::TlsFile {
        path: path.display().to_string(),
        source,
    })
}

fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, ServeError> {
    let mut cfg =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    if let Some(ca) = &files.client_ca {
        cfg = cfg.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(cfg)
}

impl Bound {
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|(_, p)| p.as_path())
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until the process ends. Errors of one listener are logged:
    /// the agent keeps tracing.
    pub async fn serve(self, api: AgentApi) -> Result<(), ServeError> {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(ServeError::Reflection)?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<AgentServiceServer<AgentApi>>().await;
        let agent = AgentServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
        let mut tasks = Vec::new();
        if let Some((listener, path)) = self.unix {
            let router = Server::builder()
                .add_service(health_service.clone())
                .add_service(reflection.clone())
                .add_service(agent.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = router
                    .serve_with_incoming(UnixListenerStream::new(listener))
                    .await
                {
                    log::error!("API on {} stopped: {e}", path.display());
                }
            }));
        }
        if let Some(listener) = self.tcp {
            let mut builder = Server::builder();
            if let Some(tls) = self.tls {
                builder = builder.tls_config(tls).map_err(ServeError::Tls)?;
            }
            let router = builder
                .add_service(health_service)
                .add_service(reflection)
                .add_service(agent);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = router
                    .serve_with_incoming(TcpListenerStream::new(listener))
                    .await
                {
                    log::error!("API on TCP stopped: {e}");
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }
}
