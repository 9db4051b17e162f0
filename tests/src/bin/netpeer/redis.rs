//! Redis clients speaking RESP to a real redis-server: a connection pool
//! that can be told to start leaking, and a client that connects for every
//! request.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{errno, mono_ns, say};

/// How long a reply may take before the client gives up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn {
    stream: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Self { stream })
    }

    /// Sends one command and returns its reply line (without CRLF).
    fn command(&mut self, args: &[&str]) -> Result<String, String> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        // Simple replies (+PONG, +OK, -ERR ..) end at the first CRLF.
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            match self.stream.read(&mut byte) {
                Ok(1) => reply.push(byte[0]),
                Ok(_) => return Err("connection closed by the server".into()),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        reply.truncate(reply.len() - 2);
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    fn expect(&mut self, args: &[&str], want: &str) -> Result<(), String> {
        let got = self.command(args)?;
        if got == want {
            Ok(())
        } else {
            Err(format!("{} answered {got:?}, expected {want:?}", args[0]))
        }
    }
}

fn parse_addr(addr: &str) -> Result<SocketAddr, String> {
    addr.parse().map_err(|e| format!("bad address {addr}: {e}"))
}

fn parse_ms(what: &str, v: &str) -> Result<Duration, String> {
    v.parse()
        .map(Duration::from_millis)
        .map_err(|e| format!("bad {what} {v}: {e}"))
}

/// Commands the test writes to stdin, one per line.
pub(crate) fn stdin_commands() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `redis-pool ADDR SIZE PERIOD_MS`: SIZE connections reused round-robin,
/// one command (PING, then SET, alternating) every PERIOD_MS. Commands on
/// stdin: `leak EVERY_MS` also opens a connection every EVERY_MS, PINGs it
/// once and never closes it; `close-leaked` closes those and stops leaking.
///
/// Prints `ready <t>` with the pool open, `leak <held> <t>` per leaked
/// connection (t: when its connect began), `closed <n> <t>`; `<t>` is
/// CLOCK_MONOTONIC in ns, the agent's clock. Any failure ends it with
/// `fail <why>`.
pub fn pool(addr: &str, size: &str, period_ms: &str) -> Result<(), String> {
    let addr = parse_addr(addr)?;
    let size: usize = size.parse().map_err(|e| format!("bad size {size}: {e}"))?;
    let period = parse_ms("period", period_ms)?;
    if size == 0 {
        return Err("pool size must be at least 1".into());
    }
    let mut pool = (0..size)
        .map(|_| Conn::open(addr, REPLY_TIMEOUT).map_err(|e| format!("pool connect: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let commands = stdin_commands();
    say(&format!("ready {}", mono_ns()));
    let mut leak_every: Option<Duration> = None;
    let mut next_leak = Instant::now();
    let mut leaked: Vec<Conn> = Vec::new();
    let mut next = Instant::now();
    let mut i: u64 = 0;
    loop {
        while let Ok(cmd) = commands.try_recv() {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            match words.as_slice() {
                ["leak", ms] => {
                    leak_every = Some(parse_ms("leak interval", ms)?);
                    next_leak = Instant::now();
                }
                ["close-leaked"] => {
                    let n = leaked.len();
                    leak_every = None;
                    leaked.clear();
                    say(&format!("closed {n} {}", mono_ns()));
                }
                _ => return Err(format!("unknown command {cmd:?}")),
            }
        }
        let conn = &mut pool[(i % size as u64) as usize];
        let step = if i.is_multiple_of(2) {
            conn.expect(&["PING"], "+PONG")
        } else {
            conn.expect(&["SET", &format!("key:{}", i % 100), &i.to_string()], "+OK")
        };
        step.map_err(|e| format!("pool: {e}"))?;
        i += 1;
        if let Some(every) = leak_every {
            if Instant::now() >= next_leak {
                let t = mono_ns();
                let mut c = Conn::open(addr, REPLY_TIMEOUT).map_err(|e| format!("leak: {e}"))?;
                c.expect(&["PING"], "+PONG")
                    .map_err(|e| format!("leak: {e}"))?;
                leaked.push(c);
                say(&format!("leak {} {t}", leaked.len()));
                // A fixed schedule, so the rate is what was asked for.
                next_leak += every;
            }
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
}

/// `redis-churn ADDR PERIOD_MS TIMEOUT_MS`: every PERIOD_MS connects (with
/// a TIMEOUT_MS connect timeout), PINGs, reads +PONG and closes. Prints
/// per attempt `ok <t>`, `err <errno> <t>` (connect failed) or
/// `fail <t> <why>` (connected, but the PING failed); `<t>` is when the
/// connect began (CLOCK_MONOTONIC ns).
pub fn churn(addr: &str, period_ms: &str, timeout_ms: &str) -> Result<(), String> {
    let addr = parse_addr(addr)?;
    let period = parse_ms("period", period_ms)?;
    let timeout = parse_ms("timeout", timeout_ms)?;
    let mut next = Instant::now();
    loop {
        let t = mono_ns();
        match Conn::open(addr, timeout) {
            Ok(mut c) => match c.expect(&["PING"], "+PONG") {
                // The reply is read in full before the close, so the close
                // is a FIN (the client's TIME_WAIT), not a RST.
                Ok(()) => say(&format!("ok {t}")),
                Err(e) => say(&format!("fail {t} {e}")),
            },
            Err(e) => say(&format!("err {} {t}", errno(&e))),
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Behind (a slow connect): keep the period from now on.
            next = now;
        }
    }
}
