//! The smoke test of one kernel: the real agent binary runs, real TCP
//! connections are made, and the agent's JSON output must show each of them
//! with the right counts, in the right cgroup, with nothing lost.
//!
//! Traffic, all on loopback from a fresh cgroup:
//! - 5 IPv4 and 2 IPv6 connections that send "ping" and close (client
//!   first, so its end goes to TIME_WAIT); both ends must be counted.
//! - 3 connects to a closed port, which must be counted as refused
//!   (sock_ops sees the RST arrive: `segs_in` of a connecting socket).
//! - 3 DNS queries answered NOERROR and 1 answered NXDOMAIN, over UDP.
//! - 3 socket() calls over the smoke process's open-file limit (EMFILE),
//!   which the syscall tracepoints must count (feature `connect_resources`).
//!
//! To add a step: make the traffic in [`exercise`], and add what the agent
//! must report to [`expectations`] (a flow or DNS line; another line type
//! needs its identity in [`expect`]).

mod cgroup;
pub(crate) mod dns;
mod expect;
mod traffic;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use super::protocol::Check;
use crate::bench::agent_proc::Agent;
use expect::{Expectation, Observed};

const V4_CONNECTS: u64 = 5;
const V6_CONNECTS: u64 = 2;
const REFUSED_CONNECTS: u64 = 3;
const DNS_OK_NAME: &str = "ok.smoke.sockeye.test";
const DNS_OK_QUERIES: u16 = 3;
const DNS_NX_NAME: &str = "nx.smoke.sockeye.test";
const FD_LIMIT_FAILURES: u64 = 3;
/// Features a kernel may lack by design: the agent then takes the stable
/// path (see `sockeye_common::names::FALLBACKS`), which the smoke test
/// checks as strictly.
const KERNEL_DEPENDENT_FEATURES: &[&str] = &["dns_process"];

/// How long each phase may take. Under TCG emulation everything is 10 to
/// 50 times slower than on the host.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Loading and attaching the programs, until the agent's ready line.
    pub ready: Duration,
    /// From the end of the traffic until the agent reports all of it.
    pub report: Duration,
    /// From SIGINT until the agent's final stats line and exit.
    pub stop: Duration,
}

/// Runs the agent at `agent_path` and the traffic; every outcome, good or
/// bad, is a check.
pub fn run(agent_path: &Path, timeouts: Timeouts) -> Vec<Check> {
    let mut agent = match Agent::start(agent_path, &[], timeouts.ready) {
        Ok(agent) => agent,
        Err(e) => return vec![failed("agent starts", &e)],
    };
    let mut checks = vec![features(agent.ready_line())];
    match exercise(&mut agent, timeouts.report) {
        Ok(mut more) => checks.append(&mut more),
        Err(e) => checks.push(failed("smoke traffic", &e)),
    }
    checks.push(match agent.stop(timeouts.stop) {
        Ok(stats) => Check {
            name: "nothing lost".to_string(),
            ok: stats.lost_total == 0,
            detail: format!(
                "events_received={} lost_total={} lost={:?}",
                stats.events_received, stats.lost_total, stats.lost
            ),
        },
        Err(e) => failed("agent stops cleanly", &e),
    });
    checks
}

