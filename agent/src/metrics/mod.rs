//! Prometheus metrics: connect and DNS latency histograms, failures by
//! cause, open sockets by state, DNS answers by RCODE and timeouts, open
//! findings, per workload with a bounded number of label sets, and the
//! agent's own health (events, every loss counter, table fill levels,
//! memory, the findings machinery).
//!
//! The event loop owns the aggregates, so it folds them into the metrics
//! once per interval ([`Metrics::update`]) and publishes an immutable
//! [`MetricsState`]; the HTTP handler renders the latest one. Counters are
//! kept here per label set and only ever added to, from what each flow or
//! DNS (container, server) gained since the last fold: evicting a flow,
//! folding DNS names or relabelling a pod never makes them go down.

pub mod buckets;
pub mod dns;
pub mod families;
pub mod findings;
mod findings_families;
pub mod labels;
pub mod names;
pub mod process;
pub mod tcp;
mod tcp_families;

#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, RwLock},
    time::Instant,
};

use labels::{DnsKey, FindingKey, LabelTable, TcpKey, WorkloadLabels};

use crate::{
    aggregate::Aggregator, dns::aggregate::DnsAggregates, snapshot::Health, Agent, Config,
};

/// Default bound on label sets per group of families.
pub const DEFAULT_MAX_LABEL_SETS: usize = 200;
/// A label set nothing was added to for this long may make room for a new
/// one when the table is full.
pub const IDLE_EXPIRY_S: u64 = 3600;

#[derive(Debug, Clone, Copy)]
pub struct MetricsConfig {
    /// Label sets (workload, direction, destination) of the TCP families,
    /// (workload, server) of the DNS ones, and (kind, severity, workload)
    /// of the open findings, each; past it they are counted under "other".
    pub max_label_sets: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_label_sets: DEFAULT_MAX_LABEL_SETS,
        }
    }
}

/// The agent's table sizes, for the fill-level gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capacities {
    pub sockets: usize,
    pub flows: usize,
    pub dns_names: usize,
    pub dns_pending: usize,
}

impl Capacities {
    pub fn of(config: &Config) -> Self {
        Self {
            sockets: config.limits.max_sockets,
            flows: config.limits.max_flows,
            dns_names: config.dns.max_names,
            dns_pending: config.dns.max_pending,
        }
    }
}

/// One table's fill level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub table: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// What one fold produced: everything `/metrics` shows but the process
/// figures, which are read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct MetricsState {
    pub tcp: Vec<(TcpKey, tcp::TcpSeries)>,
    pub dns: Vec<(DnsKey, dns::DnsSeries)>,
    /// None before the first fold.
    pub health: Option<Health>,
    pub fills: Vec<Fill>,
    /// Additions counted under "other", per group ("tcp", "dns").
    pub overflowed: Vec<(&'static str, u64)>,
    /// Removed flows whose last counts did not fit the retired list.
    pub flows_lost: u64,
    /// Open findings per label set.
    pub findings: Vec<(FindingKey, u64)>,
    /// None when detection is off.
    pub findings_counts: Option<findings::FindingsCounts>,
    /// One per open finding, worst first, at most the label-set bound.
    pub finding_series: Vec<findings::FindingSeries>,
}

/// The latest published state, shared with the HTTP handler.
#[derive(Debug, Clone, Default)]
pub struct MetricsHandle(Arc<RwLock<Arc<MetricsState>>>);

