//! Which findings opened or resolved, from the windows as they arrive:
//! each node's windows carry every finding open at their end, plus those
//! resolved since the node's previous window. Pure state, no I/O, so the
//! rules are unit-tested here and the writer only writes.
//!
//! As in `findings::latest`, a finding that was open and is missing from a
//! later window of its node stopped holding even if the window saying so
//! never arrived: it resolves then, marked as inferred.

use std::collections::{HashMap, HashSet};

use sockeye_proto::v1 as pb;

/// Open findings followed at most; past this, new ones are not followed
/// (nor written) and [`Tracker::untracked`] counts them. A node that stops
/// pushing leaves its open findings here until it pushes again.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    Resolved {
        /// Seen missing from a later window, not reported resolved.
        inferred: bool,
    },
}

/// One finding that changed, as the agent last reported it.
#[derive(Debug, Clone)]
pub struct Transition {
    pub change: Change,
    pub finding: pb::Finding,
    /// When it changed (the finding's since or resolved time; for an
    /// inferred resolution, the end of the first window without it).
    pub at_unix_ms: i64,
}

/// The open findings of every node, by id.
#[derive(Debug, Default)]
pub struct Tracker {
    open: HashMap<String, HashMap<String, pb::Finding>>,
    /// Resolved findings carried by each node's latest window: a node
    /// reports a resolution once, but a resent or duplicated report must
    /// not resolve twice.
    resolved: HashMap<String, HashSet<String>>,
    tracked: usize,
    /// Findings not followed because [`MAX_TRACKED`] were open.
    pub untracked: u64,
}

impl Tracker {
    /// Marks `f` open without reporting a change: what the store already
    /// held when the collector started (its Events were written before).
    pub fn seed(&mut self, f: pb::Finding) {
        if f.id.is_empty() || f.resolved_unix_ms != 0 || self.tracked >= MAX_TRACKED {
            return;
        }
        let node = self.open.entry(f.node.clone()).or_default();
        if node.insert(f.id.clone(), f).is_none() {
            self.tracked += 1;
        }
    }

    /// The changes `w` brings, in the order of its findings, inferred
    /// resolutions last.
    pub fn window(&mut self, w: &pb::Window) -> Vec<Transition> {
        let findings = w.aggregates.as_ref().map_or(&[][..], |a| &a.findings[..]);
        let carried: HashSet<&str> = findings.iter().map(|f| f.id.as_str()).collect();
        let open = self.open.entry(w.node.clone()).or_default();
        let prev_resolved = self.resolved.remove(&w.node).unwrap_or_default();
        let mut resolved_now = HashSet::new();
        let mut out = Vec::new();
        for f in findings.iter().filter(|f| !f.id.is_empty()) {
            if f.resolved_unix_ms != 0 {
                resolved_now.insert(f.id.clone());
                let was_open = open.remove(&f.id).is_some();
                if was_open {
                    self.tracked -= 1;
                }
                // Resolved without our having seen it open: it opened and
                // resolved between two windows, or before this collector
                // started. Either way it is news, once.
                if was_open || !prev_resolved.contains(&f.id) {
                    out.push(Transition {
                        change: Change::Resolved { inferred: false },
                        at_unix_ms: f.resolved_unix_ms,
                        finding: f.clone(),
                    });
                }
                continue;
            }
            if let Some(known) = open.get_mut(&f.id) {
                // Still open: keep the newest version for the resolution.
                *known = f.clone();
                continue;
            }
            if self.tracked >= MAX_TRACKED {
                self.untracked += 1;
                continue;
            }
            open.insert(f.id.clone(), f.clone());
            self.tracked += 1;
            out.push(Transition {
                change: Change::Opened,
                at_unix_ms: if f.since_unix_ms > 0 {
                    f.since_unix_ms
                } else {
                    w.end_unix_ms
                },
                finding: f.clone(),
            });
        }
        let mut gone: Vec<String> = open
            .keys()
            .filter(|id| !carried.contains(id.as_str()))
            .cloned()
            .collect();
        gone.sort();
        for id in gone {
            if let Some(f) = open.remove(&id) {
                self.tracked -= 1;
                out.push(Transition {
                    change: Change::Resolved { inferred: true },
                    at_unix_ms: w.end_unix_ms,
                    finding: f,
                });
            }
        }
        if open.is_empty() {
            self.open.remove(&w.node);
        }
        if !resolved_now.is_empty() {
            self.resolved.insert(w.node.clone(), resolved_now);
        }
        out
    }

    /// Open findings followed now.
    pub fn open(&self) -> usize {
        self.tracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: &str, resolved: i64) -> pb::Finding {
        pb::Finding {
            id: id.into(),
            kind: "connection_leak".into(),
            node: "n".into(),
            since_unix_ms: 1_000,
            resolved_unix_ms: resolved,
            ..Default::default()
        }
    }

    fn w(end: i64, findings: Vec<pb::Finding>) -> pb::Window {
        pb::Window {
            node: "n".into(),
            end_unix_ms: end,
            aggregates: Some(pb::Aggregates {
                findings,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn changes(t: &mut Tracker, win: pb::Window) -> Vec<(String, Change, i64)> {
        t.window(&win)
            .into_iter()
            .map(|x| (x.finding.id, x.change, x.at_unix_ms))
            .collect()
    }

    #[test]
    fn opens_once_resolves_once() {
        let mut t = Tracker::default();
        assert_eq!(
            changes(&mut t, w(10, vec![f("a", 0)])),
            [("a".into(), Change::Opened, 1_000)]
        );
        assert!(changes(&mut t, w(20, vec![f("a", 0)])).is_empty());
        assert_eq!(t.open(), 1);
        let resolved = Change::Resolved { inferred: false };
        assert_eq!(
            changes(&mut t, w(30, vec![f("a", 25)])),
            [("a".into(), resolved, 25)]
        );
        // The same report again (a duplicate window) is not news.
        assert!(changes(&mut t, w(30, vec![f("a", 25)])).is_empty());
        assert!(changes(&mut t, w(40, vec![])).is_empty());
        assert_eq!(t.open(), 0);
    }

    #[test]
    fn a_missing_finding_resolves_inferred_and_seeded_ones_do_not_reopen() {
        let mut t = Tracker::default();
        t.seed(f("old", 0));
        assert!(changes(&mut t, w(10, vec![f("old", 0), f("b", 0)]))
            .iter()
            .all(|c| c.0 == "b"));
        assert_eq!(
            changes(&mut t, w(20, vec![f("b", 0)])),
            [("old".into(), Change::Resolved { inferred: true }, 20)]
        );
        // Resolved between two windows, never seen open: news once.
        assert_eq!(changes(&mut t, w(30, vec![f("b", 0), f("c", 28)])).len(), 1);
        // Findings without an id cannot be followed.
        assert!(changes(&mut t, w(40, vec![f("b", 0), f("", 0)])).is_empty());
    }
}
