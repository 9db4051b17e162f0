//! A real redis-server (Debian's `redis-server` package) inside a test pod:
//! its own process on port 6379, never the system's service. It can be
//! killed and started again in the same pod, as a crashing dependency is.
//! And its clients: `netpeer`'s Redis modes, read line by line.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    process::{Child, Stdio},
    sync::mpsc,
    time::Duration,
};

use sockeye_agent::clock::monotonic_ns;

use crate::{
    net::Pod,
    peer::{self, command_in, Peer},
};

pub const PORT: u16 = 6379;

/// How long redis-server may take to say it accepts connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A redis-server process in a pod; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Monotonic ns when the running server said it accepts connections.
    pub ready_ns: u64,
    /// Monotonic ns when its listening socket opened (the kernel accepts
    /// connections from then on; redis says so a little later).
    pub listening_ns: u64,
}

impl RedisServer {
    /// Starts redis-server on the pod's IPv4 address and waits until it
    /// accepts connections.
    pub fn start(pod: &Pod) -> Self {
        let mut server = Self {
            child: None,
            addr: SocketAddr::new(IpAddr::V4(pod.ip4), PORT),
            ready_ns: 0,
            listening_ns: 0,
        };
        server.start_again(pod);
        server
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash or an OOM kill ends it; returns the monotonic
    /// ns just before the signal, once the process is gone (and with it
    /// its listener).
    pub fn kill(&mut self) -> u64 {
        let mut child = self.child.take().expect("redis-server is running");
        let at = monotonic_ns();
        let _ = child.kill();
        let _ = child.wait();
        at
    }

    /// Starts it again in the same pod, on the same port, and waits until
    /// it says it accepts connections; returns the monotonic ns when its
    /// listener opened (what the agent sees as the restart).
    pub fn start_again(&mut self, pod: &Pod) -> u64 {
        assert!(self.child.is_none(), "redis-server is already running");
        let mut child = command_in(pod, "redis-server", true)
            .args([
                "--port",
                &PORT.to_string(),
                "--bind",
                "0.0.0.0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                // Without a password redis answers only loopback clients
                // unless told otherwise; the clients are other pods.
                "--protected-mode",
                "no",
                // Nothing is written (no RDB, no AOF); this only keeps a
                // stray write out of the source tree.
                "--dir",
                "/tmp",
                "--logfile",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server (apt install redis-server)");
        let stdout = child.stdout.take().expect("piped stdout");
        let pid = child.id();
        self.child = Some(child);
        self.listening_ns = wait_for_listener(pid);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end even when nobody listens any more, so the
            // server's later log lines never hit a closed pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send((monotonic_ns(), line));
            }
        });
        let mut said = Vec::new();
        loop {
            match rx.recv_timeout(READY_TIMEOUT) {
                // Logged right after its listening sockets are open and
                // the (empty) dataset is loaded.
                Ok((at, line)) if line.contains("Ready to accept connections") => {
                    self.ready_ns = at;
                    return self.listening_ns;
                }
                Ok((_, line)) => said.push(line),
                Err(e) => panic!(
                    "redis-server did not get ready within {READY_TIMEOUT:?} ({e}); it said:\n{}",
                    said.join("\n")
                ),
            }
        }
    }
}

