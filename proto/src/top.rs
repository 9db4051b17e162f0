//! QueryTop's ranking, in one place: the collector ranks the rows of its
//! windows with it and the CLI ranks one agent's flows with it, so a node
//! and the cluster order the same rows alike.

use std::{cmp::Ordering, net::IpAddr};

use crate::v1 as pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankBy {
    /// Failed connects, most first (then most connects).
    Failures,
    /// p99 connect latency, slowest first (then most samples).
    Latency,
    /// Open sockets now (latest gauge), most first.
    Open,
}

impl RankBy {
    /// The names QueryTop's `by` takes, for error messages.
    pub const NAMES: &'static str = "\"failures\", \"latency\" or \"open\"";

    /// QueryTop's `by`; empty means failures.
    pub fn parse(by: &str) -> Option<Self> {
        match by {
            "" | "failures" => Some(Self::Failures),
            "latency" => Some(Self::Latency),
            "open" => Some(Self::Open),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failures => "failures",
            Self::Latency => "latency",
            Self::Open => "open",
        }
    }
}

/// Sorts `rows` by `by`, ties in a stable order, and keeps the first
/// `limit`.
pub fn rank(rows: &mut Vec<pb::TopRow>, by: RankBy, limit: usize) {
    rows.sort_by(|a, b| order(by, a, b).then_with(|| tie_break(a).cmp(&tie_break(b))));
    rows.truncate(limit);
}

fn order(by: RankBy, a: &pb::TopRow, b: &pb::TopRow) -> Ordering {
    let p99 = |r: &pb::TopRow| r.connect_percentiles.map_or(0, |p| p.p99_ns);
    let samples = |r: &pb::TopRow| r.connect_percentiles.map_or(0, |p| p.count);
    let attempts = |r: &pb::TopRow| r.connects_ok.saturating_add(r.connects_failed);
    match by {
        RankBy::Failures => b
            .connects_failed
            .cmp(&a.connects_failed)
            .then(attempts(b).cmp(&attempts(a))),
        RankBy::Latency => p99(b).cmp(&p99(a)).then(samples(b).cmp(&samples(a))),
        RankBy::Open => b.open.cmp(&a.open),
    }
}

/// A stable order for equal rows, so the same query gives the same answer.
/// The container and node are in it because two containers of one pod
/// (and host rows of two nodes) otherwise tie and came out in hash order;
/// destinations by address, a text that is not one before them.
fn tie_break(r: &pb::TopRow) -> impl Ord + '_ {
    let w = r.workload.as_ref();
    let text = |f: fn(&pb::Workload) -> &str| w.map_or("", f);
    let d = r.destination.as_ref();
    (
        [
            text(|w| &w.namespace),
            text(|w| &w.pod),
            text(|w| &w.label),
            text(|w| &w.container),
            text(|w| &w.node),
        ],
        d.and_then(|d| d.ip.parse::<IpAddr>().ok()),
        d.map_or("", |d| &d.ip),
        d.map_or(0, |d| d.port),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pod: &str, ip: &str, failed: u64, ok: u64) -> pb::TopRow {
        pb::TopRow {
            workload: Some(pb::Workload {
                namespace: "prod".into(),
                pod: pod.into(),
                ..Default::default()
            }),
            destination: Some(pb::Endpoint {
                ip: ip.into(),
                port: 6379,
            }),
            connects_ok: ok,
            connects_failed: failed,
            ..Default::default()
        }
    }

    #[test]
    fn failures_then_attempts_then_a_stable_order() {
        let mut rows = vec![
            row("b", "10.0.0.10", 1, 5),
            row("a", "10.0.0.9", 1, 5),
            row("a", "10.0.0.10", 1, 5),
            row("c", "10.0.0.1", 1, 9),
            row("d", "10.0.0.1", 4, 0),
        ];
        rank(&mut rows, RankBy::Failures, 4);
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.workload.as_ref().unwrap().pod.as_str(),
                    r.destination.as_ref().unwrap().ip.as_str(),
                )
            })
            .collect();
        // 10.0.0.9 before 10.0.0.10: by address, not by text.
        assert_eq!(
            got,
            [
                ("d", "10.0.0.1"),
                ("c", "10.0.0.1"),
                ("a", "10.0.0.9"),
                ("a", "10.0.0.10")
            ]
        );
    }

    #[test]
    fn names_round_trip_and_empty_is_failures() {
        for by in [RankBy::Failures, RankBy::Latency, RankBy::Open] {
            assert_eq!(RankBy::parse(by.as_str()), Some(by));
        }
        assert_eq!(RankBy::parse(""), Some(RankBy::Failures));
        assert_eq!(RankBy::parse("p99"), None);
    }
}
