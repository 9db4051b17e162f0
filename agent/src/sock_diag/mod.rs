//! Asks the kernel about the TCP sockets of one network namespace
//! (`NETLINK_SOCK_DIAG`, inet_diag with `INET_DIAG_INFO`), for facts the
//! eBPF events do not carry: how long a connection has been idle, how much
//! it moved, how full a listener's accept queue is.
//!
//! Hand-written rather than `netlink-packet-sock-diag` 0.5 + `netlink-sys`
//! 0.9 (both build with rustc 1.95): their request type cannot carry the
//! `INET_DIAG_REQ_BYTECODE` attribute, so the kernel-side filter by
//! destination would be hand-written anyway, and what we read is five fixed
//! structs that are stable ABI. Reading them by hand (`wire`) keeps every
//! read bounds-checked, lets a shorter `tcp_info` from an older kernel yield
//! what it has, and adds no dependencies.
//!
//! # Permissions
//! A dump of inet sockets with `INET_DIAG_INFO` needs no capability (only
//! the mark and class-id attributes and mark filters need CAP_NET_ADMIN,
//! which we do not ask for). Entering the namespace needs CAP_SYS_ADMIN
//! (`setns`) and, for processes holding capabilities the agent lacks,
//! CAP_SYS_PTRACE: the DaemonSet's set.
//!
//! # Minimum kernel version
//! inet_diag with `tcp_info` since 2.6; `tcpi_bytes_acked`/`_received`
//! since 4.1/4.2; the socket's cgroup id (`INET_DIAG_CGROUP_ID`) since 5.7.

mod bytecode;
mod dump;
pub mod netstat;
mod wire;

use std::{
    net::SocketAddr,
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
};

use sockeye_common::tcp_state;

pub use bytecode::{Match, Side, MAX_MATCHES};
pub use netstat::{listen_overflows, ListenCounters, NetstatError};
pub use wire::Malformed;

use crate::netns::{self, NetnsError};

/// One TCP socket as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    /// The socket cookie: the id `bpf_get_socket_cookie` returns, so the
    /// agent's `TrackedSocket` ids. A TIME_WAIT entry keeps the cookie of
    /// the socket it replaced.
    pub cookie: u64,
    /// `sockeye_common::tcp_state` numbering.
    pub state: u8,
    /// IPv4-mapped IPv6 addresses are given as IPv4, as in the flows.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// A listener: connections waiting in its accept queue. Otherwise:
    /// bytes received and not yet read by the application.
    pub rqueue: u32,
    /// A listener: the accept queue's limit (the listen backlog, capped by
    /// `net.core.somaxconn`). Otherwise: bytes sent and not yet acknowledged.
    pub wqueue: u32,
    pub uid: u32,
    /// Socket inode, as in /proc/<pid>/fd links (`socket:[inode]`); 0 for
    /// TIME_WAIT and SYN_RECV entries, which no process holds.
    pub inode: u32,
    /// The cgroup v2 id of the socket's creator (Linux 5.7+).
    pub cgroup_id: Option<u64>,
    /// `None` for TIME_WAIT and SYN_RECV entries, which have no `tcp_info`,
    /// or when the query did not ask for it.
    pub tcp: Option<TcpInfo>,
}

impl SocketInfo {
    /// `(waiting, limit)` of a listener's accept queue. The kernel refuses
    /// new connections once `waiting` exceeds `limit`, so a full queue shows
    /// `limit + 1`.
    pub fn accept_queue(&self) -> Option<(u32, u32)> {
        (self.state == tcp_state::LISTEN).then_some((self.rqueue, self.wqueue))
    }
}

/// From `struct tcp_info`. The times count milliseconds up to the moment of
/// the query (jiffies resolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub last_data_sent_ms: u32,
    pub last_data_recv_ms: u32,
    pub last_ack_recv_ms: u32,
    /// Bytes the peer acknowledged (the SYN counts one); Linux 4.2+.
    pub bytes_acked: Option<u64>,
    /// Data bytes received in order (the SYN not counted); Linux 4.1+.
    pub bytes_received: Option<u64>,
}

/// A set of TCP states, as the kernel's `idiag_states` bitmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct States(pub u32);

impl States {
    /// Every state (1..=12; the kernel folds NEW_SYN_RECV into SYN_RECV).
    pub const ALL: Self = Self(((1 << tcp_state::STATE_COUNT) - 1) & !1);

    pub const fn of(states: &[u8]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < states.len() {
            if (states[i] as usize) < tcp_state::STATE_COUNT {
                bits |= 1 << states[i];
            }
            i += 1;
        }
        Self(bits)
    }

    pub fn contains(self, state: u8) -> bool {
        u32::from(state) < 32 && self.0 & (1 << state) != 0
    }
}

/// Address families to dump: the kernel keeps one table per family, so
/// both means two dumps. Dual-stack sockets are AF_INET6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Families {
    V4,
    V6,
    #[default]
    Both,
}

/// What to ask for. The state mask, the families and the matches are all
/// applied by the kernel, so a narrow query copies only what it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub states: States,
    pub families: Families,
    /// A socket is returned when any match holds; empty: every socket.
    pub matches: Vec<Match>,
    /// Ask for `tcp_info` (the idle times and byte counts).
    pub tcp_info: bool,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            states: States::ALL,
            families: Families::Both,
            matches: Vec::new(),
            tcp_info: true,
        }
    }
}

