//! Failures per time bucket over one window, so "how many in the last
//! minute" costs 60 counters per key, whatever the failure rate.

/// Buckets per window.
pub const BUCKETS: usize = 60;

#[derive(Debug, Clone)]
pub struct Recent {
    bucket_ns: u64,
    /// Bucket number (`ts / bucket_ns`) of the newest bucket written.
    head: u64,
    counts: [u32; BUCKETS],
}

impl Recent {
    /// Buckets of `window_ns / BUCKETS` (at least 1 ns).
    pub fn new(window_ns: u64) -> Self {
        Self {
            bucket_ns: (window_ns / BUCKETS as u64).max(1),
            head: 0,
            counts: [0; BUCKETS],
        }
    }

    pub fn add(&mut self, ts_ns: u64) {
        let b = ts_ns / self.bucket_ns;
        if b > self.head {
            // Clear the buckets that the window slid past (at most all).
            let stale = (b - self.head).min(BUCKETS as u64);
            for i in 0..stale {
                self.counts[((b - i) % BUCKETS as u64) as usize] = 0;
            }
            self.head = b;
        } else if b + BUCKETS as u64 <= self.head {
            // Older than the window (records from another CPU can arrive a
            // little out of order, never a window late).
            return;
        }
        let slot = &mut self.counts[(b % BUCKETS as u64) as usize];
        *slot = slot.saturating_add(1);
    }

    /// Failures in the window ending at `now_ns` (to a bucket's precision).
    pub fn count(&self, now_ns: u64) -> u64 {
        // A record stamped just after `now_ns` was taken still counts.
        let end = (now_ns / self.bucket_ns).max(self.head);
        let oldest = end.saturating_sub(BUCKETS as u64 - 1);
        if self.head < oldest {
            return 0;
        }
        (oldest..=self.head)
            .map(|b| u64::from(self.counts[(b % BUCKETS as u64) as usize]))
            .sum()
    }
}
