//! The collector's own counters: what it stored, what it dropped and why.
//!
//! Kept as atomics so every task can count without a lock; read as a plain
//! [`Stats`] snapshot (tests, logs, an embedding agent's metrics).

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc,
};

/// A snapshot of the counters. Counts are totals since the collector opened;
/// `watch_subscribers` and `push_streams` are gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Windows written to the store.
    pub windows_stored: u64,
    /// Windows received again (same agent, same seq) and not stored twice.
    pub windows_duplicate: u64,
    /// Windows that ended before the retention horizon when they arrived:
    /// acknowledged (so the agent lets go of them) but not stored.
    pub windows_expired_on_arrival: u64,
    /// Sum of `dropped_windows_before` of stored windows: windows agents lost
    /// because their buffer of unacknowledged windows was full.
    pub windows_agents_dropped: u64,
    /// Windows deleted by retention.
    pub windows_deleted_by_retention: u64,
    /// Stored records that could not be decoded when read (skipped).
    pub store_corrupt_records: u64,
    /// Windows that WatchWindows clients missed because they read too slowly
    /// (summed over clients).
    pub watch_missed_windows: u64,
    /// WatchWindows calls refused because `max_watch_subscribers` were open.
    pub watch_refused: u64,
    /// Push streams ended with an error status sent to the agent (invalid
    /// message, oversized message, store failure).
    pub push_rejected: u64,
    /// Findings in stored windows that had no id: ListFindings cannot
    /// follow them across windows and leaves them out.
    pub findings_without_id: u64,
    pub watch_subscribers: u64,
    pub push_streams: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub windows_stored: AtomicU64,
    pub windows_duplicate: AtomicU64,
    pub windows_expired_on_arrival: AtomicU64,
    pub windows_agents_dropped: AtomicU64,
    pub windows_deleted_by_retention: AtomicU64,
    pub store_corrupt_records: AtomicU64,
    pub watch_missed_windows: AtomicU64,
    pub watch_refused: AtomicU64,
    pub push_rejected: AtomicU64,
    pub findings_without_id: AtomicU64,
    pub watch_subscribers: AtomicU64,
    pub push_streams: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            windows_stored: self.windows_stored.load(Relaxed),
            windows_duplicate: self.windows_duplicate.load(Relaxed),
            windows_expired_on_arrival: self.windows_expired_on_arrival.load(Relaxed),
            windows_agents_dropped: self.windows_agents_dropped.load(Relaxed),
            windows_deleted_by_retention: self.windows_deleted_by_retention.load(Relaxed),
            store_corrupt_records: self.store_corrupt_records.load(Relaxed),
            watch_missed_windows: self.watch_missed_windows.load(Relaxed),
            watch_refused: self.watch_refused.load(Relaxed),
            push_rejected: self.push_rejected.load(Relaxed),
            findings_without_id: self.findings_without_id.load(Relaxed),
            watch_subscribers: self.watch_subscribers.load(Relaxed),
            push_streams: self.push_streams.load(Relaxed),
        }
    }
}

/// Counts one open stream of some kind while it lives.
pub(crate) struct GaugeGuard {
    counters: Arc<Counters>,
    gauge: fn(&Counters) -> &AtomicU64,
}

impl GaugeGuard {
    pub fn new(counters: Arc<Counters>, gauge: fn(&Counters) -> &AtomicU64) -> Self {
        gauge(&counters).fetch_add(1, Relaxed);
        Self { counters, gauge }
    }

    /// Counts one more unless the gauge is already at `max`; the check and
    /// the increment are one atomic step, so concurrent callers cannot
    /// overshoot.
    pub fn try_new(
        counters: Arc<Counters>,
        gauge: fn(&Counters) -> &AtomicU64,
        max: u64,
    ) -> Result<Self, u64> {
        gauge(&counters).fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))?;
        Ok(Self { counters, gauge })
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.counters).fetch_sub(1, Relaxed);
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "windows stored {} duplicate {} expired-on-arrival {} agents-dropped {} deleted-by-retention {} corrupt {} findings-without-id {}; push streams {} rejected {}; watch subscribers {} missed {} refused {}",
            self.windows_stored,
            self.windows_duplicate,
            self.windows_expired_on_arrival,
            self.windows_agents_dropped,
            self.windows_deleted_by_retention,
            self.store_corrupt_records,
            self.findings_without_id,
            self.push_streams,
            self.push_rejected,
            self.watch_subscribers,
            self.watch_missed_windows,
            self.watch_refused,
        )
    }
}