impl MetricsHandle {
    pub fn latest(&self) -> Arc<MetricsState> {
        // A writer cannot panic while holding the lock (it swaps an Arc),
        // but a poisoned lock still holds a whole state.
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn publish(&self, state: MetricsState) {
        let state = Arc::new(state);
        match self.0.write() {
            Ok(mut s) => *s = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }
}

/// The loop's side: the cumulative series and what was taken last time.
#[derive(Debug)]
pub struct Metrics {
    capacities: Capacities,
    tcp: LabelTable<TcpKey, tcp::TcpSeries>,
    dns: LabelTable<DnsKey, dns::DnsSeries>,
    dns_taken: dns::Taken,
    findings: LabelTable<FindingKey, u64>,
    findings_counts: Option<findings::FindingsCounts>,
    finding_series: Vec<findings::FindingSeries>,
    /// Open findings left out of `finding_series`, summed over folds.
    finding_series_omitted: u64,
    /// Pool ceilings the open findings state, set on their TCP label sets
    /// at the next fold.
    ceilings: Vec<(TcpKey, u64)>,
    max_label_sets: usize,
    started: Instant,
    handle: MetricsHandle,
}

impl Metrics {
    pub fn new(config: MetricsConfig, capacities: Capacities) -> (Self, MetricsHandle) {
        let handle = MetricsHandle::default();
        let m = Self {
            capacities,
            tcp: LabelTable::new(config.max_label_sets, IDLE_EXPIRY_S),
            dns: LabelTable::new(config.max_label_sets, IDLE_EXPIRY_S),
            dns_taken: Default::default(),
            findings: LabelTable::new(config.max_label_sets, IDLE_EXPIRY_S),
            findings_counts: None,
            finding_series: Vec::new(),
            finding_series_omitted: 0,
            ceilings: Vec::new(),
            max_label_sets: config.max_label_sets,
            started: Instant::now(),
            handle: handle.clone(),
        };
        (m, handle)
    }

    /// Folds what the agent counted since the last call and publishes it.
    /// Call once per interval, after the housekeeping.
    pub fn update(&mut self, agent: &mut Agent) {
        let health = agent.health();
        let now_s = self.started.elapsed().as_secs();
        if agent.findings.enabled() {
            let counts =
                findings::FindingsCounts::of(&agent.findings, agent.finding_updates.missed());
            let offset = crate::clock::monotonic_to_unix_offset_ns();
            self.fold_findings(&agent.findings.open(), counts, offset, now_s);
        }
        let attributor = &mut agent.attributor;
        let mut lookup = |id: u64| WorkloadLabels::of(&attributor.workload(id));
        self.fold(
            &mut agent.aggregator,
            &agent.dns.aggregates,
            health,
            &mut lookup,
            crate::clock::monotonic_ns(),
            now_s,
        );
    }

    /// Takes the findings open now and the machinery's counters; the next
    /// [`Self::fold`] publishes them. Not called when detection is off, so
    /// the findings families are left out then. `unix_offset_ns` turns the
    /// findings' monotonic times into Unix time.
    pub fn fold_findings(
        &mut self,
        open: &[&crate::findings::Finding],
        counts: findings::FindingsCounts,
        unix_offset_ns: i64,
        now_s: u64,
    ) {
        findings::fold(&mut self.findings, open.iter().copied(), now_s);
        let (series, omitted) =
            findings::series(open.iter().copied(), unix_offset_ns, self.max_label_sets);
        self.finding_series = series;
        self.finding_series_omitted += omitted;
        self.ceilings = open
            .iter()
            .filter_map(|f| findings::pool_ceiling(f))
            .collect();
        self.findings_counts = Some(counts);
    }

    /// [`Self::update`] from its parts: `workload` names a cgroup,
    /// `mono_ns` is the kernel's monotonic clock (for socket ages), `now_s`
    /// seconds on any monotonic clock (for idle label sets).
    pub fn fold(
        &mut self,
        agg: &mut Aggregator,
        dns_aggs: &DnsAggregates,
        health: Health,
        workload: &mut dyn FnMut(u64) -> WorkloadLabels,
        mono_ns: u64,
        now_s: u64,
    ) {
        // From now on, keep flows removed before we take their counts (at
        // most a table's worth between two folds).
        agg.retired.enable(self.capacities.flows);
        let mut labels = labels::LabelCache::new(workload);
        tcp::fold(&mut self.tcp, agg, &mut labels, mono_ns, now_s);
        // A ceiling goes only on a label set of its own: under "other" it
        // would say nothing about any pool.
        for (key, ceiling) in std::mem::take(&mut self.ceilings) {
            if let Some(s) = self.tcp.get_mut(&key, now_s) {
                s.pool_ceiling = Some(ceiling);
            }
        }
        dns::fold(
            &mut self.dns,
            &mut self.dns_taken,
            dns_aggs,
            &mut labels,
            now_s,
        );
        let c = &self.capacities;
        let fill = |table, entries: u64, capacity: usize| Fill {
            table,
            entries,
            capacity: capacity as u64,
        };
        let fills = vec![
            fill("sockets", health.tracked_sockets, c.sockets),
            fill("flows", health.flows, c.flows),
            fill("dns_names", dns_aggs.named() as u64, c.dns_names),
            fill(
                "dns_pending_queries",
                health.dns.pending_queries,
                c.dns_pending,
            ),
            fill(
                "metrics_tcp_label_sets",
                self.tcp.regular() as u64,
                self.tcp.max(),
            ),
            fill(
                "metrics_dns_label_sets",
                self.dns.regular() as u64,
                self.dns.max(),
            ),
            fill(
                "metrics_findings_label_sets",
                self.findings.regular() as u64,
                self.findings.max(),
            ),
        ];
        self.handle.publish(MetricsState {
            tcp: self.tcp.sorted(),
            dns: self.dns.sorted(),
            health: Some(health),
            fills,
            overflowed: vec![
                ("tcp", self.tcp.overflowed),
                ("dns", self.dns.overflowed),
                ("findings", self.findings.overflowed),
                ("finding_series", self.finding_series_omitted),
            ],
            flows_lost: agg.retired.lost,
            findings: self.findings.sorted(),
            findings_counts: self.findings_counts.clone(),
            finding_series: self.finding_series.clone(),
        });
    }
}
