//! Serving: the gRPC routes (CollectorService, the standard health service
//! and server reflection) on TCP, with optional TLS/mTLS, and on a unix
//! socket.

use std::{future::Future, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use sockeye_proto::v1::collector_service_server::CollectorServiceServer;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{
    service::Routes,
    transport::{server::TcpIncoming, Server},
};
use tonic_health::{pb::health_server::HealthServer, server::HealthService};

use crate::{service::CollectorApi, tls::TlsConfig, Collector, Error};

/// HTTP/2 pings find agents that vanished without closing (node died,
/// network partition), so their Push streams do not linger.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// The log line `sockeye-collector` prints once every listener is bound,
/// followed by them (`tcp 127.0.0.1:7070, unix /run/sockeye/collector.sock`):
/// from then on each accepts connections. Scripts and tests wait for it.
pub const READY_LOG: &str = "ready; listening on ";

/// Streams per connection: an agent needs one, a CLI a few.
const MAX_CONCURRENT_STREAMS: u32 = 256;

impl Collector {
    /// The collector's gRPC routes: `sockeye.v1.CollectorService`,
    /// `grpc.health.v1.Health` and server reflection (v1 and v1alpha, so
    /// every grpcurl version can list and describe the services). An
    /// embedding binary can add its own services to them.
    pub fn routes(&self) -> Result<Routes, Error> {
        let max = self.shared.config.max_message_bytes;
        let api = CollectorServiceServer::new(CollectorApi::new(self.shared.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let health = HealthServer::new(HealthService::from_health_reporter(self.health.clone()));
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(sockeye_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let v1 = reflection()
            .build_v1()
            .map_err(|source| Error::Reflection { source })?;
        let v1alpha = reflection()
            .build_v1alpha()
            .map_err(|source| Error::Reflection { source })?;
        Ok(Routes::new(api)
            .add_service(health)
            .add_service(v1)
            .add_service(v1alpha))
    }

    /// A tonic server with the collector's connection settings.
    pub fn server_builder(&self) -> Server {
        Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
    }

    /// Serves on a bound TCP listener until shutdown, with TLS when `tls` is
    /// given (mutual TLS when it has a client CA).
    pub async fn serve_tcp(
        &self,
        listener: TcpListener,
        tls: Option<TlsConfig>,
    ) -> Result<(), Error> {
        let name = match listener.local_addr() {
            Ok(a) => format!("tcp {a}"),
            Err(_) => "tcp".to_string(),
        };
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(TCP_KEEPALIVE));
        let mut builder = self.server_builder();
        let mode = match &tls {
            Some(t) if t.is_mutual() => "mutual TLS",
            Some(_) => "TLS",
            None => "plaintext",
        };
        if let Some(tls) = &tls {
            builder = builder
                .tls_config(tls.server_config())
                .map_err(|source| Error::TlsSetup { source })?;
        }
        log::info!("serving gRPC on {name} ({mode})");
        let router = builder.add_routes(self.routes()?);
        let token = self.shared.shutdown.clone();
        self.until_shutdown(
            &name,
            router.serve_with_incoming_shutdown(incoming, token.cancelled_owned()),
        )
        .await
    }

    /// Serves on a bound unix socket until shutdown. No TLS there: access
    /// is by file permission (see [`bind_unix`], which makes it 0600).
    pub async fn serve_unix(&self, listener: UnixListener) -> Result<(), Error> {
        let name = match listener.local_addr() {
            Ok(a) => match a.as_pathname() {
                Some(p) => format!("unix {}", p.display()),
                None => "unix (unnamed)".to_string(),
            },
            Err(_) => "unix".to_string(),
        };
        log::info!("serving gRPC on {name}");
        let router = self.server_builder().add_routes(self.routes()?);
        let token = self.shared.shutdown.clone();
        self.until_shutdown(
            &name,
            router.serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                token.cancelled_owned(),
            ),
        )
        .await
    }

    /// Runs `serve` until it returns, or until `shutdown_grace` after the
    /// shutdown signal: a client that never reads can keep its connection
    /// from draining, and must not keep the collector from stopping.
    async fn until_shutdown(
        &self,
        name: &str,
        serve: impl Future<Output = Result<(), tonic::transport::Error>>,
    ) -> Result<(), Error> {
        let token = self.shared.shutdown.clone();
        let grace = self.shared.config.shutdown_grace;
        tokio::select! {
            r = serve => r.map_err(|source| Error::Serve { listener: name.to_string(), source }),
            _ = async { token.cancelled().await; tokio::time::sleep(grace).await } => {
                log::warn!("{name}: connections still open {} after shutdown; closing anyway", humantime::format_duration(grace));
                Ok(())
            }
        }
    }
}

/// Binds a unix socket private to its owner (mode 0600 from the start: the
/// process umask is narrowed around the bind, so there is no moment when
/// others could connect). Replaces a stale socket file left by a process
/// that died, but never one that another process still serves on; creates
/// the parent directory. Call it at start-up: the umask is process-wide.
pub async fn bind_unix(path: &Path) -> Result<UnixListener, Error> {
    let err = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| Error::UnixSocket { path, what, source }
    };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(err("is in use by another process")(std::io::Error::from(
                std::io::ErrorKind::AddrInUse,
            )));
        }
        std::fs::remove_file(path).map_err(err("cannot remove the stale socket"))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err("cannot create the parent directory of"))?;
    }
    // SAFETY: umask only swaps the process's file mode mask; it cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(err("cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(err("cannot set the permissions of"))?;
    Ok(listener)
}
