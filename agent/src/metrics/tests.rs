//! Unit tests of the metrics: events into a real aggregator, folds, and
//! the rendered text.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use sockeye_common::{event::EventKind, tcp_state};

use super::{
    families::render, labels::WorkloadLabels, process::Process, Capacities, Metrics, MetricsConfig,
    MetricsHandle,
};
use crate::{
    aggregate::{
        tests::{closed, ev},
        Aggregator, Limits,
    },
    attribution::{
        container::{Owner, Runtime},
        pod_meta::{MetaSource, PodMeta, WorkloadRef},
        Workload,
    },
    dns::aggregate::{DnsAggregates, DnsStats, RowKey},
    snapshot::Health,
};

const MS: u64 = 1_000_000;

fn pod(container: Option<&str>, owner: Option<&str>) -> Workload {
    Workload {
        cgroup_id: 42,
        cgroup_path: Some("/kubepods.slice/x".into()),
        owner: Some(Owner::Container {
            runtime: Runtime::Containerd,
            id: "0123456789abcdef".into(),
            pod_uid: Some("1111-2222".into()),
        }),
        pod: Some(PodMeta {
            namespace: "shop".into(),
            name: "checkout-7d9f8b6c5-x2x4q".into(),
            uid: Some("1111-2222".into()),
            container: container.map(Into::into),
            workload: owner.map(|name| WorkloadRef {
                kind: "Deployment".into(),
                name: name.into(),
            }),
            labels: BTreeMap::new(),
            source: MetaSource::KubeApi,
        }),
    }
}

/// cgroup 42 is the "app" container of a "checkout" Deployment's pod.
fn checkout(_: u64) -> WorkloadLabels {
    WorkloadLabels::of(&pod(Some("app"), Some("checkout")))
}

/// A completed connect of `cookie` to port `port` taking `latency_ns`,
/// closed at once when `close`.
fn connect(agg: &mut Aggregator, cookie: u64, port: u16, latency_ns: u64, close: bool) {
    let mut e = ev(EventKind::Established, cookie, 1000 * MS + cookie);
    e.raw.remote_port = port;
    e.raw.duration_ns = latency_ns;
    agg.handle(&e);
    if close {
        let mut c = closed(cookie, 1001 * MS + cookie, tcp_state::LAST_ACK);
        c.raw.remote_port = port;
        agg.handle(&c);
    }
}

fn refused(agg: &mut Aggregator, cookie: u64, port: u16) {
    let mut c = closed(cookie, 1000 * MS + cookie, tcp_state::SYN_SENT);
    c.raw.remote_port = port;
    c.raw.errno = 111;
    agg.handle(&c);
}

fn metrics(max_label_sets: usize) -> (Metrics, MetricsHandle) {
    Metrics::new(
        MetricsConfig { max_label_sets },
        Capacities {
            sockets: 100,
            flows: 16,
            dns_names: 10,
            dns_pending: 20,
        },
    )
}

fn fold(m: &mut Metrics, agg: &mut Aggregator, dns: &DnsAggregates, now_s: u64) {
    m.fold(agg, dns, Health::default(), &mut checkout, now_s);
}

fn text(handle: &MetricsHandle) -> String {
    render(
        handle.latest(),
        Process {
            resident_bytes: Some(4096),
            cpu_seconds: Some(0.5),
        },
    )
    .expect("renders")
}

/// The value of the sample line that starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

const APP: &str = r#"namespace="shop",workload="checkout",container="app""#;

#[test]
fn workload_labels_never_carry_uids_or_ids() {
    let l = WorkloadLabels::of(&pod(Some("app"), Some("checkout")));
    assert_eq!(
        (
            l.namespace.as_str(),
            l.workload.as_str(),
            l.container.as_str()
        ),
        ("shop", "checkout", "app")
    );
    let bare = WorkloadLabels::of(&pod(None, None));
    assert_eq!(
        (bare.workload.as_str(), bare.container.as_str()),
        ("checkout-7d9f8b6c5-x2x4q", ""),
        "no owner: the pod's name; the sandbox has no container"
    );
    let mut w = pod(None, None);
    w.pod = None;
    assert_eq!(WorkloadLabels::of(&w).workload, "unnamed_pod", "no uid");
    w.owner = Some(Owner::Pod {
        pod_uid: "1111-2222".into(),
    });
    assert_eq!(WorkloadLabels::of(&w).workload, "unnamed_pod");
    w.owner = Some(Owner::Container {
        runtime: Runtime::Podman,
        id: "4f2a9c1e0b7d4f2a".into(),
        pod_uid: None,
    });
    assert_eq!(WorkloadLabels::of(&w).workload, "podman:4f2a9c1e0b7d");
    w.owner = Some(Owner::Host);
    assert_eq!(WorkloadLabels::of(&w).workload, "host");
    w.owner = None;
    let gone = WorkloadLabels::of(&w);
    assert_eq!(
        (gone.namespace.as_str(), gone.workload.as_str()),
        ("", "unknown")
    );
}

