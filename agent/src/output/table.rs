//! The refreshing terminal table: the findings first, then one row per
//! flow, then DNS and the listeners, with the loss counters in the header
//! so "nothing seen" can be told apart from "events lost". It fits the
//! terminal (the least important columns go first, names are cut in the
//! middle); `-o wide` shows every column in full.

use std::fmt::Write as _;

use sockeye_cli::{
    commands::conns::FLOW_COLUMNS,
    table::{left, right, Column, Table, Width},
};

use super::{
    findings_table::Shown,
    format::{age_s, bytes, duration_ns, socket},
};
use crate::snapshot::{FlowView, Health, Snapshot};

/// Renders the whole screen as a string (tests can check it without a TTY).
/// Shows at most `top` flows, the ones that most need attention first.
/// Everything in it is escaped: cells before they are measured (by the
/// table), and the whole once more, so no line a part writes on its own
/// (findings, DNS, listeners) lets a container's text reach the terminal raw.
pub fn render(
    snap: &Snapshot,
    findings: &Shown<'_>,
    health: &Health,
    interval_s: f64,
    filter: Option<&str>,
    top: usize,
    width: Width,
) -> String {
    sockeye_proto::text::escape_lines(&screen(
        snap, findings, health, interval_s, filter, top, width,
    ))
    .into_owned()
}

fn screen(
    snap: &Snapshot,
    findings: &Shown<'_>,
    health: &Health,
    interval_s: f64,
    filter: Option<&str>,
    top: usize,
    width: Width,
) -> String {
    let mut head = vec!["sockeye-agent".to_string(), format!("every {interval_s}s")];
    head.extend(filter.map(|f| format!("filter '{f}'")));
    head.extend([
        format!("events {}", health.events_received),
        format!("lost {}", health.lost_total),
        format!("sockets {}", health.tracked_sockets),
        format!("flows {}", health.flows),
    ]);
    let mut s = super::findings_table::joined("", &head, "  ", width);
    if health.lost_total > 0 {
        let lost: Vec<String> = health
            .lost
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s.push_str(&super::findings_table::wrapped("LOST: ", &lost, width));
    }
    s.push_str(&findings.render(width));
    let mut ranked: Vec<&FlowView> = snap.flows.iter().collect();
    // Failures first, then open sockets (leaks), then the busiest.
    ranked.sort_by_key(|f| {
        std::cmp::Reverse((f.failed_total(), f.open, f.connects_ok + f.interval.opened))
    });
    let mut table = Table::new(columns());
    for f in ranked.iter().take(top) {
        table.push(flow_row(f));
    }
    let _ = write!(s, "\n{}", table.render_in(width));
    if ranked.len() > top {
        let _ = writeln!(
            s,
            "... {} more flows not shown (narrow with --container, raise --top, or use -o json)",
            ranked.len() - top
        );
    }
    if snap.flows.is_empty() {
        let _ = writeln!(s, "(no TCP activity seen yet)");
    }
    s.push_str(&super::dns_table::render(snap, top, width));
    let mut listeners = Table::new(LISTENER_COLUMNS.to_vec());
    for l in &snap.listeners {
        listeners.push(vec![
            l.workload.label(),
            socket(&l.addr, l.port),
            format!("{}({})", l.comm, l.pid),
        ]);
    }
    let _ = write!(s, "\nLISTENERS\n{}", listeners.render_in(width));
    s
}

fn flow_row(f: &FlowView) -> Vec<String> {
    let lat = f.connect_latency;
    let get = |k: &str| f.connects_failed.get(k).copied().unwrap_or(0);
    let causes = format!(
        "{}/{}/{}/{}",
        get("refused"),
        get("timed_out"),
        get("unreachable"),
        get("aborted")
    );
    let states: Vec<String> = f
        .states
        .iter()
        .map(|(k, v)| format!("{}:{v}", short_state(k)))
        .collect();
    let dir = match f.direction {
        crate::aggregate::flows::Direction::Outbound => "out",
        crate::aggregate::flows::Direction::Inbound => "in",
    };
    vec![
        f.workload.label(),
        dir.to_string(),
        socket(&f.remote, f.port),
        f.connects_ok.to_string(),
        f.failed_total().to_string(),
        causes,
        duration_ns(lat.map(|l| l.p50_ns)),
        duration_ns(lat.map(|l| l.p90_ns)),
        duration_ns(lat.map(|l| l.p99_ns)),
        duration_ns(lat.map(|l| l.max_ns)),
        f.open.to_string(),
        if states.is_empty() {
            "-".into()
        } else {
            states.join(",")
        },
        if f.open > 0 {
            age_s(f.oldest_open_s)
        } else {
            "-".into()
        },
        f.open_older_than_1m.to_string(),
        format!("+{}/-{}", f.interval.opened, f.interval.closed),
        bytes(f.bytes_sent + f.bytes_received),
        if f.last_pid != 0 {
            format!("{}({})", f.last_comm, f.last_pid)
        } else {
            "-".into()
        },
    ]
}

