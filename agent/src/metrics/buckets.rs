//! Prometheus buckets for the latency histograms. Every bound is an edge
//! of the log-linear histogram's bins (two significant digits, 10 µs to
//! 60 s), so each bin falls in exactly one bucket and the conversion adds
//! no error.

use crate::aggregate::histogram::Histogram;

/// Upper bounds (`le`) in nanoseconds: 100 µs to 60 s in 1-2.5-5 steps,
/// then 30 s and 60 s (the kernel's longest connect ends near 127 s; the
/// histogram's own range ends at 60 s). `+Inf` follows.
pub const BOUNDS_NS: [u64; 18] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// Counts per bucket (not cumulative; the last is `+Inf`), sum and count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buckets {
    pub counts: [u64; BUCKETS],
    pub sum_ns: u64,
    pub count: u64,
}

impl Buckets {
    pub fn of(h: &Histogram) -> Self {
        let mut b = Self {
            sum_ns: h.sum_ns(),
            count: h.count(),
            ..Self::default()
        };
        for (_, hi, n) in h.buckets() {
            // A bin [lo, hi) lies below a bound when hi <= bound.
            let i = BOUNDS_NS
                .iter()
                .position(|&bound| hi <= bound)
                .unwrap_or(BUCKETS - 1);
            b.counts[i] = b.counts[i].saturating_add(n);
        }
        b
    }

    /// What was added since `earlier` (of the same cumulative series).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut d = Self {
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
            count: self.count.saturating_sub(earlier.count),
            ..Self::default()
        };
        for (i, c) in d.counts.iter_mut().enumerate() {
            *c = self.counts[i].saturating_sub(earlier.counts[i]);
        }
        d
    }

    pub fn add(&mut self, other: &Self) {
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.count = self.count.saturating_add(other.count);
        for (c, o) in self.counts.iter_mut().zip(other.counts) {
            *c = c.saturating_add(o);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// (upper bound in seconds, count) per bucket, as the encoder takes them.
    pub fn prometheus(&self) -> Vec<(f64, u64)> {
        BOUNDS_NS
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values_ns: &[u64]) -> Buckets {
        let mut h = Histogram::new();
        for &v in values_ns {
            h.record(v);
        }
        Buckets::of(&h)
    }

    #[test]
    fn every_bound_is_a_bin_edge() {
        for (i, &bound) in BOUNDS_NS.iter().enumerate() {
            let below = of(&[bound - 1]);
            let at = of(&[bound]);
            assert_eq!(below.counts[i], 1, "{bound} - 1 ns is within le={bound}");
            assert_eq!(at.counts[i + 1], 1, "{bound} ns falls in the next bucket");
        }
    }

    #[test]
    fn converts_counts_sum_and_extremes() {
        let b = of(&[1, 150_000, 150_000, 3_000_000_000, 90_000_000_000]);
        assert_eq!(b.count, 5);
        assert_eq!(b.counts.iter().sum::<u64>(), 5);
        assert_eq!(b.counts[0], 1, "under 10 µs is in the first bucket");
        assert_eq!(b.counts[1], 2, "150 µs: le=250µs");
        assert_eq!(b.counts[14], 1, "3 s: le=5s");
        assert_eq!(b.counts[BUCKETS - 1], 1, "90 s: +Inf");
        assert_eq!(b.sum_ns, 93_000_300_001);
        let p = b.prometheus();
        assert_eq!(p.len(), BUCKETS);
        assert_eq!(p[0], (0.0001, 1));
        assert_eq!(p[BUCKETS - 1].0, f64::INFINITY);
    }

    #[test]
    fn since_is_what_was_added() {
        let mut h = Histogram::new();
        h.record(200_000);
        let first = Buckets::of(&h);
        h.record(200_000);
        h.record(2_000_000);
        let d = Buckets::of(&h).since(&first);
        assert_eq!((d.count, d.sum_ns), (2, 2_200_000));
        assert_eq!((d.counts[1], d.counts[4]), (1, 1));
        let mut total = first;
        total.add(&d);
        assert_eq!(total, Buckets::of(&h));
    }
}
