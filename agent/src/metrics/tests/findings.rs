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
    m.fold_findings(&[&a, &b, &d], counts.clone(), 0);
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
    m.fold_findings(&[&escalated], counts, 1);
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
    m.fold_findings(&refs, FindingsCounts::default(), 0);
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
