//! The collector as a value: open it on a data directory, serve it on any
//! number of listeners, read its counters, close it.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sockeye_proto::v1::collector_service_server::CollectorServiceServer;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic_health::server::HealthReporter;

use crate::{
    accept::{ConnLimits, Limiter},
    auth::{Auth, Policy, Reviewer},
    disk::Disk,
    events::{self, EventsConfig},
    follow,
    limits::{CallerLimits, PerCaller},
    retention,
    service::CollectorApi,
    stats::{Counters, Stats},
    store::{health::StoreHealth, ClickHouseStore, ClickHouseUrl, RedbStore, Store},
    tls::reload::DEFAULT_RELOAD_EVERY,
    watch::Hub,
    Error,
};

/// Which store holds the windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded redb file in `data_dir`: one collector, no server.
    #[default]
    Redb,
    /// A ClickHouse database shared by any number of collector replicas.
    ClickHouse(ClickHouseUrl),
}

/// Settings of a collector. [`CollectorConfig::new`] fills the defaults.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Where the embedded store keeps its file (`collector.redb`).
    pub data_dir: PathBuf,
    /// Which store to open.
    pub store: StoreKind,
    /// Windows that ended longer ago than this are deleted.
    pub retention: Duration,
    /// How often retention runs; `None`: a tenth of `retention`, between
    /// 1 s and 5 min.
    pub retention_interval: Option<Duration>,
    /// Largest gRPC message accepted (and sent). A larger one gets
    /// `OutOfRange` and the stream or call ends; the server is unaffected.
    pub max_message_bytes: usize,
    /// Windows the live fan-in keeps for WatchWindows clients (one ring
    /// shared by all of them). A client further behind misses windows, and
    /// the miss is counted. This bounds what slow clients can hold: at most
    /// this many decoded windows (a decoded window takes several times its
    /// encoded size), plus HTTP/2's send buffer per stream.
    pub watch_buffer: usize,
    /// WatchWindows streams open at once; more get `ResourceExhausted`.
    pub max_watchers: usize,
    /// How often a store shared by replicas (ClickHouse) is read for the
    /// windows other replicas stored, for this replica's live streams: the
    /// latency they add. Unused with a store only this process writes.
    pub follow_every: Duration,
    /// Memory redb may use as a page cache.
    pub store_cache_bytes: usize,
    /// After shutdown is requested, how long open connections get to finish
    /// before the serve futures return anyway.
    pub shutdown_grace: Duration,
    /// Who may push and who may read; what anonymous callers may do on
    /// each kind of listener.
    pub policy: Policy,
    /// Checks bearer tokens; `None`: every caller is anonymous.
    pub token_reviewer: Option<Reviewer>,
    /// Connections the TCP listener keeps open.
    pub conn_limits: ConnLimits,
    /// Streams, queries and query cost per caller.
    pub caller_limits: CallerLimits,
    /// Largest window accepted (an agent sends a larger one in chunks of
    /// at most `max_message_bytes`); larger ones are refused and counted.
    pub max_window_bytes: u64,
    /// Windows ending further ahead of the collector's clock are refused.
    pub max_clock_skew: Duration,
    /// Writes are refused while the data directory's file system has less
    /// free space than this (0: only when a write fails for lack of it).
    pub min_free_bytes: u64,
    /// How often TLS files given by path are read again for changes.
    pub tls_reload_every: Duration,
    /// When a node whose agent stopped pushing is a finding.
    pub silence: crate::findings::SilenceConfig,
    /// Write findings as Kubernetes Events; `None`: no Events.
    pub events: Option<EventsConfig>,
    /// Serve `/ui` to callers without a reader's token.
    pub ui_anonymous: bool,
}

