//! `cargo xtask bench-findings`: what findings detection costs the agent.
//!
//! Rounds of the agent with findings and with `--no-findings` alternate in
//! one run (ABBA order, so that drift hits both alike), optionally with
//! rounds without any agent. Each round starts its agent, then gives the
//! detectors work: `--conns` connections held open over `--ports`
//! listeners (two flows per port) and a destination whose connections grow
//! by one a second, which the leak detector reports after about 25 s. After
//! `--warmup` seconds the connect/accept/close loop of `cargo xtask bench`
//! runs for `--secs` and is measured. The agent's log says when findings
//! open and resolve; a findings round checks that the leak finding was
//! open through the loop.
//!
//! The agent runs with `--no-scan` (everything it tracks starts after it
//! attached, so a round does not re-read /proc's socket tables every
//! second) and its JSON windows filtered to nothing, so that its CPU is
//! the event path, housekeeping and, in one variant, detection.
//!
//! Then, unless `--no-micro`, `cargo bench --bench findings_evaluate`
//! times one `Findings::evaluate` on full tables.
//!
//! Like `bench`, it prints figures and targets without judging them, and
//! fails only when the agent or the load misbehaves.

mod load;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::bench::{agent_path, agent_proc, agent_proc::Agent, preflight, workload::Workload};
use report::{AgentFigures, FindingsSeen, Round, Variant};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Matches no workload: the agent's JSON windows stay empty (its stats
/// lines remain).
const SHOW_NOTHING: &str = "sockeye-bench-findings-shows-no-workload";

#[derive(Args, Debug)]
pub struct BenchFindingsArgs {
    /// Round pairs (the agent without findings, and with).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds each agent runs under the held load before the loop is
    /// measured; a leak finding needs about 25 s to open.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    warmup: u64,
    /// Seconds of the measured connect/accept/close loop.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    secs: u64,
    /// Connections held open in each round (both ends in this process).
    #[arg(long, default_value_t = 4000)]
    conns: usize,
    /// Listener ports the held connections spread over (one outbound and
    /// one inbound flow each).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    ports: u64,
    /// Seconds between two new connections to the leaking destination.
    #[arg(long, default_value_t = 1.0)]
    leak_every: f64,
    /// Threads running the connect/accept/close loop.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Also run a round without any agent in each pair.
    #[arg(long)]
    baseline: bool,
    /// Skip the `Findings::evaluate` microbenchmark.
    #[arg(long)]
    no_micro: bool,
    /// Agent binary; by default built with `cargo build --release`.
    #[arg(long)]
    agent: Option<PathBuf>,
}

/// What every round shares.
struct Setup {
    agent: PathBuf,
    warmup: Duration,
    secs: Duration,
    conns: usize,
    ports: usize,
    leak_every: Duration,
    threads: usize,
    clk_tck: u64,
}

pub fn run(args: &BenchFindingsArgs) -> Result<()> {
    let leak_every = Duration::try_from_secs_f64(args.leak_every)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--leak-every must be a positive number of seconds")?;
    let leak_max = (args.warmup + args.secs + 10) as f64 / leak_every.as_secs_f64();
    // Both ends of each connection, the listeners, a margin for the rest.
    let fds = 2 * args.conns as u64 + args.ports + 2 * leak_max.ceil() as u64 + 256;
    let limit = crate::bench::held::raise_fd_limit(fds, "lower --conns")?;
    let setup = Setup {
        agent: agent_path(args.agent.as_deref())?,
        warmup: Duration::from_secs(args.warmup),
        secs: Duration::from_secs(args.secs),
        conns: args.conns,
        ports: args.ports as usize,
        leak_every,
        threads: usize::from(args.threads),
        clk_tck: agent_proc::clock_ticks_per_sec()?,
    };
    if !args.no_micro {
        micro()?;
    }

    println!(
        "bench-findings: {} round pairs, {} s warm-up + {} s loop ({} thread(s)), {} connections \
         held over {} ports, a leak growing every {:.1} s; open files limit {limit}; agent {}",
        args.rounds,
        args.warmup,
        args.secs,
        setup.threads,
        setup.conns,
        setup.ports,
        leak_every.as_secs_f64(),
        setup.agent.display()
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("  load average: {}", load.trim());
    }
    let holders = preflight::foreign_bpf_holders(None);
    if !holders.is_empty() {
        println!(
            "  warning: other processes hold BPF programs: {}",
            holders.join(", ")
        );
    }
    println!();
    report::print_header();

    let mut rounds = Vec::new();
    for pair in 0..args.rounds as usize {
        let mut order = vec![Variant::NoFindings, Variant::Findings];
        if pair % 2 == 1 {
            order.reverse();
        }
        if args.baseline {
            order.insert(0, Variant::NoAgent);
        }
        for variant in order {
            let number = rounds.len() + 1;
            let round = run_round(&setup, number, pair, variant)
                .with_context(|| format!("round {number} ({})", variant.name()))?;
            report::print_row(&round);
            rounds.push(round);
        }
    }
    report::print_summary(&rounds);
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at the end: {}", load.trim());
    }
    let with_errors = rounds
        .iter()
        .filter(|r| r.workload.error_count() > 0)
        .count();
    if with_errors > 0 {
        bail!("{with_errors} round(s) had connection errors in the loop (see table)");
    }
    Ok(())
}

