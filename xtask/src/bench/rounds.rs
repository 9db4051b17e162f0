//! One round: start the arm's tracer (none, the agent, or the bpftrace
//! peer), run every workload of the plan under it, stop it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::agent_proc::Agent;
use super::bpftrace::Bpftrace;
use super::workload::{Close, ErrorTally, Workload};
use super::{bulk, mixed, preflight};

/// What runs during a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// No tracer.
    Baseline,
    /// The agent binary of this index in [`Plan::agents`].
    Agent(usize),
    Bpftrace,
}

impl Arm {
    /// How the arm is printed: `agent` for a single agent binary, else the
    /// binary's file name, so variants can be told apart.
    pub fn label(self, plan: &Plan) -> String {
        match self {
            Arm::Baseline => "baseline".into(),
            Arm::Agent(_) if plan.agents.len() == 1 => "agent".into(),
            Arm::Agent(i) => plan.agents[i]
                .file_name()
                .map_or_else(|| format!("agent{i}"), |n| n.to_string_lossy().into_owned()),
            Arm::Bpftrace => "bpftrace".into(),
        }
    }
}

/// The workloads of every round, and how to start the agent.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Agent binaries, each an arm of its own.
    pub agents: Vec<PathBuf>,
    pub agent_args: Vec<String>,
    /// Churn thread counts, one churn run each.
    pub threads: Vec<usize>,
    pub close: Close,
    pub duration: Duration,
    pub bulk: bool,
    /// Held connections of the mixed run; None skips it.
    pub mixed: Option<usize>,
}

/// One figure of a round: higher is better for all of them.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Stable name, e.g. "churn_1t_conn_per_sec".
    pub name: String,
    pub value: f64,
}

/// What was measured about the agent during one agent round.
#[derive(Debug, Clone)]
pub struct AgentFigures {
    /// events_received / workload seconds.
    pub events_per_sec: f64,
    pub lost_total: u64,
    pub lost: std::collections::BTreeMap<String, u64>,
    /// Agent user + system CPU over the workloads, as % of one core.
    pub cpu_pct: f64,
    pub peak_rss_mib: f64,
    /// How long events waited in the ring buffer (the agent's
    /// `ring_lag`): 99th percentile and maximum, in ms; None from an agent
    /// that does not report it.
    pub lag_p99_ms: Option<f64>,
    pub lag_max_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Round {
    pub number: usize,
    pub arm: Arm,
    pub label: String,
    pub metrics: Vec<Metric>,
    /// Workload connection errors, by message.
    pub errors: ErrorTally,
    /// Connections the churn workloads made.
    pub connections: u64,
    pub agent: Option<AgentFigures>,
    /// Other processes seen holding BPF programs around this round.
    pub foreign_bpf: Vec<String>,
}

impl Round {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

/// A running tracer of an arm.
pub enum Tracer {
    Agent(Agent),
    Bpftrace(Bpftrace),
}

impl Tracer {
    pub fn start(arm: Arm, plan: &Plan) -> Result<Option<Tracer>> {
        Ok(match arm {
            Arm::Baseline => None,
            Arm::Agent(i) => {
                let args: Vec<&str> = plan.agent_args.iter().map(String::as_str).collect();
                Some(Tracer::Agent(
                    Agent::start(&plan.agents[i], &args, super::READY_TIMEOUT)
                        .context("starting the agent")?,
                ))
            }
            Arm::Bpftrace => Some(Tracer::Bpftrace(Bpftrace::start(super::READY_TIMEOUT)?)),
        })
    }

