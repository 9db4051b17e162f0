//! `sockeye conns`: every flow (workload, direction, remote, port) of the
//! selected workloads, with connects, failures by cause, latency
//! percentiles, open sockets, their states and the oldest one's age.

use sockeye_proto::v1 as pb;

use super::{cgroup_path, cut, endpoint_key, notes, pod_uid, workload_name, View};
use crate::{
    args::Output,
    error::Role,
    format, json,
    table::{left, right, Column, Table},
};

/// Longest workload name in the narrow table.
const WORKLOAD_WIDTH: usize = 48;

fn direction(d: i32) -> &'static str {
    match pb::Direction::try_from(d) {
        Ok(pb::Direction::Outbound) => "out",
        Ok(pb::Direction::Inbound) => "in",
        _ => "?",
    }
}

/// Outbound before inbound: a workload's dependencies first.
fn direction_rank(d: i32) -> u8 {
    match pb::Direction::try_from(d) {
        Ok(pb::Direction::Outbound) => 0,
        Ok(pb::Direction::Inbound) => 1,
        _ => 2,
    }
}

/// "3/0/1/0": refused, timed out, unreachable, aborted (the agent's
/// REF/TMO/UNR/ABT).
fn causes(f: &pb::TcpFlow) -> String {
    let n = |k: &str| f.connects_failed.get(k).copied().unwrap_or(0);
    format!(
        "{}/{}/{}/{}",
        n("refused"),
        n("timed_out"),
        n("unreachable"),
        n("aborted")
    )
}

fn percentile(p: Option<&pb::Percentiles>, pick: fn(&pb::Percentiles) -> u64) -> String {
    format::duration_ns(p.filter(|p| p.count > 0).map(pick))
}

/// A flow's columns, the agent's live table's too (it adds its own after
/// them). Fitting a terminal drops P90, then MAX and the causes, then P50
/// and OK, then the oldest's age and the states; what problems need stays.
pub const FLOW_COLUMNS: [Column; 13] = [
    left("WORKLOAD").shrinks_to(30),
    left("DIR"),
    left("REMOTE").shrinks_to(21),
    right("OK").priority(3),
    right("FAIL"),
    right("REF/TMO/UNR/ABT").priority(4),
    right("P50").priority(3),
    right("P90").priority(5),
    right("P99").priority(2),
    right("MAX").priority(4),
    right("OPEN"),
    // Counts by state: dropped whole rather than cut.
    left("STATES").priority(2),
    right("OLDEST").priority(2),
];

fn columns(view: &View) -> Vec<Column> {
    let mut c = Vec::new();
    if view.wide() || view.role == Role::Collector {
        c.push(left("NODE").shrinks_to(8));
    }
    c.extend(FLOW_COLUMNS);
    if view.wide() {
        c.extend([
            right(">1m"),
            right(">10m"),
            right(">1h"),
            right("SYN-RTX"),
            right("OPENED"),
            right("CLOSED"),
            right("SENT"),
            right("RECV"),
            left("PROCESS"),
            left("POD-UID"),
            left("CGROUP"),
        ]);
    }
    c
}

fn row(view: &View, node: &str, f: &pb::TcpFlow) -> Vec<String> {
    let p = f.connect_percentiles.as_ref();
    let failed: u64 = f
        .connects_failed
        .values()
        .fold(0u64, |n, v| n.saturating_add(*v));
    let mut r = Vec::new();
    if view.wide() || view.role == Role::Collector {
        r.push(node.to_string());
    }
    r.extend([
        cut(view, &workload_name(f.workload.as_ref()), WORKLOAD_WIDTH),
        direction(f.direction).to_string(),
        format::endpoint_of(f.remote.as_ref()),
        f.connects_ok.to_string(),
        failed.to_string(),
        causes(f),
        percentile(p, |p| p.p50_ns),
        percentile(p, |p| p.p90_ns),
        percentile(p, |p| p.p99_ns),
        percentile(p, |p| p.max_ns),
        f.open.to_string(),
        format::states(&f.states),
        if f.open > 0 {
            format::age_s(f.oldest_open_s)
        } else {
            "-".to_string()
        },
    ]);
    if view.wide() {
        r.extend([
            f.open_older_than_1m.to_string(),
            f.open_older_than_10m.to_string(),
            f.open_older_than_1h.to_string(),
            f.syn_retransmits.to_string(),
            f.opened.to_string(),
            f.closed.to_string(),
            format::bytes(f.bytes_sent),
            format::bytes(f.bytes_received),
            format::process(&f.last_comm, f.last_pid),
            pod_uid(f.workload.as_ref()),
            cgroup_path(f.workload.as_ref()),
        ]);
    }
    r
}

/// Every flow of every snapshot, by workload, then outbound first, then
/// remote address.
fn flows(snaps: &[pb::Snapshot]) -> Vec<(&str, &pb::TcpFlow)> {
    let mut v: Vec<(&str, &pb::TcpFlow)> = snaps
        .iter()
        .flat_map(|s| {
            s.aggregates
                .iter()
                .flat_map(|a| &a.tcp_flows)
                .map(move |f| (s.node.as_str(), f))
        })
        .collect();
    v.sort_by_cached_key(|(node, f)| {
        (
            workload_name(f.workload.as_ref()),
            direction_rank(f.direction),
            endpoint_key(f.remote.as_ref()),
            node.to_string(),
        )
    });
    v
}

pub fn render(snaps: &[pb::Snapshot], view: &View) -> String {
    let rows = flows(snaps);
    if view.output == Output::Json {
        let mut out: String = rows
            .iter()
            .map(|(node, f)| json::line(&json::connection(node, f)))
            .collect();
        out.extend(snaps.iter().map(|s| json::line(&json::node(s))));
        return out;
    }
    let mut out = if rows.is_empty() {
        format!("No connections found{}.\n", view.for_filter())
    } else {
        let mut t = Table::new(columns(view));
        for (node, f) in &rows {
            t.push(row(view, node, f));
        }
        t.render_in(view.fit())
    };
    // Every flow of a node carries the same TCP drop counters.
    out.push_str(&notes(snaps, view, |a| {
        a.tcp_flows.first().and_then(|f| f.drops.as_ref())
    }));
    out
}
