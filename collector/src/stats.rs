//! The collector's own counters: what it stored, what it refused or dropped
//! and why.
//!
//! Kept as atomics so every task can count without a lock; read as a plain
//! [`Stats`] snapshot (tests, logs, `/metrics`, an embedding agent). Each
//! counter is declared once below, with its meaning; the snapshot, the log
//! line and the metrics are made from that list.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc,
};

/// Whether a value only grows (a count since the collector opened) or is a
/// level now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $name:ident : $kind:ident, )+) => {
        /// A snapshot of the counters. Counts are totals since the collector
        /// opened; gauges are levels now.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Stats {
            $( $(#[doc = $doc])+ pub $name: u64, )+
        }

        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub $name: AtomicU64, )+
        }

        impl Counters {
            pub fn snapshot(&self) -> Stats {
                Stats { $( $name: self.$name.load(Relaxed), )+ }
            }
        }

        impl Stats {
            /// Every value with its name, kind and meaning, in declaration order.
            pub fn entries(&self) -> Vec<(&'static str, Kind, &'static str, u64)> {
                vec![ $( (stringify!($name), Kind::$kind, concat!($($doc),+), self.$name), )+ ]
            }
        }
    };
}

counters! {
    /// Windows written to the store.
    windows_stored: Counter,
    /// Windows received again (same agent, same seq) and not stored twice.
    windows_duplicate: Counter,
    /// Windows that ended before the retention horizon when they arrived:
    /// acknowledged (so the agent lets go of them) but not stored.
    windows_expired_on_arrival: Counter,
    /// Windows that end further in the future than the allowed clock skew:
    /// acknowledged as refused, not stored.
    windows_refused_future: Counter,
    /// Windows larger than the largest window accepted: acknowledged as
    /// refused, not stored.
    windows_refused_too_large: Counter,
    /// Windows that arrived in pieces (WindowChunk) and were joined.
    windows_joined_from_chunks: Counter,
    /// Sum of `dropped_windows_before` of stored windows: windows agents lost
    /// because their buffer of unacknowledged windows was full.
    windows_agents_dropped: Counter,
    /// Windows deleted by retention.
    windows_deleted_by_retention: Counter,
    /// Stored records that could not be decoded when read (skipped).
    store_corrupt_records: Counter,
    /// Windows not written because the disk was (nearly) full: the agent
    /// was told to retry and keeps them meanwhile.
    store_writes_refused_disk_full: Counter,
    /// Writes the store failed for another reason (the agent retries).
    store_write_errors: Counter,
    /// Windows stored whose rollups could not be written (ClickHouse):
    /// queries read their minutes from raw windows, slower but exact.
    store_rollup_failures: Counter,
    /// Times the store's server (ClickHouse) stopped answering or started
    /// refusing writes.
    store_outages: Counter,
    /// 1 while the store's server (ClickHouse) does not answer or refuses
    /// writes: windows are not acknowledged, agents keep them.
    store_unavailable: Gauge,
    /// 1 while writes are refused because the data directory's disk is full.
    store_disk_full: Gauge,
    /// Bytes free on the data directory's file system at the last check.
    store_disk_free_bytes: Gauge,
    /// Windows that WatchWindows clients missed because they read too slowly
    /// (summed over clients).
    watch_missed_windows: Counter,
    /// Reads of a shared store's insert feed (every --follow-every) for
    /// windows other replicas stored.
    follow_polls: Counter,
    /// Windows other replicas stored that this replica's live streams got
    /// from the store.
    follow_windows: Counter,
    /// Reads of the insert feed that failed (logged; retried with backoff,
    /// windows stored meanwhile are delivered once it reads again).
    follow_poll_errors: Counter,
    /// WatchWindows calls refused because `max_watchers` were open.
    watch_refused: Counter,
    /// Push streams ended with an error status sent to the agent (invalid
    /// message, oversized message, store failure, refused identity).
    push_rejected: Counter,
    /// Findings in stored windows that had no id: ListFindings cannot
    /// follow them across windows and leaves them out.
    findings_without_id: Counter,
    /// Push streams refused: anonymous where that is not allowed, a caller
    /// that is not an agent, or an agent pushing under another node's name.
    auth_pushes_refused: Counter,
    /// Queries refused: anonymous where that is not allowed, or a caller
    /// that is not a reader.
    auth_reads_refused: Counter,
    /// Calls whose bearer token the TokenReview API did not accept.
    auth_tokens_rejected: Counter,
    /// Calls refused because the TokenReview API could not be asked.
    auth_review_errors: Counter,
    /// TCP connections closed at once because the connection limits were
    /// reached.
    connections_refused: Counter,
    /// TLS handshakes that failed or timed out.
    tls_handshake_failures: Counter,
    /// Times new certificate files were put in use.
    tls_reloads: Counter,
    /// Times changed certificate files could not be used (the old
    /// certificate stayed).
    tls_reload_errors: Counter,
    /// Calls refused because their caller held too many streams or queries.
    caller_limit_refused: Counter,
    /// Queries refused because their caller's window budget ran out, or
    /// because the range held more windows than one query may read.
    query_cost_refused: Counter,
    /// Kubernetes Events written for findings that opened or resolved.
    events_written: Counter,
    /// Kubernetes Events updated because their finding repeated (the
    /// series' count and lastObservedTime).
    events_updated: Counter,
    /// Event writes the API server refused or did not answer (not retried).
    events_failed: Counter,
    /// Events not written because --events-per-minute was reached.
    events_rate_limited: Counter,
    /// Finding changes with no pod to write an Event on (host processes).
    events_skipped_no_pod: Counter,
    /// Findings not followed for Events because too many were open.
    events_untracked: Counter,
    /// Windows the Event writer skipped because it fell behind (their
    /// changes are taken from later windows).
    events_windows_missed: Counter,
    /// Requests to /ui refused for lack of a reader's credentials.
    ui_refused: Counter,
    /// WatchWindows streams open now.
    watch_subscribers: Gauge,
    /// Push streams open now.
    push_streams: Gauge,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Relaxed);
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
    /// `name=value` for every value that is not zero (all zero: "nothing yet").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut any = false;
        for (name, _, _, v) in self.entries() {
            if v != 0 {
                if any {
                    f.write_str(" ")?;
                }
                write!(f, "{name}={v}")?;
                any = true;
            }
        }
        if !any {
            f.write_str("nothing yet")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_listed_once_with_a_meaning() {
        let s = Stats {
            windows_stored: 3,
            push_streams: 1,
            ..Stats::default()
        };
        let e = s.entries();
        let mut names: Vec<&str> = e.iter().map(|x| x.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), e.len());
        assert!(e.iter().all(|x| !x.2.is_empty()));
        assert_eq!(s.to_string(), "windows_stored=3 push_streams=1");
        assert_eq!(Stats::default().to_string(), "nothing yet");
    }
}
