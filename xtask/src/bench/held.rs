//! Long-lived connections: `conns` loopback connections held open, both
//! ends in this process, spread over a few listeners. The mixed arm runs
//! the churn next to them and exchanges small messages over them; the
//! memory arm holds many in child processes (`xtask bench-hold`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Connections per listener: one outbound and one inbound flow each, so
/// the agent tracks many sockets in few flows, as on a real node.
const CONNS_PER_LISTENER: usize = 100;

/// Connections held open; dropping it closes them all.
pub struct Held {
    _listeners: Vec<TcpListener>,
    pairs: Vec<(TcpStream, TcpStream)>,
}

impl Held {
    pub fn open(conns: usize) -> Result<Held> {
        let ports = conns.div_ceil(CONNS_PER_LISTENER).max(1);
        let listeners = (0..ports)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<std::io::Result<Vec<_>>>()
            .context("binding the held connections' listeners")?;
        let mut pairs = Vec::with_capacity(conns);
        for i in 0..conns {
            let listener = &listeners[i % ports];
            let client = TcpStream::connect(listener.local_addr()?)
                .with_context(|| format!("opening held connection {} of {conns}", i + 1))?;
            // Nothing else connects to our listeners: this is that connection.
            let (server, _) = listener.accept().context("accepting a held connection")?;
            client.set_nodelay(true)?;
            server.set_nodelay(true)?;
            pairs.push((client, server));
        }
        Ok(Held {
            _listeners: listeners,
            pairs,
        })
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Exchanges one byte each way over the connections in turn until
    /// `duration` is over, on a thread of its own; gives the connections
    /// back with the number of round trips.
    pub fn ping(self, duration: Duration) -> Result<JoinHandle<Result<(Held, u64)>>> {
        thread::Builder::new()
            .name("bench-ping".into())
            .spawn(move || {
                let deadline = Instant::now() + duration;
                let mut trips = 0u64;
                let mut buf = [0u8; 1];
                'outer: loop {
                    for (client, server) in &self.pairs {
                        if Instant::now() >= deadline {
                            break 'outer;
                        }
                        // Writes through `&TcpStream`: the pair is shared
                        // with no one, the loop is the only user.
                        (&*client).write_all(b"q")?;
                        (&*server).read_exact(&mut buf)?;
                        (&*server).write_all(b"a")?;
                        (&*client).read_exact(&mut buf)?;
                        trips += 1;
                    }
                    if self.pairs.is_empty() {
                        bail!("no held connections to ping over");
                    }
                }
                Ok((self, trips))
            })
            .context("spawning the ping thread")
    }
}

/// Waits for a [`Held::ping`] thread.
pub fn join_ping(handle: JoinHandle<Result<(Held, u64)>>) -> Result<(Held, u64)> {
    handle
        .join()
        .map_err(|_| anyhow!("the ping thread panicked"))?
}

/// Raises this process's open-file limit to at least `needed` (the soft
/// limit up to the hard one, the hard one too if we may), or says why not
/// and what to do instead (`fix`, e.g. "lower --conns").
pub(crate) fn raise_fd_limit(needed: u64, fix: &str) -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur >= needed {
        return Ok(limit.rlim_cur);
    }
    let wanted = libc::rlimit {
        rlim_cur: needed.max(limit.rlim_max),
        rlim_max: needed.max(limit.rlim_max),
    };
    // SAFETY: setrlimit reads one rlimit from the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        return Ok(wanted.rlim_cur);
    }
    // Not allowed past the hard limit: the soft one up to it may do.
    let soft = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if limit.rlim_max >= needed && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } == 0 {
        return Ok(limit.rlim_max);
    }
    bail!(
        "the load needs about {needed} open files, and the limit is {} (hard {}) and may not \
         be raised here; {fix}",
        limit.rlim_cur,
        limit.rlim_max
    )
}