/// Four reads of the feed a second per replica: a quarter second added to a
/// window another replica stored, for one small primary-key read each.
pub const DEFAULT_FOLLOW_EVERY: Duration = Duration::from_millis(250);

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Measured (the agent's `push::window::size` test): at the agent's default
/// bound of 16384 flows, with 20 latency bins and every counter set in each,
/// a window encodes to 17.5 MiB; with all 592 bins in every flow (the
/// bound of bounds, no real node), 152 MiB. 64 MiB keeps three of the first
/// and refuses the second, counted on both sides.
pub const DEFAULT_MAX_WINDOW_BYTES: u64 = 64 * 1024 * 1024;

impl CollectorConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            store: StoreKind::Redb,
            retention: Duration::from_secs(24 * 3600),
            retention_interval: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            watch_buffer: 64,
            max_watchers: 64,
            follow_every: DEFAULT_FOLLOW_EVERY,
            store_cache_bytes: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(5),
            policy: Policy::default(),
            token_reviewer: None,
            conn_limits: ConnLimits::default(),
            caller_limits: CallerLimits::default(),
            max_window_bytes: DEFAULT_MAX_WINDOW_BYTES,
            max_clock_skew: Duration::from_secs(300),
            min_free_bytes: 64 * 1024 * 1024,
            tls_reload_every: DEFAULT_RELOAD_EVERY,
            silence: crate::findings::SilenceConfig::default(),
            events: None,
            ui_anonymous: false,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| {
            Err(Error::Config {
                what: what.to_string(),
            })
        };
        if self.retention.is_zero() {
            return bad("retention must be longer than zero");
        }
        if self.silence.silent_after.is_zero() {
            return bad("node silent-after must be longer than zero");
        }
        if self.retention_interval.is_some_and(|d| d.is_zero()) {
            return bad("retention interval must be longer than zero");
        }
        if self.max_message_bytes < 1024 {
            return bad("max message size must be at least 1024 bytes");
        }
        if self.watch_buffer == 0 || self.watch_buffer > 1 << 20 {
            return bad("watch buffer must hold 1 to 1048576 windows");
        }
        if self.follow_every < Duration::from_millis(10)
            || self.follow_every > Duration::from_secs(60)
        {
            return bad("the follow interval must be between 10ms and 1m");
        }
        if self.max_watchers == 0 {
            return bad("max watchers must be at least 1");
        }
        if i64::try_from(self.retention.as_millis()).is_err() {
            return bad("retention is too long");
        }
        if self.max_window_bytes < self.max_message_bytes as u64 {
            return bad("max window size must be at least the max message size");
        }
        if self.tls_reload_every.is_zero() {
            return bad("the TLS reload interval must be longer than zero");
        }
        let l = &self.caller_limits;
        if l.max_push_streams == 0 || l.max_watch_streams == 0 || l.max_queries == 0 {
            return bad("per-caller stream and query limits must be at least 1");
        }
        if self.events.as_ref().is_some_and(|e| e.per_minute == 0) {
            return bad("events per minute must be at least 1");
        }
        if self.conn_limits.max_total == 0 || self.conn_limits.max_per_ip == 0 {
            return bad("connection limits must be at least 1");
        }
        Ok(())
    }

    fn effective_retention_interval(&self) -> Duration {
        self.retention_interval.unwrap_or_else(|| {
            (self.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
        })
    }
}

pub(crate) fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// State shared by every handler and task.
pub(crate) struct Shared {
    pub config: CollectorConfig,
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub counters: Arc<Counters>,
    /// The one shutdown signal: ends Push and Watch streams, the retention
    /// loop and the servers.
    pub shutdown: CancellationToken,
    /// Push stream tasks and background loops, awaited by `close`.
    pub tasks: TaskTracker,
    pub auth: Auth,
    pub per_caller: Arc<PerCaller>,
    pub disk: Arc<Disk>,
    /// Open TCP connections, shared by every TCP listener.
    pub conns: Arc<Limiter>,
    /// When this collector opened: silences of nodes are measured from
    /// here at the earliest (while it was away, agents buffered).
    pub opened_unix_ms: i64,
    /// Whether the store answers (a store on a server may not).
    pub store_health: Arc<StoreHealth>,
}

impl Shared {
    /// What ListFindings needs to judge silent nodes now.
    pub fn silences(&self) -> crate::findings::Silences {
        crate::findings::Silences {
            cfg: self.config.silence,
            now_unix_ms: unix_ms_now(),
            listening_since_unix_ms: self.opened_unix_ms,
        }
    }

