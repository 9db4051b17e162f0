//! Pushes aggregated windows to a collector: every `every`, the loop hands
//! its cumulative aggregates to [`Pusher::window`], which turns them into a
//! window of deltas ([`window`]) for the background [`sender`]. Each window
//! carries the findings open at its end and those resolved during it.

pub mod sender;
pub mod window;

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use sockeye_proto::{connect::ClientTls, v1 as pb};
use tokio::sync::mpsc;

use crate::clock;
use sender::{PushStats, SenderConfig};
use window::WindowBuilder;

#[derive(Debug, Clone)]
pub struct PushConfig {
    /// `http://host:port`, `https://host:port` or `unix:///path`.
    pub target: String,
    pub tls: Option<ClientTls>,
    pub every: Duration,
    /// Unacknowledged windows kept while the collector is away.
    pub buffer: usize,
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
        let (tx, rx) = mpsc::channel(cfg.buffer.max(1));
        let sender_cfg = SenderConfig {
            target: cfg.target.clone(),
            tls: cfg.tls.clone(),
            hello: pb::Hello {
                node: node.clone(),
                agent_id: agent_id.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            buffer: cfg.buffer,
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
}
