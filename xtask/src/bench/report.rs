//! Printing the benchmark: one table row per round as it finishes, then a
//! summary of medians against the agent's targets, and optionally a
//! one-line JSON summary for scripts.

use std::collections::BTreeMap;

use serde_json::json;

use super::workload::RoundResult;

/// Conn/s ratio the agent must keep (agent / baseline).
const TARGET_RATIO: f64 = 0.97;
/// Peak RSS the agent must stay under.
const TARGET_RSS_MIB: f64 = 64.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Baseline,
    Agent,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Agent => "agent",
        }
    }
}

/// What was measured about the agent during one agent round.
#[derive(Debug, Clone)]
pub struct AgentFigures {
    /// events_received / workload seconds.
    pub events_per_sec: f64,
    pub lost_total: u64,
    pub lost: BTreeMap<String, u64>,
    /// Agent user + system CPU over the workload, as % of one core.
    pub cpu_pct: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone)]
pub struct Round {
    pub number: usize,
    pub kind: Kind,
    pub workload: RoundResult,
    pub agent: Option<AgentFigures>,
    /// Other processes seen holding BPF programs around this round.
    pub foreign_bpf: Vec<String>,
}

pub fn print_header() {
    println!(
        "{:>5}  {:<8}  {:>8}  {:>17}  {:>6}  {:>9}  {:>6}  {:>6}  {:>7}",
        "round",
        "kind",
        "conn/s",
        "per-second range",
        "errors",
        "events/s",
        "lost",
        "cpu%",
        "rss MiB"
    );
}

pub fn print_row(round: &Round) {
    let w = &round.workload;
    let range = match w.steadiness() {
        Some((min, max)) => format!("{min}..{max}"),
        None => "-".to_string(),
    };
    let (events, lost, cpu, rss) = match &round.agent {
        Some(a) => (
            format!("{:.0}", a.events_per_sec),
            a.lost_total.to_string(),
            format!("{:.1}", a.cpu_pct),
            format!("{:.1}", a.peak_rss_mib),
        ),
        None => Default::default(),
    };
    // A trailing `!` flags a round whose figures are suspect.
    let mut flag = String::new();
    if w.error_count() > 0 {
        flag.push_str("  ! errors");
    }
    if !round.foreign_bpf.is_empty() {
        flag.push_str("  ! foreign BPF");
    }
    println!(
        "{:>5}  {:<8}  {:>8.0}  {:>17}  {:>6}  {:>9}  {:>6}  {:>6}  {:>7}{flag}",
        round.number,
        round.kind.name(),
        w.conn_per_sec(),
        range,
        w.error_count(),
        events,
        lost,
        cpu,
        rss,
    );
    for (message, n) in &w.errors {
        println!("{:>7}{n} x {message}", "");
    }
    if !round.foreign_bpf.is_empty() {
        println!("{:>7}BPF held by: {}", "", round.foreign_bpf.join(", "));
    }
    if let Some(a) = &round.agent {
        let nonzero: Vec<String> = a
            .lost
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(name, n)| format!("{name}={n}"))
            .collect();
        if !nonzero.is_empty() {
            println!("{:>7}lost: {}", "", nonzero.join(" "));
        }
    }
}

/// Figures derived from all rounds.
struct Summary {
    baseline: Option<f64>,
    agent: Option<f64>,
    ratio: Option<f64>,
    pair_ratios: Vec<f64>,
    events_per_sec: Option<f64>,
    lost_total: u64,
    cpu_pct: Option<f64>,
    peak_rss_mib: Option<f64>,
    rounds_with_errors: usize,
    rounds_with_foreign_bpf: usize,
}

fn summarize(rounds: &[Round]) -> Summary {
    let conn = |kind| {
        median(
            rounds
                .iter()
                .filter(|r| r.kind == kind)
                .map(|r| r.workload.conn_per_sec())
                .collect(),
        )
    };
    let agent_figures = || rounds.iter().filter_map(|r| r.agent.as_ref());
    let baseline = conn(Kind::Baseline);
    let agent = conn(Kind::Agent);
    // Rounds run baseline, agent, baseline, agent, ...; comparing each
    // agent round with the mean of the baselines either side of it cancels
    // a steady drift of the machine's speed, which would otherwise bias
    // every "agent vs the baseline before it" ratio the same way.
    let pair_ratios = rounds
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == Kind::Agent)
        .filter_map(|(i, r)| {
            let neighbours: Vec<f64> = [i.checked_sub(1), Some(i + 1)]
                .into_iter()
                .flatten()
                .filter_map(|j| rounds.get(j))
                .filter(|n| n.kind == Kind::Baseline)
                .map(|n| n.workload.conn_per_sec())
                .collect();
            let reference = neighbours.iter().sum::<f64>() / neighbours.len() as f64;
            (!neighbours.is_empty()).then(|| r.workload.conn_per_sec() / reference)
        })
        .collect();
    Summary {
        baseline,
        agent,
        ratio: baseline.zip(agent).map(|(b, a)| a / b),
        pair_ratios,
        events_per_sec: median(agent_figures().map(|a| a.events_per_sec).collect()),
        lost_total: agent_figures().map(|a| a.lost_total).sum(),
        cpu_pct: median(agent_figures().map(|a| a.cpu_pct).collect()),
        peak_rss_mib: agent_figures().map(|a| a.peak_rss_mib).reduce(f64::max),
        rounds_with_errors: rounds
            .iter()
            .filter(|r| r.workload.error_count() > 0)
            .count(),
        rounds_with_foreign_bpf: rounds.iter().filter(|r| !r.foreign_bpf.is_empty()).count(),
    }
}

