//! The agent as a child process: start it, wait until its programs are
//! attached, sample its CPU and memory from /proc, stop it with SIGINT and
//! read its final stats line.
//!
//! The agent is run as `AGENT --output json --interval 1`. It writes JSON
//! lines to stdout (`{"type":"ready",...}` once attached, periodic reports,
//! and `{"type":"stats",...}` as it exits on SIGINT) and logs to stderr.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// How much of the agent's stderr to keep for error messages.
const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// How many recent stdout lines to keep for error messages.
const STDOUT_TAIL_LINES: usize = 5;

/// Figures from the agent's final `{"type":"stats"}` line.
#[derive(Debug, Clone)]
pub struct FinalStats {
    /// Events the agent decoded since it started.
    pub events_received: u64,
    /// Sum of every loss counter, kernel and user side.
    pub lost_total: u64,
    /// Each loss counter by name.
    pub lost: BTreeMap<String, u64>,
    /// The whole final stats line.
    pub raw: Value,
    /// The lines of the agent's last window (printed just before the final
    /// stats line), e.g. its `dns_total` objects.
    pub last_window: Vec<Value>,
}

/// A running agent. Dropping it without [`Agent::stop`] kills it, so that an
/// error mid-round never leaves probes attached behind the benchmark (or
/// the kernel matrix's smoke test).
pub struct Agent {
    child: Child,
    pid: libc::pid_t,
    /// Every stdout line, in order. Read continuously by a thread: the agent
    /// prints a report every second, and a full pipe would block it and skew
    /// the measurement.
    lines: Receiver<String>,
    recent_stdout: Vec<String>,
    /// The `ready` line: the features this kernel gave the agent.
    ready: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    exited: bool,
}

impl Agent {
    /// Starts the agent (with `extra_args`) and waits up to
    /// `ready_timeout` for its ready line.
    pub fn start(path: &Path, extra_args: &[&str], ready_timeout: Duration) -> Result<Agent> {
        let mut child = Command::new(path)
            // No HTTP port and no API socket: their defaults are fixed
            // places another agent (a test suite, scripts/run.sh) may hold.
            .args(["--output", "json", "--interval", "1"])
            .args(["--http-addr", "off", "--api-socket", "off"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the agent {}", path.display()))?;
        let pid = libc::pid_t::try_from(child.id()).context("agent pid out of range")?;

        let stdout = child.stdout.take().context("agent stdout not piped")?;
        let (tx, lines) = mpsc::channel();
        thread::Builder::new()
            .name("bench-agent-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    // A non-UTF-8 line or a read error ends the stream; the
                    // missing ready/stats line is then reported by the waiter.
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            })
            .context("spawning the agent stdout reader")?;

        let stderr_pipe = child.stderr.take().context("agent stderr not piped")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = {
            let stderr = Arc::clone(&stderr);
            thread::Builder::new()
                .name("bench-agent-stderr".into())
                .spawn(move || keep_tail(stderr_pipe, &stderr))
                .context("spawning the agent stderr reader")?
        };

        let mut agent = Agent {
            child,
            pid,
            lines,
            recent_stdout: Vec::new(),
            ready: String::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
            exited: false,
        };
        agent.wait_ready(ready_timeout)?;
        Ok(agent)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) => {
                    if line_type(&line).as_deref() == Some("ready") {
                        self.ready = line;
                        return Ok(());
                    }
                    self.remember(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    bail!(
                        "the agent did not print its ready line within {} s{}",
                        timeout.as_secs(),
                        self.diagnostics()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.reap();
                    bail!(
                        "the agent exited before it was ready ({}){}",
                        describe(status),
                        self.diagnostics()
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's `ready` line (JSON).
    pub fn ready_line(&self) -> &str {
        &self.ready
    }

    /// The next stdout line, or `None` if none came within `timeout`. An
    /// agent that exits before it is stopped is an error.
    pub fn next_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.remember(line.clone());
                Ok(Some(line))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.reap();
                bail!(
                    "the agent exited while running ({}){}",
                    describe(status),
                    self.diagnostics()
                );
            }
        }
    }

    /// Agent CPU time so far (user + system, all threads), in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_cpu_ticks(&stat).with_context(|| format!("parsing {path}: {stat:?}"))
    }

    /// Agent peak resident set size (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        self.status_kib("VmHWM")
    }