    pub fn pid(&self) -> u32 {
        match self {
            Tracer::Agent(a) => a.pid(),
            Tracer::Bpftrace(b) => b.pid(),
        }
    }
}

/// Runs one round of `arm`.
pub fn run(number: usize, arm: Arm, plan: &Plan, clk_tck: u64) -> Result<Round> {
    // Dropping the tracer on any error below kills it, so a failed round
    // never leaves probes attached.
    let tracer = Tracer::start(arm, plan).with_context(|| format!("round {number}"))?;
    let exclude = tracer.as_ref().map(Tracer::pid);
    let mut foreign_bpf = preflight::foreign_bpf_holders(exclude);
    let cpu_start = match &tracer {
        Some(Tracer::Agent(a)) => a.cpu_ticks()?,
        _ => 0,
    };
    let mut round = Round {
        number,
        arm,
        label: arm.label(plan),
        metrics: Vec::new(),
        errors: ErrorTally::new(),
        connections: 0,
        agent: None,
        foreign_bpf: Vec::new(),
    };
    let secs = workloads(plan, &mut round)?;
    for holder in preflight::foreign_bpf_holders(exclude) {
        if !foreign_bpf.contains(&holder) {
            foreign_bpf.push(holder);
        }
    }
    round.foreign_bpf = foreign_bpf;
    match tracer {
        Some(Tracer::Agent(agent)) => {
            let cpu_end = agent.cpu_ticks()?;
            // Just before stopping: VmHWM is the high-water mark so far.
            let peak_rss_kib = agent.peak_rss_kib()?;
            let stats = agent
                .stop(super::STOP_TIMEOUT)
                .with_context(|| format!("round {number}: stopping the agent"))?;
            let cpu_secs = cpu_end.saturating_sub(cpu_start) as f64 / clk_tck as f64;
            let lag_ms = |field: &str| {
                stats.raw["ring_lag"][field]
                    .as_u64()
                    .map(|us| us as f64 / 1000.0)
            };
            round.agent = Some(AgentFigures {
                lag_p99_ms: lag_ms("p99_us"),
                lag_max_ms: lag_ms("max_us"),
                events_per_sec: stats.events_received as f64 / secs,
                lost_total: stats.lost_total,
                lost: stats.lost,
                cpu_pct: 100.0 * cpu_secs / secs,
                peak_rss_mib: peak_rss_kib as f64 / 1024.0,
            });
        }
        Some(Tracer::Bpftrace(b)) => b
            .stop(super::STOP_TIMEOUT)
            .with_context(|| format!("round {number}: stopping bpftrace"))?,
        None => {}
    }
    Ok(round)
}

/// Runs the plan's workloads one after the other; returns their seconds.
fn workloads(plan: &Plan, round: &mut Round) -> Result<f64> {
    let mut secs = 0.0;
    let push = |round: &mut Round, name: String, value: f64| {
        round.metrics.push(Metric { name, value });
    };
    for &threads in &plan.threads {
        let result = Workload::bind_closing(threads, plan.close)?.run(plan.duration)?;
        secs += result.elapsed.as_secs_f64();
        round.connections += result.connections;
        merge_errors(&mut round.errors, &result.errors);
        push(round, churn_metric(threads), result.conn_per_sec());
    }
    if plan.bulk {
        let bps = bulk::run(plan.duration)?;
        secs += plan.duration.as_secs_f64();
        push(round, BULK.to_string(), bps / 1e9);
    }
    if let Some(held) = plan.mixed {
        let m = mixed::run(held, plan.close, plan.duration)?;
        secs += m.churn.elapsed.as_secs_f64();
        round.connections += m.churn.connections;
        merge_errors(&mut round.errors, &m.churn.errors);
        push(round, MIXED_CONN.to_string(), m.churn.conn_per_sec());
        push(round, MIXED_TRIPS.to_string(), m.trips_per_sec);
    }
    Ok(secs)
}

pub const BULK: &str = "bulk_gbit_per_sec";
pub const MIXED_CONN: &str = "mixed_conn_per_sec";
pub const MIXED_TRIPS: &str = "mixed_round_trips_per_sec";

pub fn churn_metric(threads: usize) -> String {
    format!("churn_{threads}t_conn_per_sec")
}

fn merge_errors(into: &mut ErrorTally, from: &ErrorTally) {
    for (message, n) in from {
        *into.entry(message.clone()).or_default() += n;
    }
}
