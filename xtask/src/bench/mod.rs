//! `cargo xtask bench`: what the agent costs a node, next to no tracer
//! and a generic bpftrace script (issue 17), in one run.
//!
//! Rounds cycle through the arms: a baseline, then the agent (or several
//! agent builds, one arm each, to compare them) and the bpftrace script,
//! which take turns at following the baseline, so that slow drift on the
//! machine (thermal, other load) hits every arm alike; each tracer round
//! is compared with the baseline interpolated at its time. In every
//! round the same workloads run one after the other: the connection churn
//! at each `--threads` count (connect, accept, close; `SO_LINGER 0` by
//! default), one iperf3 stream over loopback (bulk), and the churn next to
//! many long-lived connections exchanging small messages (mixed). A
//! discarded warm-up round runs first.
//!
//! Then, with the kernel's BPF statistics on, one churn round per tracer
//! gives each program's runs and nanoseconds per connection, and the
//! memory arm holds 50,000 sockets in 5 processes and reads the agent's
//! RSS.
//!
//! This is a benchmark: it prints figures and targets but does not judge
//! them. It fails only when a tracer misbehaves (no ready line, no stats
//! line, bad exit) or the workload cannot run or hits connection errors.

pub(crate) mod agent_proc;
mod bpf_stats;
mod bpftrace;
mod bulk;
pub(crate) mod held;
mod mixed;
pub(crate) mod preflight;
pub(crate) mod report;
mod rounds;
pub(crate) mod rss;
pub(crate) mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use rounds::{Arm, Plan, Tracer};
use workload::{Close, Workload};

/// How long a tracer may take to load and attach its programs.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a tracer may take to exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Matches no workload: the agent's JSON windows stay empty, its stats
/// lines remain (issue 17 compares `-o none`).
const SHOW_NOTHING: &str = "sockeye-bench-shows-no-workload";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Cycles of (baseline, agent, bpftrace) rounds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds of each workload in a round.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=3600))]
    secs: u64,
    /// Agent binary; by default `cargo build --release -p sockeye-agent` is
    /// run first and target/release/sockeye-agent is used. Repeat it to
    /// compare builds: each binary is an arm of its own, in the same rounds.
    #[arg(long)]
    agent: Vec<PathBuf>,
    /// Extra arguments for the agent (repeat the flag for each).
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// Churn thread counts, one churn run each per round (each thread
    /// does both ends).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<u16>,
    /// How the churn closes its connections.
    #[arg(long, value_enum, default_value_t = Close::Reset)]
    close: Close,
    /// Leave out the bpftrace arm.
    #[arg(long)]
    no_bpftrace: bool,
    /// Leave out the bulk (iperf3) run.
    #[arg(long)]
    no_bulk: bool,
    /// Connections held open in the mixed run (0 leaves it out).
    #[arg(long, default_value_t = 5000)]
    mixed_conns: usize,
    /// Leave out the per-program cost rounds (bpf_stats).
    #[arg(long, conflicts_with = "costs_only")]
    no_costs: bool,
    /// Only the per-program cost rounds: no ratio rounds, no memory arm.
    #[arg(long)]
    costs_only: bool,
    /// Sockets held for the memory arm (0 leaves it out).
    #[arg(long, default_value_t = 50_000)]
    rss_sockets: usize,
    /// Processes holding them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=64))]
    rss_processes: u64,
    /// Also print a one-line JSON summary at the end.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let agents = if args.agent.is_empty() {
        vec![agent_path(None)?]
    } else {
        args.agent
            .iter()
            .map(|a| agent_path(Some(a)))
            .collect::<Result<_>>()?
    };
    ensure_tools(args)?;
    let clk_tck = agent_proc::clock_ticks_per_sec()?;
    let mut agent_args: Vec<String> = ["--container", SHOW_NOTHING]
        .iter()
        .map(|s| s.to_string())
        .collect();
    agent_args.extend(args.agent_args.iter().cloned());
    let plan = Plan {
        agents,
        agent_args,
        threads: args
            .threads
            .iter()
            .map(|&t| usize::from(t.max(1)))
            .collect(),
        close: args.close,
        duration: Duration::from_secs(args.secs),
        bulk: !args.no_bulk,
        mixed: (args.mixed_conns > 0).then_some(args.mixed_conns),
    };
    if plan.mixed.is_some() {
        held::raise_fd_limit(2 * args.mixed_conns as u64 + 1024, "lower --mixed-conns")?;
    }
    print_setup(args, &plan);

    // The first round on a fresh machine differs from the rest: caches are
    // cold, and with FIN the TIME_WAIT table fills up from empty.
    let warmup = Workload::bind_closing(plan.threads[0], plan.close)?.run(plan.duration)?;
    println!(
        "  warm-up: {:.0} conn/s, {} errors (discarded)",
        warmup.conn_per_sec(),
        warmup.error_count()
    );
    println!();

    let mut tracers: Vec<Arm> = (0..plan.agents.len()).map(Arm::Agent).collect();
    if !args.no_bpftrace {
        tracers.push(Arm::Bpftrace);
    }
    let mut rounds = Vec::new();
    let cycles = if args.costs_only { 0 } else { args.rounds };
    for cycle in 0..cycles as usize {
        // Each cycle starts with a baseline; the tracers take turns at
        // following it, so none always runs right after (or before) one.
        let mut arms = tracers.clone();
        arms.rotate_left(cycle % tracers.len());
        arms.insert(0, Arm::Baseline);
        for arm in arms {
            let round = rounds::run(rounds.len() + 1, arm, &plan, clk_tck)?;
            report::print_row(&round);
            rounds.push(round);
        }
    }
    if !args.costs_only {
        // A closing baseline: the last tracer rounds get one after them too.
        let round = rounds::run(rounds.len() + 1, Arm::Baseline, &plan, clk_tck)?;
        report::print_row(&round);
        rounds.push(round);
    }
    let labelled: Vec<(Arm, String)> = tracers.iter().map(|a| (*a, a.label(&plan))).collect();
    let figures = report::summarize(&rounds, &labelled);
    if !args.costs_only {
        report::print_summary(&rounds, &figures);
    }

    let mut costs = Vec::new();
    if !args.no_costs {
        for (arm, label) in &labelled {
            let (conns, c) = program_costs(*arm, &plan)?;
            report::print_costs(*arm, label, conns, &c);
            costs.push((label.clone(), conns, c));
        }
    }
    let mut memory = Vec::new();
    if args.rss_sockets > 0 && !args.costs_only {
        let processes = args.rss_processes as usize;
        let extra: Vec<&str> = plan.agent_args.iter().map(String::as_str).collect();
        for (arm, label) in labelled.iter().filter(|(a, _)| matches!(a, Arm::Agent(_))) {
            let Arm::Agent(i) = *arm else { continue };
            let m = rss::measure(&plan.agents[i], &extra, args.rss_sockets, processes)?;
            report::print_memory(label, &m);
            memory.push((label.clone(), m));
        }
    }
    report::print_notes();
    if args.json {
        report::print_json(&rounds, &figures, &costs, &memory);
    }
    let with_errors = rounds.iter().filter(|r| r.error_count() > 0).count();
    if with_errors > 0 {
        bail!("{with_errors} round(s) had workload connection errors (see table)");
    }
    Ok(())
}

