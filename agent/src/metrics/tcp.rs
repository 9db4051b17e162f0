//! The TCP series: cumulative counts per label set, added to from what
//! each flow gained since the metrics last took its counts, and open
//! sockets by state, recomputed every fold.

use sockeye_common::tcp_state;

use super::{
    buckets::Buckets,
    labels::{LabelCache, LabelTable, TcpKey},
};
use crate::aggregate::{
    cause::FailureCause,
    flows::{Exported, FlowKey, FlowStats},
    Aggregator,
};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TcpSeries {
    /// Outbound: connects completed. Inbound: connections accepted.
    pub connections: u64,
    /// Failed connects, indexed like [`FailureCause::ALL`].
    pub failed: [u64; FailureCause::ALL.len()],
    pub syn_retransmits: u64,
    pub connect_duration: Buckets,
    /// Sockets open now, by TCP state (a gauge).
    pub open: [u64; tcp_state::STATE_COUNT],
}

impl TcpSeries {
    fn add(&mut self, d: &TcpSeries) {
        self.connections += d.connections;
        for (a, b) in self.failed.iter_mut().zip(d.failed) {
            *a += b;
        }
        self.syn_retransmits += d.syn_retransmits;
        self.connect_duration.add(&d.connect_duration);
    }

    fn is_empty(&self) -> bool {
        self.connections == 0
            && self.failed.iter().all(|&n| n == 0)
            && self.syn_retransmits == 0
            && self.connect_duration.is_empty()
    }

    /// What `flow` gained since `taken` (its counts when last taken).
    fn gained(flow: &FlowStats, taken: Option<&Exported>) -> Self {
        let zero = Exported::default();
        let t = taken.unwrap_or(&zero);
        let mut failed = flow.failed;
        for (f, was) in failed.iter_mut().zip(t.failed) {
            *f = f.saturating_sub(was);
        }
        Self {
            connections: flow.connects_ok.saturating_sub(t.connects_ok),
            failed,
            syn_retransmits: flow.syn_retransmits.saturating_sub(t.syn_retransmits),
            connect_duration: Buckets::of(&flow.latency).since(&Buckets::of(&t.latency)),
            open: Default::default(),
        }
    }
}

/// Adds what every changed flow (live or removed since the last fold)
/// gained, then counts the open sockets.
pub fn fold(
    table: &mut LabelTable<TcpKey, TcpSeries>,
    agg: &mut Aggregator,
    labels: &mut LabelCache<'_>,
    now_s: u64,
) {
    table.begin(|s| s.open = Default::default());
    let mut add = |key: &FlowKey, flow: &FlowStats, labels: &mut LabelCache<'_>| {
        let gained = TcpSeries::gained(flow, flow.exported.as_deref());
        if !gained.is_empty() {
            let k = TcpKey::new(labels.get(key.cgroup_id), key);
            table.slot(k, now_s).add(&gained);
        }
    };
    for (key, flow) in agg.retired.take() {
        add(&key, &flow, labels);
    }
    for (key, flow) in agg.flows.iter_mut() {
        if !flow.changed {
            continue;
        }
        add(key, flow, labels);
        flow.exported = Some(Box::new(flow.counts()));
        flow.changed = false;
    }
    let open = agg
        .sockets
        .iter()
        .map(|(_, s)| (s.flow, usize::from(s.state), 1))
        .chain(
            agg.time_wait
                .flows()
                .map(|(k, n)| (*k, usize::from(tcp_state::TIME_WAIT), *n)),
        );
    for (key, state, n) in open {
        if n == 0 || state >= tcp_state::STATE_COUNT {
            continue;
        }
        let k = TcpKey::new(labels.get(key.cgroup_id), &key);
        table.slot(k, now_s).open[state] += n;
    }
}
