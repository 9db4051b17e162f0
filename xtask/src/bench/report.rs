//! Printing the benchmark: one line per round as it finishes, then per
//! figure the median of each arm, the ratios to the baseline with their
//! spread, the programs' cost per connection and the memory arm, against
//! the targets of issue 17; optionally one JSON line for scripts.

use serde_json::json;

use super::bpf_stats::ProgCost;
use super::rounds::{self, Arm, Round};
use super::rss::Memory;

/// Churn conn/s ratio the agent must keep (agent / baseline).
const TARGET_CHURN_RATIO: f64 = 0.95;
/// Bulk throughput ratio the agent must keep.
const TARGET_BULK_RATIO: f64 = 0.99;
/// Program runs and time per connection of the churn.
const TARGET_RUNS_PER_CONN: f64 = 8.0;
const TARGET_NS_PER_CONN: f64 = 1000.0;
/// Resident memory with the held sockets.
const TARGET_RSS_MIB: f64 = 32.0;

pub fn print_row(round: &Round) {
    let figures: Vec<String> = round
        .metrics
        .iter()
        .map(|m| format!("{}={}", short(&m.name), value(&m.name, m.value)))
        .collect();
    let mut line = format!(
        "{:>5}  {:<14}  {}",
        round.number,
        round.label,
        figures.join("  ")
    );
    if let Some(a) = &round.agent {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}ms"));
        line.push_str(&format!(
            "  | events/s={:.0} lost={} lag p99={} max={} cpu={:.1}% rss={:.1}MiB",
            a.events_per_sec,
            a.lost_total,
            ms(a.lag_p99_ms),
            ms(a.lag_max_ms),
            a.cpu_pct,
            a.peak_rss_mib
        ));
    }
    if round.error_count() > 0 {
        line.push_str("  ! errors");
    }
    if !round.foreign_bpf.is_empty() {
        line.push_str("  ! foreign BPF");
    }
    println!("{line}");
    for (message, n) in &round.errors {
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

/// A figure's name as printed in a round's line.
fn short(name: &str) -> String {
    name.trim_end_matches("_per_sec")
        .replace("_conn", "")
        .replace("_round_trips", "_rt")
        .replace("_gbit", "")
}

fn value(name: &str, v: f64) -> String {
    if name == rounds::BULK {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// One figure summarised over all rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FigureSummary {
    pub name: String,
    pub baseline: Option<f64>,
    /// Each tracer arm, in the order of [`summarize`]'s `arms`.
    pub arms: Vec<ArmFigure>,
}

/// One tracer arm's side of a figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArmFigure {
    pub label: String,
    #[serde(skip)]
    pub arm: Arm,
    pub median: Option<f64>,
    /// Median over the arm's rounds of (round / the baseline at its time,
    /// see [`ratios`]).
    pub ratio: Option<f64>,
    pub ratios: Vec<f64>,
}

/// Every figure of `rounds`, for each of the tracer `arms` (with labels).
pub fn summarize(rounds: &[Round], arms: &[(Arm, String)]) -> Vec<FigureSummary> {
    let mut names: Vec<String> = Vec::new();
    for r in rounds {
        for m in &r.metrics {
            if !names.contains(&m.name) {
                names.push(m.name.clone());
            }
        }
    }
    let of = |arm: Arm, name: &str| {
        median(
            rounds
                .iter()
                .filter(|r| r.arm == arm)
                .filter_map(|r| r.metric(name))
                .collect(),
        )
    };
    names
        .into_iter()
        .map(|name| FigureSummary {
            baseline: of(Arm::Baseline, &name),
            arms: arms
                .iter()
                .map(|(arm, label)| {
                    let ratios = ratios(rounds, *arm, &name);
                    ArmFigure {
                        label: label.clone(),
                        arm: *arm,
                        median: of(*arm, &name),
                        ratio: median(ratios.clone()),
                        ratios,
                    }
                })
                .collect(),
            name,
        })
        .collect()
}

/// Each `arm` round's figure over the baseline at its time: interpolated
/// between the nearest baseline round before it and after it (by round
/// number), or the one there is at either end. Rounds cycle through the
/// arms, so a steady drift of the machine's speed cancels out.
fn ratios(rounds: &[Round], arm: Arm, name: &str) -> Vec<f64> {
    let baseline = |(_, r): &(usize, &Round)| r.arm == Arm::Baseline && r.metric(name).is_some();
    rounds
        .iter()
        .enumerate()
        .filter(|(_, r)| r.arm == arm)
        .filter_map(|(i, r)| {
            let before = rounds.iter().enumerate().take(i).rev().find(baseline);
            let after = rounds.iter().enumerate().skip(i + 1).find(baseline);
            let at = |(_, b): (usize, &Round)| b.metric(name);
            let reference = match (before, after) {
                (Some(b), Some(a)) => {
                    let (vb, va) = (at(b)?, at(a)?);
                    let t = (i - b.0) as f64 / (a.0 - b.0) as f64;
                    vb + (va - vb) * t
                }
                (Some(only), None) | (None, Some(only)) => at(only)?,
                (None, None) => return None,
            };
            (reference > 0.0).then(|| r.metric(name).map(|v| v / reference))?
        })
        .collect()
}

pub fn print_summary(rounds: &[Round], figures: &[FigureSummary]) {
    let opt = |v: Option<f64>, precision: usize| match v {
        Some(v) => format!("{v:.precision$}"),
        None => "-".to_string(),
    };
    let spread = |v: &[f64]| match (
        v.iter().copied().reduce(f64::min),
        v.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) => format!("{lo:.3}-{hi:.3}"),
        _ => "-".to_string(),
    };
    println!();
    for f in figures {
        let p = if f.name == rounds::BULK { 2 } else { 0 };
        println!("{}: baseline {}", f.name, opt(f.baseline, p));
        for a in &f.arms {
            println!(
                "  {:<22} {:>12}   ratio {:>6}   spread {:>13}",
                a.label,
                opt(a.median, p),
                opt(a.ratio, 3),
                spread(&a.ratios),
            );
        }
    }
    println!();
    for f in figures {
        let target = if f.name.starts_with("churn_") {
            TARGET_CHURN_RATIO
        } else if f.name == rounds::BULK {
            TARGET_BULK_RATIO
        } else {
            continue;
        };
        let peer = f
            .arms
            .iter()
            .find(|a| a.arm == Arm::Bpftrace)
            .and_then(|a| a.ratio);
        for a in f.arms.iter().filter(|a| matches!(a.arm, Arm::Agent(_))) {
            let above_peer = match (a.ratio, peer) {
                (Some(a), Some(b)) if f.name.starts_with("churn_") => {
                    format!(", above bpftrace: {}", if a > b { "yes" } else { "NO" })
                }
                _ => String::new(),
            };
            println!(
                "target {} {}: ratio >= {target}: {}{above_peer}",
                f.name,
                a.label,
                verdict(a.ratio.map(|r| r >= target)),
            );
        }
    }
    let agent = || rounds.iter().filter_map(|r| r.agent.as_ref());
    let lost: u64 = agent().map(|a| a.lost_total).sum();
    println!(
        "events lost over all agent rounds: {lost} (target 0); agent CPU median {}% of a core, peak RSS {} MiB",
        opt(median(agent().map(|a| a.cpu_pct).collect()), 1),
        opt(agent().map(|a| a.peak_rss_mib).reduce(f64::max), 1),
    );
    println!(
        "ring buffer lag (what batched wake-ups add to findings): p99 up to {} ms, max {} ms (target well under 1000 ms)",
        opt(agent().filter_map(|a| a.lag_p99_ms).reduce(f64::max), 0),
        opt(agent().filter_map(|a| a.lag_max_ms).reduce(f64::max), 0),
    );
    let with_errors = rounds.iter().filter(|r| r.error_count() > 0).count();
    if with_errors > 0 {
        println!("! {with_errors} round(s) had workload errors; their figures are suspect");
    }
    let foreign = rounds.iter().filter(|r| !r.foreign_bpf.is_empty()).count();
    if foreign > 0 {
        println!(
            "! {foreign} round(s) ran while other processes held BPF programs; \
             if those trace TCP, every arm (baseline too) pays for them"
        );
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "-",
    }
}