/// Every feature the agent probes for must be on (each is a program that
/// loaded and attached), except the ones a kernel may lack by design.
fn features(ready_line: &str) -> Check {
    let ready: Value = serde_json::from_str(ready_line).unwrap_or_default();
    let Some(features) = ready["features"].as_array() else {
        return Check {
            name: "features".to_string(),
            ok: false,
            detail: format!("no features in the ready line: {ready_line}"),
        };
    };
    let name = |f: &Value| f["name"].as_str().unwrap_or_default().to_string();
    let on: Vec<String> = features
        .iter()
        .filter(|f| f["enabled"] == true)
        .map(name)
        .collect();
    let (allowed_off, off): (Vec<&Value>, Vec<&Value>) = features
        .iter()
        .filter(|f| f["enabled"] != true)
        .partition(|f| KERNEL_DEPENDENT_FEATURES.contains(&name(f).as_str()));
    let describe = |fs: &[&Value]| {
        fs.iter()
            .map(|f| format!("{}: {}", name(f), f["detail"]))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut detail = format!("enabled: {}", on.join(", "));
    if !allowed_off.is_empty() {
        detail.push_str(&format!(
            "; off on this kernel, by design: {}",
            describe(&allowed_off)
        ));
    }
    if !off.is_empty() {
        detail.push_str(&format!("; DISABLED: {}", describe(&off)));
    }
    Check {
        name: "features".to_string(),
        ok: off.is_empty() && !on.is_empty(),
        detail,
    }
}

/// Makes the traffic from a fresh cgroup and waits for the agent to report
/// it.
fn exercise(agent: &mut Agent, report_timeout: Duration) -> Result<Vec<Check>> {
    // Created after the agent attached, so the cgroup_mkdir tracepoint sees it.
    let cgroup = cgroup::SmokeCgroup::enter(&format!("sockeye-smoke-{}", std::process::id()))?;
    let v4 = traffic::Server::start(IpAddr::V4(Ipv4Addr::LOCALHOST), V4_CONNECTS as usize)?;
    let v6 = traffic::Server::start(IpAddr::V6(Ipv6Addr::LOCALHOST), V6_CONNECTS as usize)?;
    let closed = traffic::closed_port(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    traffic::connect_and_close(v4.addr, V4_CONNECTS as usize)?;
    traffic::connect_and_close(v6.addr, V6_CONNECTS as usize)?;
    traffic::connect_refused(closed, REFUSED_CONNECTS as usize)?;
    let (v4, v6) = (v4.finish()?, v6.finish()?);
    let dns_server = dns::Server::start(usize::from(DNS_OK_QUERIES) + 1)?;
    dns::ask(DNS_OK_NAME, DNS_OK_QUERIES)?;
    dns::ask(DNS_NX_NAME, 1)?;
    dns_server.finish()?;
    // Last: every other thread of this process is done opening files.
    traffic::fd_limit(FD_LIMIT_FAILURES as usize)?;

    let expectations = expectations(v4.ip(), v4.port(), v6.port(), closed.port())?;
    let mut observed = Observed::new(cgroup.id);
    let deadline = Instant::now() + report_timeout;
    // The agent writes every flow and DNS line, then a stats line, once per
    // interval: judge whole intervals, never half-way through a report.
    let mut checks = evaluate(&observed, &expectations, &cgroup.path);
    while !checks.iter().all(|c| c.ok) && Instant::now() < deadline {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(line) = agent.next_line(remaining)? else {
            break;
        };
        let line: Value = serde_json::from_str(&line)
            .with_context(|| format!("the agent printed a line that is not JSON: {line}"))?;
        observed.record(&line);
        if line["type"] == "stats" {
            checks = evaluate(&observed, &expectations, &cgroup.path);
        }
    }
    Ok(checks)
}

fn expectations(
    v4: IpAddr,
    v4_port: u16,
    v6_port: u16,
    closed_port: u16,
) -> Result<Vec<Expectation>> {
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    // "ping" plus one sequence byte each for SYN and FIN.
    let sent = |n: u64| n * (4 + 2);
    let client = |n: u64| {
        vec![
            ("connects_ok", n),
            ("opened_total", n),
            ("closed_total", n),
            ("open", 0),
            ("states.TIME_WAIT", n),
            ("bytes_sent", sent(n)),
        ]
    };
    let server_side = |n: u64| vec![("connects_ok", n), ("closed_total", n), ("open", 0)];
    let server = dns::server();
    let queries = u64::from(DNS_OK_QUERIES);
    Ok(vec![
        Expectation::flow(
            "IPv4 connects",
            "outbound",
            v4,
            v4_port,
            client(V4_CONNECTS),
        ),
        Expectation::flow(
            "IPv4 accepts",
            "inbound",
            v4,
            v4_port,
            server_side(V4_CONNECTS),
        ),
        Expectation::flow(
            "IPv6 connects",
            "outbound",
            v6,
            v6_port,
            client(V6_CONNECTS),
        ),
        Expectation::flow(
            "IPv6 accepts",
            "inbound",
            v6,
            v6_port,
            server_side(V6_CONNECTS),
        ),
        Expectation::flow(
            "refused connects",
            "outbound",
            v4,
            closed_port,
            vec![
                ("connects_ok", 0),
                ("connects_failed.refused", REFUSED_CONNECTS),
                ("open", 0),
            ],
        ),
        Expectation::dns(
            "DNS answers",
            DNS_OK_NAME,
            "A",
            server,
            vec![
                ("queries", queries),
                ("answers", queries),
                ("rcodes.NOERROR", queries),
                ("retries", 0),
                ("timeouts", 0),
            ],
        ),
        Expectation::dns(
            "DNS NXDOMAIN",
            DNS_NX_NAME,
            "A",
            server,
            vec![
                ("queries", 1),
                ("answers", 1),
                ("rcodes.NXDOMAIN", 1),
                ("timeouts", 0),
            ],
        ),
        Expectation::resource_failure(
            "socket() over the fd limit",
            "socket",
            "EMFILE",
            None,
            vec![("failures_total", FD_LIMIT_FAILURES)],
        ),
    ])
}

fn evaluate(observed: &Observed, expectations: &[Expectation], path: &str) -> Vec<Check> {
    let mut checks: Vec<Check> = expectations.iter().map(|e| e.check(observed)).collect();
    checks.push(expect::cgroup_named(observed, expectations, path));
    checks
}

fn failed(name: &str, error: &anyhow::Error) -> Check {
    Check {
        name: name.to_string(),
        ok: false,
        detail: format!("{error:#}"),
    }
}
