//! The DNS series: cumulative counts per label set, added to from what
//! each (container, server) gained since the last fold.
//!
//! DNS rows are never dropped, only folded into their container's "other"
//! row for the same server, so a (container, server) total never goes
//! down; what it gained is its total now minus its total at the last fold.

use std::{collections::HashMap, net::SocketAddr};

use super::{
    buckets::Buckets,
    labels::{DnsKey, LabelCache, LabelTable},
};
use crate::dns::aggregate::{DnsAggregates, DnsStats, RCODES};

/// RCODE label values, indexed like [`DnsStats::rcodes`].
pub const RCODE_NAMES: [&str; RCODES.len() + 1] = {
    let mut names = ["OTHER"; RCODES.len() + 1];
    let mut i = 0;
    while i < RCODES.len() {
        names[i] = RCODES[i].1;
        i += 1;
    }
    names
};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsSeries {
    pub queries: u64,
    /// Answers by RCODE, indexed like [`RCODE_NAMES`].
    pub responses: [u64; RCODES.len() + 1],
    pub timeouts: u64,
    pub duration: Buckets,
}

impl DnsSeries {
    fn merge(&mut self, s: &DnsStats) {
        self.queries += s.queries;
        for (a, b) in self.responses.iter_mut().zip(s.rcodes) {
            *a += b;
        }
        self.timeouts += s.timeouts;
        self.duration.add(&Buckets::of(&s.latency));
    }

    fn add(&mut self, d: &DnsSeries) {
        self.queries += d.queries;
        for (a, b) in self.responses.iter_mut().zip(d.responses) {
            *a += b;
        }
        self.timeouts += d.timeouts;
        self.duration.add(&d.duration);
    }

    fn since(&self, earlier: &DnsSeries) -> DnsSeries {
        let mut responses = self.responses;
        for (r, e) in responses.iter_mut().zip(earlier.responses) {
            *r = r.saturating_sub(e);
        }
        DnsSeries {
            queries: self.queries.saturating_sub(earlier.queries),
            responses,
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
            duration: self.duration.since(&earlier.duration),
        }
    }

    fn is_empty(&self) -> bool {
        self.queries == 0
            && self.responses.iter().all(|&n| n == 0)
            && self.timeouts == 0
            && self.duration.is_empty()
    }
}

/// Totals per (cgroup, server) at the last fold.
pub type Taken = HashMap<(u64, SocketAddr), DnsSeries>;

pub fn fold(
    table: &mut LabelTable<DnsKey, DnsSeries>,
    taken: &mut Taken,
    aggs: &DnsAggregates,
    labels: &mut LabelCache<'_>,
    now_s: u64,
) {
    table.begin(|_| {});
    let mut now: Taken = HashMap::with_capacity(taken.len());
    for (key, stats) in &aggs.rows {
        now.entry((key.cgroup_id, key.server))
            .or_default()
            .merge(stats);
    }
    for (&(cgroup_id, server), total) in &now {
        let gained = match taken.get(&(cgroup_id, server)) {
            Some(before) => total.since(before),
            None => total.clone(),
        };
        if gained.is_empty() {
            continue;
        }
        let key = DnsKey {
            workload: labels.get(cgroup_id),
            server: server.to_string(),
        };
        table.slot(key, now_s).add(&gained);
    }
    *taken = now;
}