/// The CLI's flow columns, then the live table's own: fitting a terminal
/// drops the interval's opens and closes and the bytes first, then >1m
/// with P90, and the process with MAX and the causes.
fn columns() -> Vec<Column> {
    let mut c = FLOW_COLUMNS.to_vec();
    c.extend([
        right(">1m").priority(5),
        right("+OPN/-CLS").priority(6),
        right("BYTES").priority(6),
        // "php-fpm(4411)": dropped whole rather than cut.
        left("PROCESS").priority(4),
    ]);
    c
}

const LISTENER_COLUMNS: [Column; 3] = [
    left("WORKLOAD").shrinks_to(30),
    left("ADDRESS").shrinks_to(21),
    left("PROCESS").priority(2),
];

fn short_state(s: &str) -> &str {
    match s {
        "ESTABLISHED" => "EST",
        "CLOSE_WAIT" => "CW",
        "TIME_WAIT" => "TW",
        "SYN_SENT" => "SYN",
        "FIN_WAIT1" => "FW1",
        "FIN_WAIT2" => "FW2",
        "LAST_ACK" => "LA",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::IpAddr};

    use super::*;
    use crate::{
        aggregate::flows::{Direction, Window},
        attribution::{
            container::{Owner, Runtime},
            Workload,
        },
    };

    fn flow(port: u16, failed: u64, open: u64) -> FlowView {
        FlowView {
            workload: Workload {
                cgroup_id: 9,
                cgroup_path: Some("/libpod_parent/libpod-0123456789abcdef".into()),
                owner: Some(Owner::Container {
                    runtime: Runtime::Podman,
                    id: "0123456789abcdef".into(),
                    pod_uid: None,
                }),
                pod: None,
            },
            direction: Direction::Outbound,
            remote: IpAddr::from([10, 0, 0, 1]),
            port,
            connects_ok: 3,
            connects_failed: BTreeMap::from([("refused", failed)]),
            connect_latency: None,
            connect_histogram: Default::default(),
            syn_retransmits: 0,
            open,
            states: BTreeMap::from([("CLOSE_WAIT", open)]),
            oldest_open_s: 90.0,
            open_older_than_1m: open,
            open_older_than_10m: 0,
            open_older_than_1h: 0,
            open_preexisting: 0,
            opened_total: 3,
            closed_total: 0,
            interval: Window::default(),
            bytes_sent: 0,
            bytes_received: 0,
            last_pid: 42,
            last_comm: "redis-cli".into(),
        }
    }

    #[test]
    fn ranks_problems_first_and_caps_rows() {
        let snap = Snapshot {
            flows: vec![flow(1, 0, 0), flow(2, 0, 7), flow(3, 5, 0)],
            listeners: vec![],
            listener_changes: vec![],
            dns_names: vec![],
            dns_totals: vec![],
            resource_failures: vec![],
        };
        let mut health = Health::default();
        health.lost.insert("kernel_ringbuf_full", 3);
        health.lost_total = 3;
        let out = render(&snap, &Shown::default(), &health, 2.0, None, 2, Width::All);
        assert!(!out.contains("FINDINGS"), "none open: {out}");
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("podman:")).collect();
        assert_eq!(rows.len(), 2, "{out}");
        assert!(rows[0].contains("10.0.0.1:3 "), "failures first: {out}");
        assert!(
            rows[1].contains("10.0.0.1:2 ") && rows[1].contains("CW:7"),
            "{out}"
        );
        assert!(out.contains("1 more flows not shown"), "{out}");
        assert!(out.contains("LOST: kernel_ringbuf_full=3"), "{out}");
        assert!(rows[1].contains("redis-cli(42)"), "{out}");
    }

    #[test]
    fn findings_come_first_under_the_header() {
        use crate::api::convert_findings::tests::{close_wait, pod_workload};
        let snap = Snapshot {
            flows: vec![flow(1, 0, 0)],
            listeners: vec![],
            listener_changes: vec![],
            dns_names: vec![],
            dns_totals: vec![],
            resource_failures: vec![],
        };
        let f = close_wait(pod_workload(42, "shop", "payments-7d9f8b", "app"));
        let shown = Shown {
            open: vec![&f],
            resolved: vec![],
            now_ns: f.updated_ns,
        };
        let out = render(&snap, &shown, &Health::default(), 2.0, None, 10, Width::All);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("sockeye-agent"), "{out}");
        assert_eq!(
            lines[2], "FINDINGS (1 open, 0 resolved in the last 10m)",
            "{out}"
        );
        assert!(
            lines[3].starts_with("ROOT CAUSE: shop/payments-7d9f8b/app"),
            "{out}"
        );
        let flows_header = lines
            .iter()
            .position(|l| l.starts_with("WORKLOAD"))
            .unwrap();
        assert!(flows_header > 6, "after the finding's block: {out}");
    }
}
