//! A point-in-time, serialisable view of everything the agent knows: the
//! shape printed as JSON lines and rendered as the terminal table.

use std::{collections::BTreeMap, net::IpAddr};

use sockeye_common::{counters::Counter, tcp_state};

use crate::{
    aggregate::{
        cause::FailureCause,
        flows::{Direction, Window},
        histogram::{Histogram, Percentiles},
        listeners::ListenerChange,
        resources::view::ResourceFailureView,
        Aggregator, UserDrops,
    },
    attribution::{filter::WorkloadFilter, Attributor, MetadataStats, Workload},
    dns::{
        aggregate::DnsAggregates,
        view::{DnsNameView, DnsTotalView},
        DnsHealth,
    },
    event::comm_string,
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

/// Every loss counter, kernel and user side, plus throughput.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    pub events_received: u64,
    pub kernel_events_emitted: u64,
    pub kernel_dns_packets_emitted: u64,
    /// Failed connect()/socket() calls (no port, no fd) the kernel sent,
    /// and those the agent received.
    pub kernel_resource_failures_emitted: u64,
    pub resource_failures_received: u64,
    pub lost: BTreeMap<&'static str, u64>,
    pub lost_total: u64,
    pub untracked_socket_events: u64,
    pub tracked_sockets: u64,
    pub flows: u64,
    pub cgroups_unresolved: u64,
    /// Runtime record reads and the Kubernetes API watch.
    pub metadata: MetadataStats,
    pub dns: DnsHealth,
    /// Windows pushed to the collector, when pushing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushHealth>,
    /// The findings machinery, unless detection is off (`--no-findings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<FindingsHealth>,
}

/// Counts of the findings machinery.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FindingsHealth {
    pub evaluations: u64,
    pub open: u64,
    /// Since start, by kind.
    pub opened: BTreeMap<&'static str, u64>,
    pub resolved: BTreeMap<&'static str, u64>,
    /// Resolved findings no longer remembered (`resolved_kept`).
    pub resolved_forgotten: u64,
    /// Evidence the kernel could not be asked for (the finding is reported
    /// without it).
    pub probe_failures: u64,
    /// Updates that `WatchFindings` clients missed because they read too
    /// slowly (each was told in `missed_before`).
    pub watch_updates_missed: u64,
}

/// The pusher's counters (its losses are also in `lost`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushHealth {
    pub windows_sent: u64,
    /// Windows too large for one gRPC message, sent in chunks.
    pub windows_sent_in_chunks: u64,
    pub windows_acked: u64,
    pub windows_buffered: u64,
    /// Encoded bytes of the buffered windows, and the buffer's bound.
    pub bytes_buffered: u64,
    pub buffer_limit_bytes: u64,
    /// Bytes of the windows dropped (`lost.push_windows_dropped` counts them).
    pub bytes_dropped: u64,
    pub reconnects: u64,
}

impl Health {
    pub fn collect(
        agg: &Aggregator,
        dns: DnsHealth,
        kernel: &[(Counter, u64)],
        attributor: &Attributor,
    ) -> Self {
        let mut h = Health {
            events_received: agg.events_received,
            resource_failures_received: agg.resources.received,
            tracked_sockets: agg.sockets.len() as u64,
            flows: agg.flows.len() as u64,
            cgroups_unresolved: attributor.unresolved(),
            metadata: attributor.metadata_stats(),
            ..Default::default()
        };
        for &(c, v) in kernel {
            match c {
                Counter::EventsEmitted => h.kernel_events_emitted = v,
                Counter::UntrackedSocket => h.untracked_socket_events = v,
                Counter::DnsPacketsEmitted => h.kernel_dns_packets_emitted = v,
                Counter::ResourceFailuresEmitted => h.kernel_resource_failures_emitted = v,
                c => {
                    h.lost.insert(c.name(), v);
                }
            }
        }
        let UserDrops {
            decode_errors,
            socket_table_full,
            time_wait_buckets_full,
            flows_evicted,
            resource_decode_errors,
            resource_keys_evicted,
        } = agg.drops();
        h.lost.insert("user_decode_errors", decode_errors);
        h.lost.insert("user_socket_table_full", socket_table_full);
        h.lost.insert("user_flows_evicted", flows_evicted);
        h.lost
            .insert("user_time_wait_buckets_full", time_wait_buckets_full);
        h.lost
            .insert("user_resource_decode_errors", resource_decode_errors);
        h.lost
            .insert("user_resource_keys_evicted", resource_keys_evicted);
        // DNS we could not use. Not losses, and so only in `dns`: malformed
        // messages (`dns.parse_errors`), names folded into "other" (their
        // counts are kept), answers to queries sent before the agent started
        // and TCP streams that began before it (`unmatched_answers`,
        // `tcp.resyncs`), like `untracked_socket_events` for TCP.
        h.lost.insert("user_dns_decode_errors", dns.decode_errors);
        h.lost
            .insert("user_dns_pending_full", dns.tracker.pending_full);
        h.lost
            .insert("user_dns_tcp_beyond_capture", dns.tcp.beyond_capture);
        h.lost
            .insert("user_dns_tcp_streams_evicted", dns.tcp.evicted);
        h.dns = dns;
        h.lost_total = h.lost.values().sum();
        h
    }
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
    attributor: &mut Attributor,
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
