//! `sockeye top`: outbound destinations ranked by failed connects, p99
//! connect latency or open sockets. The collector ranks over a time range
//! (QueryTop); an agent's flows are ranked here the same way, over what the
//! agent counted since it started.

use std::time::Duration;

use sockeye_proto::v1 as pb;

use super::{cut, notes, pod_uid, workload_name, View};
use crate::{
    args::{Output, RankBy},
    error::Role,
    format, json,
    table::{left, right, Column, Table},
};

const WORKLOAD_WIDTH: usize = 48;

/// What the ranking was computed from.
#[derive(Debug, Clone, Copy)]
pub enum Basis<'a> {
    /// One agent's snapshot.
    Agent(&'a pb::Snapshot),
    /// The collector's windows that ended in `[from, to]`.
    Collector {
        since: Duration,
        from_unix_ms: i64,
        to_unix_ms: i64,
    },
}

/// An agent's outbound flows as QueryTop rows, ranked as the collector
/// ranks them (`sockeye_proto::top`), so both answer alike.
pub fn rank(snap: &pb::Snapshot, by: RankBy, limit: usize) -> pb::QueryTopResponse {
    let flows = snap.aggregates.iter().flat_map(|a| &a.tcp_flows);
    let mut rows: Vec<pb::TopRow> = flows
        .filter(|f| f.direction == pb::Direction::Outbound as i32)
        .map(|f| pb::TopRow {
            workload: f.workload.clone(),
            destination: f.remote.clone(),
            connects_ok: f.connects_ok,
            connects_failed: f
                .connects_failed
                .values()
                .fold(0u64, |n, v| n.saturating_add(*v)),
            connect_percentiles: f.connect_percentiles,
            open: f.open,
            nodes: vec![snap.node.clone()],
            drops: f.drops.clone(),
        })
        .collect();
    sockeye_proto::top::rank(&mut rows, by.into(), limit);
    pb::QueryTopResponse {
        rows,
        windows: 0,
        dropped_windows: 0,
    }
}

fn columns(view: &View) -> Vec<Column> {
    // Fitting a terminal drops P90, then P50 and the nodes, then OK.
    let mut c = vec![
        left("WORKLOAD").shrinks_to(30),
        left("DESTINATION").shrinks_to(21),
        right("OK").priority(2),
        right("FAIL"),
        right("FAIL%"),
        right("P50").priority(3),
        right("P90").priority(4),
        right("P99"),
    ];
    if view.wide() {
        c.push(right("MAX"));
    }
    c.push(right("OPEN"));
    if view.wide() || view.role == Role::Collector {
        c.push(left("NODES").shrinks_to(8).priority(3));
    }
    if view.wide() {
        c.push(left("POD-UID"));
    }
    c
}

fn row(view: &View, r: &pb::TopRow) -> Vec<String> {
    let p = r.connect_percentiles.as_ref().filter(|p| p.count > 0);
    let pct = |pick: fn(&pb::Percentiles) -> u64| format::duration_ns(p.map(pick));
    let mut out = vec![
        cut(view, &workload_name(r.workload.as_ref()), WORKLOAD_WIDTH),
        format::endpoint_of(r.destination.as_ref()),
        r.connects_ok.to_string(),
        r.connects_failed.to_string(),
        format::percent(
            r.connects_failed,
            r.connects_ok.saturating_add(r.connects_failed),
        ),
        pct(|p| p.p50_ns),
        pct(|p| p.p90_ns),
        pct(|p| p.p99_ns),
    ];
    if view.wide() {
        out.push(pct(|p| p.max_ns));
    }
    out.push(r.open.to_string());
    if view.wide() || view.role == Role::Collector {
        out.push(if r.nodes.is_empty() {
            "-".to_string()
        } else {
            r.nodes.join(",")
        });
    }
    if view.wide() {
        out.push(pod_uid(r.workload.as_ref()));
    }
    out
}

pub fn render(resp: &pb::QueryTopResponse, basis: Basis, view: &View) -> String {
    if view.output == Output::Json {
        let mut out: String = resp
            .rows
            .iter()
            .map(|r| json::line(&json::top(r)))
            .collect();
        out.push_str(&match basis {
            Basis::Agent(snap) => json::line(&json::node(snap)),
            Basis::Collector {
                from_unix_ms,
                to_unix_ms,
                ..
            } => json::line(&json::Range {
                kind: "range",
                from_unix_ms,
                to_unix_ms,
                windows: resp.windows,
                dropped_windows: resp.dropped_windows,
            }),
        });
        return out;
    }
    let mut out = if resp.rows.is_empty() {
        format!("No destinations found{}.\n", view.for_filter())
    } else {
        let mut t = Table::new(columns(view));
        for r in &resp.rows {
            t.push(row(view, r));
        }
        t.render_in(view.fit())
    };
    match basis {
        Basis::Agent(snap) => out.push_str(&notes(std::slice::from_ref(snap), view, |a| {
            a.tcp_flows.first().and_then(|f| f.drops.as_ref())
        })),
        Basis::Collector { since, .. } => out.push_str(&super::range_note(
            since,
            resp.windows,
            resp.dropped_windows,
            "note",
            "counts may be low",
        )),
    }
    out
}
