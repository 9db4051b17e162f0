//! Nodes that went dark: an agent that stopped pushing is a finding of the
//! collector (kind `node_silent`), since no agent can report its own
//! silence. Judged from window times alone, so any replica reading the
//! same store says the same thing:
//!
//! - **Silent now**: a node's latest stored window ended more than
//!   `silent_after` ago. The collector's own downtime does not count (the
//!   agents buffer meanwhile and their windows cover it once they are
//!   back): the silence is measured from the later of the window's end and
//!   the moment this collector began to listen.
//! - **Silent before** (`include_resolved`): a gap longer than
//!   `silent_after` between two windows of a node in the range read. A gap
//!   the agent explains (`dropped_windows_before`: it was alive, its buffer
//!   full) is not one.
//!
//! Nodes whose silence began within `together` of each other went
//! together (a node group's upgrade, a zone, a bad rollout): each finding
//! names the others, and is critical.
//!
//! Judgement ([`Silence`]) is apart from wording ([`Silence::finding`]).

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use sockeye_proto::v1 as pb;

pub const KIND: &str = "node_silent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SilenceConfig {
    /// A node without a window for this long is silent.
    pub silent_after: Duration,
    /// Silences that began this close together went together.
    pub together: Duration,
}

impl Default for SilenceConfig {
    fn default() -> Self {
        Self {
            silent_after: Duration::from_secs(30),
            together: Duration::from_secs(60),
        }
    }
}

impl SilenceConfig {
    fn silent_after_ms(&self) -> i64 {
        i64::try_from(self.silent_after.as_millis()).unwrap_or(i64::MAX)
    }

    fn together_ms(&self) -> i64 {
        i64::try_from(self.together.as_millis()).unwrap_or(i64::MAX)
    }
}

/// One node's silence: judged, not yet worded.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub node: String,
    /// End of the node's last window before it went silent.
    pub last_window_end_ms: i64,
    /// The first window after it (its start), once the node is back.
    pub back_at_ms: Option<i64>,
    /// How long it has been (or was) silent, from what this collector saw.
    pub silent_ms: i64,
    /// The span of the node's last window: how often it pushed.
    pub push_interval_ms: i64,
    /// The workloads the node's last window held (what is unobserved now).
    pub workloads: Vec<pb::Workload>,
    /// Other nodes whose silence began within `together` of this one's.
    pub with: Vec<String>,
}

/// Workloads named per node, at most: a node's silence lists what it
/// held, not an unbounded list.
const MAX_HELD: usize = 256;

/// Adds the workloads of a window to `held`, each once by the agent's
/// label.
fn add_workloads(w: &pb::Window, held: &mut BTreeMap<String, pb::Workload>) {
    let Some(agg) = w.aggregates.as_ref() else {
        return;
    };
    let all = agg
        .tcp_flows
        .iter()
        .filter_map(|f| f.workload.as_ref())
        .chain(agg.listeners.iter().filter_map(|l| l.workload.as_ref()))
        .chain(agg.dns_totals.iter().filter_map(|d| d.workload.as_ref()));
    for wl in all {
        if held.len() >= MAX_HELD {
            return;
        }
        held.entry(wl.label.clone())
            .or_insert_with(|| pb::Workload {
                node: w.node.clone(),
                ..wl.clone()
            });
    }
}

/// Nodes silent now, from each node's latest window; `seen` holds what the
/// windows read before said. `listening_since_ms`: when this collector
/// began to accept pushes.
pub fn silent_now(
    latest: &[pb::Window],
    seen: &Gaps,
    now_ms: i64,
    listening_since_ms: i64,
    cfg: &SilenceConfig,
) -> Vec<Silence> {
    let mut out: Vec<Silence> = latest
        .iter()
        .filter_map(|w| {
            let silent_ms = now_ms - w.end_unix_ms.max(listening_since_ms);
            (silent_ms > cfg.silent_after_ms()).then(|| {
                let mut held = seen.held.get(&w.node).cloned().unwrap_or_default();
                add_workloads(w, &mut held);
                Silence {
                    node: w.node.clone(),
                    last_window_end_ms: w.end_unix_ms,
                    back_at_ms: None,
                    silent_ms: now_ms - w.end_unix_ms,
                    push_interval_ms: (w.end_unix_ms - w.start_unix_ms).max(0),
                    workloads: held.into_values().collect(),
                    with: Vec::new(),
                }
            })
        })
        .collect();
    link_together(&mut out, cfg);
    out
}

