//! `-o json`: one JSON object per line, each with a `type`. Field names are
//! the proto's; 64-bit counts are plain numbers; maps have sorted keys;
//! latency histograms are left out (their percentiles are kept). Structs,
//! not `json!` maps, so the field order does not depend on serde_json's
//! features.

use std::collections::BTreeMap;

use serde::Serialize;
use sockeye_proto::v1 as pb;

mod findings;
mod stream;

pub use findings::{finding, node_finding, Evidence, Finding, NodeFinding};
pub use stream::{trace, window, DnsEvent, TcpEvent, Trace, Window};

#[derive(Debug, Serialize)]
pub struct Workload<'a> {
    pub cgroup_id: u64,
    pub cgroup_path: &'a str,
    pub runtime: &'a str,
    pub container_id: &'a str,
    pub pod_uid: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub owner_kind: &'a str,
    pub owner_name: &'a str,
    pub label: &'a str,
    pub node: &'a str,
}

pub fn workload(w: Option<&pb::Workload>) -> Option<Workload<'_>> {
    w.map(|w| Workload {
        cgroup_id: w.cgroup_id,
        cgroup_path: &w.cgroup_path,
        runtime: &w.runtime,
        container_id: &w.container_id,
        pod_uid: &w.pod_uid,
        namespace: &w.namespace,
        pod: &w.pod,
        container: &w.container,
        owner_kind: &w.owner_kind,
        owner_name: &w.owner_name,
        label: &w.label,
        node: &w.node,
    })
}

#[derive(Debug, Serialize)]
pub struct Endpoint<'a> {
    pub ip: &'a str,
    pub port: u32,
}

pub fn endpoint(e: Option<&pb::Endpoint>) -> Option<Endpoint<'_>> {
    e.map(|e| Endpoint {
        ip: &e.ip,
        port: e.port,
    })
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

pub fn percentiles(p: Option<&pb::Percentiles>) -> Option<Percentiles> {
    p.map(|p| Percentiles {
        count: p.count,
        p50_ns: p.p50_ns,
        p90_ns: p.p90_ns,
        p99_ns: p.p99_ns,
        max_ns: p.max_ns,
    })
}

#[derive(Debug, Serialize)]
pub struct Drops<'a> {
    pub counters: BTreeMap<&'a str, u64>,
    pub total: u64,
}

pub fn drops(d: Option<&pb::Drops>) -> Option<Drops<'_>> {
    d.map(|d| Drops {
        counters: sorted(&d.counters),
        total: d.total,
    })
}

fn sorted(m: &std::collections::HashMap<String, u64>) -> BTreeMap<&str, u64> {
    m.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

pub fn direction(d: i32) -> &'static str {
    match pb::Direction::try_from(d) {
        Ok(pb::Direction::Outbound) => "outbound",
        Ok(pb::Direction::Inbound) => "inbound",
        _ => "unspecified",
    }
}

/// `conns`: one TCP flow.
#[derive(Debug, Serialize)]
pub struct Connection<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub node: &'a str,
    pub workload: Option<Workload<'a>>,
    pub direction: &'static str,
    pub remote: Option<Endpoint<'a>>,
    pub connects_ok: u64,
    pub connects_failed: BTreeMap<&'a str, u64>,
    pub connect_latency: Option<Percentiles>,
    pub syn_retransmits: u64,
    pub open: u64,
    pub states: BTreeMap<&'a str, u64>,
    pub oldest_open_s: f64,
    pub open_older_than_1m: u64,
    pub open_older_than_10m: u64,
    pub open_older_than_1h: u64,
    pub opened: u64,
    pub closed: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub last_pid: u32,
    pub last_comm: &'a str,
    pub drops: Option<Drops<'a>>,
}

pub fn connection<'a>(node: &'a str, f: &'a pb::TcpFlow) -> Connection<'a> {
    Connection {
        kind: "connection",
        node,
        workload: workload(f.workload.as_ref()),
        direction: direction(f.direction),
        remote: endpoint(f.remote.as_ref()),
        connects_ok: f.connects_ok,
        connects_failed: sorted(&f.connects_failed),
        connect_latency: percentiles(f.connect_percentiles.as_ref()),
        syn_retransmits: f.syn_retransmits,
        open: f.open,
        states: sorted(&f.states),
        oldest_open_s: f.oldest_open_s,
        open_older_than_1m: f.open_older_than_1m,
        open_older_than_10m: f.open_older_than_10m,
        open_older_than_1h: f.open_older_than_1h,
        opened: f.opened,
        closed: f.closed,
        bytes_sent: f.bytes_sent,
        bytes_received: f.bytes_received,
        last_pid: f.last_pid,
        last_comm: &f.last_comm,
        drops: drops(f.drops.as_ref()),
    }
}

