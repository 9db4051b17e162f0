//! Resource exhaustion at connect: connects that find no free local port
//! (EADDRNOTAVAIL) and socket() calls over the open-file limit (EMFILE,
//! ENFILE) or out of kernel memory (ENOBUFS, ENOMEM), as the kernel
//! reported them (`aggregate::resources`).
//!
//! One finding per (workload, destination): socket() failures and connects
//! whose destination is unknown share the destination-less one. It holds
//! while failures keep arriving (the last at most [`HOLD_NS`] ago) and at
//! least `resources.min_failures` fell within the window
//! (`resources.resolve_after_s`); the engine resolves it a window after it
//! stops holding. Critical once failures have kept coming for
//! [`SUSTAINED_NS`], or at once when the whole node is out of file handles.
//!
//! Signals: the kernel's errno (always); the usage at the limit it names
//! (sockets to the destination filling the port range, descriptors filling
//! RLIMIT_NOFILE, the node's file table filling fs.file-max); failures that
//! keep coming.

use std::{collections::BTreeMap, net::SocketAddr};

use sockeye_common::resources::errno;

use crate::{
    aggregate::{
        flows::{Direction, FlowKey},
        resources::{errno_meaning, errno_name, FailureKey, FailureStats, Limit, Syscall},
        Aggregator,
    },
    event::comm_string,
    findings::{
        config::ResourcesConfig, About, Destination, Fact, Inputs, Kind, Severity, Unit, Verdict,
    },
};

/// A finding holds while its last failure is at most this old: the
/// evaluations run every second, so this tolerates a late one or two. The
/// engine then keeps it open for `resolve_after_s` across quiet gaps.
pub const HOLD_NS: u64 = 3_000_000_000;
/// Failures that have kept coming this long make the finding critical.
pub const SUSTAINED_NS: u64 = 10_000_000_000;
/// Usage at or above this share of a limit counts as the limit reached.
const AT_LIMIT: f64 = 0.9;

/// The failure keys of one (workload, destination).
type Group<'a> = Vec<(&'a FailureKey, &'a FailureStats)>;

/// The candidates that hold at `inputs.now_ns`.
pub fn detect(inputs: &Inputs<'_>, config: &ResourcesConfig) -> Vec<Verdict> {
    let now = inputs.now_ns;
    let failures = &inputs.tcp.resources;
    // Group the active keys by (workload, destination); BTreeMap keeps the
    // evidence in a stable order.
    let mut groups: BTreeMap<(u64, Option<SocketAddr>), Group<'_>> = BTreeMap::new();
    for (key, stats) in failures.iter() {
        if stats.recent(now) > 0 {
            groups
                .entry((key.cgroup_id, key.destination))
                .or_default()
                .push((key, stats));
        }
    }
    let window_ns = failures.window_ns();
    let sockets = SocketsTo { tcp: inputs.tcp };
    groups
        .into_iter()
        .filter_map(|((cgroup, dest), mut keys)| {
            keys.sort_by_key(|(k, s)| (std::cmp::Reverse(s.recent(now)), **k));
            candidate(&sockets, cgroup, dest, &keys, config, window_ns, now)
        })
        .collect()
}

/// Sockets the agent tracks to the destinations that ran out of ports,
/// per workload: open ones and those in TIME_WAIT (each still holds its
/// local port).
struct SocketsTo<'a> {
    tcp: &'a Aggregator,
}

impl SocketsTo<'_> {
    /// (open, in TIME_WAIT) from `cgroup` to `dest`.
    fn get(&self, cgroup: u64, dest: SocketAddr) -> (u64, u64) {
        let flow = FlowKey::new(cgroup, Direction::Outbound, dest.ip(), 0, dest.port());
        (
            self.tcp.socket_counts(&flow).open,
            self.tcp.time_wait.count(&flow),
        )
    }
}