/// Gaps between the windows of each node, read in end order: silences
/// that ended; and the workloads each node's windows held.
#[derive(Debug, Default)]
pub struct Gaps {
    cfg: SilenceConfig,
    /// node -> end and span of its last window read.
    last: HashMap<String, (i64, i64)>,
    /// node -> the workloads its windows held, by label.
    held: HashMap<String, BTreeMap<String, pb::Workload>>,
    ended: Vec<Silence>,
}

impl Gaps {
    pub fn new(cfg: SilenceConfig) -> Self {
        Self {
            cfg,
            ..Default::default()
        }
    }

    pub fn add_window(&mut self, w: &pb::Window) {
        let span = (w.end_unix_ms - w.start_unix_ms).max(0);
        let held = self.held.entry(w.node.clone()).or_default();
        if let Some((end, interval)) = self.last.get(&w.node) {
            let gap = w.start_unix_ms - end;
            // The agent dropped windows in the gap: it was there.
            if gap > self.cfg.silent_after_ms() && w.dropped_windows_before == 0 {
                self.ended.push(Silence {
                    node: w.node.clone(),
                    last_window_end_ms: *end,
                    back_at_ms: Some(w.start_unix_ms),
                    silent_ms: gap,
                    push_interval_ms: *interval,
                    workloads: held.values().cloned().collect(),
                    with: Vec::new(),
                });
            }
        }
        add_workloads(w, held);
        // Windows come in end order; a later one of an overlapping agent
        // (two on one node while one restarts) is the one to measure from.
        let newer = self
            .last
            .get(&w.node)
            .is_none_or(|(end, _)| w.end_unix_ms >= *end);
        if newer {
            self.last.insert(w.node.clone(), (w.end_unix_ms, span));
        }
    }

    pub fn finish(mut self) -> Vec<Silence> {
        link_together(&mut self.ended, &self.cfg);
        self.ended
    }
}

/// Names, in each silence, the other nodes whose silence began within
/// `together` of it.
fn link_together(all: &mut [Silence], cfg: &SilenceConfig) {
    let starts: Vec<(String, i64)> = all
        .iter()
        .map(|s| (s.node.clone(), s.last_window_end_ms))
        .collect();
    for s in all.iter_mut() {
        let mut with: Vec<String> = starts
            .iter()
            .filter(|(node, at)| {
                *node != s.node && (at - s.last_window_end_ms).abs() <= cfg.together_ms()
            })
            .map(|(node, _)| node.clone())
            .collect();
        with.sort();
        with.dedup();
        s.with = with;
    }
}

