//! How long TCP events wait in the ring buffer before the agent reads them.
//!
//! The kernel side wakes the agent only once a lot of data is waiting
//! (`BPF_RB_NO_WAKEUP` below a threshold); otherwise the agent drains on a
//! short timer. This is the latency that batching adds to everything built
//! on the events, findings included: measured per event as the drain's
//! clock minus the event's kernel timestamp (both CLOCK_MONOTONIC).

use sockeye_common::event::{EventKind, SockEvent};

/// Log2 buckets of microseconds: bucket `i` holds lags in [2^i, 2^(i+1))
/// µs (bucket 0 also below 1 µs); the last one everything from 2^31 µs on.
const BUCKETS: usize = 32;

/// Lags seen since the agent started.
#[derive(Debug, Clone)]
pub struct RingLag {
    buckets: [u64; BUCKETS],
    max_ns: u64,
    events: u64,
}

impl Default for RingLag {
    fn default() -> Self {
        Self {
            buckets: [0; BUCKETS],
            max_ns: 0,
            events: 0,
        }
    }
}

/// What [`RingLag`] reports: quantiles are bucket upper bounds, so at most
/// twice the true value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LagSummary {
    pub events: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl RingLag {
    /// Records one ring buffer record read at `now_ns`. Records too short
    /// to be an event are left to the decoder to count; a ConnectStart is
    /// skipped, as its time is when the connect began, a second before it
    /// is sent.
    pub fn observe(&mut self, record: &[u8], now_ns: u64) {
        let field = |offset: usize, len: usize| record.get(offset..offset + len);
        let (Some(ts), Some(kind)) = (
            field(core::mem::offset_of!(SockEvent, ts_ns), 8),
            field(core::mem::offset_of!(SockEvent, kind), 4),
        ) else {
            return;
        };
        let kind = u32::from_ne_bytes(kind.try_into().unwrap_or_default());
        if kind == EventKind::ConnectStart as u32 {
            return;
        }
        let ts = u64::from_ne_bytes(ts.try_into().unwrap_or_default());
        let lag = now_ns.saturating_sub(ts);
        let us = lag / 1_000;
        let bucket = (u64::BITS - us.leading_zeros()).saturating_sub(1) as usize;
        self.buckets[bucket.min(BUCKETS - 1)] += 1;
        self.max_ns = self.max_ns.max(lag);
        self.events += 1;
    }

    pub fn summary(&self) -> LagSummary {
        LagSummary {
            events: self.events,
            p50_us: self.quantile(0.50),
            p99_us: self.quantile(0.99),
            max_us: self.max_ns / 1_000,
        }
    }

    /// The upper bound of the bucket holding quantile `q`.
    fn quantile(&self, q: f64) -> u64 {
        if self.events == 0 {
            return 0;
        }
        let rank = (q * self.events as f64).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (1u64 << (i + 1)).min(self.max_ns / 1_000).max(1);
            }
        }
        self.max_ns / 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts_ns: u64, kind: EventKind) -> Vec<u8> {
        let mut r = vec![0u8; core::mem::size_of::<SockEvent>()];
        let ts = core::mem::offset_of!(SockEvent, ts_ns);
        r[ts..ts + 8].copy_from_slice(&ts_ns.to_ne_bytes());
        let k = core::mem::offset_of!(SockEvent, kind);
        r[k..k + 4].copy_from_slice(&(kind as u32).to_ne_bytes());
        r
    }

    #[test]
    fn lags_by_bucket_with_their_maximum() {
        let mut lag = RingLag::default();
        for us in [3, 5, 7, 9, 20_000] {
            lag.observe(
                &record(1_000_000, EventKind::Closed),
                1_000_000 + us * 1_000,
            );
        }
        // Its time is the connect's start: not a lag.
        lag.observe(&record(0, EventKind::ConnectStart), 5_000_000_000);
        // Too short to be an event.
        lag.observe(&[0u8; 4], 9);
        let s = lag.summary();
        assert_eq!(s.events, 5);
        assert_eq!(s.max_us, 20_000);
        // 3 of 5 are under 8 µs: the median's bucket is [4, 8).
        assert_eq!(s.p50_us, 8);
        assert_eq!(s.p99_us, 20_000, "capped at the maximum");
        assert_eq!(RingLag::default().summary(), LagSummary::default());
    }
}
