//! Each node's latest version of each finding, from its windows read in
//! end order, and the findings whose resolution was never seen.
//!
//! A node's window lists every finding open at its end. So an open finding
//! missing from a later window of its node stopped holding, even when the
//! window that said so never arrived (the agent dropped it, or restarted
//! and forgot the finding). Such a finding is counted resolved at the end
//! of the first window without it, with a line of evidence that says so:
//! left open, it would stay open in every answer for as long as the range
//! reaches back.

use std::collections::{HashMap, HashSet};

use sockeye_proto::v1 as pb;

use crate::filter::Filter;

/// One node's finding as last seen.
#[derive(Debug)]
struct Tracked {
    finding: pb::Finding,
    /// End of the window the kept version came from: of two versions with
    /// the same `updated_unix_ms`, the later window's wins.
    window_end: i64,
    /// End of the node's last window that carried the finding.
    last_seen_end: i64,
    /// End of the node's first window without it, while it was open.
    vanished_at: Option<i64>,
}

/// Accumulates windows (of every node, in end order) into findings.
#[derive(Debug, Default)]
pub struct Latest {
    /// (node, finding id) -> its latest version.
    by_key: HashMap<(String, String), Tracked>,
    /// node -> ids whose kept version is open, carried by the node's latest
    /// window so far.
    open: HashMap<String, HashSet<String>>,
    /// Windows read, and windows agents reported dropping before them.
    pub windows: u64,
    pub dropped_windows: u64,
    /// Findings without an id (they cannot be followed across windows):
    /// skipped here, counted once at ingest (`findings_without_id`).
    pub without_id: u64,
}

impl Latest {
    pub fn add_window(&mut self, w: &pb::Window) {
        self.windows += 1;
        self.dropped_windows = self
            .dropped_windows
            .saturating_add(w.dropped_windows_before);
        let findings = w.aggregates.as_ref().map_or(&[][..], |a| &a.findings[..]);
        let carried: HashSet<&str> = findings.iter().map(|f| f.id.as_str()).collect();
        let Self { by_key, open, .. } = self;
        if let Some(open) = open.get_mut(&w.node) {
            open.retain(|id| {
                if carried.contains(id.as_str()) {
                    return true;
                }
                if let Some(t) = by_key.get_mut(&(w.node.clone(), id.clone())) {
                    t.vanished_at = Some(w.end_unix_ms);
                }
                false
            });
        }
        for f in findings {
            if f.id.is_empty() {
                self.without_id += 1;
                continue;
            }
            let key = (w.node.clone(), f.id.clone());
            let t = self.by_key.entry(key).or_insert_with(|| Tracked {
                finding: f.clone(),
                window_end: w.end_unix_ms,
                last_seen_end: w.end_unix_ms,
                vanished_at: None,
            });
            if (f.updated_unix_ms, w.end_unix_ms) >= (t.finding.updated_unix_ms, t.window_end) {
                t.finding = f.clone();
                t.window_end = w.end_unix_ms;
            }
            t.last_seen_end = t.last_seen_end.max(w.end_unix_ms);
            // Carried again (two agents on one node, or a late window):
            // what it says now counts, not that it was missed once.
            t.vanished_at = None;
            if t.finding.node.is_empty() {
                t.finding.node = w.node.clone();
            }
            let open = self.open.entry(w.node.clone()).or_default();
            if t.finding.resolved_unix_ms == 0 {
                open.insert(f.id.clone());
            } else {
                open.remove(&f.id);
            }
        }
    }

    /// The findings that pass `filter`, resolved ones only when asked.
    pub fn finish(self, filter: &Filter, include_resolved: bool) -> Vec<pb::Finding> {
        self.by_key
            .into_values()
            .map(|t| {
                let mut f = t.finding;
                if let Some(at) = t.vanished_at {
                    f.evidence
                        .push(resolution_not_seen(&f.node, t.last_seen_end, at));
                    f.resolved_unix_ms = at;
                }
                f
            })
            .filter(|f| include_resolved || f.resolved_unix_ms == 0)
            .filter(|f| filter.matches_finding(f))
            .collect()
    }
}

fn resolution_not_seen(node: &str, last_seen_end: i64, gone_end: i64) -> pb::Evidence {
    pb::Evidence {
        fact: format!(
            "resolution not seen: open in {node}'s window ending {} UTC, gone from the one ending {} UTC (windows dropped, or the agent restarted)",
            utc_time_of_day(last_seen_end),
            utc_time_of_day(gone_end)
        ),
        // It stopped holding within this long of its last sighting.
        value: (gone_end - last_seen_end).max(0) as f64 / 1e3,
        unit: "s".into(),
        at_unix_ms: gone_end,
        key: "resolution_not_seen_s".into(),
        about: node.to_string(),
    }
}

/// "07:31:02" (UTC).
fn utc_time_of_day(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, updated: i64, resolved: i64) -> pb::Finding {
        pb::Finding {
            id: id.into(),
            kind: "close_wait".into(),
            since_unix_ms: 1_000,
            updated_unix_ms: updated,
            resolved_unix_ms: resolved,
            ..Default::default()
        }
    }

    fn window(node: &str, end: i64, findings: Vec<pb::Finding>) -> pb::Window {
        pb::Window {
            node: node.into(),
            end_unix_ms: end,
            aggregates: Some(pb::Aggregates {
                findings,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_finding_gone_without_its_resolution_is_resolved_where_it_went() {
        let mut l = Latest::default();
        l.add_window(&window("a", 10_000, vec![finding("x", 5_000, 0)]));
        l.add_window(&window("a", 20_000, vec![finding("x", 5_000, 0)]));
        // Another node's window says nothing about node a's findings.
        l.add_window(&window("b", 25_000, vec![]));
        l.add_window(&window("a", 30_000, vec![]));
        let all = l.finish(&Filter::default(), true);
        assert_eq!(all.len(), 1);
        let f = &all[0];
        assert_eq!((f.resolved_unix_ms, f.node.as_str()), (30_000, "a"));
        let e = f.evidence.last().unwrap();
        assert_eq!(
            e.fact,
            "resolution not seen: open in a's window ending 00:00:20 UTC, gone from the one ending 00:00:30 UTC (windows dropped, or the agent restarted)"
        );
        assert_eq!((e.value, e.unit.as_str()), (10.0, "s"));
    }

    #[test]
    fn a_seen_resolution_and_a_return_are_not_inferred() {
        let mut l = Latest::default();
        l.add_window(&window("a", 10_000, vec![finding("x", 5_000, 0)]));
        l.add_window(&window("a", 20_000, vec![finding("x", 15_000, 12_000)]));
        l.add_window(&window("a", 30_000, vec![]));
        // y is missed by one window, then carried again.
        l.add_window(&window("a", 40_000, vec![finding("y", 35_000, 0)]));
        l.add_window(&window("a", 50_000, vec![]));
        l.add_window(&window("a", 60_000, vec![finding("y", 35_000, 0)]));
        let mut all = l.finish(&Filter::default(), true);
        all.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(all[0].resolved_unix_ms, 12_000);
        assert!(all[0].evidence.is_empty());
        assert_eq!(all[1].resolved_unix_ms, 0);
        assert!(all[1].evidence.is_empty());
    }

    #[test]
    fn findings_without_an_id_are_skipped_and_counted() {
        let mut l = Latest::default();
        l.add_window(&window("a", 10_000, vec![finding("", 5_000, 0)]));
        assert_eq!(l.without_id, 1);
        assert!(l.finish(&Filter::default(), true).is_empty());
    }
}
