//! The live table of a busy node, fitted to terminals of 80, 120 and 200
//! columns and in full (`-o wide`), compared byte for byte with
//! `golden/*.txt`. After an intended change, run with `UPDATE_GOLDEN=1`
//! and review the diff of those files.

use std::{net::IpAddr, path::PathBuf};

use sockeye_cli::table::Width;

use super::{findings_table::Shown, table::render};
use crate::{
    aggregate::{
        flows::{Direction, Window},
        histogram::Percentiles,
    },
    api::convert_findings::tests::{close_wait, dns, pod_workload},
    attribution::Workload,
    dns::view::{DnsCounts, DnsNameView, DnsTotalView},
    findings::Finding,
    snapshot::{FlowView, Health, ListenerView, Snapshot},
};

const MS: u64 = 1_000_000;

fn checkout() -> Workload {
    pod_workload(42, "shop", "checkout-7d9f8b6c5-x2x4q", "app")
}

fn sidecar() -> Workload {
    pod_workload(
        43,
        "payments-production",
        "payments-api-6d8c9b7f4-k2j9p",
        "payments-api-sidecar-proxy",
    )
}

fn lat(p50: u64, p99: u64) -> Option<Percentiles> {
    Some(Percentiles {
        count: 10,
        p50_ns: p50,
        p90_ns: (p50 + p99) / 2,
        p99_ns: p99,
        max_ns: p99 + p99 / 10,
    })
}

struct F {
    workload: Workload,
    direction: Direction,
    remote: &'static str,
    port: u16,
    ok: u64,
    failed: &'static [(&'static str, u64)],
    latency: Option<Percentiles>,
    states: &'static [(&'static str, u64)],
    oldest_s: f64,
    bytes: u64,
    process: (&'static str, u32),
}

fn flow(f: F) -> FlowView {
    let open = f.states.iter().map(|(_, n)| n).sum();
    FlowView {
        workload: f.workload,
        direction: f.direction,
        remote: f.remote.parse::<IpAddr>().expect("address"),
        port: f.port,
        connects_ok: f.ok,
        connects_failed: f.failed.iter().copied().collect(),
        connect_latency: f.latency,
        connect_histogram: Default::default(),
        syn_retransmits: 0,
        open,
        states: f.states.iter().copied().collect(),
        oldest_open_s: f.oldest_s,
        open_older_than_1m: if f.oldest_s > 60.0 { open } else { 0 },
        open_older_than_10m: 0,
        open_older_than_1h: 0,
        open_preexisting: 0,
        opened_total: f.ok,
        closed_total: 0,
        interval: Window {
            opened: 2,
            closed: 1,
            ..Default::default()
        },
        bytes_sent: f.bytes,
        bytes_received: f.bytes * 3,
        last_pid: f.process.1,
        last_comm: f.process.0.into(),
    }
}

fn counts(queries: u64, timeouts: u64, servfail: u64, p50: u64, p99: u64) -> DnsCounts {
    let mut c = super::dns_table::tests::counts(queries, timeouts, servfail);
    c.retries = timeouts;
    c.fanout_wasted = 2;
    c.latency = lat(p50, p99);
    c
}

fn name(n: &str, c: DnsCounts) -> DnsNameView {
    DnsNameView {
        workload: checkout(),
        name: n.into(),
        qtype: "A".into(),
        server: "10.96.0.10:53".parse().expect("address"),
        counts: c,
        last_pid: 5120,
        last_comm: "php-fpm".into(),
    }
}