/// The programs' cost per churn connection, for one tracer.
pub fn print_costs(arm: Arm, label: &str, connections: u64, costs: &[ProgCost]) {
    println!();
    println!("{label} programs per churn connection ({connections} connections, bpf_stats on):");
    println!(
        "  {:<34} {:>10} {:>10} {:>10}",
        "program", "runs/conn", "ns/run", "ns/conn"
    );
    for c in costs {
        println!(
            "  {:<34} {:>10.2} {:>10.0} {:>10.0}",
            c.name, c.runs_per_conn, c.ns_per_run, c.ns_per_conn
        );
    }
    let runs: f64 = costs.iter().map(|c| c.runs_per_conn).sum();
    let ns: f64 = costs.iter().map(|c| c.ns_per_conn).sum();
    println!("  {:<34} {:>10.2} {:>10} {:>10.0}", "total", runs, "", ns);
    if matches!(arm, Arm::Agent(_)) {
        println!(
            "  target: <= {TARGET_RUNS_PER_CONN} runs: {}; <= {TARGET_NS_PER_CONN} ns: {}",
            verdict(Some(runs <= TARGET_RUNS_PER_CONN)),
            verdict(Some(ns <= TARGET_NS_PER_CONN)),
        );
    }
}

pub fn print_memory(label: &str, m: &Memory) {
    println!();
    println!(
        "{label} memory: idle {:.1} MiB; with {} sockets held by {} processes ({} tracked): \
         {:.1} MiB now (anon {:.1}, file {:.1}, shared {:.1}), {:.1} MiB peak \
         (target <= {TARGET_RSS_MIB} MiB: {}); lost {}",
        m.idle_rss_mib,
        m.sockets,
        m.processes,
        m.tracked_sockets,
        m.rss_mib,
        m.rss_anon_mib,
        m.rss_file_mib,
        m.rss_shmem_mib,
        m.peak_rss_mib,
        verdict(Some(m.peak_rss_mib <= TARGET_RSS_MIB)),
        m.lost_total,
    );
    if !m.lost.is_empty() {
        let lost: Vec<String> = m.lost.iter().map(|(k, n)| format!("{k}={n}")).collect();
        println!("  lost: {}", lost.join(" "));
    }
}

