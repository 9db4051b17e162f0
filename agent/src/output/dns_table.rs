//! The DNS part of the terminal table: totals per workload, then names,
//! the ones with timeouts and failures first.

use std::fmt::Write as _;

use super::format::{columns, duration_ns, header, truncate, Column};
use crate::{dns::view::DnsCounts, snapshot::Snapshot};

const COLUMNS: [Column; 17] = [
    ("WORKLOAD", 26, false),
    ("NAME", 34, false),
    ("TYPE", 5, false),
    ("SERVER", 21, false),
    ("Q", 6, true),
    ("RETRY", 5, true),
    ("OK", 6, true),
    ("NXDOM", 5, true),
    ("FAIL", 4, true),
    ("TMO", 4, true),
    ("P50", 8, true),
    ("P90", 8, true),
    ("P99", 8, true),
    ("MAX", 8, true),
    ("WASTED", 6, true),
    ("TC>TCP", 6, true),
    ("PROCESS", 0, false),
];

/// Renders the DNS section (empty when there is no DNS activity). Shows at
/// most `top` names.
pub fn render(snap: &Snapshot, top: usize) -> String {
    let mut s = String::new();
    if snap.dns_totals.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\nDNS\n{}", header(&COLUMNS));
    for t in snap.dns_totals.iter().filter(|t| t.server.is_none()) {
        let _ = writeln!(
            s,
            "{}",
            line(
                &t.workload.label(),
                "(all names)",
                "*",
                "(all)",
                &t.counts,
                ""
            )
        );
    }
    let mut ranked: Vec<_> = snap.dns_names.iter().collect();
    ranked.sort_by_key(|n| {
        std::cmp::Reverse((n.counts.timeouts + n.counts.failures(), n.counts.queries))
    });
    for n in ranked.iter().take(top) {
        let process = if n.last_pid != 0 {
            format!("{}({})", n.last_comm, n.last_pid)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "{}",
            line(
                &n.workload.label(),
                &n.name,
                &n.qtype,
                &n.server.to_string(),
                &n.counts,
                &process
            )
        );
    }
    if ranked.len() > top {
        let _ = writeln!(
            s,
            "... {} more names not shown (narrow with --container, raise --top, or use -o json)",
            ranked.len() - top
        );
    }
    s
}

fn line(
    workload: &str,
    name: &str,
    qtype: &str,
    server: &str,
    c: &DnsCounts,
    process: &str,
) -> String {
    let lat = c.latency;
    let rcode = |k: &str| c.rcodes.get(k).copied().unwrap_or(0);
    let cells = [
        truncate(workload, 26),
        truncate(name, 34),
        qtype.to_string(),
        truncate(server, 21),
        c.queries.to_string(),
        c.retries.to_string(),
        rcode("NOERROR").to_string(),
        rcode("NXDOMAIN").to_string(),
        c.failures().to_string(),
        c.timeouts.to_string(),
        duration_ns(lat.map(|l| l.p50_ns)),
        duration_ns(lat.map(|l| l.p90_ns)),
        duration_ns(lat.map(|l| l.p99_ns)),
        duration_ns(lat.map(|l| l.max_ns)),
        c.fanout_wasted.to_string(),
        format!("{}/{}", c.truncated, c.tcp_after_truncation),
        process.to_string(),
    ];
    columns(&cells, &COLUMNS)
}
