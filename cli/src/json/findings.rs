//! JSON lines of `diagnose`: one `finding` per problem, in the collector's
//! merged shape whichever server answered (an agent's finding is a problem
//! on one node), so one script reads both.

use serde::Serialize;
use sockeye_proto::v1 as pb;

use super::{endpoint, workload, Endpoint, Workload};

#[derive(Debug, Serialize)]
pub struct Evidence<'a> {
    /// Stable, snake_case (the README lists them per kind).
    pub key: &'a str,
    pub fact: &'a str,
    pub value: f64,
    pub unit: &'a str,
    pub at_unix_ms: i64,
    /// What the number is about, when not the finding ("" then).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub about: &'a str,
}

/// One node's finding, every field of `sockeye.v1.Finding`.
#[derive(Debug, Serialize)]
pub struct NodeFinding<'a> {
    pub id: &'a str,
    pub node: &'a str,
    pub kind: &'a str,
    pub severity: &'a str,
    pub confidence: &'a str,
    pub corroborating_signals: u32,
    /// The signals that agree, by name.
    pub signals: &'a [String],
    pub since_unix_ms: i64,
    pub resolved_unix_ms: i64,
    pub updated_unix_ms: i64,
    pub subject: Option<Workload<'a>>,
    pub destination: Option<Endpoint<'a>>,
    pub dns_name: &'a str,
    pub summary: &'a str,
    pub evidence: Vec<Evidence<'a>>,
    pub next_step: &'a str,
    pub affected: Vec<Workload<'a>>,
}

pub fn node_finding(f: &pb::Finding) -> NodeFinding<'_> {
    NodeFinding {
        id: &f.id,
        node: &f.node,
        kind: &f.kind,
        severity: &f.severity,
        confidence: &f.confidence,
        corroborating_signals: f.corroborating_signals,
        signals: &f.signals,
        since_unix_ms: f.since_unix_ms,
        resolved_unix_ms: f.resolved_unix_ms,
        updated_unix_ms: f.updated_unix_ms,
        subject: workload(f.subject.as_ref()),
        destination: endpoint(f.destination.as_ref()),
        dns_name: &f.dns_name,
        summary: &f.summary,
        evidence: f
            .evidence
            .iter()
            .map(|e| Evidence {
                key: &e.key,
                fact: &e.fact,
                value: e.value,
                unit: &e.unit,
                at_unix_ms: e.at_unix_ms,
                about: &e.about,
            })
            .collect(),
        next_step: &f.next_step,
        affected: f
            .affected
            .iter()
            .filter_map(|w| workload(Some(w)))
            .collect(),
    }
}

/// `diagnose`: one problem (`MergedFinding`), with each node's findings.
#[derive(Debug, Serialize)]
pub struct Finding<'a> {
    #[serde(rename = "type")]
    pub record: &'static str,
    /// `diagnose -w` from an agent: "new", "changed" or "resolved".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<&'static str>,
    /// `diagnose -w` from an agent: updates missed just before this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed_before: Option<u64>,
    pub kind: &'a str,
    pub open: bool,
    pub severity: &'a str,
    pub confidence: &'a str,
    pub since_unix_ms: i64,
    pub resolved_unix_ms: i64,
    pub destination: Option<Endpoint<'a>>,
    pub dns_name: &'a str,
    pub nodes: &'a [String],
    pub summary: &'a str,
    pub findings: Vec<NodeFinding<'a>>,
}

pub fn finding(m: &pb::MergedFinding) -> Finding<'_> {
    Finding {
        record: "finding",
        change: None,
        missed_before: None,
        kind: &m.kind,
        open: m.resolved_unix_ms == 0,
        severity: &m.severity,
        confidence: &m.confidence,
        since_unix_ms: m.since_unix_ms,
        resolved_unix_ms: m.resolved_unix_ms,
        destination: endpoint(m.destination.as_ref()),
        dns_name: &m.dns_name,
        nodes: &m.nodes,
        summary: &m.summary,
        findings: m.findings.iter().map(node_finding).collect(),
    }
}
