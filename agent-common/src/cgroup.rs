//! Names of cgroups as they are created (tracepoint `cgroup:cgroup_mkdir`),
//! so a short-lived container keeps its name after its cgroup is removed.

/// Bytes of path kept; longer paths are truncated and flagged. Container
/// cgroup paths (kubepods slices with a 64-hex id) stay well under this.
pub const CGROUP_PATH_MAX: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupEvent {
    /// cgroup v2 id (the directory's inode).
    pub id: u64,
    /// Bytes of `path` used (without the NUL).
    pub path_len: u32,
    /// Non-zero if the path was longer than [`CGROUP_PATH_MAX`].
    pub truncated: u32,
    /// Path relative to the cgroup v2 root, e.g. "/libpod_parent/libpod-<id>".
    pub path: [u8; CGROUP_PATH_MAX],
}

const _: () = assert!(core::mem::size_of::<CgroupEvent>() == 16 + CGROUP_PATH_MAX);
