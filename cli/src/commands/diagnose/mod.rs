//! `sockeye diagnose`: what is wrong, one block per problem. An agent
//! lists its node's findings (ListFindings) or streams their changes
//! (WatchFindings); the collector merges every node's findings over a time
//! range (ListFindings). Both are shown in the collector's merged shape: an
//! agent's finding is a problem seen on one node. Rendering is pure here;
//! `fetch` asks the servers.

mod block;
pub mod fetch;

use std::{cmp::Reverse, collections::HashMap, time::Duration};

use sockeye_proto::v1 as pb;

use super::View;
use crate::{args::Output, format, json};

/// Worst first: "critical" > "warning" > "info" > anything else.
fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 3,
        "warning" => 2,
        "info" => 1,
        _ => 0,
    }
}

fn confidence_rank(s: &str) -> u8 {
    match s {
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

/// The node finding that speaks for a problem: open before resolved, most
/// severe, most certain, oldest (as the collector picks its summary).
pub fn worst(m: &pb::MergedFinding) -> Option<&pb::Finding> {
    m.findings.iter().min_by_key(|f| {
        (
            f.resolved_unix_ms != 0,
            Reverse(severity_rank(&f.severity)),
            Reverse(confidence_rank(&f.confidence)),
            f.since_unix_ms,
            f.node.clone(),
            f.id.clone(),
        )
    })
}

/// One agent finding as a problem on one node.
pub fn single(node: &str, f: &pb::Finding) -> pb::MergedFinding {
    let mut f = f.clone();
    if f.node.is_empty() {
        f.node = node.to_string();
    }
    pb::MergedFinding {
        kind: f.kind.clone(),
        destination: f.destination.clone(),
        dns_name: f.dns_name.clone(),
        severity: f.severity.clone(),
        confidence: f.confidence.clone(),
        since_unix_ms: f.since_unix_ms,
        resolved_unix_ms: f.resolved_unix_ms,
        nodes: vec![f.node.clone()],
        summary: f.summary.clone(),
        findings: vec![f],
    }
}

/// An agent's findings in the collector's order: open before resolved,
/// most severe first, then the oldest first.
pub fn from_agent(reply: &pb::FindingsReply) -> Vec<pb::MergedFinding> {
    let mut v: Vec<pb::MergedFinding> = reply
        .findings
        .iter()
        .map(|f| single(&reply.node, f))
        .collect();
    v.sort_by_cached_key(|m| {
        (
            m.resolved_unix_ms != 0,
            Reverse(severity_rank(&m.severity)),
            m.since_unix_ms,
            m.kind.clone(),
            m.summary.clone(),
        )
    });
    v
}

/// Problems that hold now: what the exit code counts.
pub fn open_count(findings: &[pb::MergedFinding]) -> u64 {
    findings.iter().filter(|m| m.resolved_unix_ms == 0).count() as u64
}

/// What the findings were read from.
#[derive(Debug, Clone, Copy)]
pub enum Basis<'a> {
    /// One agent's answer (its drop counters say what may be hidden).
    Agent(&'a pb::FindingsReply),
    /// The collector's windows that ended in `[from, to]`.
    Collector {
        since: Duration,
        from_unix_ms: i64,
        to_unix_ms: i64,
        windows: u64,
        dropped_windows: u64,
        /// `--node`, for "no findings on node-b".
        node: Option<&'a str>,
    },
}

/// The agent's losses, when any counter is above 0.
fn lost(reply: &pb::FindingsReply) -> Option<(u64, String)> {
    let d = reply.drops.as_ref()?;
    let n = d.counters.values().fold(0u64, |n, v| n.saturating_add(*v));
    (n > 0).then(|| (n, format::counters(&d.counters)))
}

/// "no findings on node-a (open now; --all adds resolved ones)", with the
/// filter.
fn nothing(basis: Basis, include_resolved: bool, view: &View) -> String {
    let mut why: Vec<String> = Vec::new();
    let node = match basis {
        Basis::Agent(r) if r.node.is_empty() => "this node".to_string(),
        Basis::Agent(r) => r.node.clone(),
        Basis::Collector { node, .. } => node.map_or("any node".to_string(), str::to_string),
    };
    why.push(match (basis, include_resolved) {
        (Basis::Agent(_), false) => "open now; --all adds resolved ones".to_string(),
        (Basis::Agent(_), true) => "open now or resolved lately".to_string(),
        (Basis::Collector { since, .. }, false) => format!(
            "open at the end of the last {}; --all adds resolved ones",
            humantime::format_duration(since)
        ),
        (Basis::Collector { since, .. }, true) => format!(
            "open or resolved in the last {}",
            humantime::format_duration(since)
        ),
    });
    if let Some(f) = &view.filter {
        why.push(format!("for {f}"));
    }
    format!("no findings on {node} ({})\n", why.join("; "))
}

/// The lines under the blocks: what the answer rests on, and every loss
/// that could hide a finding (a warning: "none" may not mean none).
fn footer(basis: Basis) -> String {
    match basis {
        Basis::Agent(r) => lost(r).map_or_else(String::new, |(n, counters)| {
            format!(
                "warning: {} lost {n} events since the agent started ({counters}): a finding may be hidden\n",
                if r.node.is_empty() { "the node" } else { &r.node }
            )
        }),
        Basis::Collector {
            since,
            windows,
            dropped_windows,
            ..
        } => super::range_note(
            since,
            windows,
            dropped_windows,
            "warning",
            "a finding may be missing",
        ),
    }
}

/// The whole answer: blocks, or "no findings", then the footer. JSON: a
/// `finding` line per problem, then `node` (agent) or `range` (collector).
pub fn render(
    findings: &[pb::MergedFinding],
    basis: Basis,
    include_resolved: bool,
    view: &View,
) -> String {
    if view.output == Output::Json {
        let mut out: String = findings
            .iter()
            .map(|m| json::line(&json::finding(m)))
            .collect();
        out.push_str(&match basis {
            Basis::Agent(r) => json::line(&json::findings_node(r)),
            Basis::Collector {
                from_unix_ms,
                to_unix_ms,
                windows,
                dropped_windows,
                ..
            } => json::line(&json::Range {
                kind: "range",
                from_unix_ms,
                to_unix_ms,
                windows,
                dropped_windows,
            }),
        });
        return out;
    }
    let mut out = if findings.is_empty() {
        nothing(basis, include_resolved, view)
    } else {
        let blocks: Vec<String> = findings.iter().map(|m| block::render(m, view)).collect();
        blocks.join("\n")
    };
    let footer = footer(basis);
    if !findings.is_empty() && !footer.is_empty() {
        out.push('\n');
    }
    out.push_str(&footer);
    out
}

/// What a watcher has seen of each finding: (node, id) -> still open.
#[derive(Debug, Default)]
pub struct Seen {
    open: HashMap<(String, String), bool>,
}

impl Seen {
    /// Findings that were open at their last update.
    pub fn open(&self) -> u64 {
        self.open.values().filter(|o| **o).count() as u64
    }

    /// "new", "changed" or "resolved", and remembers the update.
    fn note(&mut self, f: &pb::Finding) -> &'static str {
        let open = f.resolved_unix_ms == 0;
        let before = self.open.insert((f.node.clone(), f.id.clone()), open);
        match (open, before) {
            (false, _) => "resolved",
            (true, None) => "new",
            (true, Some(_)) => "changed",
        }
    }
}

/// The line that starts a `diagnose -w` stream from an agent; none for
/// JSON.
pub fn stream_header(view: &View) -> String {
    match view.output {
        Output::Json => String::new(),
        _ => {
            "Watching findings: those that hold now, then every change as it happens.\n".to_string()
        }
    }
}

/// One update of an agent's WatchFindings stream: a note first when
/// updates were missed, a line with its time and what changed, its block.
pub fn render_update(u: &pb::FindingUpdate, node: &str, seen: &mut Seen, view: &View) -> String {
    let Some(f) = u.finding.as_ref() else {
        return String::new();
    };
    let m = single(node, f);
    let change = seen.note(&m.findings[0]);
    if view.output == Output::Json {
        let mut j = json::finding(&m);
        j.change = Some(change);
        j.missed_before = Some(u.missed_before);
        return json::line(&j);
    }
    let mut out = String::new();
    if u.missed_before > 0 {
        out.push_str(&format!(
            "\n... {} updates missed (client too slow): `sockeye diagnose` lists what holds now\n",
            u.missed_before
        ));
    }
    out.push_str(&format!(
        "\n--- {} {change}\n",
        format::local_time(f.updated_unix_ms, view.now_unix_ms, &view.tz)
    ));
    out.push_str(&block::render(&m, view));
    out
}
