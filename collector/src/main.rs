//! `sockeye-collector`: stores the windows agents push and answers
//! cluster-wide queries. See the README's "Collector" section.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use sockeye_collector::{
    bind_unix, Collector, CollectorConfig, TlsConfig, DEFAULT_MAX_MESSAGE_BYTES, READY_LOG,
};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    task::JoinSet,
};

#[derive(Debug, Parser)]
#[command(name = "sockeye-collector", version, about)]
struct Args {
    /// TCP address for gRPC (agents, the CLI, grpcurl); "off" for none.
    #[arg(long, default_value = "0.0.0.0:7070", value_parser = parse_listen)]
    listen: Listen,
    /// Also serve on this unix socket (mode 0600, no TLS).
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Directory of the embedded store (created if missing).
    #[arg(long, default_value = "/var/lib/sockeye", value_name = "DIR")]
    data_dir: PathBuf,
    /// Delete windows that ended longer ago than this (e.g. 90m, 24h, 7d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// PEM certificate chain of the TCP listener (turns TLS on).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle; clients must present a certificate it signed (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Windows kept for live WatchWindows clients; slower clients miss
    /// windows, and the misses are counted.
    #[arg(long, default_value_t = 64)]
    watch_buffer: usize,
    /// WatchWindows streams open at once.
    #[arg(long, default_value_t = 64)]
    max_watchers: usize,
    /// Page cache of the store, in MiB.
    #[arg(long, default_value_t = 64)]
    store_cache_mib: usize,
}

#[derive(Debug, Clone)]
enum Listen {
    Off,
    Addr(SocketAddr),
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen::Off);
    }
    s.parse()
        .map(Listen::Addr)
        .map_err(|e| format!("{s:?} is not an address like 0.0.0.0:7070 or \"off\": {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    if matches!(args.listen, Listen::Off) && args.unix.is_none() {
        bail!("--listen off and no --unix: nothing to serve on");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig::from_files(
            cert,
            key,
            args.tls_client_ca.as_deref(),
        )?),
        _ => None,
    };
    let mut config = CollectorConfig::new(&args.data_dir);
    config.retention = args.retention;
    config.max_message_bytes = args.max_message_bytes;
    config.watch_buffer = args.watch_buffer;
    config.max_watchers = args.max_watchers;
    config.store_cache_bytes = args.store_cache_mib.saturating_mul(1024 * 1024);
    let collector = Collector::open(config)
        .await
        .with_context(|| format!("opening the collector in {}", args.data_dir.display()))?;

    // Bind every listener before serving any, then say "ready" once: a
    // client (or a test) that waits for that line can use any of them.
    let mut listening = Vec::new();
    let tcp = match args.listen {
        Listen::Addr(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let bound = listener.local_addr().unwrap_or(addr);
            listening.push(format!("tcp {bound}"));
            Some(listener)
        }
        Listen::Off => None,
    };
    let unix = match args.unix.clone() {
        Some(path) => {
            let listener = bind_unix(&path).await?;
            listening.push(format!("unix {}", path.display()));
            Some(listener)
        }
        None => None,
    };
    let mut servers = JoinSet::new();
    if let Some(listener) = tcp {
        let c = collector.clone();
        servers.spawn(async move { c.serve_tcp(listener, tls).await });
    }
    if let Some(listener) = unix {
        let c = collector.clone();
        servers.spawn(async move { c.serve_unix(listener).await });
    }
    // Handlers before "ready": a signal sent as soon as it is read must stop
    // the collector cleanly (removing its socket), not kill it.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    log::info!("{READY_LOG}{}", listening.join(", "));

    let mut failed = None;
    tokio::select! {
        _ = int.recv() => log::info!("SIGINT: shutting down"),
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
        Some(r) = servers.join_next() => {
            // A server ended before any signal: that is a failure.
            failed = Some(match r {
                Ok(Ok(())) => anyhow::anyhow!("a listener stopped unexpectedly"),
                Ok(Err(e)) => e.into(),
                Err(e) => e.into(),
            });
        }
    }
    collector.shutdown().await;
    while let Some(r) = servers.join_next().await {
        if let Ok(Err(e)) = r {
            log::error!("{e}");
        }
    }
    collector.close().await?;
    if let Some(path) = &args.unix {
        let _ = std::fs::remove_file(path);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