#[derive(Debug, Serialize)]
pub struct DnsCounts<'a> {
    pub queries: u64,
    pub tcp_queries: u64,
    pub retries: u64,
    pub answers: u64,
    pub rcodes: BTreeMap<&'a str, u64>,
    pub empty_answers: u64,
    pub timeouts: u64,
    pub late_answers: u64,
    pub truncated: u64,
    pub tcp_after_truncation: u64,
    pub fanout_lookups: u64,
    pub fanout_wasted: u64,
    pub latency: Option<Percentiles>,
}

pub fn dns_counts(c: Option<&pb::DnsCounts>) -> Option<DnsCounts<'_>> {
    c.map(|c| DnsCounts {
        queries: c.queries,
        tcp_queries: c.tcp_queries,
        retries: c.retries,
        answers: c.answers,
        rcodes: sorted(&c.rcodes),
        empty_answers: c.empty_answers,
        timeouts: c.timeouts,
        late_answers: c.late_answers,
        truncated: c.truncated,
        tcp_after_truncation: c.tcp_after_truncation,
        fanout_lookups: c.fanout_lookups,
        fanout_wasted: c.fanout_wasted,
        latency: percentiles(c.percentiles.as_ref()),
    })
}

/// `dns`: one (workload, name, type, server).
#[derive(Debug, Serialize)]
pub struct DnsName<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub node: &'a str,
    pub workload: Option<Workload<'a>>,
    pub name: &'a str,
    pub qtype: &'a str,
    pub server: Option<Endpoint<'a>>,
    pub counts: Option<DnsCounts<'a>>,
    pub last_pid: u32,
    pub last_comm: &'a str,
    pub drops: Option<Drops<'a>>,
}

pub fn dns_name<'a>(node: &'a str, n: &'a pb::DnsName) -> DnsName<'a> {
    DnsName {
        kind: "dns_name",
        node,
        workload: workload(n.workload.as_ref()),
        name: &n.name,
        qtype: &n.qtype,
        server: endpoint(n.server.as_ref()),
        counts: dns_counts(n.counts.as_ref()),
        last_pid: n.last_pid,
        last_comm: &n.last_comm,
        drops: drops(n.drops.as_ref()),
    }
}

/// `dns`: a workload's totals over all servers (`server` null) or one.
#[derive(Debug, Serialize)]
pub struct DnsTotal<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub node: &'a str,
    pub workload: Option<Workload<'a>>,
    pub server: Option<Endpoint<'a>>,
    pub counts: Option<DnsCounts<'a>>,
    pub drops: Option<Drops<'a>>,
}

pub fn dns_total<'a>(node: &'a str, t: &'a pb::DnsTotal) -> DnsTotal<'a> {
    DnsTotal {
        kind: "dns_total",
        node,
        workload: workload(t.workload.as_ref()),
        server: endpoint(t.server.as_ref()),
        counts: dns_counts(t.counts.as_ref()),
        drops: drops(t.drops.as_ref()),
    }
}

/// `conns`, `dns`, and `top` from an agent: what each node's answer rests
/// on, after its rows.
#[derive(Debug, Serialize)]
pub struct Node<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub node: &'a str,
    pub taken_unix_ms: i64,
    pub drops: Option<Drops<'a>>,
}

pub fn node(s: &pb::Snapshot) -> Node<'_> {
    Node {
        kind: "node",
        node: &s.node,
        taken_unix_ms: s.taken_unix_ms,
        drops: drops(s.aggregates.as_ref().and_then(|a| a.drops.as_ref())),
    }
}

/// `diagnose` from an agent: the node's answer, after its findings.
pub fn findings_node(r: &pb::FindingsReply) -> Node<'_> {
    Node {
        kind: "node",
        node: &r.node,
        taken_unix_ms: r.taken_unix_ms,
        drops: drops(r.drops.as_ref()),
    }
}

/// `top`: one ranked (workload, destination).
#[derive(Debug, Serialize)]
pub struct Top<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub workload: Option<Workload<'a>>,
    pub destination: Option<Endpoint<'a>>,
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub connect_latency: Option<Percentiles>,
    pub open: u64,
    pub nodes: &'a [String],
}

pub fn top(r: &pb::TopRow) -> Top<'_> {
    Top {
        kind: "top",
        workload: workload(r.workload.as_ref()),
        destination: endpoint(r.destination.as_ref()),
        connects_ok: r.connects_ok,
        connects_failed: r.connects_failed,
        connect_latency: percentiles(r.connect_percentiles.as_ref()),
        open: r.open,
        nodes: &r.nodes,
    }
}

/// `top` from the collector: the range the rows cover, after them.
#[derive(Debug, Serialize)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub from_unix_ms: i64,
    pub to_unix_ms: i64,
    pub windows: u64,
    pub dropped_windows: u64,
}

/// One line of JSON. Serializing these plain structs cannot fail.
pub fn line<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string(v).unwrap_or_else(|e| {
        serde_json::json!({ "type": "error", "error": e.to_string() }).to_string()
    });
    s.push('\n');
    s
}
