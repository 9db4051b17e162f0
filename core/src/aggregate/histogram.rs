//! Sparse log-linear latency histogram (10 µs – 60 s, two significant digits per bin).

use serde::Serialize;

/// Smallest value with its own bin: 10 µs.
const MIN_TRACKED_NS: u64 = 10_000;
/// First value that lands in the overflow bin: 60 s.
const OVERFLOW_NS: u64 = 60_000_000_000;
/// Decade of `MIN_TRACKED_NS` (10^4 ns).
const FIRST_DECADE: u32 = 4;
/// Mantissas 10..=99 give 90 bins per decade.
const BINS_PER_DECADE: u16 = 90;
/// Underflow sorts before every regular bin so the sparse vector stays value-ordered.
const UNDERFLOW_IDX: u16 = 0;
/// Six full decades (10^4..10^10) plus mantissas 10..=59 of 10^10 (up to 60 s).
const REGULAR_BINS: u16 = 6 * BINS_PER_DECADE + 50;
const OVERFLOW_IDX: u16 = REGULAR_BINS + 1;

/// Latency histogram. Bins are kept sparse because a typical series only
/// touches a handful of the 592 possible bins, and there may be many series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Histogram {
    /// (bin index, count), sorted by index; never contains a zero count.
    bins: Vec<(u16, u64)>,
    count: u64,
    /// Saturating: 2^64 ns is ~584 years, so saturation only matters for
    /// absurd inputs, and it must not panic on them.
    sum_ns: u64,
    min_ns: Option<u64>,
    max_ns: Option<u64>,
}

/// p50/p90/p99/max summary for printing and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// Maps a value to its bin index.
fn bin_index(nanos: u64) -> u16 {
    if nanos < MIN_TRACKED_NS {
        return UNDERFLOW_IDX;
    }
    if nanos >= OVERFLOW_NS {
        return OVERFLOW_IDX;
    }
    // nanos < 6e10 so ilog10 is in 4..=10 and the arithmetic below cannot overflow.
    let decade = nanos.ilog10();
    let mantissa = nanos / 10u64.pow(decade - 1); // 10..=99
    let idx = (decade - FIRST_DECADE) as u64 * u64::from(BINS_PER_DECADE) + (mantissa - 10);
    // idx < REGULAR_BINS by construction; the conversion cannot fail.
    1 + idx as u16
}

/// Inclusive lower and exclusive upper bound of a bin (overflow's upper is u64::MAX).
fn bin_bounds(idx: u16) -> (u64, u64) {
    match idx {
        UNDERFLOW_IDX => (0, MIN_TRACKED_NS),
        i if i >= OVERFLOW_IDX => (OVERFLOW_NS, u64::MAX),
        i => {
            let j = i - 1;
            let decade = FIRST_DECADE + u32::from(j / BINS_PER_DECADE);
            let mantissa = u64::from(10 + j % BINS_PER_DECADE);
            let step = 10u64.pow(decade - 1);
            (mantissa * step, (mantissa + 1) * step)
        }
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, nanos: u64) {
        self.add_to_bin(bin_index(nanos), 1);
        self.count = self.count.saturating_add(1);
        self.sum_ns = self.sum_ns.saturating_add(nanos);
        self.min_ns = Some(self.min_ns.map_or(nanos, |m| m.min(nanos)));
        self.max_ns = Some(self.max_ns.map_or(nanos, |m| m.max(nanos)));
    }

    fn add_to_bin(&mut self, idx: u16, n: u64) {
        match self.bins.binary_search_by_key(&idx, |&(i, _)| i) {
            Ok(pos) => self.bins[pos].1 = self.bins[pos].1.saturating_add(n),
            Err(pos) => self.bins.insert(pos, (idx, n)),
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        // Linear merge of two sorted lists rather than repeated inserts, which
        // would be quadratic when both sides have many bins.
        let mut merged = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut a, mut b) = (self.bins.iter().peekable(), other.bins.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&(ia, ca)), Some(&&(ib, cb))) => {
                    if ia < ib {
                        a.next();
                        (ia, ca)
                    } else if ib < ia {
                        b.next();
                        (ib, cb)
                    } else {
                        a.next();
                        b.next();
                        (ia, ca.saturating_add(cb))
                    }
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, Some(&&x)) => {
                    b.next();
                    x
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        self.bins = merged;
        self.count = self.count.saturating_add(other.count);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.min_ns = match (self.min_ns, other.min_ns) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all recorded values, saturating at u64::MAX.
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    pub fn min_ns(&self) -> Option<u64> {
        self.min_ns
    }

    /// Exact maximum (tracked outside the bins).
    pub fn max_ns(&self) -> Option<u64> {
        self.max_ns
    }

    /// q in [0,1]; linear interpolation inside the bin; clamped to [min, max];
    /// None if empty. Out-of-range q is clamped; NaN yields None.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let bins = self.bins.iter().map(|&(idx, n)| {
            let (lo, hi) = bin_bounds(idx);
            (lo, hi, n)
        });
        quantile(bins, self.count, self.min_ns?, self.max_ns?, q)
    }

    /// Values in bins that start at or above `ns` (bins are at most 10%
    /// wide, so this undercounts by at most one bin's share).
    pub fn count_at_least(&self, ns: u64) -> u64 {
        self.buckets()
            .filter(|(lo, _, _)| *lo >= ns)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// (lower_bound_ns, upper_bound_ns, count) for each non-empty bin, in order;
    /// underflow is (0, 10_000, n), overflow is (60e9, u64::MAX, n).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.bins.iter().map(|&(idx, n)| {
            let (lo, hi) = bin_bounds(idx);
            (lo, hi, n)
        })
    }

    pub fn clear(&mut self) {
        // Keep the allocation: series are usually cleared each reporting
        // interval and refilled with similar bins.
        self.bins.clear();
        self.count = 0;
        self.sum_ns = 0;
        self.min_ns = None;
        self.max_ns = None;
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        Some(Percentiles {
            count: self.count,
            p50_ns: self.quantile_ns(0.50)?,
            p90_ns: self.quantile_ns(0.90)?,
            p99_ns: self.quantile_ns(0.99)?,
            max_ns: self.max_ns?,
        })
    }
}

