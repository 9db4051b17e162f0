//! The agent's views, as `sockeye.v1` messages.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use sockeye_proto::v1 as pb;

use crate::{
    aggregate::{
        flows::Direction,
        histogram::{Histogram, Percentiles},
    },
    attribution::Workload,
    dns::view::{DnsCounts, DnsNameView, DnsTotalView},
    snapshot::{FlowView, Health, ListenerView, Snapshot},
};

pub fn workload(w: &Workload, node: &str) -> pb::Workload {
    let owner = w.owner.as_ref();
    let pod = w.pod.as_ref();
    pb::Workload {
        cgroup_id: w.cgroup_id,
        cgroup_path: w.cgroup_path.clone().unwrap_or_default(),
        runtime: owner
            .map(|o| o.runtime_name().to_string())
            .unwrap_or_default(),
        container_id: owner
            .and_then(|o| o.container_id())
            .unwrap_or_default()
            .to_string(),
        pod_uid: pod
            .and_then(|p| p.uid.clone())
            .or_else(|| owner.and_then(|o| o.pod_uid()).map(str::to_string))
            .unwrap_or_default(),
        namespace: pod.map(|p| p.namespace.clone()).unwrap_or_default(),
        pod: pod.map(|p| p.name.clone()).unwrap_or_default(),
        container: pod.and_then(|p| p.container.clone()).unwrap_or_default(),
        owner_kind: pod
            .and_then(|p| p.workload.as_ref())
            .map(|o| o.kind.clone())
            .unwrap_or_default(),
        owner_name: pod
            .and_then(|p| p.workload.as_ref())
            .map(|o| o.name.clone())
            .unwrap_or_default(),
        label: w.label(),
        node: node.to_string(),
    }
}

pub fn endpoint(ip: IpAddr, port: u16) -> pb::Endpoint {
    pb::Endpoint {
        ip: ip.to_string(),
        port: u32::from(port),
    }
}

pub fn socket(addr: SocketAddr) -> pb::Endpoint {
    endpoint(addr.ip(), addr.port())
}

pub fn histogram(h: &Histogram) -> pb::Histogram {
    pb::Histogram {
        bins: h
            .buckets()
            .map(|(lower_ns, upper_ns, count)| pb::histogram::Bin {
                lower_ns,
                upper_ns,
                count,
            })
            .collect(),
        count: h.count(),
        sum_ns: h.sum_ns(),
        min_ns: h.min_ns().unwrap_or(0),
        max_ns: h.max_ns().unwrap_or(0),
    }
}

pub fn percentiles(p: Option<Percentiles>) -> Option<pb::Percentiles> {
    p.map(|p| pb::Percentiles {
        count: p.count,
        p50_ns: p.p50_ns,
        p90_ns: p.p90_ns,
        p99_ns: p.p99_ns,
        max_ns: p.max_ns,
    })
}

