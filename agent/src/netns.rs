//! Sockets in other network namespaces, for namespaces the agent only knows
//! through /proc: their cookies (the id `bpf_get_netns_cookie` returns) and
//! netlink sockets that ask their kernel state (`sock_diag`).

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h), Linux 5.14+.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Why a socket could not be made in another process's network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("process {pid} is gone ({path} does not exist)")]
    ProcessGone { pid: u32, path: PathBuf },
    #[error("may not open {path}: {source}; another process's namespace needs CAP_SYS_PTRACE when that process holds capabilities the agent lacks")]
    OpenDenied {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "may not enter the network namespace of pid {pid}: {source}; setns needs CAP_SYS_ADMIN"
    )]
    EnterDenied {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter the network namespace of pid {pid}: {source}")]
    Enter {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot create a socket in the network namespace of pid {pid}: {source}")]
    Socket {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the cookie of the network namespace of pid {pid}: {source}")]
    Cookie {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("the thread that entered the network namespace of pid {pid} panicked")]
    ThreadPanicked { pid: u32 },
}

impl NetnsError {
    /// The process exited (or is a zombie) before its namespace was entered.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::ProcessGone { .. })
    }

    /// The agent lacks a capability (or a sandbox forbids the step).
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::OpenDenied { .. } | Self::EnterDenied { .. })
    }
}

fn is_denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

/// Cookie of the network namespace `pid` lives in.
pub fn cookie_of_pid(proc_root: &Path, pid: u32) -> Result<u64, NetnsError> {
    let fd = socket_in(
        proc_root,
        pid,
        libc::AF_INET,
        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
        0,
    )?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`; fd is open.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(NetnsError::Cookie {
            pid,
            source: io::Error::last_os_error(),
        });
    }
    Ok(cookie)
}

/// A socket created inside the network namespace `pid` lives in. A socket
/// stays in the namespace it was created in, so the returned fd can be used
/// from any thread; only its creation needs `setns`, which switches just the
/// calling thread, hence the short-lived thread. Needs CAP_SYS_ADMIN (setns)
/// and, for a process holding capabilities the agent lacks, CAP_SYS_PTRACE
/// (opening its ns/net).
pub fn socket_in(
    proc_root: &Path,
    pid: u32,
    domain: libc::c_int,
    ty: libc::c_int,
    protocol: libc::c_int,
) -> Result<OwnedFd, NetnsError> {
    let path = proc_root.join(pid.to_string()).join("ns/net");
    let ns = File::open(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH) {
            NetnsError::ProcessGone { pid, path }
        } else if is_denied(&source) {
            NetnsError::OpenDenied { path, source }
        } else {
            NetnsError::Open { path, source }
        }
    })?;
    std::thread::spawn(move || socket_from(&ns, pid, domain, ty, protocol))
        .join()
        .map_err(|_| NetnsError::ThreadPanicked { pid })?
}

fn socket_from(
    ns: &File,
    pid: u32,
    domain: libc::c_int,
    ty: libc::c_int,
    protocol: libc::c_int,
) -> Result<OwnedFd, NetnsError> {
    // SAFETY: setns on a valid namespace fd; affects only this thread, which
    // ends right after.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let source = io::Error::last_os_error();
        return Err(if is_denied(&source) {
            NetnsError::EnterDenied { pid, source }
        } else {
            NetnsError::Enter { pid, source }
        });
    }
    // SAFETY: plain socket creation; ownership of the fd passes to OwnedFd.
    let fd = unsafe { libc::socket(domain, ty, protocol) };
    if fd < 0 {
        return Err(NetnsError::Socket {
            pid,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_has_a_stable_nonzero_cookie() {
        let me = std::process::id();
        let a = cookie_of_pid(Path::new("/proc"), me).expect("cookie");
        let b = cookie_of_pid(Path::new("/proc"), me).expect("cookie");
        assert_ne!(a, 0);
        assert_eq!(a, b);
    }

    #[test]
    fn a_missing_process_is_reported_as_gone() {
        // pid_max is at most 2^22: this pid cannot exist.
        let err = cookie_of_pid(Path::new("/proc"), u32::MAX).unwrap_err();
        assert!(err.is_gone(), "{err}");
        assert!(err.to_string().contains("is gone"), "{err}");
    }
}
