//! One problem as a block of labelled lines: what, where and since when,
//! the root cause, the evidence (a fact a line), what to do next and how
//! sure it is, wrapped to 100 columns. Wide blocks list every node's
//! finding with its id and the evidence's numbers, unwrapped.

use std::collections::BTreeSet;

use sockeye_proto::v1 as pb;

use super::{worst, View};
use crate::{
    commands::{cgroup_path, workload_name},
    format,
};

/// Lines are wrapped to this many characters where they can be.
const WIDTH: usize = 100;
/// Nodes and affected workloads named in a narrow block; the rest are
/// counted.
const NAMED: usize = 3;

/// "node-a, node-b (+3 more)"; all of them when wide.
fn some_of(names: &[String], view: &View) -> String {
    if view.wide() || names.len() <= NAMED {
        return names.join(", ");
    }
    format!(
        "{} (+{} more)",
        names[..NAMED].join(", "),
        names.len() - NAMED
    )
}

/// `label: text`, continued lines indented under the text.
fn labelled(out: &mut String, indent: &str, label: &str, lines: &[String]) {
    let pad = " ".repeat(label.chars().count() + 2);
    for (i, line) in lines.iter().enumerate() {
        out.push_str(indent);
        if i == 0 {
            out.push_str(label);
            out.push_str(": ");
        } else {
            out.push_str(&pad);
        }
        out.push_str(line);
        out.push('\n');
    }
}

/// Prose under `label`, wrapped between words to fit WIDTH; one line when
/// wide (wide output is never cut or wrapped).
fn prose(out: &mut String, label: &str, text: &str, view: &View) {
    if view.wide() {
        labelled(out, "", label, &[text.to_string()]);
        return;
    }
    let words: Vec<String> = text.split(' ').map(str::to_string).collect();
    let width = WIDTH.saturating_sub(label.chars().count() + 2);
    labelled(out, "", label, &format::wrap(&words, " ", width));
}

fn time(ms: i64, view: &View) -> String {
    format::local_time(ms, view.now_unix_ms, &view.tz)
}

/// "CRITICAL connection_leak on node-a, since 02:03:10 CET (31m ago)", or
/// for a resolved one "RESOLVED critical ... resolved 02:40:12 CET (35m
/// ago, lasted 37m)".
fn headline(m: &pb::MergedFinding, view: &View) -> String {
    let nodes = if m.nodes.iter().all(|n| n.is_empty()) {
        "this node".to_string()
    } else {
        some_of(&m.nodes, view)
    };
    let severity = if m.severity.is_empty() {
        "finding"
    } else {
        &m.severity
    };
    let since = time(m.since_unix_ms, view);
    if m.resolved_unix_ms == 0 {
        return format!(
            "{} {} on {nodes}, since {since} ({})",
            severity.to_uppercase(),
            m.kind,
            format::ago(m.since_unix_ms, view.now_unix_ms)
        );
    }
    let lasted = (m.resolved_unix_ms - m.since_unix_ms).max(0) as f64 / 1e3;
    format!(
        "RESOLVED {severity} {} on {nodes}, since {since}, resolved {} ({}, lasted {})",
        m.kind,
        time(m.resolved_unix_ms, view),
        format::ago(m.resolved_unix_ms, view.now_unix_ms),
        format::age_s(lasted)
    )
}

/// "high (3 corroborating signals)".
fn confidence(m: &pb::MergedFinding) -> String {
    let signals = m
        .findings
        .iter()
        .map(|f| f.corroborating_signals)
        .max()
        .unwrap_or(0);
    let level = if m.confidence.is_empty() {
        "-"
    } else {
        &m.confidence
    };
    match signals {
        0 => level.to_string(),
        1 => format!("{level} (1 corroborating signal)"),
        n => format!("{level} ({n} corroborating signals)"),
    }
}

