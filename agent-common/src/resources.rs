//! connect() and socket() calls that failed because a resource ran out:
//! no free local port (EADDRNOTAVAIL), the process's or the system's file
//! descriptor limit (EMFILE, ENFILE), or kernel memory (ENOBUFS, ENOMEM).
//! These fail inside the syscall, before TCP sees a socket, so only the
//! syscall tracepoints can tell.

/// Which syscall failed. Values are part of the kernel/user ABI: never reuse
/// or renumber one.
pub mod syscall {
    pub const CONNECT: u32 = 1;
    pub const SOCKET: u32 = 2;
}

/// The errnos reported (positive, as in `errno.h`; the same on every Linux
/// architecture Sockeye runs on).
pub mod errno {
    pub const ENOMEM: u32 = 12;
    pub const ENFILE: u32 = 23;
    pub const EMFILE: u32 = 24;
    pub const EADDRNOTAVAIL: u32 = 99;
    pub const ENOBUFS: u32 = 105;
}

/// Whether a failed syscall's errno means a resource ran out. Every other
/// failure (ECONNREFUSED, EINPROGRESS, EAFNOSUPPORT, ...) is not sent.
#[inline(always)]
pub const fn is_exhaustion(errno: u32) -> bool {
    matches!(
        errno,
        errno::EADDRNOTAVAIL | errno::EMFILE | errno::ENFILE | errno::ENOBUFS | errno::ENOMEM
    )
}

/// What the socket() entry tracepoint or the connect4/connect6 hooks saw of
/// a call, kept for the exit tracepoint, which only sees the return value
/// (the per-CPU value of [`crate::names::SYSCALL_ARGS_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallArgs {
    /// The thread that made the call: the slot is the CPU's, and the exit
    /// only takes what its own thread left there.
    pub pid_tgid: u64,
    /// When it was kept (`bpf_ktime_get_ns`); 0 for socket(). The connect
    /// hooks do not run for every connect() (not for other families), so
    /// the exit ignores a destination kept long before.
    pub ts_ns: u64,
    /// socket(): the domain asked for; connect(): the socket's family
    /// (`AF_INET` or `AF_INET6`).
    pub family: u16,
    /// connect(): destination port, host byte order; 0 for socket().
    pub port: u16,
    /// [`syscall::CONNECT`] or [`syscall::SOCKET`]: which entry wrote it, so
    /// the exit of one never reads what the other left.
    pub syscall: u32,
    /// connect(): destination address, network byte order; IPv4 uses the
    /// first four bytes, like `SockEvent`.
    pub addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<SyscallArgs>() == 40);

/// One failed call, sent through [`crate::names::RESOURCE_EVENTS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceFailure {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the syscall returned.
    pub ts_ns: u64,
    /// cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pid: u32,
    /// Positive errno, one of [`errno`].
    pub errno: u32,
    /// One of [`syscall`].
    pub syscall: u32,
    /// `AF_INET` or `AF_INET6`; 0 when the entry tracepoint's record of the
    /// call was not found (the destination and domain are then unknown).
    pub family: u16,
    /// connect(): destination port, host byte order; 0 for socket().
    pub port: u16,
    pub _pad: u32,
    /// connect(): destination, network byte order (IPv4: first four bytes).
    pub addr: [u8; 16],
    /// Command name of the calling thread (NUL padded).
    pub comm: [u8; 16],
}

pub const RESOURCE_FAILURE_SIZE: usize = 2 * 8 + 4 * 4 + 2 * 2 + 4 + 2 * 16;
const _: () = assert!(core::mem::size_of::<ResourceFailure>() == RESOURCE_FAILURE_SIZE);
const _: () = assert!(RESOURCE_FAILURE_SIZE.is_multiple_of(8));
