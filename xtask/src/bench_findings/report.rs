//! Printing `bench-findings`: a row per round as it ends, then the medians
//! of each variant and what detection adds, against the targets.

use std::time::Duration;

use crate::bench::report::median;
use crate::bench::workload::RoundResult;

/// Conn/s the agent with findings must keep, relative to without.
const TARGET_RATIO: f64 = 0.99;
/// CPU detection may add, % of one core.
const TARGET_EXTRA_CPU_PCT: f64 = 1.0;
/// Memory detection may add.
const TARGET_EXTRA_RSS_MIB: f64 = 8.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    NoAgent,
    NoFindings,
    Findings,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::NoAgent => "no agent",
            Variant::NoFindings => "no-findings",
            Variant::Findings => "findings",
        }
    }
}

/// What the agent's log said about findings during a round.
#[derive(Debug, Clone)]
pub struct FindingsSeen {
    /// When the first leak finding opened, from the leak's start (None: not
    /// before the loop began).
    pub leak_opened_after: Option<Duration>,
    /// Leak findings opened and not resolved when the loop ended.
    pub leaks_open: i64,
    /// Other findings opened (from other traffic on this machine).
    pub others: usize,
    /// Whether the log was read whole (its tail is bounded).
    pub log_complete: bool,
}

impl FindingsSeen {
    /// A leak finding was open for the whole measured loop.
    pub fn open_during_loop(&self) -> bool {
        self.leak_opened_after.is_some() && self.leaks_open > 0
    }
}

#[derive(Debug, Clone)]
pub struct AgentFigures {
    /// % of one core over the warm-up: held load and leak, no loop.
    pub cpu_held_pct: f64,
    /// % of one core over the connect/accept/close loop.
    pub cpu_loop_pct: f64,
    pub peak_rss_mib: f64,
    pub events_per_sec: f64,
    pub lost_total: u64,
    /// None for the agent run with --no-findings.
    pub findings: Option<FindingsSeen>,
}

#[derive(Debug, Clone)]
pub struct Round {
    pub number: usize,
    /// Rounds of one pair (and its no-agent round) run back to back.
    pub pair: usize,
    pub variant: Variant,
    pub workload: RoundResult,
    pub agent: Option<AgentFigures>,
    pub foreign_bpf: Vec<String>,
}

pub fn print_header() {
    println!(
        "{:>5}  {:<11}  {:>8}  {:>6}  {:>9}  {:>9}  {:>7}  {:>9}  {:>5}  findings",
        "round",
        "kind",
        "conn/s",
        "errors",
        "cpu% held",
        "cpu% loop",
        "rss MiB",
        "events/s",
        "lost"
    );
}

pub fn print_row(r: &Round) {
    let cell = |f: &dyn Fn(&AgentFigures) -> String| r.agent.as_ref().map(f).unwrap_or_default();
    let findings = match r.agent.as_ref().and_then(|a| a.findings.as_ref()) {
        None => "-".to_string(),
        Some(f) => {
            let mut s = match f.leak_opened_after {
                Some(t) => format!("leak opened at {:.1}s", t.as_secs_f64()),
                None => "no leak finding before the loop".to_string(),
            };
            s.push_str(&format!(", {} open at the end", f.leaks_open));
            if f.others > 0 {
                s.push_str(&format!(", {} other", f.others));
            }
            if !f.log_complete {
                s.push_str(" (log tail only)");
            }
            s
        }
    };
    let mut flags = String::new();
    if r.workload.error_count() > 0 {
        flags.push_str("  ! errors");
    }
    if !r.foreign_bpf.is_empty() {
        flags.push_str(&format!("  ! BPF held by {}", r.foreign_bpf.join(", ")));
    }
    println!(
        "{:>5}  {:<11}  {:>8.0}  {:>6}  {:>9}  {:>9}  {:>7}  {:>9}  {:>5}  {findings}{flags}",
        r.number,
        r.variant.name(),
        r.workload.conn_per_sec(),
        r.workload.error_count(),
        cell(&|a| format!("{:.2}", a.cpu_held_pct)),
        cell(&|a| format!("{:.2}", a.cpu_loop_pct)),
        cell(&|a| format!("{:.1}", a.peak_rss_mib)),
        cell(&|a| format!("{:.0}", a.events_per_sec)),
        cell(&|a| a.lost_total.to_string()),
    );
}