/// Workloads that felt it, each named once, in name order.
fn affected<'a>(findings: impl Iterator<Item = &'a pb::Finding>) -> Vec<String> {
    let names: BTreeSet<String> = findings
        .flat_map(|f| &f.affected)
        .map(|w| workload_name(Some(w)))
        .collect();
    names.into_iter().collect()
}

/// "212 sockets open (was 12 at 02:03)  [212 sockets at 02:34:01 CET]".
fn measured(e: &pb::Evidence, view: &View) -> String {
    let mut value = format::number(e.value);
    if !e.unit.is_empty() {
        value = format!("{value} {}", e.unit);
    }
    if e.at_unix_ms != 0 {
        value = format!("{value} at {}", time(e.at_unix_ms, view));
    }
    if !e.about.is_empty() {
        value = format!("{value}, {}", e.about);
    }
    // A fact worded within another's sentence has no sentence of its own:
    // its key says what the number is.
    let fact = if e.fact.is_empty() { &e.key } else { &e.fact };
    if e.key.is_empty() {
        format!("{fact}  [{value}]")
    } else {
        format!("{fact}  [{}: {value}]", e.key)
    }
}

/// A node's own finding, in a wide block.
fn node_finding(out: &mut String, f: &pb::Finding, view: &View) {
    let mut state = format!(
        "{}, confidence {}, since {}, updated {}",
        f.severity,
        f.confidence,
        time(f.since_unix_ms, view),
        time(f.updated_unix_ms, view)
    );
    if f.resolved_unix_ms != 0 {
        state.push_str(&format!(", resolved {}", time(f.resolved_unix_ms, view)));
    }
    out.push_str(&format!("FINDING {} on {}: {state}\n", f.id, f.node));
    labelled(
        out,
        "  ",
        "SUBJECT",
        &[format!(
            "{}  cgroup {}",
            workload_name(f.subject.as_ref()),
            cgroup_path(f.subject.as_ref())
        )],
    );
    let facts: Vec<String> = f.evidence.iter().map(|e| measured(e, view)).collect();
    if !facts.is_empty() {
        labelled(out, "  ", "EVIDENCE", &facts);
    }
    let hit = affected(std::iter::once(f));
    if !hit.is_empty() {
        labelled(out, "  ", "AFFECTED", &hit);
    }
}

pub fn render(m: &pb::MergedFinding, view: &View) -> String {
    let mut out = headline(m, view);
    out.push('\n');
    prose(&mut out, "ROOT CAUSE", &m.summary, view);
    let worst = worst(m);
    if view.wide() {
        for f in &m.findings {
            node_finding(&mut out, f, view);
        }
    } else if let Some(w) = worst {
        // Several nodes: the evidence is the worst one's, and says so.
        let label = if m.findings.len() > 1 {
            format!("EVIDENCE ({})", w.node)
        } else {
            "EVIDENCE".to_string()
        };
        let width = WIDTH.saturating_sub(label.chars().count() + 2);
        // A fact per line (facts are sentences, some with their own ';'),
        // a long one continued two spaces further in.
        let lines: Vec<String> = w
            .evidence
            .iter()
            .filter(|e| !e.fact.is_empty())
            .flat_map(|e| {
                let words: Vec<String> = e.fact.split(' ').map(str::to_string).collect();
                let mut lines = format::wrap(&words, " ", width);
                for l in lines.iter_mut().skip(1) {
                    l.insert_str(0, "  ");
                }
                lines
            })
            .collect();
        if !lines.is_empty() {
            labelled(&mut out, "", &label, &lines);
        }
        let hit = affected(m.findings.iter());
        if !hit.is_empty() {
            labelled(&mut out, "", "AFFECTED", &[some_of(&hit, view)]);
        }
    }
    if let Some(next) = worst.map(|w| &w.next_step).filter(|n| !n.is_empty()) {
        prose(&mut out, "NEXT", next, view);
    }
    labelled(&mut out, "", "CONFIDENCE", &[confidence(m)]);
    out
}
