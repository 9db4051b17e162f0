//! The detectors. Each reads the aggregates (and the histories kept here)
//! and reports the problems that hold now as [`Verdict`]s: facts with keys,
//! no sentences; the engine in `findings` words them and turns them into
//! findings that open, change and resolve.

pub mod close_wait;
pub mod dns;
pub mod dns_search;
pub mod leak;
pub mod limit;
pub mod pool;
pub mod probes;
pub mod resources;
pub mod restart;
pub mod stale;

use std::cell::OnceCell;

use ahash::HashMap;

use super::{
    config::{self, FindingsConfig},
    facts::{self, Ages, SocketFacts},
    series::{Series, Timed},
    About, Fact, Inputs, Unit, Verdict,
};
use crate::{
    aggregate::{
        cause::FailureCause,
        flows::{FlowKey, FlowStats},
        sockets::{FlowCounts, SocketTable},
    },
    workload::{instances::Instances, Workloads},
};

/// Every open socket older than this is counted in the age evidence.
const OLD_NS: u64 = 60_000_000_000;

/// Cumulative counts of one flow at one time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSample {
    pub t_ns: u64,
    pub open: u64,
    pub connecting: u64,
    pub opened: u64,
    pub closed: u64,
    pub failed: [u64; FailureCause::ALL.len()],
    /// Connects slower than `pool.slow_connect_ms`.
    pub slow: u64,
    pub syn_retransmits: u64,
    /// Short sessions closed first by this side / by the peer (see
    /// `aggregate::flows::SHORT_SESSION_NS`).
    pub short_here: u64,
    pub short_by_peer: u64,
    /// Inbound: short sessions the client closed after a terse answer.
    pub answered_by_peer: u64,
}

impl Timed for TcpSample {
    fn t_ns(&self) -> u64 {
        self.t_ns
    }
}

impl TcpSample {
    fn of(flow: &FlowStats, open: u64, connecting: u64, slow_ns: u64, t_ns: u64) -> Self {
        Self {
            t_ns,
            open,
            connecting,
            opened: flow.opened,
            closed: flow.closed,
            failed: flow.failed,
            slow: flow.latency.count_at_least(slow_ns),
            syn_retransmits: flow.syn_retransmits,
            short_here: flow.short_closed_here,
            short_by_peer: flow.short_closed_by_peer,
            answered_by_peer: flow.short_answered_closed_by_peer,
        }
    }

    pub fn established(&self) -> u64 {
        self.open - self.connecting
    }

    pub fn failed_by(&self, cause: FailureCause) -> u64 {
        FailureCause::ALL
            .iter()
            .position(|c| *c == cause)
            .map_or(0, |i| self.failed[i])
    }
}

/// What one evaluation knows about one flow.
pub struct FlowNow<'a> {
    pub key: FlowKey,
    pub stats: &'a FlowStats,
    pub sample: TcpSample,
    table: &'a SocketTable,
    ages: Ages,
    facts: OnceCell<SocketFacts>,
}

impl FlowNow<'_> {
    /// Its open sockets by state.
    pub fn counts(&self) -> &FlowCounts {
        &self.stats.sockets.counts
    }

    /// What a pass over its sockets tells (ages, owners, peers), made the
    /// first time a detector asks: few flows need it, and making it for
    /// every flow was most of an evaluation on full tables.
    pub fn sockets(&self) -> &SocketFacts {
        self.facts.get_or_init(|| {
            let ids = self.stats.sockets.ids();
            facts::of_flow(self.table, ids, self.sample.t_ns, &self.ages)
        })
    }
}

/// State the detectors keep between evaluations.
pub struct Detectors {
    tcp: Series<FlowKey, TcpSample>,
    dns: Series<dns::DnsKey, dns::DnsSample>,
    dns_search: dns_search::Expansion,
    leak: leak::Leaks,
    pool: pool::Pools,
    stale: stale::Stale,
    limit: limit::Limits,
}

/// Shared by the detectors of one evaluation.
pub struct Context<'a, 'b> {
    pub inputs: &'a Inputs<'b>,
    pub config: &'a FindingsConfig,
    pub attributor: &'a mut dyn Workloads,
    /// What the kernel is asked on demand, for evidence.
    pub probe: &'a mut dyn super::probe::Probe,
    /// The workloads' instances over time: their restarts.
    pub instances: &'a mut Instances,
}

impl Context<'_, '_> {
    pub fn label(&mut self, cgroup_id: u64) -> String {
        self.attributor.workload(cgroup_id).label()
    }

    pub fn now(&self) -> u64 {
        self.inputs.now_ns
    }
}

