//! The findings families: the open gauge per label set (bounded), and the
//! machinery's counters by kind.

use super::*;
use crate::{
    api::convert_findings::tests::{close_wait, dns, pod_workload},
    findings::{Kind, Severity},
    metrics::findings::FindingsCounts,
};

const PAYMENTS: &str = r#"namespace="shop",workload="payments",container="app""#;

fn open_gauge(t: &str, kind: &str, severity: &str, workload: &str) -> Option<f64> {
    value(
        t,
        &format!(r#"sockeye_findings_open{{kind="{kind}",severity="{severity}",{workload}}}"#),
    )
}

#[test]
fn open_findings_by_kind_severity_and_subject_and_counters_by_kind() {
    let (mut m, handle) = metrics(200);
    let mut agg = Aggregator::new(Limits::default());
    let dns_aggs = DnsAggregates::new(1);
    // Two replicas of payments hold CLOSE_WAIT sockets; one also has slow DNS.
    let a = close_wait(pod_workload(42, "shop", "payments-7d9f8b", "app"));
    let b = close_wait(pod_workload(43, "shop", "payments-5c4d2e", "app"));
    let d = dns(pod_workload(42, "shop", "payments-7d9f8b", "app"), "x.test");
    let mut counts = FindingsCounts {
        evaluations: 30,
        watch_missed: 2,
        probe_failures: 1,
        ..Default::default()
    };
    counts.opened[crate::findings::kind_index(Kind::CloseWait)] = 2;
    counts.opened[crate::findings::kind_index(Kind::DnsDegradation)] = 1;
    m.fold_findings(&[&a, &b, &d], counts.clone(), 0, 0);
    fold(&mut m, &mut agg, &dns_aggs, 0);
    let t = text(&handle);
    assert_eq!(
        open_gauge(&t, "close_wait", "critical", PAYMENTS),
        Some(2.0),
        "{t}"
    );
    assert_eq!(
        open_gauge(&t, "dns_degradation", "warning", PAYMENTS),
        Some(1.0)
    );
    assert_eq!(
        value(&t, r#"sockeye_findings_opened_total{kind="close_wait"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(
            &t,
            r#"sockeye_findings_opened_total{kind="dns_degradation"}"#
        ),
        Some(1.0)
    );
    for kind in Kind::ALL {
        let series = format!(
            r#"sockeye_findings_resolved_total{{kind="{}"}}"#,
            kind.name()
        );
        assert_eq!(value(&t, &series), Some(0.0), "every kind has its series");
    }
    assert_eq!(value(&t, "sockeye_findings_evaluations_total"), Some(30.0));
    assert_eq!(value(&t, "sockeye_findings_watch_missed_total"), Some(2.0));
    assert_eq!(
        value(&t, "sockeye_findings_probe_failures_total"),
        Some(1.0)
    );

    // One resolves and the other escalates: the old series read 0.
    let mut escalated = d.clone();
    escalated.severity = Severity::Critical;
    counts.resolved[crate::findings::kind_index(Kind::CloseWait)] = 2;
    counts.evaluations = 31;
    m.fold_findings(&[&escalated], counts, 0, 1);
    fold(&mut m, &mut agg, &dns_aggs, 1);
    let t = text(&handle);
    assert_eq!(
        open_gauge(&t, "close_wait", "critical", PAYMENTS),
        Some(0.0)
    );
    assert_eq!(
        open_gauge(&t, "dns_degradation", "warning", PAYMENTS),
        Some(0.0)
    );
    assert_eq!(
        open_gauge(&t, "dns_degradation", "critical", PAYMENTS),
        Some(1.0)
    );
    assert_eq!(
        value(&t, r#"sockeye_findings_resolved_total{kind="close_wait"}"#),
        Some(2.0)
    );
}

#[test]
fn open_finding_label_sets_are_bounded() {
    let (mut m, handle) = metrics(2);
    let mut agg = Aggregator::new(Limits::default());
    let dns_aggs = DnsAggregates::new(1);
    let found: Vec<_> = ["a-1", "b-1", "c-1"]
        .iter()
        .enumerate()
        .map(|(i, pod)| close_wait(pod_workload(i as u64, "shop", pod, "app")))
        .collect();
    let refs: Vec<_> = found.iter().collect();
    m.fold_findings(&refs, FindingsCounts::default(), 0, 0);
    fold(&mut m, &mut agg, &dns_aggs, 0);
    let t = text(&handle);
    let other = r#"namespace="other",workload="other",container="other""#;
    assert_eq!(
        open_gauge(&t, "close_wait", "critical", other),
        Some(1.0),
        "{t}"
    );
    let total: f64 = t
        .lines()
        .filter(|l| l.starts_with("sockeye_findings_open{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 3.0, "nothing lost to the bound");
    assert_eq!(
        value(&t, r#"sockeye_metrics_overflow_total{group="findings"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            r#"sockeye_table_entries{table="metrics_findings_label_sets"}"#
        ),
        Some(2.0)
    );
}

#[test]
fn no_findings_families_when_detection_is_off() {
    let (mut m, handle) = metrics(2);
    let mut agg = Aggregator::new(Limits::default());
    fold(&mut m, &mut agg, &DnsAggregates::new(1), 0);
    assert!(!text(&handle).contains("sockeye_findings_"));
}

fn start_time(t: &str, id: &str) -> Option<f64> {
    t.lines()
        .filter(|l| l.starts_with("sockeye_finding_start_time_seconds{"))
        .find(|l| l.contains(&format!(r#"finding_id="{id}""#)))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[test]
fn each_open_finding_has_a_series_with_its_id_destination_and_start() {
    let (mut m, handle) = metrics(200);
    let mut agg = Aggregator::new(Limits::default());
    let dns_aggs = DnsAggregates::new(1);
    let a = close_wait(pod_workload(42, "shop", "payments-7d9f8b", "app"));
    let b = close_wait(pod_workload(43, "shop", "payments-5c4d2e", "app"));
    // Monotonic 0 is Unix 1_800_000_000 s: the problem began 70 s later.
    let offset = 1_800_000_000 * 1_000_000_000;
    m.fold_findings(&[&a, &b], FindingsCounts::default(), offset, 0);
    fold(&mut m, &mut agg, &dns_aggs, 0);
    let t = text(&handle);
    let series = format!(
        r#"sockeye_finding_start_time_seconds{{finding_id="{}",kind="close_wait",severity="critical",{PAYMENTS},destination="10.0.1.12:6379"}}"#,
        a.id
    );
    assert_eq!(value(&t, &series), Some(1_800_000_070.0), "{t}");
    assert_eq!(start_time(&t, &b.id), Some(1_800_000_070.0));
    assert!(t.contains("# TYPE sockeye_finding_start_time_seconds gauge\n"));
    assert!(t.contains("# UNIT sockeye_finding_start_time_seconds seconds\n"));

    // Resolved: its series is gone (Prometheus marks it stale), not 0.
    m.fold_findings(&[&b], FindingsCounts::default(), offset, 1);
    fold(&mut m, &mut agg, &dns_aggs, 1);
    let t = text(&handle);
    assert_eq!(start_time(&t, &a.id), None, "{t}");
    assert!(start_time(&t, &b.id).is_some());
}

#[test]
fn finding_series_are_bounded_worst_first_and_the_rest_counted() {
    let (mut m, handle) = metrics(2);
    let mut agg = Aggregator::new(Limits::default());
    let dns_aggs = DnsAggregates::new(1);
    let found: Vec<_> = (0..5u64)
        .map(|i| close_wait(pod_workload(i, "shop", &format!("p{i}-1"), "app")))
        .collect();
    let refs: Vec<_> = found.iter().collect();
    m.fold_findings(&refs, FindingsCounts::default(), 0, 0);
    fold(&mut m, &mut agg, &dns_aggs, 0);
    m.fold_findings(&refs, FindingsCounts::default(), 0, 1);
    fold(&mut m, &mut agg, &dns_aggs, 1);
    let t = text(&handle);
    let listed: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("sockeye_finding_start_time_seconds{"))
        .collect();
    assert_eq!(listed.len(), 2, "{t}");
    assert!(listed[0].contains(&found[0].id) && listed[1].contains(&found[1].id));
    assert_eq!(
        value(
            &t,
            r#"sockeye_metrics_overflow_total{group="finding_series"}"#
        ),
        Some(6.0),
        "3 left out at each of two folds"
    );
}

/// A client's pool finding, as the pool detector states it: its
/// `ceiling` fact, in sockets.
fn pool(subject: crate::attribution::Workload, ceiling: f64) -> crate::findings::Finding {
    let mut f = close_wait(subject);
    f.kind = Kind::PoolExhaustion;
    f.id = format!("pool_exhaustion/{}", f.subject.cgroup_id);
    let fact = |key, value, unit| crate::findings::Evidence {
        key,
        fact: String::new(),
        value,
        unit,
        at_ns: 0,
        about: None,
    };
    f.evidence = vec![
        fact("connects_failed", 4.0, "connects"),
        fact("ceiling", ceiling, "sockets"),
    ];
    f
}

#[test]
fn a_pool_finding_leaves_its_ceiling_on_the_flow_after_it_resolves() {
    use sockeye_common::event::EventKind;
    let (mut m, handle) = metrics(200);
    let mut agg = Aggregator::new(Limits::default());
    let dns_aggs = DnsAggregates::new(1);
    // cgroup 42 ("checkout"'s app) holds a connection to 10.0.0.9:6379.
    let mut e = sockeye_core::testing::ev(EventKind::Established, 1, 1000 * MS);
    e.raw.remote_port = 6379;
    agg.handle(&e);
    let mut f = pool(pod(Some("app"), Some("checkout")), 5.0);
    f.destination.as_mut().unwrap().addr = "10.0.0.9".parse().unwrap();
    let series = format!(r#"sockeye_tcp_pool_ceiling{{{APP},destination="10.0.0.9:6379"}}"#);
    fold(&mut m, &mut agg, &dns_aggs, 0);
    assert_eq!(value(&text(&handle), &series), None, "no finding yet");

    m.fold_findings(&[&f], FindingsCounts::default(), 0, 1);
    fold(&mut m, &mut agg, &dns_aggs, 1);
    let t = text(&handle);
    assert_eq!(value(&t, &series), Some(5.0), "{t}");

    m.fold_findings(&[], FindingsCounts::default(), 0, 2);
    fold(&mut m, &mut agg, &dns_aggs, 2);
    assert_eq!(value(&text(&handle), &series), Some(5.0), "kept");

    // A server's pool finding (listen overflows) states no client ceiling.
    let mut server = pool(f.subject.clone(), 7.0);
    server.evidence.retain(|e| e.key != "ceiling");
    assert_eq!(crate::metrics::findings::pool_ceiling(&server), None);
}

#[test]
fn a_pool_is_the_busiest_containers_connections_not_the_replicas_sum() {
    use sockeye_common::event::EventKind;
    let (mut m, handle) = metrics(200);
    let mut agg = Aggregator::new(Limits::default());
    // Two replicas of checkout's app on this node (cgroups 42 and 43 share
    // a label set): 3 and 2 connections to 10.0.0.9:6379.
    for (cookie, cgroup) in [(1, 42), (2, 42), (3, 42), (4, 43), (5, 43)] {
        let mut e = sockeye_core::testing::ev(EventKind::Established, cookie, 1000 * MS);
        e.raw.cgroup_id = cgroup;
        agg.handle(&e);
    }
    fold(&mut m, &mut agg, &DnsAggregates::new(1), 0);
    let t = text(&handle);
    let dst = r#"destination="10.0.0.9:6379""#;
    assert_eq!(
        value(
            &t,
            &format!(
                r#"sockeye_tcp_open_sockets{{{APP},direction="outbound",{dst},state="ESTABLISHED"}}"#
            )
        ),
        Some(5.0),
        "{t}"
    );
    assert_eq!(
        value(&t, &format!("sockeye_tcp_pool_connections{{{APP},{dst}}}")),
        Some(3.0)
    );
}
