//! `sockeye-collector`: stores the windows agents push and answers
//! cluster-wide queries. See the README's "Collector" section.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use sockeye_collector::{
    auth::{kube_client, KubeTokenReview, Perms, Policy, Reviewer, Subject},
    bind_unix,
    events::EventsConfig,
    limits::CallerLimits,
    store::ClickHouseUrl,
    Collector, CollectorConfig, ConnLimits, StoreKind, TlsConfig, DEFAULT_MAX_MESSAGE_BYTES,
    READY_LOG,
};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, SignalKind},
    task::JoinSet,
};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Parser)]
#[command(name = "sockeye-collector", version, about)]
struct Args {
    /// TCP address for gRPC (agents, the CLI, grpcurl); "off" for none.
    #[arg(long, default_value = "0.0.0.0:7070", value_parser = parse_listen)]
    listen: Listen,
    /// Also serve on this unix socket (mode 0600, no TLS; callers there get
    /// --anonymous-unix).
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Plain HTTP address of /metrics, /healthz, /readyz and the web view
    /// (/ui); "off" for none.
    #[arg(long, default_value = "0.0.0.0:9465", value_parser = parse_listen)]
    http_addr: Listen,
    /// Where windows are kept: "redb" (the embedded file in --data-dir, one
    /// collector) or clickhouse://[USER[:PASSWORD]@]HOST:HTTP_PORT/DATABASE
    /// (shared by any number of collector replicas; the schema is applied
    /// at start; QueryTop over an hour or more reads its per-minute
    /// rollups).
    #[arg(long, default_value = "redb", value_parser = parse_store, value_name = "redb|URL")]
    store: StoreKind,
    /// Directory of the embedded store (created if missing).
    #[arg(long, default_value = "/var/lib/sockeye", value_name = "DIR")]
    data_dir: PathBuf,
    /// Delete windows that ended longer ago than this (e.g. 90m, 24h, 7d).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Refuse new windows (agents keep them and retry) while the data
    /// directory's file system has less free space than this; 0: only once
    /// a write fails for lack of it. Unused with a clickhouse:// store.
    #[arg(long, default_value_t = 64)]
    min_free_mib: u64,
    /// How bearer tokens are checked: "kubernetes" asks the cluster's
    /// TokenReview API (in a pod, or through KUBECONFIG); "none" accepts no
    /// token, so every caller is anonymous (then only --anonymous-* apply).
    #[arg(long, value_enum, default_value_t = AuthMode::Kubernetes)]
    auth: AuthMode,
    /// Kubeconfig to reach the TokenReview API with, instead of the pod's
    /// ServiceAccount (in a pod) or $KUBECONFIG.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Audience tokens must have been issued for (a projected token's
    /// `audience`, `kubectl create token --audience`).
    #[arg(long, default_value = "sockeye-collector")]
    token_audience: String,
    /// A user whose tokens may push, each only as the node its token was
    /// issued on (repeatable): the agents' ServiceAccount.
    #[arg(long, value_name = "USER", default_values_t = ["system:serviceaccount:sockeye:sockeye-agent".to_string()])]
    agent_identity: Vec<String>,
    /// Who may query (repeatable): a user name such as
    /// system:serviceaccount:NAMESPACE:NAME, or group:NAME. Agents cannot
    /// query unless listed.
    #[arg(long, value_name = "USER|group:NAME", value_parser = Subject::parse)]
    reader: Vec<Subject>,
    /// What callers without a token may do on TCP: none, read, push or
    /// read,push.
    #[arg(long, default_value = "none", value_parser = Perms::parse)]
    anonymous_tcp: Perms,
    /// What callers without a token may do on the unix socket (its file
    /// mode decides who can connect).
    #[arg(long, default_value = "read,push", value_parser = Perms::parse)]
    anonymous_unix: Perms,
    /// PEM certificate chain of the TCP listener (turns TLS on); read again
    /// when it changes.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle; clients must present a certificate it signed (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for changes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    tls_reload_every: Duration,
    /// A node whose agent has pushed no window for this long is reported
    /// as a `node_silent` finding (the collector's own downtime excepted).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    node_silent_after: Duration,
    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Largest window accepted (agents send larger windows than one message
    /// in chunks); larger ones are refused and counted, on both sides.
    #[arg(long, default_value_t = 64)]
    max_window_mib: u64,
    /// Windows that end further ahead of this collector's clock are refused
    /// and counted.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    max_clock_skew: Duration,
    /// TCP connections open at once; more are closed at once and counted.
    #[arg(long, default_value_t = ConnLimits::default().max_total)]
    max_connections: usize,
    /// TCP connections open at once from one IP address.
    #[arg(long, default_value_t = ConnLimits::default().max_per_ip)]
    max_connections_per_ip: usize,
    /// Push streams one caller (a node's agent) may have open.
    #[arg(long, default_value_t = CallerLimits::default().max_push_streams)]
    max_push_streams_per_caller: usize,
    /// WatchWindows streams one caller may have open.
    #[arg(long, default_value_t = CallerLimits::default().max_watch_streams)]
    max_watch_streams_per_caller: usize,
    /// Queries one caller may have in flight.
    #[arg(long, default_value_t = CallerLimits::default().max_queries)]
    max_queries_per_caller: usize,
    /// Stored windows one caller's queries may read per minute.
    #[arg(long, default_value_t = CallerLimits::default().query_windows_per_minute)]
    query_windows_per_minute: u64,
    /// Stored windows one query may read (raw windows: a QueryTop's
    /// minutes answered from ClickHouse rollups do not count).
    #[arg(long, default_value_t = CallerLimits::default().max_query_windows)]
    max_query_windows: u64,
    /// Windows kept for live WatchWindows clients; slower clients miss
    /// windows, and the misses are counted.
    #[arg(long, default_value_t = 64)]
    watch_buffer: usize,
    /// WatchWindows streams open at once.
    #[arg(long, default_value_t = 64)]
    max_watchers: usize,
    /// With a clickhouse:// store: how often it is read for the windows
    /// other replicas stored, so live streams carry every agent whichever
    /// replica a reader reached (the latency this adds). Unused with redb.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    follow_every: Duration,
    /// Page cache of the store, in MiB.
    #[arg(long, default_value_t = 64)]
    store_cache_mib: usize,
    /// Write each finding that opens or resolves as a Kubernetes Event on
    /// its pod (events.k8s.io/v1), through the same API as TokenReview
    /// (--kubeconfig). Needs create and patch on events in the pods'
    /// namespaces (deploy/kustomize/base/collector-rbac.yaml).
    #[arg(long)]
    events: bool,
    /// Event writes (new Events and series updates) a minute, on average,
    /// and at once; more are dropped and counted.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    events_per_minute: u32,
    /// Serve the web view (/ui) to callers without a reader's token. Off by
    /// default: the HTTP port is plain HTTP, reachable by whatever reaches
    /// the pod.
    #[arg(long)]
    ui_anonymous: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthMode {
    Kubernetes,
    None,
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

fn parse_store(s: &str) -> Result<StoreKind, String> {
    if s == "redb" {
        return Ok(StoreKind::Redb);
    }
    s.parse::<ClickHouseUrl>().map(StoreKind::ClickHouse)
}

/// The cluster's API, when anything needs it (TokenReview, Events).
async fn kube(args: &Args) -> anyhow::Result<Option<kube::Client>> {
    if args.auth == AuthMode::None && !args.events {
        return Ok(None);
    }
    let client = kube_client(args.kubeconfig.as_deref())
        .await
        .context("--auth kubernetes and --events need the Kubernetes API (in a pod: its ServiceAccount; elsewhere: --kubeconfig or $KUBECONFIG); outside Kubernetes run with --auth none and --anonymous-tcp, or serve only on --unix")?;
    Ok(Some(client))
}

fn token_reviewer(args: &Args, client: Option<&kube::Client>) -> Option<Reviewer> {
    if args.auth == AuthMode::None {
        log::warn!(
            "--auth none: tokens are not checked; callers get --anonymous-tcp ({:?}) on TCP and --anonymous-unix ({:?}) on the unix socket",
            args.anonymous_tcp,
            args.anonymous_unix
        );
        return None;
    }
    let reviewer = KubeTokenReview::new(client?.clone(), args.token_audience.clone());
    log::info!(
        "tokens are checked with the TokenReview API (audience {:?}); agents: {}; readers: {}",
        args.token_audience,
        args.agent_identity.join(", "),
        if args.reader.is_empty() {
            "none (--reader)".to_string()
        } else {
            format!("{:?}", args.reader)
        }
    );
    Some(Reviewer(Arc::new(reviewer)))
}

fn config(
    args: &Args,
    reviewer: Option<Reviewer>,
    client: Option<kube::Client>,
) -> CollectorConfig {
    let mut config = CollectorConfig::new(&args.data_dir);
    config.store = args.store.clone();
    config.retention = args.retention;
    config.max_message_bytes = args.max_message_bytes;
    config.max_window_bytes = args.max_window_mib.saturating_mul(MIB);
    config.max_clock_skew = args.max_clock_skew;
    config.min_free_bytes = args.min_free_mib.saturating_mul(MIB);
    if config.store != StoreKind::Redb {
        // The data directory holds nothing then: its disk is not the store's.
        config.min_free_bytes = 0;
    }
    config.watch_buffer = args.watch_buffer;
    config.max_watchers = args.max_watchers;
    config.follow_every = args.follow_every;
    config.store_cache_bytes = args.store_cache_mib.saturating_mul(1024 * 1024);
    config.tls_reload_every = args.tls_reload_every;
    config.silence.silent_after = args.node_silent_after;
    config.policy = Policy {
        pushers: args.agent_identity.clone(),
        readers: args.reader.clone(),
        anonymous_tcp: args.anonymous_tcp,
        anonymous_unix: args.anonymous_unix,
    };
    config.token_reviewer = reviewer;
    config.ui_anonymous = args.ui_anonymous;
    config.events = match client {
        Some(client) if args.events => Some(EventsConfig {
            client,
            per_minute: args.events_per_minute,
            // The pod's name in Kubernetes: which replica wrote it.
            instance: std::env::var("HOSTNAME")
                .map(|h| format!("sockeye-collector-{h}"))
                .unwrap_or_else(|_| "sockeye-collector".into()),
        }),
        _ => None,
    };
    config.conn_limits = ConnLimits {
        max_total: args.max_connections,
        max_per_ip: args.max_connections_per_ip,
    };
    config.caller_limits = CallerLimits {
        max_push_streams: args.max_push_streams_per_caller,
        max_watch_streams: args.max_watch_streams_per_caller,
        max_queries: args.max_queries_per_caller,
        query_windows_per_minute: args.query_windows_per_minute,
        max_query_windows: args.max_query_windows,
    };
    config
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sockeye_collector::logging::init();
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
    let client = kube(&args).await?;
    let reviewer = token_reviewer(&args, client.as_ref());
    let collector = Collector::open(config(&args, reviewer, client))
        .await
        .with_context(|| match &args.store {
            StoreKind::Redb => format!("opening the collector in {}", args.data_dir.display()),
            StoreKind::ClickHouse(url) => format!("opening the collector's store {url}"),
        })?;

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
    let http = match args.http_addr {
        Listen::Addr(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --http-addr {addr}"))?;
            let bound = listener.local_addr().unwrap_or(addr);
            listening.push(format!("http {bound}"));
            Some(listener)
        }
        Listen::Off => None,
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
    if let Some(listener) = http {
        let c = collector.clone();
        servers.spawn(async move { c.serve_http(listener).await });
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