/// "07:31:02" (UTC).
fn utc_time_of_day(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

fn fact(key: &str, value: f64, unit: &str, at: i64, about: &str, text: String) -> pb::Evidence {
    pb::Evidence {
        fact: text,
        value,
        unit: unit.into(),
        at_unix_ms: at,
        key: key.into(),
        about: about.into(),
    }
}

impl Silence {
    /// The finding, worded. `now_ms` is its update time while it holds.
    pub fn finding(&self, now_ms: i64, cfg: &SilenceConfig) -> pb::Finding {
        let node = &self.node;
        let secs = self.silent_ms as f64 / 1e3;
        let last = utc_time_of_day(self.last_window_end_ms);
        let held = self.workloads.len();
        let mut signals = vec!["no_windows".to_string()];
        if !self.with.is_empty() {
            signals.push("nodes_together".into());
        }
        let mut evidence = vec![fact(
            "silent_s",
            secs,
            "s",
            self.last_window_end_ms,
            "",
            match self.back_at_ms {
                None => format!("no window from {node} for {secs:.0} s: its last ended {last} UTC"),
                Some(back) => format!(
                    "no window from {node} for {secs:.0} s: from {last} UTC until {} UTC",
                    utc_time_of_day(back)
                ),
            },
        )];
        evidence.push(fact(
            "push_interval_s",
            self.push_interval_ms as f64 / 1e3,
            "s",
            self.last_window_end_ms,
            "",
            format!(
                "it pushed a window every {:.1} s before",
                self.push_interval_ms as f64 / 1e3
            ),
        ));
        evidence.push(fact(
            "workloads",
            held as f64,
            "workloads",
            self.last_window_end_ms,
            "",
            if held == 0 {
                "its last window held no workload".into()
            } else {
                let names: Vec<&str> = self
                    .workloads
                    .iter()
                    .take(5)
                    .map(|w| w.label.as_str())
                    .collect();
                format!(
                    "{held} workload(s) there unobserved since: {}{}",
                    names.join(", "),
                    if held > 5 { ", ..." } else { "" }
                )
            },
        ));
        if !self.with.is_empty() {
            evidence.push(fact(
                "nodes_silent_with_it",
                self.with.len() as f64,
                "nodes",
                self.last_window_end_ms,
                "",
                format!(
                    "{} other node(s) went silent within {} s of it: {}",
                    self.with.len(),
                    cfg.together.as_secs(),
                    self.with.join(", ")
                ),
            ));
        }
        let summary = match (self.back_at_ms, self.with.len()) {
            (None, 0) => format!("node {node} has pushed nothing for {secs:.0} s (since {last} UTC): {held} workload(s) there are unobserved"),
            (None, n) => format!("node {node} and {n} other node(s) have pushed nothing for {secs:.0} s (since {last} UTC): {held} workload(s) there are unobserved"),
            (Some(_), _) => format!("node {node} pushed nothing for {secs:.0} s (from {last} UTC)"),
        };
        pb::Finding {
            id: format!("{KIND}:{node}:{}", self.last_window_end_ms),
            kind: KIND.into(),
            subject: Some(pb::Workload {
                node: node.clone(),
                label: format!("node {node}"),
                ..Default::default()
            }),
            destination: None,
            since_unix_ms: self.last_window_end_ms,
            resolved_unix_ms: self.back_at_ms.unwrap_or(0),
            severity: if self.with.is_empty() { "warning" } else { "critical" }.into(),
            confidence: if self.with.is_empty() { "medium" } else { "high" }.into(),
            summary,
            evidence,
            next_step: format!(
                "check the node and its agent: kubectl describe node {node} (NotReady, pressure, a drain); kubectl -n sockeye get pods -o wide --field-selector spec.nodeName={node}; when several nodes went together, look at what they share (node group, zone, a rollout)"
            ),
            node: node.clone(),
            corroborating_signals: signals.len() as u32,
            dns_name: String::new(),
            affected: self.workloads.clone(),
            updated_unix_ms: self.back_at_ms.unwrap_or(now_ms),
            signals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(node: &str, start: i64, end: i64, workload: &str) -> pb::Window {
        pb::Window {
            node: node.into(),
            start_unix_ms: start,
            end_unix_ms: end,
            aggregates: Some(pb::Aggregates {
                tcp_flows: vec![pb::TcpFlow {
                    workload: Some(pb::Workload {
                        label: workload.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const CFG: SilenceConfig = SilenceConfig {
        silent_after: Duration::from_secs(30),
        together: Duration::from_secs(60),
    };

    #[test]
    fn a_node_silent_past_the_bound_is_found_with_what_it_held() {
        let latest = [
            window("a", 99_000, 100_000, "prod/api"),
            window("b", 159_000, 160_000, "prod/db"),
        ];
        let s = silent_now(&latest, &Gaps::default(), 170_000, 0, &CFG);
        assert_eq!(s.len(), 1, "b pushed 10 s ago: not silent");
        assert_eq!(
            (s[0].node.as_str(), s[0].silent_ms, s[0].push_interval_ms),
            ("a", 70_000, 1_000)
        );
        assert!(s[0].with.is_empty());
        let f = s[0].finding(170_000, &CFG);
        assert_eq!((f.kind.as_str(), f.severity.as_str()), (KIND, "warning"));
        assert_eq!(f.affected[0].label, "prod/api");
        assert_eq!(f.affected[0].node, "a");
        assert_eq!(
            f.summary,
            "node a has pushed nothing for 70 s (since 00:01:40 UTC): 1 workload(s) there are unobserved"
        );
        assert_eq!(f.evidence[0].key, "silent_s");
        assert_eq!(f.evidence[0].value, 70.0);
    }

    #[test]
    fn what_a_silent_node_held_is_every_workload_its_windows_named() {
        let mut seen = Gaps::new(CFG);
        seen.add_window(&window("a", 0, 1_000, "prod/client"));
        seen.add_window(&window("a", 1_000, 2_000, "prod/api"));
        let s = silent_now(
            &[window("a", 1_000, 2_000, "prod/api")],
            &seen,
            60_000,
            0,
            &CFG,
        );
        let names: Vec<&str> = s[0].workloads.iter().map(|w| w.label.as_str()).collect();
        assert_eq!(names, vec!["prod/api", "prod/client"]);
    }

    #[test]
    fn the_collectors_own_downtime_is_not_a_nodes_silence() {
        let latest = [window("a", 99_000, 100_000, "prod/api")];
        // The collector came back at 160 s: agents get time to reconnect.
        assert!(silent_now(&latest, &Gaps::default(), 180_000, 160_000, &CFG).is_empty());
        let s = silent_now(&latest, &Gaps::default(), 191_000, 160_000, &CFG);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].silent_ms, 91_000, "silent since its last window");
    }

    #[test]
    fn nodes_that_went_together_name_each_other_and_are_critical() {
        let latest = [
            window("a", 99_000, 100_000, "x"),
            window("b", 130_000, 131_000, "y"),
            window("c", 300_000, 301_000, "z"),
        ];
        let s = silent_now(&latest, &Gaps::default(), 400_000, 0, &CFG);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].with, vec!["b".to_string()]);
        assert_eq!(s[1].with, vec!["a".to_string()]);
        assert!(s[2].with.is_empty());
        assert_eq!(s[0].finding(400_000, &CFG).severity, "critical");
    }

    #[test]
    fn a_gap_is_a_silence_that_ended_unless_the_agent_explains_it() {
        let mut g = Gaps::new(CFG);
        g.add_window(&window("a", 0, 1_000, "x"));
        g.add_window(&window("a", 1_000, 2_000, "x"));
        g.add_window(&window("b", 1_000, 2_000, "y"));
        // a's agent restarted: 40 s without a window.
        g.add_window(&window("a", 42_000, 43_000, "x"));
        // b's agent buffered through a collector outage and dropped some.
        let mut w = window("b", 80_000, 81_000, "y");
        w.dropped_windows_before = 30;
        g.add_window(&w);
        let ended = g.finish();
        assert_eq!(ended.len(), 1);
        let f = ended[0].finding(100_000, &CFG);
        assert_eq!(
            (f.since_unix_ms, f.resolved_unix_ms, f.updated_unix_ms),
            (2_000, 42_000, 42_000)
        );
        assert_eq!(f.evidence[0].value, 40.0);
        assert_eq!(
            f.summary,
            "node a pushed nothing for 40 s (from 00:00:02 UTC)"
        );
    }

    #[test]
    fn a_healthy_stream_of_windows_has_no_gap() {
        let mut g = Gaps::new(CFG);
        for i in 0..100 {
            g.add_window(&window("a", i * 1_000, (i + 1) * 1_000, "x"));
        }
        assert!(silent_now(&[window("a", 99_000, 100_000, "x")], &g, 125_000, 0, &CFG).is_empty());
        assert!(g.finish().is_empty());
    }
}