    pub fn retention_ms(&self) -> i64 {
        // Validated to fit when the collector opened.
        i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A running collector. Clones share it.
#[derive(Clone)]
pub struct Collector {
    pub(crate) shared: Arc<Shared>,
    pub(crate) health: HealthReporter,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("data_dir", &self.shared.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// Opens the store `config.store` names (the embedded one in
    /// `config.data_dir`, or ClickHouse, applying its schema) and starts
    /// retention. Must run inside a tokio runtime.
    pub async fn open(config: CollectorConfig) -> Result<Self, Error> {
        config.validate()?;
        if let StoreKind::ClickHouse(url) = &config.store {
            let store = ClickHouseStore::open(url).await?;
            log::info!("store: ClickHouse {url}");
            return Self::with_store(config, Arc::new(store)).await;
        }
        let (dir, cache) = (config.data_dir.clone(), config.store_cache_bytes);
        let store = tokio::task::spawn_blocking(move || RedbStore::open(&dir, cache))
            .await
            .map_err(|source| Error::Task { source })??;
        log::info!("store: {}", store.path().display());
        Self::with_store(config, Arc::new(store)).await
    }

    /// Like [`Collector::open`] with any [`Store`]: the seam for a store
    /// shared by several replicas.
    pub async fn with_store(config: CollectorConfig, store: Arc<dyn Store>) -> Result<Self, Error> {
        config.validate()?;
        let counters = Arc::new(Counters::default());
        let hub = Hub::new(
            config.watch_buffer,
            config.max_watchers,
            counters.clone(),
            store.feed().is_some(),
        );
        let interval = config.effective_retention_interval();
        let auth = Auth::new(
            config.policy.clone(),
            config.token_reviewer.clone(),
            counters.clone(),
        );
        let disk = Arc::new(Disk::new(
            config.data_dir.clone(),
            config.min_free_bytes,
            counters.clone(),
        ));
        let shared = Arc::new(Shared {
            per_caller: PerCaller::new(config.caller_limits),
            conns: Limiter::new(config.conn_limits),
            config,
            store,
            hub,
            counters: counters.clone(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            auth,
            disk,
            opened_unix_ms: unix_ms_now(),
            store_health: Arc::new(StoreHealth::new(counters.clone())),
        });
        // Delete what expired while the collector was down before serving.
        // A failure (a disk too full even to delete) must not stop the
        // collector from starting: queries still work, and the loop below
        // tries again.
        if let Err(e) = retention::prune(&shared, unix_ms_now()).await {
            log::error!("retention at start-up: {e}; serving anyway, retrying on the timer");
        }
        shared.tasks.spawn(retention::run(shared.clone(), interval));
        shared.tasks.spawn(log_stats(shared.clone()));
        shared
            .tasks
            .spawn(follow::run(shared.clone(), shared.config.follow_every));
        if let Some(cfg) = shared.config.events.clone() {
            let rx = shared.hub.receiver();
            shared.tasks.spawn(events::run(shared.clone(), cfg, rx));
        }
        shared.tasks.spawn(
            shared
                .disk
                .clone()
                .watch(shared.store.clone(), shared.shutdown.clone()),
        );
        let health = HealthReporter::new();
        health
            .set_serving::<CollectorServiceServer<CollectorApi>>()
            .await;
        shared.tasks.spawn(shared.store_health.clone().watch(
            shared.store.clone(),
            health.clone(),
            shared.shutdown.clone(),
        ));
        Ok(Self { shared, health })
    }

    /// The collector's counters now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// The store, for embedders and tests that read it directly.
    pub fn store(&self) -> Arc<dyn Store> {
        self.shared.store.clone()
    }

    pub fn config(&self) -> &CollectorConfig {
        &self.shared.config
    }

    /// Runs retention once as if the time were `now_unix_ms`.
    pub async fn prune_expired(&self, now_unix_ms: i64) -> Result<u64, Error> {
        Ok(retention::prune(&self.shared, now_unix_ms).await?)
    }

    /// Marks the collector NOT_SERVING, ends every Push and Watch stream
    /// (agents get `Unavailable` and reconnect elsewhere or later) and makes
    /// the serve futures return.
    pub async fn shutdown(&self) {
        self.health
            .set_not_serving::<CollectorServiceServer<CollectorApi>>()
            .await;
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.shared.shutdown.cancel();
    }

    /// Resolves when shutdown has been requested.
    pub async fn shutdown_requested(&self) {
        self.shared.shutdown.cancelled().await;
    }

    /// Shuts down, waits for stream tasks and background loops, and closes
    /// the store (releasing its file, so the same data directory can be
    /// opened again).
    pub async fn close(&self) -> Result<(), Error> {
        self.shutdown().await;
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        self.shared.store.close().await?;
        log::info!("collector closed: {}", self.stats());
        Ok(())
    }
}

/// Logs the counters every minute when they changed, so drops and
/// duplicates show up in the log without a metrics system.
async fn log_stats(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut last = Stats::default();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = shared.counters.snapshot();
                if now != last {
                    log::info!("stats: {now}");
                    last = now;
                }
            }
        }
    }
}
