//! `cargo xtask bench-dns`: the agent's overhead on DNS, and whether it sees
//! every query.
//!
//! dnsperf (Debian) queries a local dnsmasq on 127.0.0.77:53 over loopback.
//! 1. Throughput: rounds at dnsperf's maximum rate alternate without and
//!    with the agent in one run; the summary compares median queries per
//!    second (target: ratio >= 0.97).
//! 2. Completeness and accuracy: a fixed-rate round (default 20,000 q/s)
//!    with the agent, dnsperf in verbose mode: queries sent by dnsperf
//!    against queries the agent saw and matched (target: all), and the
//!    agent's latency percentiles next to dnsperf's own.
//!
//! Like `bench`, it prints figures and targets but does not judge them; it
//! fails only when a tool or the agent misbehaves.

mod dnsperf;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use crate::bench::{agent_proc::Agent, build_agent};

const SERVER_IP: &str = "127.0.0.77";
const SERVER: &str = "127.0.0.77:53";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Distinct names in the query file (under the agent's default name bound).
const NAMES: usize = 500;

#[derive(Args, Debug)]
pub struct BenchDnsArgs {
    /// Number of (baseline, agent) round pairs at maximum rate.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds per round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    secs: u64,
    /// Query rate of the completeness round.
    #[arg(long, default_value_t = 20_000)]
    qps: u32,
    /// Agent binary [default: built with cargo build --release].
    #[arg(long)]
    agent: Option<PathBuf>,
}

/// The agent's view of one round, from its last window and stats line.
#[derive(Debug, Default)]
struct Seen {
    queries: u64,
    answers: u64,
    timeouts: u64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    max_ns: u64,
    lost_total: u64,
    unmatched: u64,
    parse_errors: u64,
    cpu_pct: f64,
    peak_rss_mib: f64,
}

pub fn run(args: &BenchDnsArgs) -> Result<()> {
    install_tools()?;
    let agent_path = match &args.agent {
        Some(p) => p.clone(),
        None => build_agent()?,
    };
    let dir = tempdir()?;
    let queries = dir.join("queries.txt");
    let mut f = std::fs::File::create(&queries)?;
    for i in 0..NAMES {
        writeln!(f, "n{i}.bench.test A")?;
    }
    drop(f);
    let _server = Dnsmasq::start()?;
    let clk_tck = crate::bench::agent_proc::clock_ticks_per_sec()?;

    println!(
        "bench-dns: dnsperf -> dnsmasq on {SERVER}, {} round pairs x {} s at maximum rate, then {} q/s for {} s",
        args.rounds, args.secs, args.qps, args.secs
    );
    let warm = dnsperf::run(SERVER_IP, &queries, 2, None, false)?;
    println!("  warm-up: {:.0} q/s (discarded)\n", warm.qps);
    println!(
        "{:>5} {:<8} {:>10} {:>9} {:>10} {:>10} {:>7} {:>6} {:>8}",
        "round", "kind", "q/s", "lost", "agent q", "matched", "seen%", "cpu%", "rss MiB"
    );
    let (mut base, mut with) = (Vec::new(), Vec::new());
    for n in 1..=2 * args.rounds {
        if n % 2 == 1 {
            let r = dnsperf::run(SERVER_IP, &queries, args.secs, None, false)?;
            println!("{n:>5} {:<8} {:>10.0} {:>9}", "baseline", r.qps, r.lost);
            base.push(r.qps);
        } else {
            let (r, seen) = agent_round(&agent_path, &queries, args.secs, None, clk_tck)?;
            println!(
                "{n:>5} {:<8} {:>10.0} {:>9} {:>10} {:>10} {:>6.1}% {:>6.1} {:>8.1}",
                "agent",
                r.qps,
                r.lost,
                seen.queries,
                seen.answers,
                100.0 * seen.queries as f64 / r.sent as f64,
                seen.cpu_pct,
                seen.peak_rss_mib
            );
            with.push(r.qps);
        }
    }
    let (mb, mw) = (median(&mut base), median(&mut with));
    println!(
        "\nthroughput: baseline median {mb:.0} q/s, with agent {mw:.0} q/s, ratio {:.3} (target >= 0.97)",
        mw / mb
    );

    println!(
        "\ncompleteness at {} q/s for {} s, with the agent:",
        args.qps, args.secs
    );
    let (r, seen) = agent_round(&agent_path, &queries, args.secs, Some(args.qps), clk_tck)?;
    println!(
        "  dnsperf: sent {}, completed {}, lost {}",
        r.sent, r.completed, r.lost
    );
    println!(
        "  agent:   queries {} ({:.2}% of sent), answers matched {} ({:.2}% of completed), timeouts {}, unmatched answers {}, parse errors {}, events lost {}",
        seen.queries,
        100.0 * seen.queries as f64 / r.sent as f64,
        seen.answers,
        100.0 * seen.answers as f64 / r.completed.max(1) as f64,
        seen.timeouts,
        seen.unmatched,
        seen.parse_errors,
        seen.lost_total
    );
    let ms = |ns: Option<u64>| ns.map_or("-".into(), |n| format!("{:.3}ms", n as f64 / 1e6));
    println!(
        "  latency    {:>10} {:>10} {:>10} {:>10}",
        "p50", "p90", "p99", "max"
    );
    println!(
        "  dnsperf    {:>10} {:>10} {:>10} {:>10}",
        ms(r.quantile_ns(0.5)),
        ms(r.quantile_ns(0.9)),
        ms(r.quantile_ns(0.99)),
        ms(r.quantile_ns(1.0))
    );
    println!(
        "  agent      {:>10} {:>10} {:>10} {:>10}",
        ms(Some(seen.p50_ns)),
        ms(Some(seen.p90_ns)),
        ms(Some(seen.p99_ns)),
        ms(Some(seen.max_ns))
    );
    println!("  (the agent times from the query leaving the client's socket to the answer reaching it; dnsperf from its own send and receive calls)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn agent_round(
    agent_path: &Path,
    queries: &Path,
    secs: u64,
    qps: Option<u32>,
    clk_tck: u64,
) -> Result<(dnsperf::Run, Seen)> {
    let agent = Agent::start(agent_path, &["--no-scan"], READY_TIMEOUT)?;
    let cpu0 = agent.cpu_ticks()?;
    let run = dnsperf::run(SERVER_IP, queries, secs, qps, qps.is_some())?;
    let cpu1 = agent.cpu_ticks()?;
    let rss = agent.peak_rss_kib()?;
    let stats = agent.stop(STOP_TIMEOUT)?;
    let mut seen = Seen {
        lost_total: stats.lost_total,
        cpu_pct: 100.0 * cpu1.saturating_sub(cpu0) as f64 / clk_tck as f64 / secs as f64,
        peak_rss_mib: rss as f64 / 1024.0,
        ..Seen::default()
    };
    let dns = &stats.raw["dns"];
    seen.unmatched = dns["tracker"]["unmatched_answers"].as_u64().unwrap_or(0);
    seen.parse_errors = dns["parse_errors"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    // dnsperf's workload: the totals towards our server, busiest first.
    let mut totals: Vec<&Value> = stats
        .last_window
        .iter()
        .filter(|v| v["type"] == "dns_total" && v["server"] == SERVER)
        .collect();
    totals.sort_by_key(|v| std::cmp::Reverse(v["queries"].as_u64().unwrap_or(0)));
    for t in &totals {
        seen.queries += t["queries"].as_u64().unwrap_or(0);
        seen.answers += t["answers"].as_u64().unwrap_or(0);
        seen.timeouts += t["timeouts"].as_u64().unwrap_or(0);
    }
    if let Some(lat) = totals.first().map(|t| &t["latency"]) {
        seen.p50_ns = lat["p50_ns"].as_u64().unwrap_or(0);
        seen.p90_ns = lat["p90_ns"].as_u64().unwrap_or(0);
        seen.p99_ns = lat["p99_ns"].as_u64().unwrap_or(0);
        seen.max_ns = lat["max_ns"].as_u64().unwrap_or(0);
    }
    Ok((run, seen))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// dnsmasq answering every `*.bench.test` A query itself, and where its
/// errors go; killed (and the log removed) on drop.
struct Dnsmasq(Child, PathBuf);

impl Dnsmasq {
    fn start() -> Result<Self> {
        // Its errors go to a file, not a pipe nobody reads.
        let log_path =
            std::env::temp_dir().join(format!("sockeye-bench-dnsmasq-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--pid-file",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={SERVER_IP}"),
                "--port=53",
                "--address=/bench.test/10.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.try_clone()?))
            .spawn()
            .context("starting dnsmasq")?;
        let mut dnsmasq = Self(child, log_path);
        dnsmasq.wait_until_it_answers()?;
        Ok(dnsmasq)
    }

    /// Asks it until it answers: only then is its socket bound.
    fn wait_until_it_answers(&mut self) -> Result<()> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("binding a DNS client")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let query = crate::matrix::smoke::dns::query(1, "ready.bench.test");
        let mut buf = [0u8; 512];
        loop {
            if let Some(status) = self.0.try_wait()? {
                let said = std::fs::read_to_string(&self.1).unwrap_or_default();
                bail!("dnsmasq exited ({status}) before answering: {said}");
            }
            // Refused until it binds: wait a little and ask again.
            if socket.send_to(&query, SERVER).is_ok() && socket.recv(&mut buf).is_ok() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("dnsmasq did not answer on {SERVER} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

fn install_tools() -> Result<()> {
    let missing: Vec<&str> = [("dnsperf", "dnsperf"), ("dnsmasq", "dnsmasq-base")]
        .into_iter()
        .filter(|(bin, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench-dns: installing {}", missing.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get install {} failed ({status})", missing.join(" "));
    }
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sockeye-bench-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
