//! The library's error type.

use crate::{store::StoreError, tls::TlsError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {what}")]
    Config { what: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS setup for the TCP listener failed: {source}")]
    TlsSetup {
        #[source]
        source: tonic::transport::Error,
    },
    #[error("gRPC server reflection could not be built from the API descriptors: {source}")]
    Reflection {
        #[source]
        source: tonic_reflection::server::Error,
    },
    #[error("serving gRPC on {listener} failed: {source}")]
    Serve {
        listener: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("serving HTTP on {listener} failed: {source}")]
    Http {
        listener: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unix socket {path} {what}: {source}", path = path.display())]
    UnixSocket {
        path: std::path::PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("collector task did not complete: {source}")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
}
