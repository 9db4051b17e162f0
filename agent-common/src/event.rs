//! The one record the kernel programs send to user space.

/// What happened to a socket. Discriminants are part of the kernel/user ABI:
/// never reuse or renumber one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An active open is pending: sent only for a connect whose first SYN
    /// went unanswered (at its first retransmission, about 1 s), with `ts_ns`
    /// the time the connect started. Faster connects are reported by their
    /// Established or Closed event alone.
    ConnectStart = 1,
    /// An active open completed; `duration_ns` is the connect latency.
    Established = 2,
    /// A passive open completed (an accepted socket); `local_port` is the listening port.
    Accepted = 3,
    /// A state change into a state a socket can linger in (CLOSE_WAIT,
    /// FIN_WAIT2, ...). Transient states (FIN_WAIT1, LAST_ACK, CLOSING) are
    /// not streamed: the next event's `old_state`/`old_state_ns` says when the
    /// socket entered them, so the whole timeline is still there.
    StateChange = 4,
    /// The socket reached CLOSE; `duration_ns` is its lifetime. If it closed from
    /// SYN_SENT the connect failed and `errno`/`flags` say why.
    Closed = 5,
    /// A socket started listening.
    Listen = 6,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::ConnectStart,
            2 => Self::Established,
            3 => Self::Accepted,
            4 => Self::StateChange,
            5 => Self::Closed,
            6 => Self::Listen,
            _ => return None,
        })
    }
}

/// Bits of [`SockEvent::flags`].
pub mod flags {
    /// The kernel gave up on the connect after its SYN retries (RTO expired).
    pub const CONNECT_TIMED_OUT: u32 = 1 << 0;
    /// The socket was not in the kernel's socket map (opened before the agent,
    /// or the map was full): owner pid/comm and start time are unknown.
    pub const UNTRACKED: u32 = 1 << 1;
    /// The close came from FIN_WAIT2 or CLOSING: the kernel hands the
    /// connection to a TIME_WAIT minisocket, which reports no state change.
    pub const ENTERED_TIME_WAIT: u32 = 1 << 2;
    /// A connecting socket was closed by its owning process (the close ran
    /// in the owner's context): the application gave up, usually on its own
    /// connect timeout. Without it, and without RST or RTO expiry, the
    /// kernel closed the socket on an ICMP error.
    pub const CLOSED_BY_OWNER: u32 = 1 << 3;
}

/// Address family values (`AF_INET`, `AF_INET6`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// One socket event. `#[repr(C)]`, fields ordered by size so there is no
/// implicit padding; the size is asserted below.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened.
    pub ts_ns: u64,
    /// Socket cookie: unique for the socket's lifetime, our socket identity.
    pub cookie: u64,
    /// cgroup v2 id of the socket's owner (captured when the owner connected
    /// or listened, so it is right in softirq context and for accepted
    /// sockets); 0 if unknown.
    pub cgroup_id: u64,
    /// Network namespace cookie of the socket; set on a socket's first event
    /// (Established, Accepted, Listen, ConnectStart, and Closed of a failed
    /// connect) and on a listener's Closed, 0 on later ones to save a
    /// helper call.
    pub netns_cookie: u64,
    /// Connect latency (Established), lifetime (Closed), else 0.
    pub duration_ns: u64,
    /// When the socket entered `old_state` (`bpf_ktime_get_ns`), 0 if unknown.
    pub old_state_ns: u64,
    /// Bytes sent and acknowledged by the peer (`tcp_sock.bytes_acked`).
    pub bytes_acked: u64,
    /// Bytes received (`tcp_sock.bytes_received`).
    pub bytes_received: u64,
    /// Process that opened the socket (for accepted sockets, the listener's).
    pub tgid: u32,
    pub pid: u32,
    /// [`EventKind`] as u32.
    pub kind: u32,
    /// Positive errno of a failed connect, 0 otherwise.
    pub errno: u32,
    /// SYN retransmissions during the connect.
    pub syn_retransmits: u32,
    /// Bits from [`flags`].
    pub flags: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Ports in host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    pub old_state: u8,
    pub new_state: u8,
    /// Addresses in network byte order; IPv4 uses the first four bytes.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Command name of the owning process (NUL padded).
    pub comm: [u8; 16],
}

pub const SOCK_EVENT_SIZE: usize = 8 * 8 + 6 * 4 + 3 * 2 + 2 + 3 * 16;
const _: () = assert!(core::mem::size_of::<SockEvent>() == SOCK_EVENT_SIZE);
const _: () = assert!(SOCK_EVENT_SIZE.is_multiple_of(8));

/// Per-socket state the kernel keeps between callbacks (value of
/// [`crate::names::SOCKETS_MAP`]); also the listener-owner record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    /// When the connect started or the socket was accepted / began listening.
    pub start_ns: u64,
    /// When the socket entered its current state.
    pub state_ns: u64,
    /// cgroup v2 id of the owner, captured in process context (connect,
    /// listen) because sock_ops cannot read a socket's cgroup, and inherited
    /// by accepted sockets from their listener.
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pid: u32,
    pub syn_retransmits: u32,
    pub flags: u32,
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<SockInfo>() == 56);

/// Key of [`crate::names::LISTENERS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerKey {
    pub netns_cookie: u64,
    /// Listening port, host byte order, widened so the struct has no padding.
    pub port: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ListenerKey>() == 16);
