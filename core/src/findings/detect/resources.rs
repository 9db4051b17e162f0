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

use ahash::HashMap;

use sockeye_common::resources::errno;

use crate::{
    aggregate::{
        flows::{Direction, FlowKey},
        resources::{errno_meaning, errno_name, FailureKey, FailureStats, Limit, Syscall},
        Aggregator,
    },
    event::comm_string,
    findings::{
        config::ResourcesConfig, Candidate, Destination, Evidence, Inputs, Key, Kind, Severity,
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
pub fn detect(inputs: &Inputs<'_>, config: &ResourcesConfig) -> Vec<Candidate> {
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
    let sockets = SocketsTo::count(inputs.tcp, &groups);
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
/// local port). Counted in one pass over the socket table.
struct SocketsTo<'a> {
    open: HashMap<FlowKey, u64>,
    tcp: &'a Aggregator,
}

impl<'a> SocketsTo<'a> {
    fn flow(cgroup: u64, dest: SocketAddr) -> FlowKey {
        FlowKey::new(cgroup, Direction::Outbound, dest.ip(), 0, dest.port())
    }

    fn count(tcp: &'a Aggregator, groups: &BTreeMap<(u64, Option<SocketAddr>), Group<'_>>) -> Self {
        let mut open: HashMap<FlowKey, u64> = groups
            .iter()
            .filter(|(_, keys)| keys.iter().any(|(k, _)| k.errno == errno::EADDRNOTAVAIL))
            .filter_map(|((cgroup, dest), _)| Some((Self::flow(*cgroup, (*dest)?), 0)))
            .collect();
        if !open.is_empty() {
            for (_, s) in tcp.sockets.iter() {
                if let Some(n) = open.get_mut(&s.flow) {
                    *n += 1;
                }
            }
        }
        Self { open, tcp }
    }

    /// (open, in TIME_WAIT) from `cgroup` to `dest`.
    fn get(&self, cgroup: u64, dest: SocketAddr) -> (u64, u64) {
        let flow = Self::flow(cgroup, dest);
        let open = self.open.get(&flow).copied().unwrap_or(0);
        (open, self.tcp.time_wait.count(&flow))
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
) -> Option<Candidate> {
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
    let window = seconds(window_ns);
    let mut evidence = Vec::new();
    for (k, s) in keys {
        evidence.push(Evidence::new(
            format!(
                "{} {} failed with {} ({}) in the last {window}",
                s.recent(now),
                calls(k.syscall, k.destination),
                errno_name(k.errno),
                errno_meaning(k.errno)
            ),
            s.recent(now) as f64,
            "failures",
            now,
        ));
    }
    evidence.push(Evidence::new(
        format!(
            "failing for {} ({episode} failures in this episode, {total} since the agent started)",
            seconds(last_ns.saturating_sub(since_ns))
        ),
        episode as f64,
        "failures",
        since_ns,
    ));
    let process = format!("pid {} ({})", lead.last_tgid, comm_string(&lead.last_comm));
    let mut at_limit = false;
    for (k, s) in keys {
        if let Some(limit) = s.limit {
            let (fact, reached) = limit_evidence(sockets, k, s, limit);
            at_limit |= reached;
            evidence.push(fact);
        }
    }
    let signals = 1 + u32::from(at_limit) + u32::from(sustained);
    let severity = if sustained || lead_key.errno == errno::ENFILE {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Some(Candidate {
        key: Key {
            kind: Kind::ConnectResourceExhaustion,
            subject: cgroup,
            destination: dest.map(|d| Destination {
                addr: d.ip(),
                port: d.port(),
                dns_name: None,
            }),
        },
        subject: cgroup,
        since_ns,
        // Failures have no end the kernel reports: the engine resolves the
        // finding once it stops holding.
        ended_ns: None,
        severity,
        signals,
        summary: summary(lead_key, lead.recent(now), &process, &window),
        evidence,
        next_step: next_step(lead_key, lead.last_tgid),
        affected: Vec::new(),
    })
}

/// "connects to 10.0.0.5:6379", "socket() calls".
fn calls(syscall: Syscall, dest: Option<SocketAddr>) -> String {
    match (syscall, dest) {
        (Syscall::Connect, Some(d)) => format!("connects to {d}"),
        (Syscall::Connect, None) => "connects (destination unknown)".to_string(),
        (Syscall::Socket, _) => "socket() calls".to_string(),
    }
}

fn summary(key: &FailureKey, recent: u64, process: &str, window: &str) -> String {
    let what = calls(key.syscall, key.destination);
    let name = errno_name(key.errno);
    match key.errno {
        errno::EADDRNOTAVAIL => format!(
            "no free local port: {recent} {what} failed with {name} in the last {window} (last by {process})"
        ),
        errno::EMFILE => format!(
            "{process} hit its open-file limit: {recent} {what} failed with {name} in the last {window}"
        ),
        errno::ENFILE => format!(
            "the node is out of file handles: {recent} {what} by {process} failed with {name} in the last {window}"
        ),
        _ => format!(
            "the kernel had no memory for sockets: {recent} {what} failed with {name} in the last {window} (last by {process})"
        ),
    }
}

/// The limit as a fact, and whether usage was at it.
fn limit_evidence(
    sockets: &SocketsTo<'_>,
    key: &FailureKey,
    s: &FailureStats,
    limit: Limit,
) -> (Evidence, bool) {
    let process = format!("pid {} ({})", s.last_tgid, comm_string(&s.last_comm));
    match limit {
        Limit::PortRange { low, high } => {
            let ports = u64::from(high - low) + 1;
            let mut fact = format!(
                "local port range {low}-{high} ({ports} ports) in the network namespace of {process}"
            );
            let mut reached = false;
            if let Some(d) = key.destination {
                let (open, time_wait) = sockets.get(key.cgroup_id, d);
                fact.push_str(&format!(
                    "; the agent sees {} sockets from this workload to {d} ({open} open, {time_wait} in TIME_WAIT)",
                    open + time_wait
                ));
                reached = (open + time_wait) as f64 >= AT_LIMIT * ports as f64;
            }
            (
                Evidence::new(fact, ports as f64, "ports", s.last_ns),
                reached,
            )
        }
        Limit::OpenFiles { soft, hard, open } => {
            let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
            let mut fact = format!(
                "{process}: RLIMIT_NOFILE {} (hard {})",
                show(soft),
                show(hard)
            );
            if let Some(n) = open {
                fact.push_str(&format!(", {n} files open just after the failure"));
            }
            let reached =
                matches!((soft, open), (Some(l), Some(n)) if n as f64 >= AT_LIMIT * l as f64);
            let value = soft.map_or(f64::INFINITY, |l| l as f64);
            (Evidence::new(fact, value, "files", s.last_ns), reached)
        }
        Limit::SystemFiles { allocated, max } => (
            Evidence::new(
                format!("the node has {allocated} file handles allocated of fs.file-max {max}"),
                allocated as f64,
                "files",
                s.last_ns,
            ),
            allocated as f64 >= AT_LIMIT * max as f64,
        ),
    }
}

fn next_step(key: &FailureKey, tgid: u32) -> String {
    match key.errno {
        errno::EADDRNOTAVAIL => "Reuse connections (keep-alive, a connection pool) instead of opening one per request: every connection this side closes holds its local port in TIME_WAIT for 60 s. If the connection rate is real, widen net.ipv4.ip_local_port_range in the pod's network namespace or spread connects over more destination addresses.".to_string(),
        errno::EMFILE => format!("Look for leaked descriptors in pid {tgid} (ls -l /proc/{tgid}/fd shows what they are); if the load needs that many, raise the process's open-file limit (ulimit -n, systemd LimitNOFILE, the container runtime's nofile ulimit)."),
        errno::ENFILE => "The node's file table is full: find the processes holding the most files (ls /proc/*/fd | wc -l per process) and raise fs.file-max only if their use is legitimate.".to_string(),
        _ => "The kernel could not allocate socket memory: check the node's memory pressure (free -m, /proc/net/sockstat against net.ipv4.tcp_mem) and the pod's memory limit.".to_string(),
    }
}

/// "60 s", "2.5 s", "3 min".
fn seconds(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s >= 120.0 {
        format!("{:.0} min", s / 60.0)
    } else if s >= 10.0 || s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
