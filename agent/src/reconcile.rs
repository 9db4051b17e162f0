//! Sockets the agent believes open although the kernel closed them: a close
//! event lost (ring buffer full, an event the kernel never sent) would keep
//! a socket "open" forever, and with it an open-socket gauge, an age that
//! grows, a leak finding. Every `every`, the kernel's own socket table of
//! each network namespace (sock_diag: the cookies the eBPF programs use as
//! ids) is compared with the agent's table; a socket the kernel no longer
//! has in two comparisons in a row is closed in the aggregates and counted
//! (`sockets_reconciled`). Twice, because a socket that closes while the
//! dump runs is absent from it while its close event is still on its way.
//!
//! Sockets found by the start-up scan are kept up to date from /proc by
//! `preexisting`; this covers the ones the kernel programs reported.
//!
//! A namespace that cannot be read (a capability missing) makes the whole
//! pass inconclusive: its sockets could be any of the agent's, so nothing is
//! closed and the pass is counted as incomplete.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    aggregate::{sockets::Origin, Aggregator},
    sock_diag::{DiagSocket, Query},
};

/// Counters of the reconciliation, for the agent's health.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileStats {
    pub passes: u64,
    /// Passes that read every namespace.
    pub complete: u64,
    /// Sockets closed because the kernel no longer had them.
    pub sockets_reconciled: u64,
    pub namespaces_read: u64,
}

/// The tracked kernel sockets absent from `live`, among those not seen
/// since before `before_ns` (a socket that appeared after the dump started
/// cannot be in it).
pub fn missing<'a>(
    tracked: impl Iterator<Item = (&'a u64, &'a crate::aggregate::sockets::TrackedSocket)>,
    live: &HashSet<u64>,
    before_ns: u64,
) -> HashSet<u64> {
    tracked
        .filter(|(id, s)| {
            s.origin == Origin::Kernel && s.opened_ns < before_ns && !live.contains(*id)
        })
        .map(|(id, _)| *id)
        .collect()
}

/// A few processes of every network namespace under `proc_root`, by the
/// namespace's inode (a process may exit before its namespace is entered).
fn namespaces(proc_root: &Path) -> HashMap<u64, Vec<u32>> {
    use std::os::unix::fs::MetadataExt;
    let mut out: HashMap<u64, Vec<u32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(e.path().join("ns/net")) else {
            continue;
        };
        let pids = out.entry(meta.ino()).or_default();
        if pids.len() < 3 {
            pids.push(pid);
        }
    }
    out
}

/// The live socket cookies of every namespace, or `None` if one could not
/// be read.
fn live_cookies(proc_root: &Path) -> Option<(HashSet<u64>, u64)> {
    let query = Query {
        tcp_info: false,
        ..Query::default()
    };
    let mut live = HashSet::new();
    let mut read = 0;
    for (netns, pids) in namespaces(proc_root) {
        let mut done = false;
        let mut gone = 0;
        for &pid in &pids {
            match DiagSocket::enter(proc_root, pid).and_then(|mut d| d.tcp_sockets(&query)) {
                Ok(sockets) => {
                    live.extend(sockets.iter().map(|s| s.cookie));
                    done = true;
                    break;
                }
                Err(e) if e.is_gone() => gone += 1,
                Err(e) => {
                    log::debug!("reconcile: cannot read netns {netns} through pid {pid}: {e}");
                }
            }
        }
        if done {
            read += 1;
        } else if gone < pids.len() {
            // Not because the namespace is gone: what it holds is unknown.
            return None;
        }
    }
    Some((live, read))
}

pub struct Reconciler {
    every: Duration,
    proc_root: PathBuf,
    next_ns: u64,
    /// Missing in the previous pass.
    suspects: HashSet<u64>,
    pub stats: ReconcileStats,
}

impl Reconciler {
    /// Passes every `every` (the first one `every` after `now_ns`).
    pub fn new(every: Duration, proc_root: &Path, now_ns: u64) -> Self {
        Self {
            every,
            proc_root: proc_root.to_path_buf(),
            next_ns: now_ns.saturating_add(every.as_nanos() as u64),
            suspects: HashSet::new(),
            stats: ReconcileStats::default(),
        }
    }

    /// Runs a pass if one is due; returns the sockets it closed.
    pub fn maybe_run(&mut self, agg: &mut Aggregator, now_ns: u64) -> u64 {
        if now_ns < self.next_ns {
            return 0;
        }
        self.next_ns = now_ns.saturating_add(self.every.as_nanos() as u64);
        self.stats.passes += 1;
        let started = std::time::Instant::now();
        let Some((live, read)) = live_cookies(&self.proc_root) else {
            self.suspects.clear();
            log::debug!("reconcile: a namespace could not be read; nothing closed this pass");
            return 0;
        };
        self.stats.complete += 1;
        self.stats.namespaces_read += read;
        let missing = missing(agg.sockets.iter(), &live, now_ns);
        let closed: Vec<u64> = missing.intersection(&self.suspects).copied().collect();
        for id in &closed {
            agg.forget_socket(*id, now_ns);
        }
        self.suspects = missing;
        self.stats.sockets_reconciled += closed.len() as u64;
        if !closed.is_empty() {
            log::warn!(
                "reconcile: {} sockets the kernel no longer has were still open here (their close events were lost); closed and counted as sockets_reconciled",
                closed.len()
            );
        }
        log::debug!(
            "reconcile: {read} namespaces, {} live sockets, {} suspects, {} closed in {:?}",
            live.len(),
            self.suspects.len(),
            closed.len(),
            started.elapsed()
        );
        closed.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::aggregate::{
        flows::{Direction, FlowKey},
        sockets::TrackedSocket,
    };

    fn socket(opened_ns: u64, origin: Origin) -> TrackedSocket {
        let flow = FlowKey::new(
            7,
            Direction::Outbound,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            40_000,
            6379,
        );
        TrackedSocket::new(
            flow,
            sockeye_common::tcp_state::ESTABLISHED,
            opened_ns,
            1,
            origin,
        )
    }

    #[test]
    fn only_kernel_sockets_older_than_the_dump_and_absent_from_it_are_missing() {
        let tracked = [
            (1u64, socket(100, Origin::Kernel)),
            (2, socket(100, Origin::Kernel)),
            (3, socket(900, Origin::Kernel)),
            (4, socket(100, Origin::Preexisting)),
        ];
        let live: HashSet<u64> = [2].into();
        let m = missing(tracked.iter().map(|(id, s)| (id, s)), &live, 500);
        assert_eq!(m, [1].into());
    }
}