pub fn print_summary(rounds: &[Round]) {
    let s = summarize(rounds);
    let opt = |v: Option<f64>, precision: usize| match v {
        Some(v) => format!("{v:.precision$}"),
        None => "-".to_string(),
    };
    let count = |kind| rounds.iter().filter(|r| r.kind == kind).count();
    println!();
    println!(
        "baseline   conn/s median  {}  ({} rounds)",
        opt(s.baseline, 0),
        count(Kind::Baseline)
    );
    println!(
        "agent      conn/s median  {}  ({} rounds)",
        opt(s.agent, 0),
        count(Kind::Agent)
    );
    let pairs: Vec<String> = s.pair_ratios.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "ratio (agent/baseline)     {}   (target >= {TARGET_RATIO})",
        opt(s.ratio, 3)
    );
    println!(
        "  per agent round, vs the mean of adjacent baselines: {}",
        pairs.join(" ")
    );
    println!(
        "events/s   {}  lost {}  (target 0)",
        opt(s.events_per_sec, 0),
        s.lost_total
    );
    println!(
        "agent CPU  {}%  peak RSS {} MiB (target < {TARGET_RSS_MIB} MiB)",
        opt(s.cpu_pct, 1),
        opt(s.peak_rss_mib, 1)
    );
    if s.rounds_with_errors > 0 {
        println!(
            "! {} round(s) had workload errors; their conn/s is suspect",
            s.rounds_with_errors
        );
    }
    if s.rounds_with_foreign_bpf > 0 {
        println!(
            "! {} round(s) ran while other processes held BPF programs; \
             if those trace TCP, the figures include their cost",
            s.rounds_with_foreign_bpf
        );
    }
    println!();
    println!("notes: events/s = events_received at stop / workload seconds (the agent is");
    println!("       idle between ready and workload start). agent CPU = the agent process's");
    println!("       utime+stime over the workload, % of one core; BPF program time is");
    println!("       charged to the workload's threads and shows in the ratio instead.");
}

/// One JSON line with the summary and every round, for scripts.
pub fn print_json(rounds: &[Round], secs: u64, threads: usize) {
    let s = summarize(rounds);
    let details: Vec<_> = rounds
        .iter()
        .map(|r| {
            let mut v = json!({
                "round": r.number,
                "kind": r.kind.name(),
                "conn_per_sec": r.workload.conn_per_sec(),
                "connections": r.workload.connections,
                "elapsed_secs": r.workload.elapsed.as_secs_f64(),
                "per_second": r.workload.per_second,
                "errors": r.workload.errors,
                "foreign_bpf": r.foreign_bpf,
            });
            if let Some(a) = &r.agent {
                v["events_per_sec"] = json!(a.events_per_sec);
                v["lost_total"] = json!(a.lost_total);
                v["lost"] = json!(a.lost);
                v["agent_cpu_pct"] = json!(a.cpu_pct);
                v["peak_rss_mib"] = json!(a.peak_rss_mib);
            }
            v
        })
        .collect();
    let summary = json!({
        "type": "bench_summary",
        "secs": secs,
        "threads": threads,
        "baseline_conn_per_sec_median": s.baseline,
        "agent_conn_per_sec_median": s.agent,
        "ratio": s.ratio,
        "target_ratio": TARGET_RATIO,
        "pair_ratios": s.pair_ratios,
        "events_per_sec_median": s.events_per_sec,
        "lost_total": s.lost_total,
        "agent_cpu_pct_median": s.cpu_pct,
        "peak_rss_mib_max": s.peak_rss_mib,
        "target_rss_mib": TARGET_RSS_MIB,
        "rounds_with_errors": s.rounds_with_errors,
        "rounds_with_foreign_bpf": s.rounds_with_foreign_bpf,
        "rounds": details,
    });
    println!("{summary}");
}

pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