fn counts<K: ToString>(m: &BTreeMap<K, u64>) -> HashMap<String, u64> {
    m.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The drop counters named in `names`, from the agent's health.
pub fn drops(health: &Health, names: &[&str]) -> pb::Drops {
    let counters: HashMap<String, u64> = names
        .iter()
        .filter_map(|n| health.lost.get(n).map(|v| (n.to_string(), *v)))
        .collect();
    pb::Drops {
        total: counters.values().sum(),
        counters,
    }
}

/// Every drop counter.
pub fn all_drops(health: &Health) -> pb::Drops {
    pb::Drops {
        counters: counts(&health.lost),
        total: health.lost_total,
    }
}

/// Drop counters that can make a TCP flow undercount. A socket whose owner
/// was not captured is counted under an unknown workload instead of its own.
pub const TCP_DROPS: [&str; 8] = [
    "kernel_ringbuf_full",
    "kernel_sockets_map_full",
    "kernel_listeners_map_full",
    "kernel_cb_flags_failed",
    "kernel_owner_not_captured",
    "user_decode_errors",
    "user_socket_table_full",
    "user_flows_evicted",
];

/// Drop counters that can make DNS aggregates undercount.
pub const DNS_DROPS: [&str; 8] = [
    "kernel_dns_ringbuf_full",
    "kernel_dns_skipped_ipv6_extension",
    "kernel_dns_read_failed",
    "user_dns_decode_errors",
    "user_dns_pending_full",
    "user_dns_walks_full",
    "user_dns_tcp_beyond_capture",
    "user_dns_tcp_streams_evicted",
];

pub fn flow(f: &FlowView, node: &str, drops: &pb::Drops) -> pb::TcpFlow {
    pb::TcpFlow {
        workload: Some(workload(&f.workload, node)),
        direction: match f.direction {
            Direction::Outbound => pb::Direction::Outbound,
            Direction::Inbound => pb::Direction::Inbound,
        } as i32,
        remote: Some(endpoint(f.remote, f.port)),
        connects_ok: f.connects_ok,
        connects_failed: counts(&f.connects_failed),
        connect_latency: Some(histogram(&f.connect_histogram)),
        connect_percentiles: percentiles(f.connect_latency),
        syn_retransmits: f.syn_retransmits,
        open: f.open,
        states: counts(&f.states),
        oldest_open_s: f.oldest_open_s,
        open_older_than_1m: f.open_older_than_1m,
        open_older_than_10m: f.open_older_than_10m,
        open_older_than_1h: f.open_older_than_1h,
        opened: f.opened_total,
        closed: f.closed_total,
        bytes_sent: f.bytes_sent,
        bytes_received: f.bytes_received,
        last_pid: f.last_pid,
        last_comm: f.last_comm.clone(),
        drops: Some(drops.clone()),
    }
}

pub fn listener(l: &ListenerView, node: &str) -> pb::Listener {
    pb::Listener {
        workload: Some(workload(&l.workload, node)),
        local: Some(endpoint(l.addr, l.port)),
        pid: l.pid,
        comm: l.comm.clone(),
    }
}

pub fn dns_counts(c: &DnsCounts) -> pb::DnsCounts {
    pb::DnsCounts {
        queries: c.queries,
        tcp_queries: c.tcp_queries,
        retries: c.retries,
        answers: c.answers,
        rcodes: counts(&c.rcodes),
        empty_answers: c.empty_answers,
        timeouts: c.timeouts,
        late_answers: c.late_answers,
        truncated: c.truncated,
        tcp_after_truncation: c.tcp_after_truncation,
        fanout_lookups: c.fanout_lookups,
        fanout_wasted: c.fanout_wasted,
        latency: Some(histogram(&c.latency_histogram)),
        percentiles: percentiles(c.latency),
    }
}

pub fn dns_name(n: &DnsNameView, node: &str, drops: &pb::Drops) -> pb::DnsName {
    pb::DnsName {
        workload: Some(workload(&n.workload, node)),
        name: n.name.clone(),
        qtype: n.qtype.clone(),
        server: Some(socket(n.server)),
        counts: Some(dns_counts(&n.counts)),
        last_pid: n.last_pid,
        last_comm: n.last_comm.clone(),
        drops: Some(drops.clone()),
    }
}

pub fn dns_total(t: &DnsTotalView, node: &str, drops: &pb::Drops) -> pb::DnsTotal {
    pb::DnsTotal {
        workload: Some(workload(&t.workload, node)),
        server: t.server.map(socket),
        counts: Some(dns_counts(&t.counts)),
        drops: Some(drops.clone()),
    }
}

/// A whole snapshot; the caller has filtered it.
pub fn aggregates(snap: &Snapshot, health: &Health, node: &str) -> pb::Aggregates {
    let tcp_drops = drops(health, &TCP_DROPS);
    let dns_drops = drops(health, &DNS_DROPS);
    pb::Aggregates {
        tcp_flows: snap
            .flows
            .iter()
            .map(|f| flow(f, node, &tcp_drops))
            .collect(),
        listeners: snap.listeners.iter().map(|l| listener(l, node)).collect(),
        dns_names: snap
            .dns_names
            .iter()
            .map(|n| dns_name(n, node, &dns_drops))
            .collect(),
        dns_totals: snap
            .dns_totals
            .iter()
            .map(|t| dns_total(t, node, &dns_drops))
            .collect(),
        findings: Vec::new(),
        drops: Some(all_drops(health)),
    }
}
