//! Tracepoint field offsets, read by the agent from tracefs at load time and
//! handed to the kernel programs, because the layouts differ between kernels.

/// Offsets (bytes from the start of the tracepoint record) of the fields the
/// error tracepoints read. An offset of [`ABSENT`] means "this kernel does not
/// have the field"; the program then skips the event and counts it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// `tcp:tcp_receive_reset`
    pub rst_sport: u32,
    pub rst_dport: u32,
    pub rst_family: u32,
    /// `sock:inet_sk_error_report`
    pub err_error: u32,
    pub err_sport: u32,
    pub err_dport: u32,
    pub err_family: u32,
    pub err_protocol: u32,
}

/// Marker for a field that does not exist on the running kernel.
pub const ABSENT: u32 = u32::MAX;

const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 32);

/// The last connect error seen on a CPU. The error tracepoints run in the same
/// softirq, on the same CPU, right before (RST, ICMP) the state change to CLOSE
/// that sock_ops reports, so a per-CPU slot matched by ports joins the two
/// without needing a socket pointer or cookie in the tracepoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastError {
    pub ts_ns: u64,
    /// Positive errno (ECONNREFUSED, EHOSTUNREACH, ...).
    pub errno: u32,
    /// Local and remote port, host byte order.
    pub sport: u16,
    pub dport: u16,
}

const _: () = assert!(core::mem::size_of::<LastError>() == 16);