/// The `q` quantile (clamped to [0, 1]; NaN gives `None`) of `count`
/// samples in `bins`, `(lower, upper, count)` in order: linear
/// interpolation inside the bin that holds the rank, clamped to the exact
/// `min` and `max`. One rule for the agent's histograms and the collector's
/// merged ones, so a node and the cluster answer alike.
pub fn quantile(
    bins: impl IntoIterator<Item = (u64, u64, u64)>,
    count: u64,
    min: u64,
    max: u64,
    q: f64,
) -> Option<u64> {
    if count == 0 || q.is_nan() {
        return None;
    }
    // A peer's histogram may say min > max; clamp would panic on it.
    let max = max.max(min);
    // Rank in [0, count]: the target falls in the first bin whose
    // cumulative count reaches it, at a proportional position inside it.
    let target = q.clamp(0.0, 1.0) * count as f64;
    let mut before = 0u64;
    for (lo, hi, n) in bins {
        let after = before.saturating_add(n);
        if target <= after as f64 {
            let frac = ((target - before as f64) / n as f64).clamp(0.0, 1.0);
            let v = lo as f64 + frac * hi.saturating_sub(lo) as f64;
            // `as u64` saturates on out-of-range floats, so no panic here;
            // clamping keeps edge bins (underflow/overflow) honest.
            return Some((v as u64).clamp(min, max));
        }
        before = after;
    }
    // Only reachable through float rounding at q == 1.
    Some(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_bucket(v: u64) -> (u64, u64, u64) {
        let mut h = Histogram::new();
        h.record(v);
        let b: Vec<_> = h.buckets().collect();
        assert_eq!(b.len(), 1);
        b[0]
    }

    fn within_10pct(got: u64, want: u64) -> bool {
        (got as f64 - want as f64).abs() <= 0.10 * want as f64
    }

    #[test]
    fn bin_boundaries() {
        assert_eq!(only_bucket(9_999), (0, 10_000, 1));
        assert_eq!(only_bucket(10_000), (10_000, 11_000, 1));
        assert_eq!(only_bucket(99_000), (99_000, 100_000, 1));
        assert_eq!(only_bucket(99_999), (99_000, 100_000, 1));
        assert_eq!(only_bucket(100_000), (100_000, 110_000, 1));
        assert_eq!(
            only_bucket(1_000_000_000),
            (1_000_000_000, 1_100_000_000, 1)
        );
        assert_eq!(
            only_bucket(59_900_000_000),
            (59_000_000_000, 60_000_000_000, 1)
        );
        assert_eq!(only_bucket(60_000_000_000), (60_000_000_000, u64::MAX, 1));
        assert_eq!(only_bucket(61_000_000_000), (60_000_000_000, u64::MAX, 1));
    }

    #[test]
    fn every_bin_round_trips_and_is_contiguous() {
        let mut prev_hi = MIN_TRACKED_NS;
        for idx in 1..=REGULAR_BINS {
            let (lo, hi) = bin_bounds(idx);
            assert_eq!(lo, prev_hi, "gap before bin {idx}");
            assert!((hi - lo) as f64 / lo as f64 <= 0.1 + 1e-12);
            assert_eq!(bin_index(lo), idx);
            assert_eq!(bin_index(hi - 1), idx);
            prev_hi = hi;
        }
        assert_eq!(prev_hi, OVERFLOW_NS);
    }

    #[test]
    fn quantiles_of_known_distribution() {
        // 1000 values uniformly spread over 1 ms..=1000 ms: true p50=500 ms,
        // p90=900 ms, p99=990 ms.
        let mut h = Histogram::new();
        for i in 1..=1000u64 {
            h.record(i * 1_000_000);
        }
        let p = h.percentiles().expect("non-empty");
        assert_eq!(p.count, 1000);
        assert!(within_10pct(p.p50_ns, 500_000_000), "{p:?}");
        assert!(within_10pct(p.p90_ns, 900_000_000), "{p:?}");
        assert!(within_10pct(p.p99_ns, 990_000_000), "{p:?}");
        assert_eq!(p.max_ns, 1_000_000_000);
        assert_eq!(h.min_ns(), Some(1_000_000));
        assert_eq!(h.sum_ns(), 500_500 * 1_000_000);
        assert_eq!(h.quantile_ns(0.0), Some(1_000_000));
        assert_eq!(h.quantile_ns(1.0), Some(1_000_000_000));
    }

    #[test]
    fn single_value() {
        let mut h = Histogram::new();
        h.record(1_000_000_000);
        let p = h.percentiles().expect("non-empty");
        for v in [p.p50_ns, p.p90_ns, p.p99_ns] {
            assert!(within_10pct(v, 1_000_000_000), "{p:?}");
        }
        assert_eq!(p.max_ns, 1_000_000_000);
        assert_eq!(p.count, 1);
    }

    #[test]
    fn merge_equals_recording_both() {
        let a_vals = [5u64, 12_345, 1_000_000, 7_000_000_000, 70_000_000_000];
        let b_vals = [12_999u64, 3, 999_999_999, 59_999_999_999, 1_000_000];
        let (mut a, mut b, mut both) = (Histogram::new(), Histogram::new(), Histogram::new());
        for &v in &a_vals {
            a.record(v);
            both.record(v);
        }
        for &v in &b_vals {
            b.record(v);
            both.record(v);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, both);
        let mut from_empty = Histogram::new();
        from_empty.merge(&both);
        assert_eq!(from_empty, both);
        a.merge(&Histogram::new());
        assert_eq!(a.count(), 5);
    }

    #[test]
    fn empty_returns_none() {
        let mut h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.min_ns(), None);
        assert_eq!(h.max_ns(), None);
        assert_eq!(h.quantile_ns(0.5), None);
        assert_eq!(h.percentiles(), None);
        assert_eq!(h.buckets().count(), 0);
        h.record(42);
        h.clear();
        assert_eq!(h, Histogram::new());
        assert_eq!(h.percentiles(), None);
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        h.record(u64::MAX);
        h.record(0);
        assert_eq!(h.sum_ns(), u64::MAX);
        assert_eq!(h.max_ns(), Some(u64::MAX));
        assert_eq!(h.min_ns(), Some(0));
        assert_eq!(h.quantile_ns(1.0), Some(u64::MAX));
        assert!(h.quantile_ns(0.99).is_some());
        assert_eq!(h.quantile_ns(f64::NAN), None);
        assert_eq!(h.quantile_ns(-3.0), Some(0));
        assert_eq!(h.quantile_ns(7.0), Some(u64::MAX));
        let b: Vec<_> = h.buckets().collect();
        assert_eq!(b, vec![(0, 10_000, 1), (60_000_000_000, u64::MAX, 2)]);
    }
}
