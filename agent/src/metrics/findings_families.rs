//! The findings families: open findings by kind, severity and subject, one
//! series per open finding (what alert rules fire on), and the counters of
//! the findings machinery. Left out when detection is off.

use prometheus_client::{
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{
    families::{counter, family, gauge, workload, Done, SECONDS},
    MetricsState,
};
use crate::findings::Kind;

pub fn encode(enc: &mut DescriptorEncoder, state: &MetricsState) -> Done {
    let Some(counts) = &state.findings_counts else {
        return Ok(());
    };
    let mut m = family(
        enc,
        "sockeye_findings_open",
        "Findings that hold now, by kind, severity and the workload they are about (0 once resolved, until the label set goes idle).",
        None,
        MetricType::Gauge,
    )?;
    for (k, n) in &state.findings {
        let [ns, wl, c] = workload(&k.workload);
        gauge(
            &mut m,
            &[("kind", k.kind), ("severity", k.severity), ns, wl, c],
            *n,
        )?;
    }
    let mut m = family(
        enc,
        "sockeye_finding_start_time",
        "One series per open finding (gone once it resolves): its id, kind, severity, subject and destination; the value is when the problem started, in Unix seconds.",
        Some(&SECONDS),
        MetricType::Gauge,
    )?;
    for f in &state.finding_series {
        let [ns, wl, c] = workload(&f.workload);
        let labels = [
            ("finding_id", f.id.as_str()),
            ("kind", f.kind),
            ("severity", f.severity),
            ns,
            wl,
            c,
            ("destination", &f.destination),
        ];
        m.encode_family(&labels)?.encode_gauge(&f.start_unix_s)?;
    }
    for (name, help, by_kind) in [
        (
            "sockeye_findings_opened",
            "Findings opened since the agent started, by kind.",
            &counts.opened,
        ),
        (
            "sockeye_findings_resolved",
            "Findings resolved since the agent started, by kind.",
            &counts.resolved,
        ),
    ] {
        let mut m = family(enc, name, help, None, MetricType::Counter)?;
        for (kind, &n) in Kind::ALL.iter().zip(by_kind) {
            counter(&mut m, &[("kind", kind.name())], n)?;
        }
    }
    for (name, help, v) in [
        (
            "sockeye_findings_evaluations",
            "Runs of the detectors (one a second).",
            counts.evaluations,
        ),
        (
            "sockeye_findings_watch_missed",
            "Finding updates WatchFindings clients missed because they read too slowly (each client is told how many).",
            counts.watch_missed,
        ),
        (
            "sockeye_findings_probe_failures",
            "Questions to the kernel for evidence (sock_diag, /proc/<pid>/net/netstat) that failed; the finding is reported without that evidence.",
            counts.probe_failures,
        ),
    ] {
        family(enc, name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}
