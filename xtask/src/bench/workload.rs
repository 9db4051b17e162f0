//! The measured workload: a tight loopback TCP connect/accept/close loop.
//!
//! Each of T threads owns a listener and loops: `connect`, `accept` that very
//! connection, close the server end, close the client end. Every iteration is
//! a full TCP lifecycle (SYN, accept, FIN both ways, TIME_WAIT), which is
//! what the agent traces.
//!
//! Why one thread does both ends rather than a server thread serving client
//! threads: measured on a 2-core machine, a shared acceptor either fell
//! behind (clients that drop without waiting overflow the accept queue; the
//! kernel drops SYNs and the client stalls a whole 1 s retransmit) or, with
//! clients waiting for the server's FIN, the rate swung 3x with where the
//! scheduler happened to place the two threads (same core: direct hand-off;
//! different cores: a cross-CPU wake-up per connection). Doing both ends in
//! one thread has no hand-off, at most one connection queued, and ran ~2x
//! faster and far steadier.
//!
//! How the ends close is a choice ([`Close`]): with FIN both ways (the
//! whole lifecycle, TIME_WAIT on the server side) or with `SO_LINGER 0`
//! (an RST, no TIME_WAIT: the churn of issue 17, where the bpftrace peer
//! sees six state changes per connection).
//!
//! At 50-100k connections/s a single destination would run out of 4-tuples
//! (each one stays in TIME_WAIT for 60 s; one destination offers only the
//! ~28k ports of `ip_local_port_range`). So listeners bind `0.0.0.0:P`,
//! which accepts on every 127.x.y.z, and connects cycle through
//! [`DESTINATIONS`] addresses. Closing the server end first also puts
//! TIME_WAIT on the server side, so the client's ephemeral port is free as
//! soon as the iteration ends.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// Destination addresses 127.0.0.1 ..= 127.0.0.DESTINATIONS.
pub const DESTINATIONS: u8 = 254;

/// How long `accept` may wait for a connection that `connect` reported
/// established. It should be immediate; the timeout only turns a lost
/// connection into a counted error instead of a hung benchmark.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Error message → occurrences.
pub type ErrorTally = BTreeMap<String, u64>;

/// How each iteration closes its two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Close {
    /// `SO_LINGER 0` on both ends: the server's close sends an RST, the
    /// client's socket is already closed by it.
    Reset,
    /// An orderly close, server end first: FIN both ways, TIME_WAIT on
    /// the server side.
    Fin,
}

impl Close {
    pub fn name(self) -> &'static str {
        match self {
            Close::Reset => "reset (SO_LINGER 0)",
            Close::Fin => "fin",
        }
    }
}

/// What one round of the workload did.
#[derive(Debug, Clone)]
pub struct RoundResult {
    /// Completed connect/accept/close iterations.
    pub connections: u64,
    /// Wall time from start until the last thread stopped.
    pub elapsed: Duration,
    /// Connect and accept errors, by message.
    pub errors: ErrorTally,
    /// Connections started in each whole second of the round, to show
    /// whether the rate held steady (a stall, e.g. a SYN retransmit, shows
    /// up as a dip).
    pub per_second: Vec<u64>,
}