fn run_round(s: &Setup, number: usize, pair: usize, variant: Variant) -> Result<Round> {
    let mut extra = vec!["--no-scan"];
    extra.extend(["--container", SHOW_NOTHING]);
    if variant == Variant::NoFindings {
        extra.push("--no-findings");
    }
    // Dropped on any error below, which kills it.
    let agent = match variant {
        Variant::NoAgent => None,
        _ => Some(Agent::start(&s.agent, &extra, READY_TIMEOUT)?),
    };
    let held = load::Held::open(s.ports, s.conns)?;
    let leak = load::Leak::start(s.leak_every)?;
    let leak_start = Instant::now();

    let mut opened_after = None;
    let cpu_warm = agent.as_ref().map(Agent::cpu_ticks).transpose()?;
    let warm_start = Instant::now();
    if let Some(agent) = &agent {
        let deadline = leak_start + s.warmup;
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(250));
            if opened_after.is_none() && leak_lines(agent, leak.port()).0 > 0 {
                opened_after = Some(leak_start.elapsed());
            }
        }
    }

    let workload = Workload::bind(s.threads)?;
    let exclude = agent.as_ref().map(Agent::pid);
    let mut foreign_bpf = preflight::foreign_bpf_holders(exclude);
    let cpu_start = agent.as_ref().map(Agent::cpu_ticks).transpose()?;
    let warmed = warm_start.elapsed();
    let result = workload.run(s.secs)?;
    let cpu_end = agent.as_ref().map(Agent::cpu_ticks).transpose()?;
    for holder in preflight::foreign_bpf_holders(exclude) {
        if !foreign_bpf.contains(&holder) {
            foreign_bpf.push(holder);
        }
    }

    let figures = match agent {
        None => None,
        Some(agent) => {
            let peak_rss_kib = agent.peak_rss_kib()?;
            let findings = (variant == Variant::Findings).then(|| {
                let (opened, resolved, others) = leak_lines(&agent, leak.port());
                FindingsSeen {
                    leak_opened_after: opened_after,
                    leaks_open: opened as i64 - resolved as i64,
                    others,
                    log_complete: agent.stderr_tail().1,
                }
            });
            // Stopped before the load goes: closing the listeners would
            // otherwise end the round on a dependency restart.
            let stats = agent.stop(STOP_TIMEOUT)?;
            let pct = |from: Option<u64>, to: Option<u64>, over: Duration| {
                let ticks = to.unwrap_or(0).saturating_sub(from.unwrap_or(0));
                100.0 * ticks as f64 / s.clk_tck as f64 / over.as_secs_f64()
            };
            Some(AgentFigures {
                cpu_held_pct: pct(cpu_warm, cpu_start, warmed),
                cpu_loop_pct: pct(cpu_start, cpu_end, result.elapsed),
                peak_rss_mib: peak_rss_kib as f64 / 1024.0,
                events_per_sec: stats.events_received as f64 / result.elapsed.as_secs_f64(),
                lost_total: stats.lost_total,
                findings,
            })
        }
    };
    leak.stop()?;
    drop(held);
    Ok(Round {
        number,
        pair,
        variant,
        workload: result,
        agent: figures,
        foreign_bpf,
    })
}

/// From the agent's log: leak findings about our leaking port opened and
/// resolved, and other findings opened.
fn leak_lines(agent: &Agent, port: u16) -> (usize, usize, usize) {
    let (log, _) = agent.stderr_tail();
    // The summary names the destination (outbound: "to 127.0.0.1:PORT") or
    // the listening port (inbound: "on port PORT").
    let ours = |line: &str| {
        line.contains("is leaking connections")
            && (line.ends_with(&format!(":{port}")) || line.ends_with(&format!("port {port}")))
    };
    let (mut opened, mut resolved, mut others) = (0, 0, 0);
    for line in log.lines() {
        if let Some((_, what)) = line.split_once("finding opened: ") {
            if ours(what) {
                opened += 1;
            } else {
                others += 1;
            }
        } else if let Some((_, what)) = line.split_once("finding resolved: ") {
            resolved += usize::from(ours(what));
        }
    }
    (opened, resolved, others)
}

/// `cargo bench --bench findings_evaluate`: one evaluation on full tables.
fn micro() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench-findings: cargo bench -p sockeye-core --bench findings_evaluate");
    let status = Command::new(cargo)
        .args([
            "bench",
            "-q",
            "-p",
            "sockeye-core",
            "--bench",
            "findings_evaluate",
        ])
        .current_dir(root)
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench --bench findings_evaluate failed ({status})");
    }
    println!();
    Ok(())
}
