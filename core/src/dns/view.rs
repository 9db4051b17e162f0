//! The DNS part of a snapshot: one row per (container, name, type, server),
//! and totals per container, overall and per server.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use serde::Serialize;

use super::{
    aggregate::{DnsAggregates, DnsStats, DnsWindow, RCODES},
    message::qtype_name,
};
use crate::{
    aggregate::histogram::{Histogram, Percentiles},
    event::comm_string,
    workload::{filter::WorkloadFilter, Workload, Workloads},
};

/// Counts shared by name rows and totals.
#[derive(Debug, Clone, Serialize)]
pub struct DnsCounts {
    pub queries: u64,
    pub tcp_queries: u64,
    pub retries: u64,
    pub answers: u64,
    /// Answers by RCODE name (NOERROR, NXDOMAIN, SERVFAIL, ...); zero
    /// counts are left out.
    pub rcodes: BTreeMap<&'static str, u64>,
    /// NOERROR answers without records (NODATA).
    pub empty_answers: u64,
    pub timeouts: u64,
    pub late_answers: u64,
    pub truncated: u64,
    pub tcp_after_truncation: u64,
    pub fanout_lookups: u64,
    /// Queries wasted walking the search list (NXDOMAIN for suffixed names).
    pub fanout_wasted: u64,
    pub latency: Option<Percentiles>,
    /// The whole histogram, for the gRPC API (JSON shows the percentiles).
    #[serde(skip)]
    pub latency_histogram: Histogram,
    pub interval: DnsWindow,
}

impl DnsCounts {
    fn from(s: &DnsStats) -> Self {
        let rcodes = RCODES
            .iter()
            .map(|(_, n)| *n)
            .chain(["OTHER"])
            .zip(s.rcodes)
            .filter(|(_, n)| *n > 0)
            .collect();
        Self {
            queries: s.queries,
            tcp_queries: s.tcp_queries,
            retries: s.retries,
            answers: s.answers(),
            rcodes,
            empty_answers: s.empty_answers,
            timeouts: s.timeouts,
            late_answers: s.late_answers,
            truncated: s.truncated,
            tcp_after_truncation: s.tcp_after_truncation,
            fanout_lookups: s.fanout_lookups,
            fanout_wasted: s.fanout_wasted,
            latency: s.latency.percentiles(),
            latency_histogram: s.latency.clone(),
            interval: s.window,
        }
    }

    /// Answers other than NOERROR and NXDOMAIN (NXDOMAIN is often expected:
    /// search-list walks produce it by design).
    pub fn failures(&self) -> u64 {
        self.rcodes
            .iter()
            .filter(|(n, _)| !matches!(**n, "NOERROR" | "NXDOMAIN"))
            .map(|(_, v)| v)
            .sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DnsNameView {
    pub workload: Workload,
    pub name: String,
    pub qtype: String,
    pub server: SocketAddr,
    #[serde(flatten)]
    pub counts: DnsCounts,
    pub last_pid: u32,
    pub last_comm: String,
}

/// Totals for a workload, over all servers (`server` None) or one.
#[derive(Debug, Clone, Serialize)]
pub struct DnsTotalView {
    pub workload: Workload,
    pub server: Option<SocketAddr>,
    #[serde(flatten)]
    pub counts: DnsCounts,
}

pub fn views(
    aggs: &DnsAggregates,
    attributor: &mut impl Workloads,
    filter: &WorkloadFilter,
) -> (Vec<DnsNameView>, Vec<DnsTotalView>) {
    let mut names = Vec::new();
    let mut totals: HashMap<(u64, Option<SocketAddr>), DnsStats> = HashMap::new();
    let mut workloads: HashMap<u64, Workload> = HashMap::new();
    for (key, stats) in &aggs.rows {
        let workload = workloads
            .entry(key.cgroup_id)
            .or_insert_with(|| attributor.workload(key.cgroup_id));
        if !filter.matches(workload) {
            continue;
        }
        for server in [None, Some(key.server)] {
            totals
                .entry((key.cgroup_id, server))
                .or_default()
                .merge(stats);
        }
        names.push(DnsNameView {
            workload: workload.clone(),
            name: key.name.to_string(),
            qtype: if super::aggregate::is_other(key) {
                "*".into()
            } else {
                qtype_name(key.qtype)
            },
            server: key.server,
            counts: DnsCounts::from(stats),
            last_pid: stats.last_tgid,
            last_comm: comm_string(&stats.last_comm),
        });
    }
    names.sort_by(|a, b| {
        (a.workload.label(), &a.name, &a.qtype, a.server).cmp(&(
            b.workload.label(),
            &b.name,
            &b.qtype,
            b.server,
        ))
    });
    let mut totals: Vec<DnsTotalView> = totals
        .into_iter()
        .map(|((cgroup_id, server), stats)| DnsTotalView {
            workload: workloads[&cgroup_id].clone(),
            server,
            counts: DnsCounts::from(&stats),
        })
        .collect();
    totals.sort_by_cached_key(|t| (t.workload.label(), t.server));
    (names, totals)
}
