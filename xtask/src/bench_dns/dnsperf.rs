//! Runs dnsperf (Debian) and reads its summary, and, in verbose mode, the
//! latency of every query for percentiles.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Default)]
pub struct Run {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub qps: f64,
    /// Per-query latencies in ns (only with `verbose`).
    pub latencies_ns: Vec<u64>,
}

impl Run {
    /// The q-quantile of the per-query latencies (0 <= q <= 1).
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        if self.latencies_ns.is_empty() {
            return None;
        }
        let mut v = self.latencies_ns.clone();
        v.sort_unstable();
        let idx = ((v.len() - 1) as f64 * q).round() as usize;
        Some(v[idx])
    }
}

/// `dnsperf -s SERVER -d QUERIES -l SECS [-Q QPS] [-v]`.
pub fn run(
    server: &str,
    queries: &Path,
    secs: u64,
    max_qps: Option<u32>,
    verbose: bool,
) -> Result<Run> {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", server, "-l", &secs.to_string()])
        .arg("-d")
        .arg(queries);
    if let Some(qps) = max_qps {
        cmd.args(["-Q", &qps.to_string()]);
    }
    if verbose {
        cmd.arg("-v");
    }
    let out = cmd
        .output()
        .context("running dnsperf (apt install dnsperf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dnsperf failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text)
}

fn parse(text: &str) -> Result<Run> {
    let mut run = Run::default();
    let first_number = |line: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|w| w.parse::<f64>().ok())
            .with_context(|| format!("no number in dnsperf line {line:?}"))
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Queries sent:") {
            run.sent = first_number(rest)? as u64;
        } else if let Some(rest) = t.strip_prefix("Queries completed:") {
            run.completed = first_number(rest)? as u64;
        } else if let Some(rest) = t.strip_prefix("Queries lost:") {
            run.lost = first_number(rest)? as u64;
        } else if let Some(rest) = t.strip_prefix("Queries per second:") {
            run.qps = first_number(rest)?;
        } else if let Some(rest) = t.strip_prefix("> ") {
            // "> NOERROR n1.bench.test A 0.000274": latency in seconds last.
            if let Some(secs) = rest
                .split_whitespace()
                .last()
                .and_then(|s| s.parse::<f64>().ok())
            {
                run.latencies_ns.push((secs * 1e9) as u64);
            }
        }
    }
    if run.sent == 0 {
        bail!("dnsperf sent no queries:\n{text}");
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summary_and_verbose_lines() {
        let text = "> NOERROR n1.bench.test A 0.000274\n> NOERROR n2.bench.test A 0.000088\n\
                    Statistics:\n\n  Queries sent:         254949\n  Queries completed:    254940 (100.00%)\n\
                    \x20 Queries lost:         9 (0.00%)\n  Queries per second:   84897.508209\n";
        let run = parse(text).unwrap();
        assert_eq!((run.sent, run.completed, run.lost), (254949, 254940, 9));
        assert!((run.qps - 84897.5).abs() < 0.1);
        assert_eq!(run.latencies_ns, vec![274_000, 88_000]);
        assert_eq!(run.quantile_ns(1.0), Some(274_000));
    }

    #[test]
    fn no_queries_is_an_error() {
        assert!(parse("Statistics:\n").is_err());
    }
}
