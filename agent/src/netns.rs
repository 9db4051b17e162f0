//! Network namespace cookies (the id `bpf_get_netns_cookie` returns) for
//! namespaces the agent only knows through /proc.

use std::{fs::File, io, os::fd::AsRawFd, path::Path};

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h), Linux 5.14+.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Cookie of the network namespace `pid` lives in. Runs on a short-lived
/// thread because `setns` switches only the calling thread's namespace.
pub fn cookie_of_pid(proc_root: &Path, pid: u32) -> io::Result<u64> {
    let ns = File::open(proc_root.join(pid.to_string()).join("ns/net"))?;
    std::thread::spawn(move || cookie_in(&ns))
        .join()
        .map_err(|_| io::Error::other("netns cookie thread panicked"))?
}

fn cookie_in(ns: &File) -> io::Result<u64> {
    // SAFETY: setns on a valid namespace fd; affects only this thread, which
    // ends right after.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket creation; the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(err);
    }
    Ok(cookie)
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
}
