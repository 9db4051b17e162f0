//! Real TCP traffic for the smoke test, with std sockets on loopback: a
//! server that serves a fixed number of connections, clients that connect,
//! send a few bytes and close, connects to a closed port, and socket()
//! calls over the open-file limit.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A loopback connect either completes or is refused at once; anything
/// slower is a broken guest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener serving `count` connections: it reads each until the client
/// closes, then closes its end. The client closes first, so its side ends in
/// TIME_WAIT.
pub struct Server {
    pub addr: SocketAddr,
    thread: JoinHandle<Result<()>>,
}

impl Server {
    /// Listens on an ephemeral port of `ip`. The listening socket is made
    /// here, on the caller's thread and in its cgroup.
    pub fn start(ip: IpAddr, count: usize) -> Result<Self> {
        let listener = TcpListener::bind((ip, 0)).with_context(|| format!("listening on {ip}"))?;
        let addr = listener.local_addr().context("listener address")?;
        let thread = thread::Builder::new()
            .name(format!("smoke-server-{}", addr.port()))
            .spawn(move || {
                for _ in 0..count {
                    let (mut conn, _) = listener.accept().context("accept")?;
                    let mut buf = [0u8; 64];
                    while conn.read(&mut buf).context("read")? > 0 {}
                }
                Ok(())
            })
            .context("spawning the server thread")?;
        Ok(Self { addr, thread })
    }

    /// Waits for the server to have served every connection and returns
    /// its address. Only call this once every client connected, or it waits
    /// for connections that never come.
    pub fn finish(self) -> Result<SocketAddr> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the server thread for {} panicked", self.addr))?
            .with_context(|| format!("serving {}", self.addr))?;
        Ok(self.addr)
    }
}

/// `count` connections to `addr`, each sending "ping" and closing.
pub fn connect_and_close(addr: SocketAddr, count: usize) -> Result<()> {
    for i in 0..count {
        let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .with_context(|| format!("connect {} of {count} to {addr}", i + 1))?;
        stream.write_all(b"ping").context("write")?;
    }
    Ok(())
}

/// `count` connects to `addr`, each of which must be refused.
pub fn connect_refused(addr: SocketAddr, count: usize) -> Result<()> {
    for i in 0..count {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Ok(_) => bail!(
                "connect {} to {addr} succeeded; it should be refused",
                i + 1
            ),
            Err(e) => bail!("connect {} to {addr}: {e}; it should be refused", i + 1),
        }
    }
    Ok(())
}

/// An address of `ip` where nothing listens: a port just bound and released.
pub fn closed_port(ip: IpAddr) -> Result<SocketAddr> {
    let probe = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}"))?;
    probe.local_addr().context("probe address")
}

/// Lowers this process's open-file limit to just above the descriptors it
/// uses, opens sockets until socket() fails with EMFILE, fails `failures`
/// times in all, then closes them and restores the limit. Run it when no
/// other thread of the process opens files.
pub fn fd_limit(failures: usize) -> Result<()> {
    let mut saved = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    // The lowest free descriptor: everything below it is in use.
    let lowest = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    let low = std::os::fd::AsRawFd::as_raw_fd(&lowest) as u64;
    drop(lowest);
    let tight = libc::rlimit {
        rlim_cur: low + 2,
        rlim_max: saved.rlim_max,
    };
    // SAFETY: setrlimit with a valid struct; lowering the soft limit is
    // always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) } != 0 {
        bail!("setrlimit: {}", std::io::Error::last_os_error());
    }
    let result = exhaust(failures);
    // SAFETY: as above; the soft limit goes back to what it was, within
    // the unchanged hard limit.
    let restored = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) } == 0;
    let held = result?;
    for fd in held {
        // SAFETY: our own descriptors, closed once.
        unsafe { libc::close(fd) };
    }
    if !restored {
        bail!(
            "restoring RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sockets until EMFILE, then `failures` failed calls in all; returns the
/// sockets to close.
fn exhaust(failures: usize) -> Result<Vec<i32>> {
    let mut held = Vec::new();
    let mut failed = 0;
    while failed < failures {
        // SAFETY: plain socket creation; the caller closes what we keep.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if fd >= 0 {
            held.push(fd);
            if failed > 0 || held.len() > 64 {
                for fd in held {
                    // SAFETY: as above.
                    unsafe { libc::close(fd) };
                }
                bail!("socket() succeeded over the open-file limit");
            }
            continue;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EMFILE) {
            bail!("socket(): {e}, expected EMFILE");
        }
        failed += 1;
    }
    Ok(held)
}
