//! Retention: windows that ended longer ago than `retention` are deleted,
//! on a timer, in small transactions (the store batches the deletes).

use std::{sync::Arc, time::Duration};

use tokio::time::MissedTickBehavior;

use crate::{collector::Shared, stats::Counters, store::StoreError};

/// Deletes what ended before `now_unix_ms - retention`; returns how many
/// windows went.
pub(crate) async fn prune(shared: &Shared, now_unix_ms: i64) -> Result<u64, StoreError> {
    let cutoff = now_unix_ms.saturating_sub(shared.retention_ms());
    let deleted = shared.store.delete_ended_before(cutoff).await?;
    if deleted > 0 {
        Counters::add(&shared.counters.windows_deleted_by_retention, deleted);
        log::info!("retention: deleted {deleted} windows that ended before {cutoff} ms");
    }
    Ok(deleted)
}

/// Runs [`prune`] every `interval` until shutdown. A failed pass is logged
/// and retried at the next tick: the data it would delete stays, nothing
/// is lost.
pub(crate) async fn run(shared: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = prune(&shared, crate::collector::unix_ms_now()).await {
                    log::error!("retention: {e}; retrying in {}", humantime::format_duration(interval));
                }
            }
        }
    }
}
