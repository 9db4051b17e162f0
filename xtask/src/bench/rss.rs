//! The memory arm: the agent's resident memory idle, and with many open
//! sockets held by several processes (issue 17: 50,000 sockets held by 5
//! processes). The holders are this binary again (`xtask bench-hold`),
//! each holding its share of connections with both ends, so each socket
//! the agent tracks belongs to a real process with its own pid.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

use super::agent_proc::Agent;
use super::held::Held;

/// What `bench-hold` prints once its connections are open.
const HOLDING: &str = "holding";
/// How long the agent may take to track every socket.
const TRACK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct HoldArgs {
    /// Connections to hold (two sockets each).
    #[arg(long)]
    conns: usize,
}

/// `xtask bench-hold`: opens the connections, says so on stdout, and
/// holds them until stdin closes (the parent exited or is done).
pub fn hold(args: &HoldArgs) -> Result<()> {
    super::held::raise_fd_limit(2 * args.conns as u64 + 64, "raise --rss-processes")?;
    let held = Held::open(args.conns)?;
    println!("{HOLDING} {}", held.len());
    let mut line = String::new();
    // EOF (or an error) on stdin is the signal to let go.
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
    Ok(())
}

/// One holder process. Dropping it closes its stdin and reaps it.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Holder {
    fn start(conns: usize) -> Result<Holder> {
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        let mut child = Command::new(exe)
            .args(["bench-hold", "--conns", &conns.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a bench-hold process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("bench-hold stdout not piped")?;
        let mut holder = Holder { child, stdin };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading bench-hold's stdout")?;
        if !line.starts_with(HOLDING) {
            let status = holder.child.wait()?;
            bail!("bench-hold did not open its connections ({status})");
        }
        Ok(holder)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// What the memory arm measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Memory {
    pub idle_rss_mib: f64,
    pub sockets: usize,
    pub processes: usize,
    /// Sockets the agent said it tracked (its last stats line).
    pub tracked_sockets: u64,
    pub rss_mib: f64,
    /// What the resident memory is: the agent's own heap and stacks
    /// (anonymous), its binary (file), and shared mappings, which are the
    /// ring buffers the kernel writes into.
    pub rss_anon_mib: f64,
    pub rss_file_mib: f64,
    pub rss_shmem_mib: f64,
    pub peak_rss_mib: f64,
    pub lost_total: u64,
    /// Loss counters that are not 0.
    pub lost: std::collections::BTreeMap<String, u64>,
}

/// Starts the agent, reads its idle RSS, opens `sockets` sockets over
/// `processes` holders, waits until the agent tracks them, and reads its
/// RSS again.
pub fn measure(
    agent_path: &Path,
    agent_args: &[&str],
    sockets: usize,
    processes: usize,
) -> Result<Memory> {
    let mut agent = Agent::start(agent_path, agent_args, super::READY_TIMEOUT)?;
    // Two windows: the first one's allocations (tables, buffers) are made.
    wait_windows(&mut agent, 2)?;
    let idle_rss_mib = agent.rss_kib()? as f64 / 1024.0;
    let per_process = sockets / processes / 2;
    let mut holders = Vec::with_capacity(processes);
    for _ in 0..processes {
        holders.push(Holder::start(per_process)?);
    }
    let expected = (per_process * 2 * processes) as u64;
    let tracked_sockets = wait_tracked(&mut agent, expected)?;
    // One more window with everything in place.
    wait_windows(&mut agent, 1)?;
    let rss_mib = agent.rss_kib()? as f64 / 1024.0;
    let mib = |field: &str| agent.status_kib(field).map(|k| k as f64 / 1024.0);
    let (rss_anon_mib, rss_file_mib, rss_shmem_mib) =
        (mib("RssAnon")?, mib("RssFile")?, mib("RssShmem")?);
    let peak_rss_mib = agent.peak_rss_kib()? as f64 / 1024.0;
    drop(holders);
    let stats = agent.stop(super::STOP_TIMEOUT)?;
    Ok(Memory {
        idle_rss_mib,
        sockets: per_process * 2 * processes,
        processes,
        tracked_sockets,
        rss_mib,
        rss_anon_mib,
        rss_file_mib,
        rss_shmem_mib,
        peak_rss_mib,
        lost_total: stats.lost_total,
        lost: stats.lost.into_iter().filter(|(_, n)| *n > 0).collect(),
    })
}

/// Waits for `n` stats lines (one per window).
fn wait_windows(agent: &mut Agent, n: usize) -> Result<()> {
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(10 * n as u64);
    while seen < n {
        if Instant::now() >= deadline {
            bail!("the agent printed no stats line for 10 s");
        }
        if let Some(line) = agent.next_line(Duration::from_secs(1))? {
            if tracked(&line).is_some() {
                seen += 1;
            }
        }
    }
    Ok(())
}

/// Waits until a stats line says the agent tracks at least `expected`
/// sockets; returns the count.
fn wait_tracked(agent: &mut Agent, expected: u64) -> Result<u64> {
    let deadline = Instant::now() + TRACK_TIMEOUT;
    let mut last = 0;
    while Instant::now() < deadline {
        if let Some(n) = agent
            .next_line(Duration::from_secs(1))?
            .and_then(|l| tracked(&l))
        {
            last = n;
            if n >= expected {
                return Ok(n);
            }
        }
    }
    bail!(
        "the agent tracked {last} sockets, not the {expected} held, within {} s",
        TRACK_TIMEOUT.as_secs()
    )
}

/// `tracked_sockets` of a stats line.
fn tracked(line: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v.get("type")?.as_str()? != "stats" {
        return None;
    }
    v.get("tracked_sockets")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::tracked;

    #[test]
    fn tracked_sockets_of_stats_lines_only() {
        assert_eq!(
            tracked(r#"{"type":"stats","tracked_sockets":50010}"#),
            Some(50010)
        );
        assert_eq!(tracked(r#"{"type":"flow","tracked_sockets":1}"#), None);
        assert_eq!(tracked("garbage"), None);
    }
}
