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
    pub rst_daddr: u32,
    pub rst_daddr_v6: u32,
    /// `sock:inet_sk_error_report`
    pub err_error: u32,
    pub err_sport: u32,
    pub err_dport: u32,
    pub err_family: u32,
    pub err_protocol: u32,
    pub err_daddr: u32,
    pub err_daddr_v6: u32,
    /// `cgroup:cgroup_mkdir` (`path` is a `__data_loc`: offset | len << 16).
    pub mkdir_root: u32,
    pub mkdir_id: u32,
    pub mkdir_path: u32,
    /// `syscalls:sys_enter_connect` (`uservaddr`, `addrlen`) and
    /// `syscalls:sys_exit_connect` (`ret`).
    pub connect_addr: u32,
    pub connect_addrlen: u32,
    pub connect_ret: u32,
    /// `syscalls:sys_enter_socket` (`family`) and `syscalls:sys_exit_socket` (`ret`).
    pub socket_family: u32,
    pub socket_ret: u32,
}

/// Marker for a field that does not exist on the running kernel.
pub const ABSENT: u32 = u32::MAX;

const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 80);

/// Key of the connect-error map: the remote address and both ports of the
/// socket an error tracepoint reported. Neither tracepoint carries an id
/// sock_ops can see on every kernel (no cookie before 6.x, a socket pointer
/// sock_ops cannot read), so the tuple joins them. It is unique per network
/// namespace; across namespaces a collision needs the same ephemeral port to
/// the same remote at the same moment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorKey {
    /// Network order; IPv4 in the first four bytes, like `SockEvent`.
    pub remote_addr: [u8; 16],
    /// Host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ErrorKey>() == 24);

/// The last error a tracepoint saw for an [`ErrorKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastError {
    pub ts_ns: u64,
    /// Positive errno (ECONNRESET for a received RST, EHOSTUNREACH, ...).
    pub errno: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<LastError>() == 16);
