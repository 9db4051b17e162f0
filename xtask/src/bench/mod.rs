//! `cargo xtask bench`: the agent's overhead on a tight loopback TCP
//! connect/accept/close loop.
//!
//! Rounds alternate baseline, agent, baseline, agent, ... in one run, so that
//! slow drift on the machine (thermal, TIME_WAIT build-up, other load) hits
//! both kinds alike; the summary compares medians. A discarded warm-up round
//! runs first, and a round is flagged if another process held BPF programs
//! around it (its TCP tracing would slow the baseline too).
//!
//! This is a benchmark: it prints figures and targets but does not judge
//! them. It fails only when the agent misbehaves (no ready line, no stats
//! line, bad exit) or the workload cannot run or hits connection errors.

pub(crate) mod agent_proc;
pub(crate) mod preflight;
pub(crate) mod report;
pub(crate) mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use agent_proc::Agent;
use report::{AgentFigures, Kind, Round};

/// How long the agent may take to load and attach its programs.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent may take to print stats and exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Number of (baseline, agent) round pairs.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Workload seconds per round.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=3600))]
    secs: u64,
    /// Agent binary; by default `cargo build --release -p sockeye-agent` is
    /// run first and target/release/sockeye-agent is used.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Threads running the connect/accept/close loop (each does both ends).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Also print a one-line JSON summary at the end.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let agent_path = agent_path(args.agent.as_deref())?;
    let threads = usize::from(args.threads);
    let duration = Duration::from_secs(args.secs);
    let clk_tck = agent_proc::clock_ticks_per_sec()?;

    let (settings, warnings) = preflight::tcp_settings();
    println!(
        "bench: {} round pairs x {} s, {} connection thread(s), agent {}",
        args.rounds,
        args.secs,
        threads,
        agent_path.display()
    );
    for (name, value) in settings {
        println!("  net.ipv4.{name} = {value}");
    }
    for warning in warnings {
        println!("  warning: {warning}");
    }
    let holders = preflight::foreign_bpf_holders(None);
    if !holders.is_empty() {
        println!(
            "  warning: other processes hold BPF programs: {}; if they trace TCP, \
             every round (baseline too) pays for them",
            holders.join(", ")
        );
    }
    // The first round on a fresh machine differs from the rest: the
    // TIME_WAIT table fills up from empty (until it overflows at
    // tcp_max_tw_buckets, new TIME_WAITs cost more), caches are cold. A
    // discarded warm-up round keeps that bias out of the first baseline.
    let warmup = workload::Workload::bind(threads)?.run(duration)?;
    println!(
        "  warm-up: {:.0} conn/s, {} errors (discarded)",
        warmup.conn_per_sec(),
        warmup.error_count()
    );
    println!();
    report::print_header();

    let mut rounds = Vec::new();
    for number in 1..=2 * args.rounds as usize {
        let kind = if number % 2 == 1 {
            Kind::Baseline
        } else {
            Kind::Agent
        };
        let round = match kind {
            Kind::Baseline => baseline_round(number, threads, duration)?,
            Kind::Agent => agent_round(number, &agent_path, threads, duration, clk_tck)?,
        };
        report::print_row(&round);
        rounds.push(round);
    }

    report::print_summary(&rounds);
    if args.json {
        report::print_json(&rounds, args.secs, threads);
    }
    let with_errors = rounds
        .iter()
        .filter(|r| r.workload.error_count() > 0)
        .count();
    if with_errors > 0 {
        bail!("{with_errors} round(s) had workload connection errors (see table)");
    }
    Ok(())
}

fn baseline_round(number: usize, threads: usize, duration: Duration) -> Result<Round> {
    let workload = workload::Workload::bind(threads)?;
    let mut foreign_bpf = preflight::foreign_bpf_holders(None);
    let result = workload.run(duration)?;
    note_holders(&mut foreign_bpf, None);
    Ok(Round {
        number,
        kind: Kind::Baseline,
        workload: result,
        agent: None,
        foreign_bpf,
    })
}

fn agent_round(
    number: usize,
    agent_path: &Path,
    threads: usize,
    duration: Duration,
    clk_tck: u64,
) -> Result<Round> {
    // Dropping `agent` on any error below kills it, so a failed round never
    // leaves the agent running.
    let agent = Agent::start(agent_path, &[], READY_TIMEOUT)
        .with_context(|| format!("round {number}: starting the agent"))?;
    let workload = workload::Workload::bind(threads)?;
    let mut foreign_bpf = preflight::foreign_bpf_holders(Some(agent.pid()));

    let cpu_start = agent.cpu_ticks()?;
    let result = workload.run(duration)?;
    let cpu_end = agent.cpu_ticks()?;
    note_holders(&mut foreign_bpf, Some(agent.pid()));
    // Just before stopping: VmHWM is the high-water mark so far, and the
    // process is gone once it has exited.
    let peak_rss_kib = agent.peak_rss_kib()?;

    let stats = agent
        .stop(STOP_TIMEOUT)
        .with_context(|| format!("round {number}: stopping the agent"))?;
    let secs = result.elapsed.as_secs_f64();
    let cpu_secs = cpu_end.saturating_sub(cpu_start) as f64 / clk_tck as f64;
    let figures = AgentFigures {
        events_per_sec: stats.events_received as f64 / secs,
        lost_total: stats.lost_total,
        lost: stats.lost,
        cpu_pct: 100.0 * cpu_secs / secs,
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
    };
    Ok(Round {
        number,
        kind: Kind::Agent,
        workload: result,
        agent: Some(figures),
        foreign_bpf,
    })
}

/// Adds BPF holders seen after a round to those seen before it: a tracer
/// that started or stopped mid-round skewed it either way.
fn note_holders(seen: &mut Vec<String>, exclude: Option<u32>) {
    for holder in preflight::foreign_bpf_holders(exclude) {
        if !seen.contains(&holder) {
            seen.push(holder);
        }
    }
}

/// The agent binary given with `--agent`, else the one built now.
pub(crate) fn agent_path(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(path) if !path.is_file() => bail!("--agent {}: no such file", path.display()),
        Some(path) => Ok(path.to_path_buf()),
        None => build_agent(),
    }
}

/// Builds the agent in release mode and returns its path.
pub(crate) fn build_agent() -> Result<PathBuf> {
    // xtask lives one level below the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    // The kernel programs need the nightly rust-src and bpf-linker: install
    // or check them the way the README's commands do.
    let status = Command::new(root.join("scripts/bootstrap.sh"))
        .current_dir(root)
        .status()
        .context("running scripts/bootstrap.sh")?;
    if !status.success() {
        bail!("scripts/bootstrap.sh failed ({status})");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release -p sockeye-agent");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "sockeye-agent"])
        .current_dir(root)
        .status()
        .context("running cargo build for the agent")?;
    if !status.success() {
        bail!("building sockeye-agent failed ({status})");
    }
    // Honour CARGO_TARGET_DIR as cargo does; a target dir set only in a
    // cargo config file is not seen here, so pass --agent in that case.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("release").join("sockeye-agent");
    if !path.is_file() {
        bail!(
            "built sockeye-agent but {} does not exist; pass --agent",
            path.display()
        );
    }
    Ok(path)
}
