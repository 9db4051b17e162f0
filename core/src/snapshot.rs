//! A point-in-time, serialisable view of everything the agent knows: the
//! shape printed as JSON lines and rendered as the terminal table.

use std::{collections::BTreeMap, net::IpAddr};

use sockeye_common::tcp_state;

use crate::{
    aggregate::{
        cause::FailureCause,
        flows::{Direction, Window},
        histogram::{Histogram, Percentiles},
        listeners::ListenerChange,
        resources::view::ResourceFailureView,
        Aggregator,
    },
    dns::{
        aggregate::DnsAggregates,
        view::{DnsNameView, DnsTotalView},
    },
    event::comm_string,
    workload::{filter::WorkloadFilter, Workload, Workloads},
};

#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowView {
    pub workload: Workload,
    pub direction: Direction,
    pub remote: IpAddr,
    pub port: u16,
    pub connects_ok: u64,
    pub connects_failed: BTreeMap<&'static str, u64>,
    pub connect_latency: Option<Percentiles>,
    /// The whole histogram, for the gRPC API (JSON shows the percentiles).
    #[serde(skip)]
    pub connect_histogram: Histogram,
    pub syn_retransmits: u64,
    pub open: u64,
    pub states: BTreeMap<&'static str, u64>,
    pub oldest_open_s: f64,
    pub open_older_than_1m: u64,
    pub open_older_than_10m: u64,
    pub open_older_than_1h: u64,
    /// Open sockets found at start-up; their age is counted from agent start.
    pub open_preexisting: u64,
    pub opened_total: u64,
    pub closed_total: u64,
    pub interval: Window,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub last_pid: u32,
    pub last_comm: String,
}

impl FlowView {
    pub fn failed_total(&self) -> u64 {
        self.connects_failed.values().sum()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerView {
    pub workload: Workload,
    pub addr: IpAddr,
    pub port: u16,
    pub pid: u32,
    pub comm: String,
}

/// A listener change with its workload's names (JSON: the change's fields
/// plus `workload`). Derefs to the change, so `c.seq`, `c.listener` read
/// as before.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerChangeView {
    #[serde(flatten)]
    pub event: ListenerChange,
    pub workload: Workload,
}

impl std::ops::Deref for ListenerChangeView {
    type Target = ListenerChange;

    fn deref(&self) -> &ListenerChange {
        &self.event
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub flows: Vec<FlowView>,
    pub listeners: Vec<ListenerView>,
    pub listener_changes: Vec<ListenerChangeView>,
    pub dns_names: Vec<DnsNameView>,
    pub dns_totals: Vec<DnsTotalView>,
    /// Connects and socket() calls that ran out of ports or fds.
    pub resource_failures: Vec<ResourceFailureView>,
}

/// Builds the view; `filter` keeps only matching workloads.
pub fn take(
    agg: &Aggregator,
    dns: &DnsAggregates,
    attributor: &mut impl Workloads,
    now_ns: u64,
    filter: &WorkloadFilter,
) -> Snapshot {
    let open = agg.sockets.summarize(now_ns);
    let mut flows = Vec::new();
    for (key, f) in &agg.flows {
        let workload = attributor.workload(key.cgroup_id);
        if !filter.matches(&workload) {
            continue;
        }
        let mut o = open.get(key).cloned().unwrap_or_default();
        o.by_state[tcp_state::TIME_WAIT as usize] = agg.time_wait.count(key);
        let states = o
            .by_state
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (tcp_state::name(s as u8), *n))
            .collect();
        let connects_failed = FailureCause::ALL
            .iter()
            .zip(f.failed)
            .map(|(c, n)| (c.name(), n))
            .collect();
        flows.push(FlowView {
            workload,
            direction: key.direction,
            remote: key.remote,
            port: key.port,
            connects_ok: f.connects_ok,
            connects_failed,
            connect_latency: f.latency.percentiles(),
            connect_histogram: f.latency.clone(),
            syn_retransmits: f.syn_retransmits,
            open: o.open,
            states,
            oldest_open_s: o.oldest_age_ns as f64 / 1e9,
            open_older_than_1m: o.older_than_1m,
            open_older_than_10m: o.older_than_10m,
            open_older_than_1h: o.older_than_1h,
            open_preexisting: o.preexisting,
            opened_total: f.opened,
            closed_total: f.closed,
            interval: f.window,
            bytes_sent: f.bytes_sent,
            bytes_received: f.bytes_received,
            last_pid: f.last_tgid,
            last_comm: comm_string(&f.last_comm),
        });
    }
    flows.sort_by(|a, b| {
        (a.workload.label(), a.direction, a.remote, a.port).cmp(&(
            b.workload.label(),
            b.direction,
            b.remote,
            b.port,
        ))
    });
    let mut listeners: Vec<ListenerView> = agg
        .listeners
        .active
        .values()
        .filter_map(|l| {
            let workload = attributor.workload(l.cgroup_id);
            if !filter.matches(&workload) {
                return None;
            }
            Some(ListenerView {
                workload,
                addr: l.addr,
                port: l.port,
                pid: l.tgid,
                comm: l.comm.clone(),
            })
        })
        .collect();
    listeners.sort_by_key(|l| (l.workload.label(), l.port));
    let (dns_names, dns_totals) = crate::dns::view::views(dns, attributor, filter);
    Snapshot {
        flows,
        listeners,
        listener_changes: agg
            .listeners
            .history
            .iter()
            .map(|c| ListenerChangeView {
                workload: attributor.workload(c.listener.cgroup_id),
                event: c.clone(),
            })
            .filter(|c| filter.matches(&c.workload))
            .collect(),
        dns_names,
        dns_totals,
        resource_failures: crate::aggregate::resources::view::views(
            &agg.resources,
            attributor,
            now_ns,
            filter,
        ),
    }
}
