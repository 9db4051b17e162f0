//! Whether the store answers: a store on a server (ClickHouse) can be down
//! or refuse writes while the collector runs. Then windows are not acked
//! (agents keep them and resend), `/readyz` and the gRPC health service
//! say NOT_SERVING with the reason, the `store_unavailable` gauge is 1, and
//! the store is pinged until it answers again, when all of that reverts.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use sockeye_proto::v1::collector_service_server::CollectorServiceServer;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

use super::{Store, StoreError};
use crate::{service::CollectorApi, stats::Counters};

/// How often a store that failed is pinged.
pub const PING_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct StoreHealth {
    down: AtomicBool,
    /// What the last failure said, for `/readyz`.
    reason: Mutex<String>,
    counters: Arc<Counters>,
}

impl StoreHealth {
    pub fn new(counters: Arc<Counters>) -> Self {
        Self {
            down: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            counters,
        }
    }

    /// After a failed store operation: a server that cannot be reached or
    /// refuses (not a full local disk: [`crate::disk`] handles that).
    pub fn failed(&self, e: &StoreError) {
        if !matches!(
            e,
            StoreError::ClickHouse { .. } | StoreError::ClickHouseSchema(_)
        ) {
            return;
        }
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
        if !self.down.swap(true, Relaxed) {
            Counters::set(&self.counters.store_unavailable, 1);
            Counters::add(&self.counters.store_outages, 1);
            log::error!("store: {e}; windows are not acknowledged (agents keep them) until the store answers again");
        }
    }

    /// After a store operation that worked.
    pub fn ok(&self) {
        if self.down.swap(false, Relaxed) {
            Counters::set(&self.counters.store_unavailable, 0);
            log::info!("store: answering again; windows are acknowledged again");
        }
    }

    /// Why the store is unavailable, if it is.
    pub fn unavailable(&self) -> Option<String> {
        self.down.load(Relaxed).then(|| {
            self.reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// Pings the store while it is down, and keeps the gRPC health status
    /// in step, until shutdown.
    pub async fn watch(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        health: HealthReporter,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(PING_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut serving = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.down.load(Relaxed) {
                match store.ping().await {
                    Ok(()) => self.ok(),
                    Err(e) => self.failed(&e),
                }
            }
            let up = !self.down.load(Relaxed);
            if up != serving && !shutdown.is_cancelled() {
                serving = up;
                if up {
                    health
                        .set_serving::<CollectorServiceServer<CollectorApi>>()
                        .await;
                } else {
                    health
                        .set_not_serving::<CollectorServiceServer<CollectorApi>>()
                        .await;
                }
            }
        }
    }
}