    /// Agent resident set size now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS")
    }

    /// A field in KiB of /proc/PID/status (`VmRSS`, `RssAnon`, ...).
    pub fn status_kib(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_status_kib(&status, field).with_context(|| format!("no {field} in {path}"))
    }

    /// The end of the agent's log (stderr) so far, and whether it is all of
    /// it (nothing dropped to keep it within [`STDERR_TAIL_BYTES`]).
    pub fn stderr_tail(&self) -> (String, bool) {
        let bytes = self.stderr.lock().map(|b| b.clone()).unwrap_or_default();
        let whole = bytes.len() < STDERR_TAIL_BYTES;
        (String::from_utf8_lossy(&bytes).into_owned(), whole)
    }

    /// Sends SIGINT, waits up to `timeout` for the stats line and a clean
    /// exit, and returns the stats.
    pub fn stop(mut self, timeout: Duration) -> Result<FinalStats> {
        let deadline = Instant::now() + timeout;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // unreaped child, so it cannot have been recycled.
        if unsafe { libc::kill(self.pid, libc::SIGINT) } != 0 {
            bail!(
                "sending SIGINT to the agent: {}",
                std::io::Error::last_os_error()
            );
        }

        // The agent prints a stats line every interval and a final one as it
        // exits; the lines queue up in the channel during the round, so read
        // until its stdout closes and keep the last one.
        let mut last_stats = None;
        let (mut window, mut last_window) = (Vec::new(), Vec::new());
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) if line_type(&line).as_deref() == Some("stats") => {
                    last_stats = Some(line);
                    last_window = std::mem::take(&mut window);
                }
                Ok(line) => {
                    if let Ok(value) = serde_json::from_str::<Value>(&line) {
                        window.push(value);
                    }
                    self.remember(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    bail!(
                        "the agent did not finish its output within {} s of SIGINT{}",
                        timeout.as_secs(),
                        self.diagnostics()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let Some(stats_line) = last_stats else {
            let status = self.reap();
            bail!(
                "the agent exited without a stats line ({}){}",
                describe(status),
                self.diagnostics()
            );
        };

        // The stats line is the last word; still require a clean exit, since
        // a crash during teardown is a bug worth failing the run for.
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the agent")? {
                self.exited = true;
                if !status.success() {
                    bail!(
                        "the agent exited with {} after SIGINT{}",
                        describe(Some(status)),
                        self.diagnostics()
                    );
                }
                break;
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "the agent did not exit within {} s of SIGINT{}",
                    timeout.as_secs(),
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }

        let mut stats = parse_stats(&stats_line)
            .with_context(|| format!("bad agent stats line: {stats_line}"))?;
        stats.last_window = last_window;
        Ok(stats)
    }

    fn remember(&mut self, line: String) {
        if self.recent_stdout.len() == STDOUT_TAIL_LINES {
            self.recent_stdout.remove(0);
        }
        self.recent_stdout.push(line);
    }

    fn kill(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = true;
        }
    }

    /// Waits for an agent whose stdout has closed; `None` if it will not exit.
    fn reap(&mut self) -> Option<ExitStatus> {
        // stdout closes as the process exits; give it a moment to finish.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = true;
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// The agent's recent output, for error messages.
    fn diagnostics(&mut self) -> String {
        // Let the reader drain what the agent wrote before it died, without
        // hanging if something else still holds the pipe open.
        if let Some(reader) = self.stderr_reader.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !reader.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        let stderr = self
            .stderr
            .lock()
            .map(|bytes| String::from_utf8_lossy(&bytes).trim_end().to_string())
            .unwrap_or_default();
        let mut out = String::new();
        if !self.recent_stdout.is_empty() {
            out.push_str("\n--- agent stdout (last lines) ---\n");
            out.push_str(&self.recent_stdout.join("\n"));
        }
        out.push_str("\n--- agent stderr ---\n");
        out.push_str(if stderr.is_empty() {
            "(empty)"
        } else {
            &stderr
        });
        out
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `pipe` to EOF, keeping the last [`STDERR_TAIL_BYTES`].
fn keep_tail(mut pipe: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut buf) {
        let Ok(mut tail) = tail.lock() else { return };
        tail.extend_from_slice(&buf[..n]);
        let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        tail.drain(..excess);
    }
}

/// The `type` field of a JSON line, if it is a JSON object with one.
fn line_type(line: &str) -> Option<String> {
    let value: Value = serde_json::from_str(line).ok()?;
    Some(value.get("type")?.as_str()?.to_string())
}

fn parse_stats(line: &str) -> Result<FinalStats> {
    let value: Value = serde_json::from_str(line).context("not JSON")?;
    let u64_field = |name: &str| {
        value
            .get(name)
            .ok_or_else(|| anyhow!("missing `{name}`"))?
            .as_u64()
            .ok_or_else(|| anyhow!("`{name}` is not an unsigned integer"))
    };
    let events_received = u64_field("events_received")?;
    let lost_total = u64_field("lost_total")?;
    let lost = value
        .get("lost")
        .ok_or_else(|| anyhow!("missing `lost`"))?
        .as_object()
        .ok_or_else(|| anyhow!("`lost` is not an object"))?
        .iter()
        .map(|(name, n)| {
            let n = n
                .as_u64()
                .ok_or_else(|| anyhow!("`lost.{name}` is not an unsigned integer"))?;
            Ok((name.clone(), n))
        })
        .collect::<Result<_>>()?;
    Ok(FinalStats {
        events_received,
        lost_total,
        lost,
        raw: value,
        last_window: Vec::new(),
    })
}

/// utime + stime from a /proc/<pid>/stat line.
fn parse_cpu_ticks(stat: &str) -> Result<u64> {
    // The command name (field 2) is in parentheses and may contain spaces or
    // ')', so split after the last ')'. What follows starts at field 3
    // (state); utime and stime are fields 14 and 15, i.e. indexes 11 and 12.
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("no ')' after the command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("too few fields"))?
            .parse()
            .context("utime/stime not a number")
    };
    Ok(field(11)? + field(12)?)
}

/// A field in KiB (`VmHWM`, `VmRSS`) from /proc/<pid>/status.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second, the unit of /proc/<pid>/stat CPU times.
pub fn clock_ticks_per_sec() -> Result<u64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| anyhow!("sysconf(_SC_CLK_TCK) failed"))
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => status.to_string(),
        None => "still running; killed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_survive_odd_command_names() {
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 12);
    }

    #[test]
    fn vm_hwm() {
        let status = "Name:\tx\nVmPeak:\t  999 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn stats_line() {
        let s = parse_stats(
            r#"{"type":"stats","events_received":10,"lost_total":3,"lost":{"ring":3,"user":0}}"#,
        )
        .unwrap();
        assert_eq!((s.events_received, s.lost_total), (10, 3));
        assert_eq!(s.lost["ring"], 3);
        assert!(parse_stats(r#"{"type":"stats","events_received":-1}"#).is_err());
        assert!(parse_stats(r#"{"type":"stats","events_received":1,"lost_total":0}"#).is_err());
        assert!(parse_stats("garbage").is_err());
    }
}
