//! Findings in the JSON output: one `finding` line per change (opened,
//! changed, resolved) in the window it happened, with Unix times.

use std::{collections::HashSet, io::Write};

use serde::Serialize;

use crate::{
    api::convert_findings::UnixClock,
    attribution::{filter::WorkloadFilter, Workload},
    findings::{Destination, Finding},
};

/// Whether the output's `--container`/`--namespace`/`--pod` selects a
/// finding: its subject or a workload that felt it.
pub fn shown(filter: &WorkloadFilter, f: &Finding) -> bool {
    filter.matches(&f.subject) || f.affected.iter().any(|w| filter.matches(w))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Opened,
    /// Severity or corroborating signals changed.
    Changed,
    Resolved,
}

/// The changes since the last JSON window, each told apart as opened,
/// changed or resolved (the record alone cannot say opened from changed).
#[derive(Debug, Default)]
pub struct ChangeLog {
    /// Ids of open findings already reported as opened.
    open: HashSet<String>,
    pending: Vec<(Change, Finding)>,
}

impl ChangeLog {
    /// Records one evaluation's changes (`Findings::take_changes`).
    pub fn record(&mut self, changes: &[Finding]) {
        for f in changes {
            let change = if !f.is_open() {
                self.open.remove(&f.id);
                Change::Resolved
            } else if self.open.insert(f.id.clone()) {
                Change::Opened
            } else {
                Change::Changed
            };
            self.pending.push((change, f.clone()));
        }
    }

    /// The changes since the last call, oldest first.
    pub fn take(&mut self) -> Vec<(Change, Finding)> {
        std::mem::take(&mut self.pending)
    }
}

/// The body of a `finding` line.
#[derive(Debug, Serialize)]
pub struct FindingLine<'a> {
    pub change: Change,
    pub id: &'a str,
    pub kind: &'static str,
    pub severity: &'static str,
    pub confidence: &'static str,
    /// The signals that agree, by name.
    pub signals: &'a [&'static str],
    pub summary: &'a str,
    pub subject: &'a Workload,
    pub destination: Option<&'a Destination>,
    pub since_unix_ms: i64,
    /// Null while it holds.
    pub resolved_unix_ms: Option<i64>,
    pub updated_unix_ms: i64,
    pub evidence: Vec<EvidenceLine<'a>>,
    pub next_step: &'a str,
    pub affected: &'a [Workload],
}

#[derive(Debug, Serialize)]
pub struct EvidenceLine<'a> {
    pub key: &'static str,
    pub fact: &'a str,
    pub value: f64,
    pub unit: &'static str,
    pub at_unix_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub about: Option<&'a str>,
}

impl<'a> FindingLine<'a> {
    pub fn new(change: Change, f: &'a Finding, clock: UnixClock) -> Self {
        Self {
            change,
            id: &f.id,
            kind: f.kind.name(),
            severity: f.severity.name(),
            confidence: f.confidence.name(),
            signals: &f.signals,
            summary: &f.summary,
            subject: &f.subject,
            destination: f.destination.as_ref(),
            since_unix_ms: clock.unix_ms(f.since_ns),
            resolved_unix_ms: f.resolved_ns.map(|ns| clock.unix_ms(ns)),
            updated_unix_ms: clock.unix_ms(f.updated_ns),
            evidence: f
                .evidence
                .iter()
                .map(|e| EvidenceLine {
                    key: e.key,
                    fact: &e.fact,
                    value: e.value,
                    unit: e.unit,
                    at_unix_ms: clock.unix_ms(e.at_ns),
                    about: e.about.as_deref(),
                })
                .collect(),
            next_step: &f.next_step,
            affected: &f.affected,
        }
    }
}

/// Writes the window's `finding` lines (those `filter` selects).
pub fn write<W: Write>(
    out: &mut W,
    changes: &[(Change, Finding)],
    filter: &WorkloadFilter,
    clock: UnixClock,
) -> std::io::Result<()> {
    for (change, f) in changes.iter().filter(|(_, f)| shown(filter, f)) {
        super::json::line(out, "finding", FindingLine::new(*change, f, clock))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::convert_findings::tests::{close_wait, dns, pod_workload};

    const S: u64 = 1_000_000_000;

    #[test]
    fn changes_are_told_apart_and_written_as_lines() {
        let payments = pod_workload(42, "shop", "payments-7d9f8b", "app");
        let opened = close_wait(payments.clone());
        let mut escalated = opened.clone();
        escalated.signals.push("held_long");
        let mut resolved = escalated.clone();
        resolved.resolved_ns = Some(150 * S);
        let other = dns(
            pod_workload(43, "shop", "checkout-5c4d", "app"),
            "api.stripe.com",
        );

        let mut log = ChangeLog::default();
        log.record(&[opened.clone(), other.clone()]);
        log.record(&[escalated]);
        log.record(&[resolved]);
        let changes = log.take();
        let kinds: Vec<Change> = changes.iter().map(|c| c.0).collect();
        assert_eq!(
            kinds,
            [
                Change::Opened,
                Change::Opened,
                Change::Changed,
                Change::Resolved
            ]
        );
        assert!(log.take().is_empty(), "taken once");
        // The same problem again later is a new occurrence: opened again.
        log.record(&[opened]);
        assert_eq!(log.take()[0].0, Change::Opened);

        let clock = UnixClock {
            offset_ns: 1_700_000_000 * S as i64,
        };
        let mut out = Vec::new();
        let filter = WorkloadFilter::from(Some("payments"));
        write(&mut out, &changes, &filter, clock).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "checkout's finding filtered out: {text}");
        let first = &lines[0];
        assert_eq!(first["type"], "finding");
        assert_eq!(first["change"], "opened");
        assert_eq!(first["kind"], "close_wait");
        assert_eq!(first["severity"], "critical");
        assert_eq!(first["confidence"], "high");
        assert_eq!(first["since_unix_ms"], 1_700_000_070_000_i64);
        assert!(first["resolved_unix_ms"].is_null());
        assert_eq!(first["destination"]["addr"], "10.0.1.12");
        assert_eq!(first["destination"]["port"], 6379);
        assert_eq!(first["subject"]["pod"]["namespace"], "shop");
        assert_eq!(first["evidence"][0]["fact"], "212 sockets in CLOSE_WAIT");
        assert_eq!(first["evidence"][0]["unit"], "sockets");
        assert_eq!(first["evidence"][1]["at_unix_ms"], 1_700_000_070_000_i64);
        assert_eq!(lines[1]["change"], "changed");
        assert_eq!(lines[1]["signals"].as_array().map(Vec::len), Some(4));
        assert_eq!(lines[1]["signals"][3], "held_long");
        assert_eq!(first["evidence"][0]["key"], "close_wait_sockets");
        assert_eq!(lines[2]["change"], "resolved");
        assert_eq!(lines[2]["resolved_unix_ms"], 1_700_000_150_000_i64);
    }
}
