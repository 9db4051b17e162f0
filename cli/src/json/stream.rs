//! JSON lines of the `watch` streams: agent traces and pushed windows.

use serde::Serialize;
use sockeye_proto::v1 as pb;

use super::{
    connection, dns_name, dns_total, drops, endpoint, workload, Connection, DnsName, DnsTotal,
    Drops, Endpoint, Workload,
};
use crate::format;

#[derive(Debug, Serialize)]
pub struct TcpEvent<'a> {
    pub kind: &'a str,
    pub local: Option<Endpoint<'a>>,
    pub remote: Option<Endpoint<'a>>,
    pub old_state: &'a str,
    pub new_state: &'a str,
    pub duration_ns: u64,
    pub cause: &'a str,
    pub pid: u32,
    pub comm: &'a str,
}

#[derive(Debug, Serialize)]
pub struct DnsEvent<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub qtype: &'a str,
    pub client: Option<Endpoint<'a>>,
    pub server: Option<Endpoint<'a>>,
    pub transport: &'a str,
    pub id: u32,
    pub rcode: &'a str,
    pub answers: u32,
    pub truncated: bool,
    pub latency_ns: u64,
    pub retry: bool,
    pub pid: u32,
    pub comm: &'a str,
}

/// `watch` from an agent: one trace; exactly one of `tcp` and `dns` is set.
#[derive(Debug, Serialize)]
pub struct Trace<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_unix_ns: i64,
    pub time: String,
    pub node: &'a str,
    pub missed_before: u64,
    pub workload: Option<Workload<'a>>,
    pub tcp: Option<TcpEvent<'a>>,
    pub dns: Option<DnsEvent<'a>>,
}

pub fn trace(ev: &pb::TraceEvent) -> Trace<'_> {
    use pb::trace_event::Event;
    let tcp = match &ev.event {
        Some(Event::Tcp(t)) => Some(TcpEvent {
            kind: &t.kind,
            local: endpoint(t.local.as_ref()),
            remote: endpoint(t.remote.as_ref()),
            old_state: &t.old_state,
            new_state: &t.new_state,
            duration_ns: t.duration_ns,
            cause: &t.cause,
            pid: t.pid,
            comm: &t.comm,
        }),
        _ => None,
    };
    let dns = match &ev.event {
        Some(Event::Dns(d)) => Some(DnsEvent {
            kind: &d.kind,
            name: &d.name,
            qtype: &d.qtype,
            client: endpoint(d.client.as_ref()),
            server: endpoint(d.server.as_ref()),
            transport: &d.transport,
            id: d.id,
            rcode: &d.rcode,
            answers: d.answers,
            truncated: d.truncated,
            latency_ns: d.latency_ns,
            retry: d.retry,
            pid: d.pid,
            comm: &d.comm,
        }),
        _ => None,
    };
    Trace {
        kind: "trace",
        ts_unix_ns: ev.ts_unix_ns,
        time: format::rfc3339_ns(ev.ts_unix_ns),
        node: &ev.node,
        missed_before: ev.missed_before,
        workload: workload(ev.workload.as_ref()),
        tcp,
        dns,
    }
}

/// `watch` from the collector: one pushed window and its rows.
#[derive(Debug, Serialize)]
pub struct Window<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub node: &'a str,
    pub agent_id: &'a str,
    pub seq: u64,
    pub start_unix_ms: i64,
    pub end_unix_ms: i64,
    pub dropped_windows_before: u64,
    /// Windows this stream missed just before this one (client too slow).
    pub missed_before: u64,
    pub tcp_flows: Vec<Connection<'a>>,
    pub dns_names: Vec<DnsName<'a>>,
    pub dns_totals: Vec<DnsTotal<'a>>,
    pub drops: Option<Drops<'a>>,
}

pub fn window(w: &pb::Window, missed_before: u64) -> Window<'_> {
    let agg = w.aggregates.as_ref();
    let node = w.node.as_str();
    Window {
        kind: "window",
        node,
        agent_id: &w.agent_id,
        seq: w.seq,
        start_unix_ms: w.start_unix_ms,
        end_unix_ms: w.end_unix_ms,
        dropped_windows_before: w.dropped_windows_before,
        missed_before,
        tcp_flows: agg
            .map(|a| a.tcp_flows.iter().map(|f| connection(node, f)).collect())
            .unwrap_or_default(),
        dns_names: agg
            .map(|a| a.dns_names.iter().map(|n| dns_name(node, n)).collect())
            .unwrap_or_default(),
        dns_totals: agg
            .map(|a| a.dns_totals.iter().map(|t| dns_total(node, t)).collect())
            .unwrap_or_default(),
        drops: drops(agg.and_then(|a| a.drops.as_ref())),
    }
}
