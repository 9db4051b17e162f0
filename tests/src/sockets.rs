//! Sockets the test process itself makes inside a pod's network namespace,
//! for tests that need to hold, feed or inspect each socket (its cookie,
//! its inode), and a process to name the namespace by pid.

use std::{
    fs::File,
    io,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Child, Command},
    time::{Duration, Instant},
};

use crate::{net::Pod, peer::command_in};

/// `SO_COOKIE` (include/uapi/asm-generic/socket.h), Linux 4.12+.
const SO_COOKIE: libc::c_int = 57;

/// Runs `f` on a thread inside `pod`'s network namespace. Sockets made
/// there stay in that namespace wherever they are used afterwards.
pub fn in_netns<T: Send + 'static>(pod: &Pod, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = File::open(format!("/run/netns/{}", pod.netns)).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd; only this thread moves.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// The socket's cookie as the kernel gives it to its owner.
pub fn so_cookie(fd: &impl AsRawFd) -> u64 {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", io::Error::last_os_error());
    cookie
}

/// The socket's inode (what /proc/<pid>/fd shows as `socket:[N]`).
pub fn inode(fd: &impl AsRawFd) -> u64 {
    // SAFETY: fstat fills `st`; an all-zero stat is a valid initial value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid out pointer.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    assert_eq!(rc, 0, "fstat: {}", io::Error::last_os_error());
    st.st_ino
}

/// A listener on `addr` with exactly `backlog` (std picks its own).
pub fn listen_with_backlog(addr: SocketAddr, backlog: i32) -> TcpListener {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket creation; ownership passes to OwnedFd.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    assert_eq!(rc, 0, "bind {addr}: {}", io::Error::last_os_error());
    // SAFETY: listen on our bound socket.
    let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    assert_eq!(rc, 0, "listen: {}", io::Error::last_os_error());
    TcpListener::from(fd)
}

/// Starts a connect to `addr` without waiting for it; with `wait`, waits up
/// to that long for the handshake to complete and says whether it did.
pub fn connect_nonblocking(addr: SocketAddr, wait: Duration) -> (OwnedFd, bool) {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket creation; ownership passes to OwnedFd.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    let err = io::Error::last_os_error();
    assert!(
        rc == 0 || err.raw_os_error() == Some(libc::EINPROGRESS),
        "connect {addr}: {err}"
    );
    let deadline = Instant::now() + wait;
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
        if n > 0 {
            return (
                fd,
                pfd.revents & libc::POLLOUT != 0 && pfd.revents & libc::POLLERR == 0,
            );
        }
        if n == 0 || Instant::now() >= deadline {
            return (fd, false);
        }
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and aligned for it.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and aligned for it.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Connects from inside `pod`, `count` times, blocking.
pub fn connect_from(pod: &Pod, addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    in_netns(pod, move || {
        (0..count)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect"))
            .collect()
    })
}

/// A process that lives in `pod` (its cgroup and network namespace) until
/// dropped, so the namespace can be named by a pid.
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn start(pod: &Pod) -> Self {
        let child = command_in(pod, "sleep", true)
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        Self(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command's pid after it exited and was reaped: a pid nobody has.
pub fn gone_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    c.wait().expect("wait");
    c.id()
}