/// Polls `pid`'s network namespace until it has a listener on [`PORT`];
/// returns the monotonic ns when it first saw it.
fn wait_for_listener(pid: u32) -> u64 {
    let want = format!(":{PORT:04X} ");
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let tcp = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
        // "sl local_address rem_address st ...": state 0A is LISTEN.
        let listening = tcp.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", f[1]).ends_with(&want) && f[3] == "0A"
        });
        if listening {
            return monotonic_ns();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server (pid {pid}) did not listen on port {PORT} within {READY_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `netpeer redis-pool`: an app with a pool of connections, which can be
/// told to leak one connection at a time; killed on drop.
pub struct PoolClient {
    pub peer: Peer,
    pub size: u64,
    /// (leaked connections held, monotonic ns its connect began), in order.
    pub leaks: Vec<(u64, u64)>,
    /// Monotonic ns when it closed the leaked connections.
    pub closed_ns: Option<u64>,
}

impl PoolClient {
    /// Opens `size` connections to `server` and uses them round-robin, one
    /// command every `period_ms`.
    pub fn start(pod: &Pod, server: SocketAddr, size: u64, period_ms: u64) -> Self {
        let mut peer = peer::spawn(
            pod,
            &[
                "redis-pool",
                &server.to_string(),
                &size.to_string(),
                &period_ms.to_string(),
            ],
        );
        let line = peer.expect_line(READY_TIMEOUT);
        assert!(line.starts_with("ready "), "redis-pool said {line:?}");
        Self {
            peer,
            size,
            leaks: Vec::new(),
            closed_ns: None,
        }
    }

    /// From now on, also open a connection every `every_ms` and keep it.
    pub fn start_leaking(&mut self, every_ms: u64) {
        self.peer.send(&format!("leak {every_ms}"));
    }

    /// Close the leaked connections (the pool stays).
    pub fn close_leaked(&mut self) {
        self.peer.send("close-leaked");
    }

    /// Connections it holds now: the pool and what it leaked.
    pub fn held(&self) -> u64 {
        let leaked = match self.closed_ns {
            Some(_) => 0,
            None => self.leaks.last().map_or(0, |l| l.0),
        };
        self.size + leaked
    }

    /// Its leak rate, connections per minute, from its own clock.
    pub fn leak_rate_per_min(&self) -> f64 {
        let (Some(first), Some(last)) = (self.leaks.first(), self.leaks.last()) else {
            return 0.0;
        };
        if last.1 == first.1 {
            return 0.0;
        }
        (last.0 - first.0) as f64 / ((last.1 - first.1) as f64 / 60e9)
    }

    /// Reads what it said since the last call; panics if it failed.
    pub fn read(&mut self) {
        while let Some(line) = self.peer.try_line() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["leak", held, t] => self.leaks.push((num(held), num(t))),
                ["closed", _, t] => self.closed_ns = Some(num(t)),
                _ => panic!("redis-pool said {line:?}"),
            }
        }
        if let Ok(Some(status)) = self.peer.child.try_wait() {
            panic!("redis-pool exited ({status}); its error is on stderr");
        }
    }
}

/// `netpeer redis-churn`: connect, PING, close, on a fixed period; killed
/// on drop.
pub struct ChurnClient {
    pub peer: Peer,
    /// Monotonic ns of each successful request's connect.
    pub ok: Vec<u64>,
    /// (errno, monotonic ns) of each failed connect.
    pub errors: Vec<(i32, u64)>,
    /// Connected, but the PING failed (the server went away mid-request).
    pub failed_requests: Vec<String>,
}

impl ChurnClient {
    pub fn start(pod: &Pod, server: SocketAddr, period_ms: u64, timeout_ms: u64) -> Self {
        let peer = peer::spawn(
            pod,
            &[
                "redis-churn",
                &server.to_string(),
                &period_ms.to_string(),
                &timeout_ms.to_string(),
            ],
        );
        Self {
            peer,
            ok: Vec::new(),
            errors: Vec::new(),
            failed_requests: Vec::new(),
        }
    }

    /// Reads what it said since the last call.
    pub fn read(&mut self) {
        while let Some(line) = self.peer.try_line() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["ok", t] => self.ok.push(num(t)),
                ["err", errno, t] => self.errors.push((num(errno) as i32, num(t))),
                ["fail", ..] => self.failed_requests.push(line),
                _ => panic!("redis-churn said {line:?}"),
            }
        }
        if let Ok(Some(status)) = self.peer.child.try_wait() {
            panic!("redis-churn exited ({status}); its error is on stderr");
        }
    }

    /// Connects refused (ECONNREFUSED) between `from` and `to` (monotonic ns).
    pub fn refused_between(&self, from: u64, to: u64) -> usize {
        self.errors
            .iter()
            .filter(|(e, t)| *e == libc::ECONNREFUSED && (from..=to).contains(t))
            .count()
    }
}

fn num(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|e| panic!("netpeer printed {s:?}, not a number: {e}"))
}
