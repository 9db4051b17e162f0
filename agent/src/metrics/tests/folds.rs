//! The label-set bound, and counters that never go down.

use super::*;

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
    let half = crate::metrics::IDLE_EXPIRY_S / 2;
    connect(&mut agg, 10, 1, MS, true);
    fold(&mut m, &mut agg, &dns, half);
    connect(&mut agg, 11, 5, MS, true);
    fold(&mut m, &mut agg, &dns, crate::metrics::IDLE_EXPIRY_S + 1);
    assert_eq!(connections(&handle, 5), 1.0);
    assert_eq!(connections(&handle, 1), 2.0);
    assert_eq!(connections(&handle, 2), 0.0, "expired");
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
