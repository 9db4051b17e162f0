//! Tracepoint field offsets, read by the agent from tracefs at load time and
//! handed to the kernel programs, because the layouts differ between kernels.

/// Offsets (bytes from the start of the tracepoint record) of the fields the
/// tracepoint programs read. An offset of [`ABSENT`] means "this kernel does
/// not have the field"; the program then skips the event and counts it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// `cgroup:cgroup_mkdir` (`path` is a `__data_loc`: offset | len << 16).
    pub mkdir_root: u32,
    pub mkdir_id: u32,
    pub mkdir_path: u32,
    /// `syscalls:sys_exit_connect` (`ret`; the destination comes from the
    /// connect4/connect6 hooks).
    pub connect_ret: u32,
    /// `syscalls:sys_enter_socket` (`family`) and `syscalls:sys_exit_socket` (`ret`).
    pub socket_family: u32,
    pub socket_ret: u32,
}

/// Marker for a field that does not exist on the running kernel.
pub const ABSENT: u32 = u32::MAX;

const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 24);
