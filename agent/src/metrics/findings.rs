//! The findings series: findings open now by kind, severity and subject (a
//! gauge whose label sets are bounded like the others), one series per open
//! finding (for alerts), the pool ceilings they state, and the counters of
//! the findings machinery.

use super::labels::{FindingKey, LabelTable, TcpKey, WorkloadLabels};
use crate::{
    aggregate::flows::Direction,
    findings::{Finding, Findings, Kind},
};

/// The findings machinery's counters, as `/metrics` shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingsCounts {
    pub evaluations: u64,
    /// By kind, indexed like [`Kind::ALL`].
    pub opened: [u64; Kind::ALL.len()],
    pub resolved: [u64; Kind::ALL.len()],
    /// Updates `WatchFindings` clients missed (each was told).
    pub watch_missed: u64,
    /// Evidence the kernel could not be asked for.
    pub probe_failures: u64,
}

impl FindingsCounts {
    pub fn of(findings: &Findings, watch_missed: u64) -> Self {
        Self {
            evaluations: findings.stats.evaluations,
            opened: findings.stats.opened,
            resolved: findings.stats.resolved,
            watch_missed,
            probe_failures: findings.stats.probe_failures,
        }
    }
}

/// Counts the open findings per label set; label sets whose findings
/// resolved read 0 until they go idle.
pub fn fold<'a>(
    table: &mut LabelTable<FindingKey, u64>,
    open: impl IntoIterator<Item = &'a Finding>,
    now_s: u64,
) {
    table.begin(|n| *n = 0);
    for f in open {
        let key = FindingKey {
            kind: f.kind.name(),
            severity: f.severity.name(),
            workload: WorkloadLabels::of(&f.subject),
        };
        *table.slot(key, now_s) += 1;
    }
}

/// One open finding as a series of its own: which occurrence (its id), of
/// what, about whom and where, and since when. Alert rules fire one alert
/// per finding from it and link to the finding by its id.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingSeries {
    pub id: String,
    pub kind: &'static str,
    pub severity: &'static str,
    pub workload: WorkloadLabels,
    /// "ip:port" (`[ip6]:port`), "" for findings about no destination.
    pub destination: String,
    /// Unix seconds when the problem started (its `since`).
    pub start_unix_s: f64,
}

/// The series of the open findings, worst first as `open` lists them, at
/// most `max`; and how many were left out (they are still counted in the
/// open gauge).
pub fn series<'a>(
    open: impl IntoIterator<Item = &'a Finding>,
    unix_offset_ns: i64,
    max: usize,
) -> (Vec<FindingSeries>, u64) {
    let mut out = Vec::new();
    let mut omitted = 0;
    for f in open {
        if out.len() >= max {
            omitted += 1;
            continue;
        }
        out.push(FindingSeries {
            id: f.id.clone(),
            kind: f.kind.name(),
            severity: f.severity.name(),
            workload: WorkloadLabels::of(&f.subject),
            destination: f
                .destination
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            start_unix_s: (f.since_ns as i64).saturating_add(unix_offset_ns) as f64 / 1e9,
        });
    }
    (out, omitted)
}

/// The ceiling a client's pool finding states (its `ceiling` fact). A
/// server's pool finding (listen overflows) has none: its ceiling is the
/// accept queue.
pub fn pool_ceiling(f: &Finding) -> Option<(TcpKey, u64)> {
    if f.kind != Kind::PoolExhaustion {
        return None;
    }
    let dest = f.destination.as_ref()?;
    let first = f.evidence.iter().find(|e| e.key == "ceiling")?;
    let key = TcpKey {
        workload: WorkloadLabels::of(&f.subject),
        direction: Direction::Outbound,
        destination: dest.to_string(),
    };
    Some((key, first.value as u64))
}
