//! Sockeye's collector: agents push aggregated windows to it over gRPC, it
//! stores them durably, removes duplicates, answers cluster-wide queries and
//! fans what agents report out to live watchers.
//!
//! Embedding (the agent does this to run the whole path on one machine):
//!
//! ```no_run
//! # async fn run() -> Result<(), sockeye_collector::Error> {
//! use sockeye_collector::{Collector, CollectorConfig};
//! let collector = Collector::open(CollectorConfig::new("/var/lib/sockeye")).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await.expect("bind");
//! let serving = tokio::spawn({
//!     let c = collector.clone();
//!     async move { c.serve_tcp(listener, None).await }
//! });
//! // ... later:
//! collector.close().await?;
//! # Ok(()) }
//! ```
//!
//! Modules follow the data path: `ingest` (Push) -> `store` -> `query`
//! (QueryTop, GetClusterSnapshot), `findings` (ListFindings) and `watch`
//! (WatchWindows), which `follow` feeds from a shared store with what
//! other replicas stored; `retention` deletes old windows and `disk` stops writes
//! on a full disk; `auth` (who may push, who may read) and `limits` (what
//! one caller may hold) guard every call; `server`, `accept` and `tls` put
//! it on the network, `metrics` exports its counters; `events` writes
//! findings as Kubernetes Events; `ui` serves the web view.

mod accept;
pub mod auth;
mod collector;
pub mod disk;
mod error;
pub mod events;
pub mod filter;
pub mod findings;
mod follow;
pub mod histogram;
mod identity;
mod ingest;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod query;
mod retention;
mod server;
mod service;
mod stats;
pub mod store;
pub mod tls;
mod ui;
pub mod watch;

pub use accept::{ConnLimits, PeerInfo};
pub use collector::{
    Collector, CollectorConfig, StoreKind, DEFAULT_FOLLOW_EVERY, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_WINDOW_BYTES,
};
pub use error::Error;
pub use ingest::HELLO_TIMEOUT;
pub use server::{bind_unix, READY_LOG};
pub use service::CollectorApi;
pub use stats::{Kind as StatKind, Stats};
pub use store::{Store, StoreError};
pub use tls::{install_crypto_provider, TlsConfig, TlsError};
pub use watch::WATCH_MISSED_COUNTER;
