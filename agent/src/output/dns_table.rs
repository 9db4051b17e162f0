//! The DNS part of the terminal table: totals per workload, then names,
//! the ones with timeouts and failures first; fitted like the flows.

use std::fmt::Write as _;

use sockeye_cli::{
    commands::dns::DNS_COLUMNS,
    table::{left, right, Column, Table, Width},
};

use super::format::duration_ns;
use crate::{dns::view::DnsCounts, snapshot::Snapshot};

/// The CLI's DNS columns, then the live table's own: fitting a terminal
/// drops TC>TCP first, then WASTED and the process with MAX.
fn columns() -> Vec<Column> {
    let mut c = DNS_COLUMNS.to_vec();
    c.extend([
        right("WASTED").priority(5),
        right("TC>TCP").priority(6),
        left("PROCESS").priority(5),
    ]);
    c
}

/// Renders the DNS section (empty when there is no DNS activity). Shows at
/// most `top` names.
pub fn render(snap: &Snapshot, top: usize, width: Width) -> String {
    let mut s = String::new();
    if snap.dns_totals.is_empty() {
        return s;
    }
    let mut table = Table::new(columns());
    for t in snap.dns_totals.iter().filter(|t| t.server.is_none()) {
        table.push(line(
            &t.workload.label(),
            "(all names)",
            "*",
            "(all)",
            &t.counts,
            "",
        ));
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
        table.push(line(
            &n.workload.label(),
            &n.name,
            &n.qtype,
            &n.server.to_string(),
            &n.counts,
            &process,
        ));
    }
    let _ = write!(s, "\nDNS\n{}", table.render_in(width));
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
) -> Vec<String> {
    let lat = c.latency;
    let rcode = |k: &str| c.rcodes.get(k).copied().unwrap_or(0);
    vec![
        workload.to_string(),
        name.to_string(),
        qtype.to_string(),
        server.to_string(),
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
    ]
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        attribution::Workload,
        dns::{
            aggregate::DnsWindow,
            view::{DnsNameView, DnsTotalView},
        },
    };

    /// Counts of `queries`, `timeouts` and `servfail` (the rest NOERROR).
    pub(in crate::output) fn counts(queries: u64, timeouts: u64, servfail: u64) -> DnsCounts {
        let mut rcodes = BTreeMap::new();
        rcodes.insert("NOERROR", queries - timeouts - servfail);
        if servfail > 0 {
            rcodes.insert("SERVFAIL", servfail);
        }
        DnsCounts {
            queries,
            tcp_queries: 0,
            retries: 0,
            answers: queries - timeouts,
            rcodes,
            empty_answers: 0,
            timeouts,
            late_answers: 0,
            truncated: 0,
            tcp_after_truncation: 0,
            fanout_lookups: 0,
            fanout_wasted: 0,
            latency: None,
            latency_histogram: Default::default(),
            interval: DnsWindow::default(),
        }
    }

    fn name(n: &str, c: DnsCounts) -> DnsNameView {
        DnsNameView {
            workload: Workload {
                cgroup_id: 7,
                cgroup_path: None,
                owner: None,
                pod: None,
            },
            name: n.into(),
            qtype: "A".into(),
            server: "10.96.0.10:53".parse().unwrap(),
            counts: c,
            last_pid: 42,
            last_comm: "php-fpm".into(),
        }
    }

    #[test]
    fn totals_first_then_problems_first_and_capped() {
        let snap = Snapshot {
            flows: vec![],
            listeners: vec![],
            listener_changes: vec![],
            dns_names: vec![
                name("busy.test", counts(100, 0, 0)),
                name("down.test", counts(3, 3, 0)),
                name("broken.test", counts(2, 0, 2)),
            ],
            dns_totals: vec![DnsTotalView {
                workload: name("x", counts(1, 0, 0)).workload,
                server: None,
                counts: counts(105, 3, 2),
            }],
            resource_failures: vec![],
        };
        let out = render(&snap, 2, Width::All);
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("cgroup:7")).collect();
        assert_eq!(rows.len(), 3, "{out}");
        assert!(
            rows[0].contains("(all names)") && rows[0].contains(" 105 "),
            "{out}"
        );
        assert!(rows[1].contains("down.test"), "timeouts first: {out}");
        assert!(rows[2].contains("broken.test"), "{out}");
        assert!(out.contains("1 more names not shown"), "{out}");
        assert!(rows[1].contains("php-fpm(42)"), "{out}");
    }

    #[test]
    fn nothing_without_dns_activity() {
        let snap = Snapshot {
            flows: vec![],
            listeners: vec![],
            listener_changes: vec![],
            dns_names: vec![],
            dns_totals: vec![],
            resource_failures: vec![],
        };
        assert_eq!(render(&snap, 10, Width::All), "");
    }
}
