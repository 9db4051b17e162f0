//! The TCP series: cumulative counts per label set, added to from what
//! each flow gained since the metrics last took its counts, and open
//! sockets by state, recomputed every fold.

use sockeye_common::tcp_state;

use super::{
    buckets::Buckets,
    labels::{LabelCache, LabelTable, TcpKey},
};
use ahash::HashMap;

use crate::aggregate::{
    cause::FailureCause,
    flows::{Direction, Exported, FlowKey, FlowStats},
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
    /// Outbound: the most established connections one container of the
    /// label set holds to the destination now (a gauge; a pool's size is
    /// per process, and replicas on a node share a label set).
    pub pool_connections: u64,
    /// Age of the oldest socket open now (TIME_WAIT aside), ns; 0 when
    /// none is open (a gauge).
    pub oldest_open_ns: u64,
    /// Outbound: the established connections at which the pool detector
    /// last found this label set's connects stalling (kept after the
    /// finding resolves, so a pool can be watched against it).
    pub pool_ceiling: Option<u64>,
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
            pool_connections: 0,
            oldest_open_ns: 0,
            pool_ceiling: None,
        }
    }
}

/// Adds what every changed flow (live or removed since the last fold)
/// gained, then counts the open sockets and their ages at `mono_ns` (the
/// kernel's monotonic clock, which socket times are on).
pub fn fold(
    table: &mut LabelTable<TcpKey, TcpSeries>,
    agg: &mut Aggregator,
    labels: &mut LabelCache<'_>,
    mono_ns: u64,
    now_s: u64,
) {
    table.begin(|s| {
        s.open = Default::default();
        s.pool_connections = 0;
        s.oldest_open_ns = 0;
    });
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
    for (_, s) in agg.sockets.iter() {
        let k = TcpKey::new(labels.get(s.flow.cgroup_id), &s.flow);
        let slot = table.slot(k, now_s);
        slot.oldest_open_ns = slot.oldest_open_ns.max(mono_ns.saturating_sub(s.opened_ns));
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
    let mut established: HashMap<FlowKey, u64> = HashMap::default();
    for (key, state, n) in open {
        if n == 0 || state >= tcp_state::STATE_COUNT {
            continue;
        }
        if state == usize::from(tcp_state::ESTABLISHED) && key.direction == Direction::Outbound {
            *established.entry(key).or_default() += n;
        }
        let k = TcpKey::new(labels.get(key.cgroup_id), &key);
        table.slot(k, now_s).open[state] += n;
    }
    for (key, n) in established {
        let k = TcpKey::new(labels.get(key.cgroup_id), &key);
        let s = table.slot(k, now_s);
        s.pool_connections = s.pool_connections.max(n);
    }
}