impl Query {
    /// Sockets in any of `states`, both families, with `tcp_info`.
    pub fn states(states: &[u8]) -> Self {
        Self {
            states: States::of(states),
            ..Self::default()
        }
    }

    pub fn with_match(mut self, m: Match) -> Self {
        self.matches.push(m);
        self
    }

    pub fn with_families(mut self, families: Families) -> Self {
        self.families = families;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error(transparent)]
    Namespace(#[from] NetnsError),
    #[error("cannot open a NETLINK_SOCK_DIAG socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("a query may hold at most {max} matches, this one has {given}")]
    TooManyMatches { given: usize, max: usize },
    #[error("cannot send the sock_diag request: {0}")]
    Send(#[source] std::io::Error),
    #[error("cannot read the sock_diag answer: {0}")]
    Receive(#[source] std::io::Error),
    #[error("the kernel did not finish the sock_diag dump within {0:?}")]
    Timeout(std::time::Duration),
    #[error("a sock_diag answer of {len} bytes did not fit the {room}-byte buffer")]
    Truncated { len: usize, room: usize },
    #[error("this kernel has no inet_diag support for TCP over {family} (CONFIG_INET_DIAG, CONFIG_INET_TCP_DIAG: modules inet_diag, tcp_diag)")]
    NotSupported { family: &'static str },
    #[error("the kernel refused the TCP over {family} dump: {source}")]
    Kernel {
        family: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel answered without INET_DIAG_INFO (tcp_info) for a {state} socket over {family}: this kernel's tcp_diag does not report it")]
    NoTcpInfo {
        family: &'static str,
        state: &'static str,
    },
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

impl SockDiagError {
    /// The process exited before its namespace was entered: ask through
    /// another process of the namespace.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Namespace(e) if e.is_gone())
    }

    /// The agent lacks a capability this needs.
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Namespace(e) if e.is_denied())
    }
}

/// The TCP sockets that match `query` in the network namespace of `pid`
/// (a process seen under `proc_root`). Opens one netlink socket in that
/// namespace (a short-lived thread enters it) and closes it on return: for
/// repeated queries of one namespace keep a [`DiagSocket`] instead.
pub fn tcp_sockets(
    proc_root: &Path,
    pid: u32,
    query: &Query,
) -> Result<Vec<SocketInfo>, SockDiagError> {
    DiagSocket::enter(proc_root, pid)?.tcp_sockets(query)
}

/// A sock_diag socket bound to one network namespace. Holding it keeps
/// that namespace alive after its last process exits: drop it when the
/// namespace's pods are gone.
pub struct DiagSocket {
    dumper: dump::Dumper,
}

impl DiagSocket {
    /// In the network namespace of `pid`.
    pub fn enter(proc_root: &Path, pid: u32) -> Result<Self, SockDiagError> {
        let fd = netns::socket_in(
            proc_root,
            pid,
            libc::AF_NETLINK,
            SOCK_TYPE,
            NETLINK_SOCK_DIAG,
        )?;
        Self::from_fd(fd)
    }

    /// In the agent's own network namespace.
    pub fn current() -> Result<Self, SockDiagError> {
        // SAFETY: plain socket creation; ownership passes to OwnedFd below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, SOCK_TYPE, NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(SockDiagError::Socket(std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by socket() and is owned by nobody else.
        Self::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn from_fd(fd: OwnedFd) -> Result<Self, SockDiagError> {
        Ok(Self {
            dumper: dump::Dumper::new(fd).map_err(SockDiagError::Socket)?,
        })
    }

    pub fn tcp_sockets(&mut self, query: &Query) -> Result<Vec<SocketInfo>, SockDiagError> {
        if query.matches.len() > MAX_MATCHES {
            return Err(SockDiagError::TooManyMatches {
                given: query.matches.len(),
                max: MAX_MATCHES,
            });
        }
        let program = bytecode::compile(&query.matches);
        let families: &[u8] = match query.families {
            Families::V4 => &[libc::AF_INET as u8],
            Families::V6 => &[libc::AF_INET6 as u8],
            Families::Both => &[libc::AF_INET as u8, libc::AF_INET6 as u8],
        };
        let mut out = Vec::new();
        for &family in families {
            self.dumper
                .dump(family, query.states.0, query.tcp_info, &program, &mut out)?;
        }
        Ok(out)
    }
}

const SOCK_TYPE: libc::c_int = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
const NETLINK_SOCK_DIAG: libc::c_int = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_masks_match_the_kernels_bits() {
        assert_eq!(States::ALL.0, 0x1ffe);
        let s = States::of(&[tcp_state::ESTABLISHED, tcp_state::LISTEN]);
        assert_eq!(s.0, (1 << 1) | (1 << 10));
        assert!(s.contains(tcp_state::LISTEN) && !s.contains(tcp_state::CLOSE_WAIT));
        assert!(!s.contains(200), "out of range is not in the set");
        assert_eq!(States::of(&[99]).0, 0, "unknown states are ignored");
    }

    #[test]
    fn too_many_matches_is_refused_before_asking() {
        let q = Query {
            matches: vec![Match::local_port(1); MAX_MATCHES + 1],
            ..Query::default()
        };
        let mut s = DiagSocket::current().expect("a sock_diag socket needs no privilege");
        let err = s.tcp_sockets(&q).unwrap_err();
        assert!(
            matches!(err, SockDiagError::TooManyMatches { given: 65, max: 64 }),
            "{err}"
        );
    }
}
