//! The findings series: findings open now by kind, severity and subject (a
//! gauge whose label sets are bounded like the others), and the counters
//! of the findings machinery.

use super::labels::{FindingKey, LabelTable, WorkloadLabels};
use crate::findings::{Finding, Findings, Kind};

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
