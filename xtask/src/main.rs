//! Developer tasks for the Sockeye workspace, run as `cargo xtask <task>`
//! (the alias lives in `.cargo/config.toml`).
//!
//! Tasks:
//! - `bench`: what the agent costs a node: connection churn, bulk throughput
//!   and a mix, with no tracer, the agent and a bpftrace script interleaved
//!   in one run; per-program costs (bpf_stats) and memory with 50,000 sockets.
//! - `bench-dns`: the agent's overhead on DNS (dnsperf against dnsmasq), and
//!   whether it sees and matches every query at a fixed rate.
//! - `bench-findings`: what findings detection costs the agent, under many
//!   held connections and a live finding.
//! - `matrix`: every kernel program loaded, and the agent smoke tested, on
//!   Debian's 6.1 and 6.12 kernels (in QEMU) and on the host's kernel.
//! - `smoke`: one row of that matrix, on the running kernel.

mod bench;
mod bench_dns;
mod bench_findings;
mod matrix;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Sockeye developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Measure what the agent costs a node, next to no tracer and a
    /// bpftrace script: churn, bulk, mixed, program costs, memory.
    Bench(bench::BenchArgs),
    /// Internal to `bench`: hold connections open until stdin closes.
    #[command(hide = true)]
    BenchHold(bench::rss::HoldArgs),
    /// Measure the agent's overhead on DNS and check it sees every query.
    BenchDns(bench_dns::BenchDnsArgs),
    /// Measure what findings detection costs the agent: the agent with and
    /// without findings under many held connections and a live leak
    /// finding, and one Findings::evaluate on full tables.
    BenchFindings(bench_findings::BenchFindingsArgs),
    /// Load every program and smoke test the agent on Debian's 6.1 and 6.12
    /// kernels (QEMU, TCG) and on this host's kernel; print the verifier
    /// figures per kernel and program and compare them with
    /// tests/kernel-matrix.txt.
    Matrix(matrix::MatrixArgs),
    /// One row of the matrix on the running kernel: `sockeye-agent verify`,
    /// then the smoke test; prints SOCKEYE-MATRIX record lines.
    Smoke(matrix::row::SmokeArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Bench(args) => bench::run(&args),
        Task::BenchHold(args) => bench::rss::hold(&args),
        Task::BenchDns(args) => bench_dns::run(&args),
        Task::BenchFindings(args) => bench_findings::run(&args),
        Task::Matrix(args) => matrix::run(&args),
        Task::Smoke(args) => matrix::row::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The error chain alone: an anyhow backtrace (printed when
            // RUST_BACKTRACE is set) would bury the agent's stderr, which is
            // what explains most failures.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
