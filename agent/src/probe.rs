//! The kernel's answers to the detectors' questions (see
//! `sockeye_core::findings::probe`): idle times and accept queues through
//! `sock_diag` in the owner's network namespace, listen overflows and
//! process names from procfs.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use sockeye_common::tcp_state;
use sockeye_core::findings::probe::{Idle, Probe, ProbeError};

use crate::sock_diag::{self, netstat, Match, Query, SockDiagError};

/// Asks the running kernel, through procfs at `proc_root`.
#[derive(Debug, Clone)]
pub struct KernelProbe {
    pub proc_root: PathBuf,
}

impl Probe for KernelProbe {
    fn idle(
        &mut self,
        pid: u32,
        remote: IpAddr,
        port: u16,
        idle_after_ms: u64,
    ) -> Result<Idle, ProbeError> {
        idle(&self.proc_root, pid, remote, port, idle_after_ms)
            .map_err(|e| failed("idle times", pid, e))
    }

    fn accept_queue(&mut self, pid: u32, port: u16) -> Result<Option<(u32, u32)>, ProbeError> {
        accept_queue(&self.proc_root, pid, port).map_err(|e| failed("accept queue", pid, e))
    }

    fn listen_overflows(&mut self, pid: u32) -> Result<u64, ProbeError> {
        netstat::listen_overflows(&self.proc_root, pid)
            .map(|c| c.overflows)
            .map_err(|e| failed("listen overflows", pid, e))
    }

    fn process_name(&mut self, pid: u32) -> Option<String> {
        let comm =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("comm")).ok()?;
        Some(comm.trim().to_string()).filter(|c| !c.is_empty())
    }
}

fn failed(question: &'static str, pid: u32, e: impl std::fmt::Display) -> ProbeError {
    ProbeError {
        question,
        pid,
        reason: e.to_string(),
    }
}

/// Idle times of the connections to `remote`:`port` in `pid`'s network
/// namespace (a pod's: its containers share it, so they are counted
/// together).
pub fn idle(
    proc_root: &Path,
    pid: u32,
    remote: IpAddr,
    port: u16,
    idle_after_ms: u64,
) -> Result<Idle, SockDiagError> {
    let query = Query::states(&[tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT])
        .with_match(Match::remote(remote, port));
    let mut quiet: Vec<u32> = sock_diag::tcp_sockets(proc_root, pid, &query)?
        .into_iter()
        .filter_map(|s| s.tcp)
        .map(|t| t.last_data_sent_ms.min(t.last_data_recv_ms))
        .collect();
    quiet.sort_unstable();
    Ok(Idle {
        sockets: quiet.len() as u64,
        idle: quiet
            .iter()
            .filter(|ms| u64::from(**ms) >= idle_after_ms)
            .count() as u64,
        longest_ms: quiet.last().copied().unwrap_or(0),
        median_ms: quiet.get(quiet.len() / 2).copied().unwrap_or(0),
    })
}

/// A listener's accept queue on `port` in `pid`'s namespace: (waiting,
/// limit) of the fullest one (a full queue shows limit + 1).
pub fn accept_queue(
    proc_root: &Path,
    pid: u32,
    port: u16,
) -> Result<Option<(u32, u32)>, SockDiagError> {
    let mut q = Query::states(&[tcp_state::LISTEN]).with_match(Match::local_port(port));
    q.tcp_info = false;
    Ok(sock_diag::tcp_sockets(proc_root, pid, &q)?
        .iter()
        .filter_map(|s| s.accept_queue())
        .max_by_key(|(waiting, limit)| i64::from(*waiting) - i64::from(*limit)))
}
