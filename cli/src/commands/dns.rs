//! `sockeye dns`: per workload a totals row, then one row per (name, type,
//! server) with queries, answers by result, timeouts and latency; names
//! with timeouts and failures first.

use std::cmp::Reverse;

use sockeye_proto::v1 as pb;

use super::{cgroup_path, cut, endpoint_key, notes, pod_uid, workload_name, View};
use crate::{
    args::Output,
    error::Role,
    format, json,
    table::{left, right, Column, Table},
};

const WORKLOAD_WIDTH: usize = 40;
const NAME_WIDTH: usize = 40;

/// A line of the table: a workload's totals or one name.
enum Row<'a> {
    Total(&'a pb::DnsTotal),
    Name(&'a pb::DnsName),
}

impl<'a> Row<'a> {
    fn workload(&self) -> Option<&'a pb::Workload> {
        match self {
            Row::Total(t) => t.workload.as_ref(),
            Row::Name(n) => n.workload.as_ref(),
        }
    }

    fn counts(&self) -> Option<&'a pb::DnsCounts> {
        match self {
            Row::Total(t) => t.counts.as_ref(),
            Row::Name(n) => n.counts.as_ref(),
        }
    }

    fn server(&self) -> Option<&'a pb::Endpoint> {
        match self {
            Row::Total(t) => t.server.as_ref(),
            Row::Name(n) => n.server.as_ref(),
        }
    }
}

fn rcode(c: &pb::DnsCounts, name: &str) -> u64 {
    c.rcodes.get(name).copied().unwrap_or(0)
}

/// Answers with an RCODE other than NOERROR and NXDOMAIN.
fn failed(c: &pb::DnsCounts) -> u64 {
    c.rcodes
        .iter()
        .filter(|(k, _)| *k != "NOERROR" && *k != "NXDOMAIN")
        .fold(0u64, |n, (_, v)| n.saturating_add(*v))
}

/// A DNS row's columns, the agent's live table's too (it adds its own
/// after them). Fitting a terminal drops MAX, then RETRY and P50, then
/// TYPE, NXDOM and P99: queries, failures, timeouts and p90 stay.
pub const DNS_COLUMNS: [Column; 14] = [
    left("WORKLOAD").shrinks_to(24),
    left("NAME").shrinks_to(24),
    left("TYPE").priority(3),
    left("SERVER").shrinks_to(15),
    right("Q"),
    right("RETRY").priority(4),
    right("OK").priority(2),
    right("NXDOM").priority(3),
    right("FAIL"),
    right("TMO"),
    right("P50").priority(4),
    right("P90").priority(2),
    right("P99").priority(3),
    right("MAX").priority(5),
];

fn columns(view: &View) -> Vec<Column> {
    let mut c = Vec::new();
    if view.wide() || view.role == Role::Collector {
        c.push(left("NODE").shrinks_to(8));
    }
    c.extend(DNS_COLUMNS);
    if view.wide() {
        c.extend([
            right("NODATA"),
            right("LATE"),
            right("TC>TCP"),
            right("TCP-Q"),
            right("WASTED"),
            left("RCODES"),
            left("PROCESS"),
            left("POD-UID"),
            left("CGROUP"),
        ]);
    }
    c
}