pub fn print_summary(rounds: &[Round]) {
    let of = |v: Variant| rounds.iter().filter(move |r| r.variant == v);
    let med = |v: Variant, f: &dyn Fn(&Round) -> Option<f64>| median(of(v).filter_map(f).collect());
    let conn = |r: &Round| Some(r.workload.conn_per_sec());
    let held = |r: &Round| r.agent.as_ref().map(|a| a.cpu_held_pct);
    let looped = |r: &Round| r.agent.as_ref().map(|a| a.cpu_loop_pct);
    let rss = |r: &Round| r.agent.as_ref().map(|a| a.peak_rss_mib);
    let (n, f) = (Variant::NoFindings, Variant::Findings);

    println!();
    println!(
        "{:<22} {:>12} {:>12} {:>8} {:>9}   target",
        "median", "no-findings", "findings", "ratio", "extra"
    );
    let line = |name: &str, get: &dyn Fn(&Round) -> Option<f64>, precision: usize, target: &str| {
        let (a, b) = (med(n, get), med(f, get));
        let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.precision$}"));
        let ratio = a.zip(b).map(|(a, b)| b / a);
        let extra = a.zip(b).map(|(a, b)| b - a);
        println!(
            "{name:<22} {:>12} {:>12} {:>8} {:>9}   {target}",
            show(a),
            show(b),
            ratio.map_or("-".into(), |r| format!("{r:.3}")),
            extra.map_or("-".into(), |e| format!("{e:+.precision$}")),
        );
    };
    line("conn/s", &conn, 0, &format!("ratio >= {TARGET_RATIO}"));
    line(
        "agent CPU % (held)",
        &held,
        2,
        &format!("extra < {TARGET_EXTRA_CPU_PCT}"),
    );
    line(
        "agent CPU % (loop)",
        &looped,
        2,
        &format!("extra < {TARGET_EXTRA_CPU_PCT}"),
    );
    line(
        "agent peak RSS MiB",
        &rss,
        1,
        &format!("extra < {TARGET_EXTRA_RSS_MIB}"),
    );
    if let Some(base) = med(Variant::NoAgent, &conn) {
        println!(
            "no agent: conn/s median {base:.0}; agent/no agent: no-findings {}, findings {}",
            med(n, &conn).map_or("-".into(), |v| format!("{:.3}", v / base)),
            med(f, &conn).map_or("-".into(), |v| format!("{:.3}", v / base)),
        );
    }

    // Each pair ran back to back: its own ratio cancels slow drift.
    let pairs: Vec<String> = of(f)
        .filter_map(|fr| {
            let nr = of(n).find(|nr| nr.pair == fr.pair)?;
            Some(format!(
                "{:.3}",
                fr.workload.conn_per_sec() / nr.workload.conn_per_sec()
            ))
        })
        .collect();
    println!("conn/s findings/no-findings per pair: {}", pairs.join(" "));
    let lost: u64 = rounds
        .iter()
        .filter_map(|r| r.agent.as_ref())
        .map(|a| a.lost_total)
        .sum();
    println!("events lost, all rounds: {lost}");
    let findings: Vec<&FindingsSeen> = of(f)
        .filter_map(|r| r.agent.as_ref()?.findings.as_ref())
        .collect();
    let open = findings.iter().filter(|s| s.open_during_loop()).count();
    println!(
        "leak finding open through the loop in {open} of {} findings rounds",
        findings.len()
    );
    if rounds.iter().any(|r| !r.foreign_bpf.is_empty()) {
        println!("! some rounds ran while other processes held BPF programs (see rows)");
    }
    println!();
    println!("notes: cpu% = the agent's utime+stime / wall time, % of one core: \"held\" over the");
    println!("       warm-up (held connections and the leak only), \"loop\" over the measured");
    println!("       connect/accept/close loop. rss = VmHWM at the end of the round.");
}