fn print_setup(args: &BenchArgs, plan: &Plan) {
    let threads: Vec<String> = plan.threads.iter().map(|t| t.to_string()).collect();
    let agents: Vec<String> = plan
        .agents
        .iter()
        .map(|a| a.display().to_string())
        .collect();
    println!(
        "bench: {} cycles x (baseline, {} agent(s){}), {} s per workload; churn at {} thread(s), \
         close {}; bulk {}; mixed {}; agents {}",
        args.rounds,
        plan.agents.len(),
        if args.no_bpftrace { "" } else { ", bpftrace" },
        args.secs,
        threads.join(","),
        plan.close.name(),
        if plan.bulk { "iperf3" } else { "off" },
        plan.mixed
            .map_or("off".to_string(), |n| format!("{n} held connections")),
        agents.join(", ")
    );
    let (settings, warnings) = preflight::tcp_settings();
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
}

/// One churn run (the first thread count) under `arm`'s tracer with BPF
/// statistics on: the connections made and each program's cost.
fn program_costs(arm: Arm, plan: &Plan) -> Result<(u64, Vec<bpf_stats::ProgCost>)> {
    let _stats = bpf_stats::StatsOn::enable()?;
    let tracer = Tracer::start(arm, plan)?.context("a program-cost round needs a tracer")?;
    let pid = tracer.pid();
    let workload = Workload::bind_closing(plan.threads[0], plan.close)?;
    let before = bpf_stats::snapshot(pid)?;
    let result = workload.run(plan.duration)?;
    let after = bpf_stats::snapshot(pid)?;
    match tracer {
        Tracer::Agent(a) => {
            a.stop(STOP_TIMEOUT)?;
        }
        Tracer::Bpftrace(b) => b.stop(STOP_TIMEOUT)?,
    }
    Ok((
        result.connections,
        bpf_stats::per_connection(&before, &after, result.connections),
    ))
}

/// bpftrace and iperf3 come from Debian; installs them if missing.
fn ensure_tools(args: &BenchArgs) -> Result<()> {
    let mut wanted = Vec::new();
    if !args.no_bpftrace {
        wanted.push("bpftrace");
    }
    if !args.no_bulk {
        wanted.push("iperf3");
    }
    if wanted.iter().all(|tool| on_path(tool)) {
        return Ok(());
    }
    let root = workspace_root()?;
    let status = Command::new(root.join("scripts/bootstrap.sh"))
        .arg("--bench")
        .current_dir(&root)
        .status()
        .context("running scripts/bootstrap.sh --bench")?;
    if !status.success() {
        bail!("scripts/bootstrap.sh --bench failed ({status})");
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn workspace_root() -> Result<PathBuf> {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
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
    let root = workspace_root()?;
    // The kernel programs need the nightly rust-src and bpf-linker: install
    // or check them the way the README's commands do.
    let status = Command::new(root.join("scripts/bootstrap.sh"))
        .current_dir(&root)
        .status()
        .context("running scripts/bootstrap.sh")?;
    if !status.success() {
        bail!("scripts/bootstrap.sh failed ({status})");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release -p sockeye-agent");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "sockeye-agent"])
        .current_dir(&root)
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