fn snapshot() -> Snapshot {
    let out = Direction::Outbound;
    Snapshot {
        flows: vec![
            flow(F {
                workload: checkout(),
                direction: out,
                remote: "10.96.0.12",
                port: 6379,
                ok: 212,
                failed: &[("refused", 3)],
                latency: lat(180_000, 1_020 * MS),
                states: &[("ESTABLISHED", 198), ("CLOSE_WAIT", 14)],
                oldest_s: 1860.0,
                bytes: 5_000_000,
                process: ("php-fpm", 4411),
            }),
            flow(F {
                workload: sidecar(),
                direction: out,
                remote: "10.0.0.10",
                port: 443,
                ok: 5,
                failed: &[],
                latency: lat(12 * MS, 25 * MS),
                states: &[("ESTABLISHED", 1)],
                oldest_s: 11_520.0,
                bytes: 40_000,
                process: ("envoy", 77),
            }),
            flow(F {
                workload: checkout(),
                direction: out,
                remote: "fd00::53",
                port: 443,
                ok: 0,
                failed: &[("timed_out", 2), ("unreachable", 1), ("aborted", 1)],
                latency: None,
                states: &[],
                oldest_s: 0.0,
                bytes: 0,
                process: ("curl", 901),
            }),
            flow(F {
                workload: checkout(),
                direction: Direction::Inbound,
                remote: "10.244.1.7",
                port: 8080,
                ok: 57,
                failed: &[],
                latency: None,
                states: &[("ESTABLISHED", 3)],
                oldest_s: 42.0,
                bytes: 900,
                process: ("node", 77),
            }),
        ],
        listeners: vec![ListenerView {
            workload: checkout(),
            addr: "0.0.0.0".parse().expect("address"),
            port: 8080,
            pid: 77,
            comm: "node".into(),
        }],
        listener_changes: vec![],
        dns_names: vec![
            name("api.stripe.com", counts(40, 1, 0, 1_200_000, 12_300_000)),
            name(
                "redis.shop.svc.cluster.local",
                counts(10, 0, 2, 150_000, 220_000),
            ),
        ],
        dns_totals: vec![DnsTotalView {
            workload: checkout(),
            server: None,
            counts: counts(50, 1, 2, 800_000, 12_300_000),
        }],
        resource_failures: vec![],
    }
}

fn findings() -> Vec<Finding> {
    let mut slow = dns(checkout(), "api.stripe.com");
    slow.next_step = "check the DNS server's upstream and the search path of shop/checkout-7d9f8b6c5-x2x4q/app: most of its lookups go to names that do not exist".into();
    vec![close_wait(sidecar()), slow]
}

fn screen(width: Width) -> String {
    let f = findings();
    let shown = Shown {
        open: f.iter().collect(),
        resolved: vec![],
        now_ns: 1000 * 1_000_000_000,
    };
    let mut health = Health {
        events_received: 48_213,
        tracked_sockets: 216,
        flows: 4,
        ..Default::default()
    };
    for (k, v) in [
        ("kernel_ringbuf_full", 12),
        ("kernel_dns_ringbuf_full", 237),
        ("user_flows_evicted", 3),
    ] {
        health.lost.insert(k, v);
        health.lost_total += v;
    }
    render(&snapshot(), &shown, &health, 2.0, Some("shop"), 40, width)
}

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/output/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        got == want,
        "{name} differs from {}\n--- got:\n{got}\n--- want:\n{want}",
        path.display()
    );
}

#[test]
fn the_live_table_fits_80_120_and_200_columns() {
    for cols in [80, 120, 200] {
        let text = screen(Width::Fit(cols));
        check(&format!("table.fit{cols}.txt"), &text);
        let wide: Vec<&str> = text.lines().filter(|l| l.chars().count() > cols).collect();
        assert!(wide.is_empty(), "lines over {cols} columns: {wide:#?}");
    }
}

#[test]
fn wide_shows_every_column_in_full() {
    let text = screen(Width::All);
    check("table.wide.txt", &text);
    let header = text
        .lines()
        .find(|l| l.starts_with("WORKLOAD  "))
        .expect("the flows' header");
    for title in [">1m", "+OPN/-CLS", "BYTES", "PROCESS", "REF/TMO/UNR/ABT"] {
        assert!(header.contains(title), "{title} in {header}");
    }
    assert!(text
        .contains("payments-production/payments-api-6d8c9b7f4-k2j9p/payments-api-sidecar-proxy"));
}