impl RoundResult {
    pub fn conn_per_sec(&self) -> f64 {
        self.connections as f64 / self.elapsed.as_secs_f64()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The workload's listeners, bound and ready; [`Workload::run`] starts the
/// clock. Binding first keeps setup out of the measured interval.
pub struct Workload {
    listeners: Vec<TcpListener>,
    close: Close,
}

impl Workload {
    /// Binds one listener per thread on `0.0.0.0` at a kernel-chosen port;
    /// connections close with FIN.
    pub fn bind(threads: usize) -> Result<Workload> {
        Self::bind_closing(threads, Close::Fin)
    }

    /// The same, closing each connection as `close` says.
    pub fn bind_closing(threads: usize, close: Close) -> Result<Workload> {
        let listeners = (0..threads)
            .map(|_| bind_listener())
            .collect::<Result<_>>()?;
        Ok(Workload { listeners, close })
    }

    /// Runs the loop on every listener's thread for `duration`.
    pub fn run(self, duration: Duration) -> Result<RoundResult> {
        let start = Instant::now();
        let deadline = start + duration;
        let mut handles = Vec::with_capacity(self.listeners.len());
        let close = self.close;
        for (i, listener) in self.listeners.into_iter().enumerate() {
            let handle = thread::Builder::new()
                .name(format!("bench-conn-{i}"))
                .spawn(move || connection_loop(&listener, i, close, start, deadline))
                .context("spawning a workload thread")?;
            handles.push(handle);
        }

        let mut result = RoundResult {
            connections: 0,
            elapsed: Duration::ZERO,
            errors: ErrorTally::new(),
            per_second: Vec::new(),
        };
        for handle in handles {
            let tally = handle
                .join()
                .map_err(|_| anyhow!("a workload thread panicked"))??;
            merge_per_second(&mut result.per_second, &tally.per_second);
            for (message, n) in tally.errors {
                *result.errors.entry(message).or_default() += n;
            }
        }
        result.elapsed = start.elapsed();
        result.connections = result.per_second.iter().sum();
        // Only whole seconds tell whether the rate held; the last bucket
        // holds the few connections started in the final partial second.
        result.per_second.truncate(duration.as_secs() as usize);
        Ok(result)
    }
}

fn bind_listener() -> Result<TcpListener> {
    // 0.0.0.0 rather than 127.0.0.1: a socket bound to 127.0.0.1 only
    // accepts connections addressed to 127.0.0.1, and we spread
    // destinations over 127.0.0.0/8 (see module docs).
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .context("binding a workload listener on 0.0.0.0")?;
    // accept(2) honours SO_RCVTIMEO on Linux, failing with EAGAIN; set once
    // here rather than paying a syscall per connection.
    let timeout = libc::timeval {
        tv_sec: ACCEPT_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    set_socket_option(&listener, libc::SO_RCVTIMEO, &timeout)
        .context("setting SO_RCVTIMEO on a listener")?;
    Ok(listener)
}

struct Tally {
    per_second: Vec<u64>,
    errors: ErrorTally,
}

fn connection_loop(
    listener: &TcpListener,
    thread_index: usize,
    close: Close,
    start: Instant,
    deadline: Instant,
) -> Result<Tally> {
    let port = listener.local_addr()?.port();
    let mut tally = Tally {
        per_second: Vec::new(),
        errors: ErrorTally::new(),
    };
    // Threads start at different destinations so that they do not walk the
    // same addresses in lockstep.
    let mut dest = (thread_index * 37) % usize::from(DESTINATIONS);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(tally);
        }
        let second = (now - start).as_secs() as usize;
        let ip = Ipv4Addr::new(127, 0, 0, dest as u8 + 1);
        dest = (dest + 1) % usize::from(DESTINATIONS);

        let client = match TcpStream::connect(SocketAddrV4::new(ip, port)) {
            Ok(client) => client,
            Err(e) => {
                *tally.errors.entry(format!("connect: {e}")).or_default() += 1;
                // An exhausted port range fails instantly; back off a little
                // so the error count reflects time lost, not spin speed.
                thread::sleep(Duration::from_micros(100));
                continue;
            }
        };
        // Only this thread connects to this listener and it has one
        // connection in flight, so this accepts the connection just made.
        match listener.accept() {
            Ok((server, _peer)) => {
                if close == Close::Reset {
                    // The client end is reset by the server's RST; its own
                    // close then sends nothing, so only the server needs it.
                    if let Err(e) = set_linger_zero(&server) {
                        *tally.errors.entry(format!("SO_LINGER: {e}")).or_default() += 1;
                    }
                }
                // Server end first: TIME_WAIT (with FIN) lands on the server
                // side (see module docs). With FIN both ends close cleanly,
                // as no data is ever left unread.
                drop(server);
                drop(client);
                if tally.per_second.len() <= second {
                    tally.per_second.resize(second + 1, 0);
                }
                tally.per_second[second] += 1;
            }
            Err(e) => {
                *tally.errors.entry(format!("accept: {e}")).or_default() += 1;
            }
        }
    }
}

/// `SO_LINGER` on with a zero timeout: close() sends an RST and frees the
/// connection at once.
fn set_linger_zero(stream: &TcpStream) -> std::io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_socket_option(stream, libc::SO_LINGER, &linger)
}

/// `setsockopt(SOL_SOCKET, option)` with `value`, which must be the type
/// the kernel expects for `option` (a `timeval`, a `linger`, ...).
fn set_socket_option<T>(
    socket: &impl AsRawFd,
    option: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: the fd is open (borrowed from its owner for the call) and
    // `value` points to a valid `T` whose size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn merge_per_second(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (total, n) in into.iter_mut().zip(from) {
        *total += n;
    }
}
