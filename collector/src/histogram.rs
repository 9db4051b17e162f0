//! Merging the agents' latency histograms across windows and nodes, and
//! percentiles from the merged result.
//!
//! All agents use one bin scheme (log-linear, 10 µs to 60 s), so bins merge
//! by adding counts per lower bound. Percentiles are computed like the
//! agent's own: linear interpolation inside the bin that holds the rank,
//! clamped to the exact min and max.

use std::collections::BTreeMap;

use sockeye_proto::v1 as pb;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergedHistogram {
    /// lower_ns -> (upper_ns, count).
    bins: BTreeMap<u64, (u64, u64)>,
    sum_ns: u64,
    min_ns: Option<u64>,
    max_ns: Option<u64>,
}

/// A merged histogram as a store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    /// `(lower, upper, count)`, bins with samples.
    pub bins: Vec<(u64, u64, u64)>,
    pub sum_ns: u64,
    /// `None` without samples.
    pub min_ns: Option<u64>,
    pub max_ns: Option<u64>,
}

impl MergedHistogram {
    pub fn add(&mut self, h: &pb::Histogram) {
        let mut added = 0u64;
        for b in h.bins.iter().filter(|b| b.count > 0) {
            let e = self.bins.entry(b.lower_ns).or_insert((b.upper_ns, 0));
            // Bins of one scheme agree on the upper bound; keep the widest if
            // a malformed one does not, so no sample falls outside its bin.
            e.0 = e.0.max(b.upper_ns).max(b.lower_ns);
            e.1 = e.1.saturating_add(b.count);
            added = added.saturating_add(b.count);
        }
        if added == 0 {
            return;
        }
        self.sum_ns = self.sum_ns.saturating_add(h.sum_ns);
        // min/max are only meaningful with samples; fall back to the bin
        // edges when an agent left them out.
        let lowest = h
            .bins
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| b.lower_ns)
            .min();
        let min = if h.min_ns > 0 || lowest == Some(0) {
            Some(h.min_ns)
        } else {
            lowest
        };
        let max = if h.max_ns > 0 {
            Some(h.max_ns)
        } else {
            h.bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| b.upper_ns)
                .max()
        };
        self.min_ns = match (self.min_ns, min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_ns = self.max_ns.max(max);
    }

    /// Adds another merged histogram: the same as having added its
    /// histograms here (bins by lower bound, widest upper, sums, extremes).
    pub fn merge(&mut self, other: &MergedHistogram) {
        for (&lo, &(hi, n)) in &other.bins {
            let e = self.bins.entry(lo).or_insert((hi, 0));
            e.0 = e.0.max(hi);
            e.1 = e.1.saturating_add(n);
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.min_ns = match (self.min_ns, other.min_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The parts a store keeps.
    pub fn parts(&self) -> Parts {
        Parts {
            bins: self
                .bins
                .iter()
                .map(|(&lo, &(hi, n))| (lo, hi, n))
                .collect(),
            sum_ns: self.sum_ns,
            min_ns: self.min_ns,
            max_ns: self.max_ns,
        }
    }

    /// The inverse of [`MergedHistogram::parts`]; bins without samples are
    /// left out, as `add` leaves them out.
    pub fn from_parts(p: Parts) -> Self {
        let mut m = Self {
            sum_ns: p.sum_ns,
            min_ns: p.min_ns,
            max_ns: p.max_ns,
            ..Self::default()
        };
        for (lo, hi, n) in p.bins.into_iter().filter(|b| b.2 > 0) {
            let e = m.bins.entry(lo).or_insert((hi.max(lo), 0));
            e.0 = e.0.max(hi);
            e.1 = e.1.saturating_add(n);
        }
        m
    }

    /// Samples in the merged bins.
    pub fn count(&self) -> u64 {
        self.bins
            .values()
            .fold(0u64, |n, &(_, c)| n.saturating_add(c))
    }

    /// q in [0, 1]; `None` when empty. Interpolated as the agent does
    /// ([`sockeye_core::aggregate::histogram::quantile`]).
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let bins = self.bins.iter().map(|(&lo, &(hi, n))| (lo, hi, n));
        sockeye_core::aggregate::histogram::quantile(
            bins,
            self.count(),
            self.min_ns?,
            self.max_ns?,
            q,
        )
    }

    pub fn percentiles(&self) -> Option<pb::Percentiles> {
        Some(pb::Percentiles {
            count: self.count(),
            p50_ns: self.quantile_ns(0.50)?,
            p90_ns: self.quantile_ns(0.90)?,
            p99_ns: self.quantile_ns(0.99)?,
            max_ns: self.max_ns?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(bins: &[(u64, u64, u64)], min: u64, max: u64) -> pb::Histogram {
        pb::Histogram {
            bins: bins
                .iter()
                .map(|&(lower_ns, upper_ns, count)| pb::histogram::Bin {
                    lower_ns,
                    upper_ns,
                    count,
                })
                .collect(),
            count: bins.iter().map(|b| b.2).sum(),
            sum_ns: 0,
            min_ns: min,
            max_ns: max,
        }
    }

    #[test]
    fn merges_by_lower_bound() {
        let mut m = MergedHistogram::default();
        // 98 fast connects on one node, 2 slow ones on another: p99 is slow.
        m.add(&hist(&[(1_000_000, 1_100_000, 98)], 1_000_000, 1_090_000));
        m.add(&hist(
            &[(1_000_000, 1_100_000, 0), (500_000_000, 510_000_000, 2)],
            500_000_000,
            505_000_000,
        ));
        assert_eq!(m.count(), 100);
        let p = m.percentiles().unwrap();
        assert!((1_000_000..1_100_000).contains(&p.p50_ns), "{p:?}");
        assert!((500_000_000..=505_000_000).contains(&p.p99_ns), "{p:?}");
        assert_eq!(p.max_ns, 505_000_000);
    }

    #[test]
    fn merging_equals_adding_in_one() {
        let a = hist(&[(1_000, 2_000, 3), (5_000, 6_000, 1)], 1_100, 5_500);
        let b = hist(&[(1_000, 2_500, 2), (9_000, 10_000, 4)], 1_050, 9_900);
        let mut one = MergedHistogram::default();
        one.add(&a);
        one.add(&b);
        let (mut x, mut y) = (MergedHistogram::default(), MergedHistogram::default());
        x.add(&a);
        y.add(&b);
        x.merge(&y);
        assert_eq!(x, one);
        assert_eq!(MergedHistogram::from_parts(one.parts()), one);
    }

    #[test]
    fn empty_has_no_percentiles() {
        let mut m = MergedHistogram::default();
        m.add(&pb::Histogram::default());
        assert_eq!(m.percentiles(), None);
    }
}