pub fn print_notes() {
    println!();
    println!("notes: ratios are per round against the baseline interpolated between the");
    println!("       nearest baseline rounds before and after it; spread is their range.");
    println!("       The agent's CPU is its own process; BPF program time is charged to the");
    println!("       workload's threads and shows in the ratios and the program costs.");
    println!("       Program costs count every run of the tracer's programs, including runs");
    println!("       for other processes' traffic on this machine.");
}

/// One JSON line with the summary and every round, for scripts.
pub fn print_json(
    rounds: &[Round],
    figures: &[FigureSummary],
    costs: &[(String, u64, Vec<ProgCost>)],
    memory: &[(String, Memory)],
) {
    let details: Vec<_> = rounds
        .iter()
        .map(|r| {
            let metrics: serde_json::Map<String, serde_json::Value> = r
                .metrics
                .iter()
                .map(|m| (m.name.clone(), json!(m.value)))
                .collect();
            let mut v = json!({
                "round": r.number,
                "arm": r.label,
                "metrics": metrics,
                "connections": r.connections,
                "errors": r.errors,
                "foreign_bpf": r.foreign_bpf,
            });
            if let Some(a) = &r.agent {
                v["events_per_sec"] = json!(a.events_per_sec);
                v["lost_total"] = json!(a.lost_total);
                v["lost"] = json!(a.lost);
                v["agent_cpu_pct"] = json!(a.cpu_pct);
                v["peak_rss_mib"] = json!(a.peak_rss_mib);
                v["ring_lag_p99_ms"] = json!(a.lag_p99_ms);
                v["ring_lag_max_ms"] = json!(a.lag_max_ms);
            }
            v
        })
        .collect();
    let costs: Vec<_> = costs
        .iter()
        .map(|(label, conns, c)| json!({"arm": label, "connections": conns, "programs": c}))
        .collect();
    let memory: Vec<_> = memory
        .iter()
        .map(|(label, m)| json!({"arm": label, "memory": m}))
        .collect();
    println!(
        "{}",
        json!({
            "type": "bench_summary",
            "figures": figures,
            "program_costs": costs,
            "memory": memory,
            "rounds": details,
        })
    );
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
    use super::*;
    use crate::bench::rounds::Metric;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    fn round(number: usize, arm: Arm, v: f64) -> Round {
        Round {
            number,
            arm,
            label: String::new(),
            metrics: vec![Metric {
                name: "x".into(),
                value: v,
            }],
            errors: Default::default(),
            connections: 0,
            agent: None,
            foreign_bpf: Vec::new(),
        }
    }

    #[test]
    fn ratios_use_the_baselines_either_side() {
        // A steady drift: baselines 100, 110, 120; each tracer at 0.9 of
        // the baseline of its time.
        let rounds = [
            round(1, Arm::Baseline, 100.0),
            round(2, Arm::Agent(0), 0.9 * 103.333),
            round(3, Arm::Bpftrace, 0.9 * 106.667),
            round(4, Arm::Baseline, 110.0),
            round(5, Arm::Bpftrace, 0.9 * 113.333),
            round(6, Arm::Agent(0), 0.9 * 116.667),
            round(7, Arm::Baseline, 120.0),
        ];
        for arm in [Arm::Agent(0), Arm::Bpftrace] {
            let r = ratios(&rounds, arm, "x");
            assert_eq!(r.len(), 2);
            assert!(r.iter().all(|r| (r - 0.9).abs() < 0.001), "{arm:?} {r:?}");
        }
        let arms = [(Arm::Agent(0), "a".into()), (Arm::Bpftrace, "b".into())];
        let s = summarize(&rounds, &arms);
        assert_eq!(s[0].baseline, Some(110.0));
        assert!((s[0].arms[1].ratio.unwrap() - 0.9).abs() < 0.001);
        // A round with no baseline after it uses the one before.
        let tail = ratios(&rounds[..3], Arm::Bpftrace, "x");
        assert!((tail[0] - 0.96).abs() < 0.001, "{tail:?}");
    }
}
