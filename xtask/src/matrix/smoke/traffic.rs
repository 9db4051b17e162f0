//! Real TCP traffic for the smoke test, with std sockets on loopback: a
//! server that serves a fixed number of connections, clients that connect,
//! send a few bytes and close, and connects to a closed port.

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