fn row(view: &View, node: &str, r: &Row) -> Vec<String> {
    let empty = pb::DnsCounts::default();
    let c = r.counts().unwrap_or(&empty);
    let p = c.percentiles.as_ref().filter(|p| p.count > 0);
    let pct = |pick: fn(&pb::Percentiles) -> u64| format::duration_ns(p.map(pick));
    let (name, qtype) = match r {
        // One word, so every cell splits on whitespace.
        Row::Total(_) => ("(total)", "*"),
        Row::Name(n) => (n.name.as_str(), n.qtype.as_str()),
    };
    let server = match r.server() {
        None => "(all)".to_string(),
        s => format::endpoint_of(s),
    };
    let mut out = Vec::new();
    if view.wide() || view.role == Role::Collector {
        out.push(node.to_string());
    }
    out.extend([
        cut(view, &workload_name(r.workload()), WORKLOAD_WIDTH),
        cut(view, name, NAME_WIDTH),
        qtype.to_string(),
        server,
        c.queries.to_string(),
        c.retries.to_string(),
        rcode(c, "NOERROR").to_string(),
        rcode(c, "NXDOMAIN").to_string(),
        failed(c).to_string(),
        c.timeouts.to_string(),
        pct(|p| p.p50_ns),
        pct(|p| p.p90_ns),
        pct(|p| p.p99_ns),
        pct(|p| p.max_ns),
    ]);
    if view.wide() {
        let (pid, comm) = match r {
            Row::Name(n) => (n.last_pid, n.last_comm.as_str()),
            Row::Total(_) => (0, ""),
        };
        let rcodes = format::counters(&c.rcodes);
        out.extend([
            c.empty_answers.to_string(),
            c.late_answers.to_string(),
            format!("{}/{}", c.truncated, c.tcp_after_truncation),
            c.tcp_queries.to_string(),
            c.fanout_wasted.to_string(),
            if rcodes.is_empty() {
                "-".into()
            } else {
                rcodes
            },
            format::process(comm, pid),
            pod_uid(r.workload()),
            cgroup_path(r.workload()),
        ]);
    }
    out
}

/// The rows to show, in order: per workload, its totals over all servers,
/// then (wide and JSON) its totals per server, then its names, those with
/// timeouts and failures first, then the most asked.
fn rows(snaps: &[pb::Snapshot], per_server_totals: bool) -> Vec<(&str, Row<'_>)> {
    let mut v: Vec<(&str, Row)> = Vec::new();
    for s in snaps {
        let Some(a) = &s.aggregates else { continue };
        v.extend(
            a.dns_totals
                .iter()
                .filter(|t| t.server.is_none() || per_server_totals)
                .map(|t| (s.node.as_str(), Row::Total(t))),
        );
        v.extend(a.dns_names.iter().map(|n| (s.node.as_str(), Row::Name(n))));
    }
    v.sort_by_cached_key(|(node, r)| {
        let c = r.counts().cloned().unwrap_or_default();
        // NXDOMAIN is left out: search-list fan-out makes it routine.
        let trouble = c.timeouts.saturating_add(failed(&c));
        let (group, name, qtype) = match r {
            Row::Total(t) => (u8::from(t.server.is_some()), String::new(), String::new()),
            Row::Name(n) => (2, n.name.clone(), n.qtype.clone()),
        };
        (
            workload_name(r.workload()),
            node.to_string(),
            group,
            Reverse(trouble),
            Reverse(c.queries),
            name,
            qtype,
            endpoint_key(r.server()),
        )
    });
    v
}

pub fn render(snaps: &[pb::Snapshot], view: &View) -> String {
    let rows = rows(snaps, view.output != Output::Table);
    if view.output == Output::Json {
        let mut out: String = rows
            .iter()
            .map(|(node, r)| match r {
                Row::Total(t) => json::line(&json::dns_total(node, t)),
                Row::Name(n) => json::line(&json::dns_name(node, n)),
            })
            .collect();
        out.extend(snaps.iter().map(|s| json::line(&json::node(s))));
        return out;
    }
    let mut out = if rows.is_empty() {
        format!("No DNS queries found{}.\n", view.for_filter())
    } else {
        let mut t = Table::new(columns(view));
        for (node, r) in &rows {
            t.push(row(view, node, r));
        }
        t.render_in(view.fit())
    };
    out.push_str(&notes(snaps, view, |a| {
        a.dns_totals
            .first()
            .and_then(|t| t.drops.as_ref())
            .or_else(|| a.dns_names.first().and_then(|n| n.drops.as_ref()))
    }));
    out
}
