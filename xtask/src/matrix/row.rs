//! `cargo xtask smoke`: one row of the kernel matrix, on the running kernel.
//! It runs `sockeye-agent verify` (every program through the verifier) and
//! the smoke test, and prints the record lines of [`super::protocol`] on
//! stdout. Inside a matrix guest this is what `/init` runs; on the host,
//! `cargo xtask matrix` runs it as a child for the host row.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::protocol::{self, Check};
use super::smoke;

#[derive(Args, Debug)]
pub struct SmokeArgs {
    /// The agent binary to verify and run.
    #[arg(long)]
    agent: PathBuf,
    /// Seconds the agent may take to load and attach its programs.
    #[arg(long, default_value_t = 120)]
    ready_timeout: u64,
    /// Seconds the agent may take to report the traffic once it is done.
    #[arg(long, default_value_t = 60)]
    report_timeout: u64,
}

pub fn run(args: &SmokeArgs) -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading /proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    println!("{}", protocol::kernel_line(&release));

    let mut checks = vec![verify(&args.agent)];
    checks.extend(smoke::run(
        &args.agent,
        smoke::Timeouts {
            ready: Duration::from_secs(args.ready_timeout),
            report: Duration::from_secs(args.report_timeout),
            stop: Duration::from_secs(30),
        },
    ));
    for check in &checks {
        println!("{}", protocol::check_line(check));
    }
    let passed = checks.iter().all(|c| c.ok);
    println!("{}", protocol::result_line(&release, passed));
    if !passed {
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect();
        bail!("failed on {release}: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs `AGENT verify`, passing each of its program lines on; the check
/// says whether it ran and every program loaded.
fn verify(agent: &std::path::Path) -> Check {
    let output = match Command::new(agent).arg("verify").output() {
        Ok(output) => output,
        Err(e) => {
            return Check {
                name: "programs load".to_string(),
                ok: false,
                detail: format!("cannot run {} verify: {e}", agent.display()),
            }
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut programs = 0;
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        println!("{}", protocol::program_line(line));
        programs += 1;
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Check {
        name: "programs load".to_string(),
        ok: output.status.success() && programs > 0,
        detail: if output.status.success() {
            format!("{programs} programs loaded")
        } else {
            format!("verify {}: {}", output.status, stderr.trim())
        },
    }
}