#[test]
fn renders_every_family_from_a_fixed_state() {
    let mut agg = Aggregator::new(Limits::default());
    connect(&mut agg, 1, 6379, 2 * MS, true);
    connect(&mut agg, 2, 6379, 2 * MS, true);
    connect(&mut agg, 3, 6379, 300 * MS, true);
    connect(&mut agg, 4, 6379, 40_000, false);
    refused(&mut agg, 5, 6380);
    let mut accepted = ev(EventKind::Accepted, 6, 1000 * MS);
    accepted.raw.local_port = 8080;
    agg.handle(&accepted);

    let mut dns = DnsAggregates::new(10);
    let mut stats = DnsStats {
        queries: 4,
        timeouts: 1,
        ..Default::default()
    };
    stats.rcodes[0] = 2; // NOERROR
    stats.rcodes[3] = 1; // NXDOMAIN
    for ms in [3, 4, 30] {
        stats.latency.record(ms * MS);
    }
    let server: SocketAddr = "10.96.0.10:53".parse().unwrap();
    dns.rows.insert(
        RowKey {
            cgroup_id: 42,
            name: Arc::from("redis.shop.svc.cluster.local"),
            qtype: 1,
            server,
        },
        stats,
    );
    let mut health = Health {
        events_received: 11,
        tracked_sockets: 2,
        flows: 3,
        ..Default::default()
    };
    health.lost.insert("kernel_ringbuf_full", 2);
    health.lost.insert("user_flows_evicted", 0);
    health.dns.packets = 9;
    health.dns.parse_errors.insert("label_too_long", 1);

    let (mut m, handle) = metrics(200);
    m.fold(&mut agg, &dns, health, &mut checkout, 0);
    let t = text(&handle);
    println!("{t}");

    for (family, kind) in [
        ("sockeye_tcp_connect_duration_seconds", "histogram"),
        ("sockeye_tcp_connect_failures", "counter"),
        ("sockeye_tcp_syn_retransmits", "counter"),
        ("sockeye_tcp_connections", "counter"),
        ("sockeye_tcp_open_sockets", "gauge"),
        ("sockeye_dns_request_duration_seconds", "histogram"),
        ("sockeye_dns_queries", "counter"),
        ("sockeye_dns_responses", "counter"),
        ("sockeye_dns_timeouts", "counter"),
        ("sockeye_build", "info"),
        ("sockeye_events_received", "counter"),
        ("sockeye_kernel_events_emitted", "counter"),
        ("sockeye_dropped_events", "counter"),
        ("sockeye_untracked_socket_events", "counter"),
        ("sockeye_dns_malformed_messages", "counter"),
        ("sockeye_table_entries", "gauge"),
        ("sockeye_table_capacity", "gauge"),
        ("sockeye_metrics_overflow", "counter"),
        ("sockeye_process_resident_memory_bytes", "gauge"),
        ("sockeye_process_cpu_seconds", "counter"),
    ] {
        assert!(
            t.contains(&format!("\n# TYPE {family} {kind}\n")),
            "{family} {kind} missing"
        );
    }
    assert!(t.ends_with("# EOF\n"));

    // The encoder puts `le` first.
    let out = |le: &str| format!(r#"{{{le}{APP},destination="10.0.0.9:6379"}}"#);
    let h = "sockeye_tcp_connect_duration_seconds";
    assert_eq!(value(&t, &format!("{h}_count{}", out(""))), Some(4.0));
    assert_eq!(value(&t, &format!("{h}_sum{}", out(""))), Some(0.30404));
    for (le, n) in [
        ("0.0001", 1.0),
        ("0.0025", 3.0),
        ("0.25", 3.0),
        ("0.5", 4.0),
        ("+Inf", 4.0),
    ] {
        let bucket = format!("{h}_bucket{}", out(&format!(r#"le="{le}","#)));
        assert_eq!(value(&t, &bucket), Some(n), "{bucket}");
    }

    let refused_series = format!(
        r#"sockeye_tcp_connect_failures_total{{{APP},destination="10.0.0.9:6380",cause="refused"}}"#
    );
    assert_eq!(value(&t, &refused_series), Some(1.0));
    let timed_out = refused_series.replace("refused", "timed_out");
    assert_eq!(value(&t, &timed_out), Some(0.0), "every cause, zeros too");
    assert_eq!(
        value(
            &t,
            &format!(
                r#"sockeye_tcp_connections_total{{{APP},direction="inbound",destination=":8080"}}"#
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            &format!(
                r#"sockeye_tcp_open_sockets{{{APP},direction="outbound",destination="10.0.0.9:6379",state="ESTABLISHED"}}"#
            )
        ),
        Some(1.0),
        "the connect left open"
    );
    assert!(
        !t.contains(r#"state="CLOSE_WAIT""#),
        "states with no socket are left out"
    );

    let srv = format!(r#"{APP},server="10.96.0.10:53""#);
    let d = "sockeye_dns_request_duration_seconds";
    assert_eq!(value(&t, &format!("{d}_count{{{srv}}}")), Some(3.0));
    assert_eq!(
        value(&t, &format!("{d}_bucket{{le=\"0.005\",{srv}}}")),
        Some(2.0)
    );
    assert_eq!(
        value(&t, &format!("sockeye_dns_queries_total{{{srv}}}")),
        Some(4.0)
    );
    for (rcode, n) in [("NOERROR", 2.0), ("NXDOMAIN", 1.0), ("SERVFAIL", 0.0)] {
        let s = format!("sockeye_dns_responses_total{{{srv},rcode=\"{rcode}\"}}");
        assert_eq!(value(&t, &s), Some(n), "{rcode}");
    }
    assert_eq!(
        value(&t, &format!("sockeye_dns_timeouts_total{{{srv}}}")),
        Some(1.0)
    );

    for (series, v) in [
        (r#"sockeye_events_received_total{ring="tcp"}"#, 11.0),
        (r#"sockeye_events_received_total{ring="dns"}"#, 9.0),
        (
            r#"sockeye_dropped_events_total{counter="kernel_ringbuf_full"}"#,
            2.0,
        ),
        (
            r#"sockeye_dropped_events_total{counter="user_flows_evicted"}"#,
            0.0,
        ),
        (
            r#"sockeye_dropped_events_total{counter="user_metrics_flows_lost"}"#,
            0.0,
        ),
        (
            r#"sockeye_dns_malformed_messages_total{reason="label_too_long"}"#,
            1.0,
        ),
        (r#"sockeye_table_entries{table="flows"}"#, 3.0),
        (r#"sockeye_table_capacity{table="flows"}"#, 16.0),
        (
            r#"sockeye_table_entries{table="metrics_tcp_label_sets"}"#,
            3.0,
        ),
        (
            r#"sockeye_table_capacity{table="metrics_tcp_label_sets"}"#,
            200.0,
        ),
        (r#"sockeye_table_entries{table="dns_names"}"#, 0.0),
        (r#"sockeye_metrics_overflow_total{group="tcp"}"#, 0.0),
        ("sockeye_process_resident_memory_bytes", 4096.0),
        ("sockeye_process_cpu_seconds_total", 0.5),
    ] {
        assert_eq!(value(&t, series), Some(v), "{series}");
    }
    let version = format!(
        r#"sockeye_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&t, &version), Some(1.0));
}

#[test]
fn label_sets_past_the_bound_are_counted_as_other() {
    let mut agg = Aggregator::new(Limits::default());
    let (mut m, handle) = metrics(3);
    let dns = DnsAggregates::new(1);
    // Four destinations, one fold each, but room for three label sets.
    for port in 1..=4u16 {
        connect(&mut agg, u64::from(port), port, MS, true);
        fold(&mut m, &mut agg, &dns, 0);
    }
    let t = text(&handle);
    let dests: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("sockeye_tcp_connections_total{"))
        .collect();
    assert_eq!(dests.len(), 4, "three label sets and other: {dests:#?}");
    let other = r#"sockeye_tcp_connections_total{namespace="other",workload="other",container="other",direction="outbound",destination="other"}"#;
    assert_eq!(value(&t, other), Some(1.0));
    assert_eq!(connections(&handle, 4), 0.0, "the fourth is in other");
    let total: f64 = dests
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 4.0, "nothing lost to the bound");
    assert_eq!(
        value(&t, r#"sockeye_metrics_overflow_total{group="tcp"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            r#"sockeye_table_entries{table="metrics_tcp_label_sets"}"#
        ),
        Some(3.0)
    );

    // Label sets idle for an hour make room for a new one; busy ones stay.
    let half = super::IDLE_EXPIRY_S / 2;
    connect(&mut agg, 10, 1, MS, true);
    fold(&mut m, &mut agg, &dns, half);
    connect(&mut agg, 11, 5, MS, true);
    fold(&mut m, &mut agg, &dns, super::IDLE_EXPIRY_S + 1);
    assert_eq!(connections(&handle, 5), 1.0);
    assert_eq!(connections(&handle, 1), 2.0);
    assert_eq!(connections(&handle, 2), 0.0, "expired");
}

/// The connections counted for port `port`, as rendered.
fn connections(handle: &MetricsHandle, port: u16) -> f64 {
    let series = format!(
        r#"sockeye_tcp_connections_total{{{APP},direction="outbound",destination="10.0.0.9:{port}"}}"#
    );
    value(&text(handle), &series).unwrap_or(0.0)
}

#[test]
fn counters_stay_monotonic_when_flows_are_evicted_or_expire() {
    let limits = Limits {
        max_flows: 16,
        flow_idle_ns: 60_000 * MS,
        ..Limits::default()
    };
    let mut agg = Aggregator::new(limits);
    let (mut m, handle) = metrics(200);
    let dns = DnsAggregates::new(1);
    connect(&mut agg, 1, 6379, MS, true);
    connect(&mut agg, 2, 6379, MS, true);
    fold(&mut m, &mut agg, &dns, 0);
    assert_eq!(connections(&handle, 6379), 2.0);

    // Three more connects, then 16 newer flows push it out before the
    // next fold: its last three are not lost.
    for cookie in 3..6 {
        connect(&mut agg, cookie, 6379, MS, true);
    }
    for port in 0..16u16 {
        let mut e = ev(EventKind::Established, 100 + u64::from(port), 5000 * MS);
        e.raw.remote_port = 20_000 + port;
        e.raw.duration_ns = MS;
        agg.handle(&e);
    }
    assert!(!agg.flows.keys().any(|k| k.port == 6379), "evicted");
    fold(&mut m, &mut agg, &dns, 1);
    assert_eq!(connections(&handle, 6379), 5.0);

    // Created again from nothing: counted on top, never backwards.
    connect(&mut agg, 7, 6379, MS, true);
    fold(&mut m, &mut agg, &dns, 2);
    assert_eq!(connections(&handle, 6379), 6.0);
    assert_eq!(
        value(
            &text(&handle),
            &format!(
                "sockeye_tcp_connect_duration_seconds_count{{{APP},destination=\"10.0.0.9:6379\"}}"
            )
        ),
        Some(6.0)
    );

    // A flow forgotten as idle after a last connect keeps it too.
    connect(&mut agg, 8, 6379, MS, true);
    agg.sweep(1_000_000 * MS);
    assert!(!agg.flows.keys().any(|k| k.port == 6379), "expired");
    fold(&mut m, &mut agg, &dns, 3);
    assert_eq!(connections(&handle, 6379), 7.0);
    assert_eq!(
        value(
            &text(&handle),
            r#"sockeye_dropped_events_total{counter="user_metrics_flows_lost"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn dns_totals_survive_names_folded_into_other() {
    let server: SocketAddr = "10.96.0.10:53".parse().unwrap();
    let row = |name: &str| RowKey {
        cgroup_id: 42,
        name: Arc::from(name),
        qtype: 1,
        server,
    };
    let stats = |queries| DnsStats {
        queries,
        ..Default::default()
    };
    let mut dns = DnsAggregates::new(10);
    dns.rows.insert(row("a.test"), stats(3));
    dns.rows.insert(row("b.test"), stats(2));
    let mut agg = Aggregator::new(Limits::default());
    let (mut m, handle) = metrics(200);
    let series = format!(r#"sockeye_dns_queries_total{{{APP},server="10.96.0.10:53"}}"#);
    fold(&mut m, &mut agg, &dns, 0);
    assert_eq!(value(&text(&handle), &series), Some(5.0));

    // The way DnsAggregates::prune folds a row: its counts move to "other".
    let folded = dns.rows.remove(&row("a.test")).unwrap();
    let mut other = stats(1);
    other.merge(&folded);
    dns.rows.insert(
        RowKey {
            name: Arc::from(crate::dns::aggregate::OTHER_NAME),
            qtype: crate::dns::aggregate::OTHER_QTYPE,
            ..row("")
        },
        other,
    );
    fold(&mut m, &mut agg, &dns, 1);
    assert_eq!(value(&text(&handle), &series), Some(6.0), "3 moved, 1 new");
}
