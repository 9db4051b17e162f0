//! Pushes aggregated windows to a collector: every `every`, the loop hands
//! its cumulative aggregates to [`Pusher::window`], which turns them into a
//! window of deltas ([`window`]) for the background [`sender`]. Each window
//! carries the findings open at its end and those resolved during it. The
//! sender keeps what the collector has not acknowledged in a buffer bounded
//! in bytes ([`buffer`]) and reconnects with jittered [`backoff`].

pub mod backoff;
pub mod buffer;
pub mod sender;
pub mod window;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sockeye_proto::{connect::ClientTls, v1 as pb};
use tokio::sync::mpsc;

use crate::{clock, snapshot::PushHealth};
use sender::{PushStats, SenderConfig};
use window::WindowBuilder;

/// Windows handed to the sender and not yet taken: it takes them at once,
/// even while the collector is away, so a few suffice.
const HANDOFF: usize = 16;

#[derive(Debug, Clone)]
pub struct PushConfig {
    /// `http://host:port`, `https://host:port` or `unix:///path`.
    pub target: String,
    pub tls: Option<ClientTls>,
    /// Bearer token to present (a projected ServiceAccount token), read
    /// again for each connection.
    pub token_file: Option<PathBuf>,
    pub every: Duration,
    /// Unacknowledged windows kept while the collector is away, at most...
    pub buffer: usize,
    /// ... and their encoded bytes, at most; past either the oldest go.
    pub buffer_bytes: usize,
    /// Largest gRPC message sent (the collector's `--max-message-bytes`);
    /// larger windows go in chunks.
    pub max_message_bytes: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            target: String::new(),
            tls: None,
            token_file: None,
            every: Duration::from_secs(10),
            // A day of 10 s windows, so a small window costs its place.
            buffer: 8640,
            buffer_bytes: 64 << 20,
            max_message_bytes: 4 << 20,
        }
    }
}

pub struct Pusher {
    builder: WindowBuilder,
    tx: mpsc::Sender<pb::Window>,
    pub stats: Arc<PushStats>,
    pub every: Duration,
    /// Monotonic ns of the previous window's end: findings resolved after
    /// it go into the next window.
    pub findings_since_ns: u64,
}

impl Pusher {
    /// Starts the sender on the current tokio runtime.
    pub fn start(cfg: PushConfig, node: String) -> Self {
        let now = clock::unix_ms();
        let agent_id = format!("{node}-{}-{now}", std::process::id());
        let stats = Arc::new(PushStats::default());
        let (tx, rx) = mpsc::channel(HANDOFF);
        let sender_cfg = SenderConfig {
            target: cfg.target.clone(),
            tls: cfg.tls.clone(),
            token_file: cfg.token_file.clone(),
            hello: pb::Hello {
                node: node.clone(),
                agent_id: agent_id.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            buffer: cfg.buffer.max(1),
            buffer_bytes: cfg.buffer_bytes.max(1),
            max_message_bytes: cfg.max_message_bytes,
        };
        tokio::spawn(sender::run(sender_cfg, rx, stats.clone()));
        Self {
            builder: WindowBuilder::new(node, agent_id, now),
            tx,
            stats,
            every: cfg.every,
            findings_since_ns: clock::monotonic_ns(),
        }
    }

    /// Makes the window that ends now and queues it for the collector.
    pub fn window(&mut self, aggregates: pb::Aggregates) {
        let w = self.builder.build(aggregates, clock::unix_ms());
        // The sender takes windows in even while the collector is away, so
        // this only fails if it stopped: count the window as dropped.
        if self.tx.try_send(w).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The pusher's part of the agent's health.
    pub fn health(&self) -> PushHealth {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PushHealth {
            windows_sent: get(&s.sent),
            windows_sent_in_chunks: get(&s.sent_in_chunks),
            windows_acked: get(&s.acked),
            windows_buffered: get(&s.buffered),
            bytes_buffered: get(&s.buffered_bytes),
            buffer_limit_bytes: get(&s.buffer_limit_bytes),
            bytes_dropped: get(&s.dropped_bytes),
            reconnects: get(&s.reconnects),
            collector_unavailable: get(&s.collector_unavailable),
            collector_refused: get(&s.collector_refused),
        }
    }

    /// The pusher's drop counters: windows the agent dropped (buffer full,
    /// or a window larger than the buffer) and windows the collector
    /// refused to store.
    pub fn lost(&self) -> [(&'static str, u64); 2] {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("push_windows_dropped", get(&self.stats.dropped)),
            ("push_windows_refused", get(&self.stats.refused)),
        ]
    }
}