fn candidate(
    sockets: &SocketsTo<'_>,
    cgroup: u64,
    dest: Option<SocketAddr>,
    keys: &[(&FailureKey, &FailureStats)],
    config: &ResourcesConfig,
    window_ns: u64,
    now: u64,
) -> Option<Verdict> {
    let recent: u64 = keys.iter().map(|(_, s)| s.recent(now)).sum();
    let last_ns = keys.iter().map(|(_, s)| s.last_ns).max()?;
    if recent < config.min_failures || now.saturating_sub(last_ns) > HOLD_NS {
        return None;
    }
    let since_ns = keys.iter().map(|(_, s)| s.episode_start_ns).min()?;
    let episode: u64 = keys.iter().map(|(_, s)| s.episode_failures).sum();
    let total: u64 = keys.iter().map(|(_, s)| s.total).sum();
    // The errno with the most recent failures leads the summary and the
    // advice (keys are sorted that way).
    let (lead_key, lead) = keys[0];
    let sustained = last_ns.saturating_sub(since_ns) >= SUSTAINED_NS;
    // The lead errno (most recent failures) leads the summary and advice.
    let mut facts = vec![
        Fact::count("errno", u64::from(lead_key.errno), Unit::Code, now)
            .about(About::Name(errno_name(lead_key.errno).to_string())),
        Fact::count(
            "process",
            u64::from(lead.last_tgid),
            Unit::Pid,
            lead.last_ns,
        )
        .about(About::Process {
            pid: lead.last_tgid,
            comm: Some(comm_string(&lead.last_comm)),
        }),
        Fact::seconds("window_s", window_ns, now),
        Fact::count("lead_failures", lead.recent(now), Unit::Failures, now)
            .about(About::Name(calls(lead_key.syscall, lead_key.destination))),
    ];
    for (k, s) in keys {
        facts.push(
            Fact::count("failures", s.recent(now), Unit::Failures, now).about(About::Name(
                format!(
                    "{} failed with {} ({})",
                    calls(k.syscall, k.destination),
                    errno_name(k.errno),
                    errno_meaning(k.errno)
                ),
            )),
        );
    }
    facts.push(Fact::seconds(
        "failing_for_s",
        last_ns.saturating_sub(since_ns),
        since_ns,
    ));
    facts.push(Fact::count(
        "episode_failures",
        episode,
        Unit::Failures,
        since_ns,
    ));
    facts.push(Fact::count(
        "total_failures",
        total,
        Unit::Failures,
        since_ns,
    ));
    let mut at_limit = false;
    for (k, s) in keys {
        if let Some(limit) = s.limit {
            at_limit |= limit_facts(sockets, k, s, limit, &mut facts);
        }
    }
    let mut signals = vec!["errno"];
    if at_limit {
        signals.push("at_limit");
    }
    if sustained {
        signals.push("sustained");
    }
    let severity = if sustained || lead_key.errno == errno::ENFILE {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Some(Verdict {
        kind: Kind::ConnectResourceExhaustion,
        key_subject: cgroup,
        subject: cgroup,
        destination: dest.map(|d| Destination::endpoint(d.ip(), d.port())),
        since_ns,
        // Failures have no end the kernel reports: the engine resolves the
        // finding once it stops holding.
        ended_ns: None,
        severity,
        signals,
        facts,
        affected: Vec::new(),
    })
}

/// "connects to 10.0.0.5:6379", "socket() calls".
pub fn calls(syscall: Syscall, dest: Option<SocketAddr>) -> String {
    match (syscall, dest) {
        (Syscall::Connect, Some(d)) => format!("connects to {d}"),
        (Syscall::Connect, None) => "connects (destination unknown)".to_string(),
        (Syscall::Socket, _) => "socket() calls".to_string(),
    }
}

/// The limit as facts; whether usage was at it.
fn limit_facts(
    sockets: &SocketsTo<'_>,
    key: &FailureKey,
    s: &FailureStats,
    limit: Limit,
    facts: &mut Vec<Fact>,
) -> bool {
    let at = s.last_ns;
    let who = About::Process {
        pid: s.last_tgid,
        comm: Some(comm_string(&s.last_comm)),
    };
    match limit {
        Limit::PortRange { low, high } => {
            let ports = u64::from(high - low) + 1;
            facts.push(
                Fact::count("port_range_low", u64::from(low), Unit::Ports, at).about(who.clone()),
            );
            facts.push(
                Fact::count("port_range_high", u64::from(high), Unit::Ports, at).about(who.clone()),
            );
            facts.push(Fact::count("port_range_ports", ports, Unit::Ports, at).about(who));
            let Some(d) = key.destination else {
                return false;
            };
            let (open, time_wait) = sockets.get(key.cgroup_id, d);
            facts.push(
                Fact::count(
                    "sockets_to_destination",
                    open + time_wait,
                    Unit::Sockets,
                    at,
                )
                .about(About::Endpoint(d)),
            );
            facts.push(
                Fact::count("open_to_destination", open, Unit::Sockets, at)
                    .about(About::Endpoint(d)),
            );
            facts.push(
                Fact::count("time_wait_to_destination", time_wait, Unit::Sockets, at)
                    .about(About::Endpoint(d)),
            );
            (open + time_wait) as f64 >= AT_LIMIT * ports as f64
        }
        Limit::OpenFiles { soft, hard, open } => {
            let limit = |v: Option<u64>| v.map_or(f64::INFINITY, |n| n as f64);
            facts.push(Fact::new("nofile_soft", limit(soft), Unit::Files, at).about(who.clone()));
            facts.push(Fact::new("nofile_hard", limit(hard), Unit::Files, at).about(who.clone()));
            if let Some(n) = open {
                facts.push(Fact::count("files_open", n, Unit::Files, at).about(who));
            }
            matches!((soft, open), (Some(l), Some(n)) if n as f64 >= AT_LIMIT * l as f64)
        }
        Limit::SystemFiles { allocated, max } => {
            facts.push(Fact::count(
                "file_handles_allocated",
                allocated,
                Unit::Files,
                at,
            ));
            facts.push(Fact::count("file_max", max, Unit::Files, at));
            allocated as f64 >= AT_LIMIT * max as f64
        }
    }
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