impl Detectors {
    pub fn new(config: &FindingsConfig) -> Self {
        let keep = [
            config.leak.window_s,
            config.pool.window_s,
            config.dns.window_s,
            config.limit.window_s,
            config.limit.plateau_s,
            config.dns_search.window_s,
        ]
        .into_iter()
        .fold(0.0, f64::max);
        // One sample more than the longest window, so a full window exists.
        let keep_ns = config::ns(keep) + super::series::SAMPLE_EVERY_NS;
        Self {
            tcp: Series::new(config.max_series, keep_ns),
            dns: Series::new(config.max_series, keep_ns),
            dns_search: dns_search::Expansion::new(config.max_series, keep_ns),
            leak: leak::Leaks::default(),
            pool: pool::Pools::default(),
            stale: stale::Stale::default(),
            limit: limit::Limits::new(config.max_series, keep_ns),
        }
    }

    /// Series not kept because the bound was reached (evidence may then be
    /// missing for those flows).
    pub fn series_skipped(&self) -> u64 {
        self.tcp.skipped + self.dns.skipped + self.limit.skipped() + self.dns_search.skipped()
    }

    /// Questions to the kernel for evidence that failed.
    pub fn probe_failures(&self) -> u64 {
        self.leak.probe_failures + self.pool.probe_failures + self.dns_search.probe_failures
    }

    pub fn run(&mut self, cx: &mut Context<'_, '_>) -> Vec<Verdict> {
        let now = cx.now();
        let agg = cx.inputs.tcp;
        let ages = Ages {
            older_than_ns: OLD_NS,
            close_wait_ns: config::ns(cx.config.close_wait.min_wait_s),
        };
        let slow_ns = (cx.config.pool.slow_connect_ms * 1e6) as u64;
        let mut flows = Vec::with_capacity(agg.flows.len());
        for (key, stats) in &agg.flows {
            let counts = stats.sockets.counts;
            let sample = TcpSample::of(stats, counts.open, counts.connecting, slow_ns, now);
            // Only flows with something to judge start a history.
            let start = counts.open > 0
                || stats.failed_total() > 0
                || stats.short_closed_here
                    + stats.short_closed_by_peer
                    + stats.short_answered_closed_by_peer
                    > 0;
            self.tcp.offer(*key, sample, start);
            flows.push(FlowNow {
                key: *key,
                stats,
                sample,
                table: &agg.sockets,
                ages,
                facts: OnceCell::new(),
            });
        }
        self.tcp.end_round();
        let mut out = Vec::new();
        out.extend(close_wait::detect(cx, &flows));
        out.extend(self.leak.detect(cx, &flows, &self.tcp));
        out.extend(self.pool.detect(cx, &flows, &self.tcp));
        out.extend(restart::detect(cx, &flows));
        out.extend(self.stale.detect(cx, &flows));
        out.extend(self.limit.detect(cx, &flows, &self.tcp));
        out.extend(probes::detect(cx, &flows));
        let degraded = dns::detect(cx, &mut self.dns);
        // Expansion and degradation of one server are separate problems with
        // separate fixes; the expansion finding says when the server is
        // degraded too (its waste is more queries that can time out there).
        let servers: Vec<std::net::SocketAddr> = degraded
            .iter()
            .filter_map(|v| v.destination.as_ref())
            .map(|d| std::net::SocketAddr::new(d.addr, d.port))
            .collect();
        out.extend(degraded);
        out.extend(self.dns_search.detect(cx, &servers));
        out.extend(resources::detect(cx.inputs, &cx.config.resources));
        out
    }
}

/// The newest sample at or before `t_ns` (the oldest if none is).
pub fn sample_at<'s>(
    samples: impl DoubleEndedIterator<Item = &'s TcpSample> + Clone,
    t_ns: u64,
) -> Option<&'s TcpSample> {
    samples
        .clone()
        .rev()
        .find(|s| s.t_ns <= t_ns)
        .or_else(|| samples.into_iter().next())
}

/// Owners of a flow's sockets, as evidence: one `held_by` fact per
/// process (most sockets first, with its command name while it runs), and
/// `other_owners` for the sockets of processes past the first few or
/// unknown.
pub fn owner_facts(cx: &mut Context<'_, '_>, s: &SocketFacts, now: u64, facts: &mut Vec<Fact>) {
    for (pid, n) in &s.owners {
        let comm = cx.probe.process_name(*pid);
        facts.push(
            Fact::count("held_by", *n, Unit::Sockets, now)
                .about(About::Process { pid: *pid, comm }),
        );
    }
    if s.other_owners > 0 && !s.owners.is_empty() {
        facts.push(Fact::count(
            "other_owners",
            s.other_owners,
            Unit::Sockets,
            now,
        ));
    }
}

/// Distinct cgroups, in first-seen order.
pub fn dedup(ids: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut seen: HashMap<u64, ()> = HashMap::default();
    ids.into_iter()
        .filter(|id| seen.insert(*id, ()).is_none())
        .collect()
}
