//! cgroup id -> path in O(1): on cgroup v2 the id is the kernfs file handle
//! of the cgroup's directory, so `open_by_handle_at` opens it directly and
//! `/proc/self/fd` names it. This matters for short-lived containers: their
//! cgroup may be gone a second later, before a rate-limited tree scan would
//! find it.
//!
//! Needs CAP_DAC_READ_SEARCH; without it the caller falls back to scanning.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

/// `FILEID_KERNFS` (include/linux/exportfs.h): a kernfs node id.
const FILEID_KERNFS: libc::c_int = 0xfe;

/// `struct file_handle` with room for the 8-byte kernfs id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    id: [u8; 8],
}

/// Opens cgroup directories by id, relative to one cgroup v2 mount.
pub struct HandleResolver {
    mount: File,
    /// The mount point as the kernel names it (symlinks resolved), to strip
    /// from the paths `/proc/self/fd` reports.
    mount_path: PathBuf,
}

impl HandleResolver {
    pub fn new(root: &Path) -> io::Result<Self> {
        Ok(Self {
            mount: File::open(root)?,
            mount_path: std::fs::canonicalize(root)?,
        })
    }

    /// Path relative to the mount ("/" for the root), or an error: ENOENT/
    /// ESTALE when the cgroup is gone, EPERM without CAP_DAC_READ_SEARCH.
    pub fn path_of(&self, id: u64) -> io::Result<String> {
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id: id.to_ne_bytes(),
        };
        // SAFETY: `handle` is a valid file_handle header followed by
        // `handle_bytes` bytes of payload; the returned fd is owned below.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.mount.as_raw_fd(),
                (&mut handle as *mut KernfsHandle).cast(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let abs = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let rel = abs.strip_prefix(&self.mount_path).map_err(|_| {
            io::Error::other(format!(
                "cgroup {id} resolved outside the mount: {}",
                abs.display()
            ))
        })?;
        Ok(format!("/{}", rel.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn resolves_a_cgroup_by_its_inode() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: open_by_handle_at needs CAP_DAC_READ_SEARCH");
            return;
        }
        let Some(root) = crate::attribution::cgroup_fs::find_cgroup2_mount().ok() else {
            eprintln!("skipped: no cgroup v2 mount");
            return;
        };
        let dir = root.join(format!("sockeye-handle-test-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("mkdir cgroup");
        let id = std::fs::metadata(&dir).expect("stat").ino();
        let r = HandleResolver::new(&root).expect("open mount");
        let got = r.path_of(id);
        let root_path = r.path_of(1);
        std::fs::remove_dir(&dir).expect("rmdir cgroup");
        assert_eq!(
            got.expect("resolved"),
            format!("/sockeye-handle-test-{}", std::process::id())
        );
        assert_eq!(root_path.expect("root resolved"), "/");
        assert!(
            r.path_of(id).is_err(),
            "a removed cgroup no longer resolves"
        );
    }
}
