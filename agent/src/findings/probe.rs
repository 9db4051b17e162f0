//! Questions the detectors ask the kernel on demand, for evidence the
//! events do not carry: how long a suspect flow's sockets have been idle,
//! and whether a listener's accept queue is full. Asked only about
//! findings (a few sockets), never per event.

use std::{net::IpAddr, path::Path};

use sockeye_common::tcp_state;

use crate::sock_diag::{self, Match, Query, SockDiagError};

/// Idle times of a flow's sockets, from `tcp_info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Idle {
    /// Sockets the kernel described.
    pub sockets: u64,
    /// Of them, idle (nothing sent or received) for at least the threshold.
    pub idle: u64,
    pub longest_ms: u32,
    pub median_ms: u32,
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
