//! PostgreSQL clients speaking the frontend/backend protocol (version 3,
//! trust authentication) to a real server: a pool that can be told to leak
//! sessions, and a client that opens a session per request.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::{mono_ns, say};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Protocol version 3.0.
const PROTOCOL: u32 = 196_608;

/// An open, authenticated session.
struct Session {
    stream: TcpStream,
}

impl Session {
    /// Connects and logs in as `postgres` to database `postgres`; the
    /// server's refusal ("too many clients") is the error.
    fn open(addr: SocketAddr) -> Result<Self, String> {
        let mut stream =
            TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| format!("timeout: {e}"))?;
        let mut body = PROTOCOL.to_be_bytes().to_vec();
        for s in ["user", "postgres", "database", "postgres"] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        stream
            .write_all(&msg)
            .map_err(|e| format!("startup: {e}"))?;
        let mut s = Self { stream };
        s.until_ready()?;
        Ok(s)
    }

    /// Reads messages until ReadyForQuery; an ErrorResponse is the error.
    fn until_ready(&mut self) -> Result<(), String> {
        loop {
            let (kind, body) = self.message()?;
            match kind {
                b'Z' => return Ok(()),
                b'E' => return Err(error_text(&body)),
                b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                    return Err("the server asks for a password (trust expected)".into())
                }
                _ => {}
            }
        }
    }

    fn message(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 5];
        self.stream
            .read_exact(&mut head)
            .map_err(|e| format!("read: {e}"))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=1 << 20).contains(&len) {
            return Err(format!("bad message length {len}"));
        }
        let mut body = vec![0u8; len - 4];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| format!("read: {e}"))?;
        Ok((head[0], body))
    }

    fn query(&mut self, sql: &str) -> Result<(), String> {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.stream
            .write_all(&msg)
            .map_err(|e| format!("query: {e}"))?;
        self.until_ready()
    }

    /// Terminate, then close: the client ends the session.
    fn close(mut self) {
        let _ = self.stream.write_all(&[b'X', 0, 0, 0, 4]);
    }
}

/// The 'M' field of an ErrorResponse ("sorry, too many clients already").
fn error_text(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"M"))
        .map_or_else(
            || "error".into(),
            |m| String::from_utf8_lossy(m).into_owned(),
        )
}

/// `pg-pool ADDR SIZE`: SIZE sessions, one query on each in turn every
/// 500 ms. `leak EVERY_MS` on stdin also opens a session every EVERY_MS
/// and never closes it (a job that forgets to release); a refused one is
/// reported (`refused <t> <why>`) and the job goes on trying. Prints
/// `ready <t>`, `leak <held> <t>`.
pub fn pool(addr: &str, size: &str) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let size: usize = size.parse().map_err(|e| format!("bad size {size}: {e}"))?;
    let mut pool = (0..size)
        .map(|_| Session::open(addr))
        .collect::<Result<Vec<_>, _>>()?;
    let commands = crate::redis::stdin_commands();
    say(&format!("ready {}", mono_ns()));
    let mut leak_every: Option<Duration> = None;
    let mut next_leak = Instant::now();
    let mut leaked = Vec::new();
    let mut i = 0usize;
    loop {
        while let Ok(cmd) = commands.try_recv() {
            match cmd.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["leak", ms] => {
                    let ms: u64 = ms.parse().map_err(|e| format!("bad interval {ms}: {e}"))?;
                    leak_every = Some(Duration::from_millis(ms));
                    next_leak = Instant::now();
                }
                _ => return Err(format!("unknown command {cmd:?}")),
            }
        }
        if !pool.is_empty() {
            let n = pool.len();
            pool[i % n]
                .query("SELECT 1")
                .map_err(|e| format!("pool: {e}"))?;
            i += 1;
        }
        if let Some(every) = leak_every {
            while Instant::now() >= next_leak {
                let t = mono_ns();
                match Session::open(addr) {
                    Ok(s) => {
                        leaked.push(s);
                        say(&format!("leak {} {t}", leaked.len()));
                    }
                    Err(e) => say(&format!("refused {t} {e}")),
                }
                next_leak += every;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `pg-churn ADDR PERIOD_MS`: every PERIOD_MS a session of its own: log
/// in, `SELECT 1`, terminate. Prints `ok <t>` or `fail <t> <why>`.
pub fn churn(addr: &str, period_ms: &str) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let period = Duration::from_millis(
        period_ms
            .parse()
            .map_err(|e| format!("bad period {period_ms}: {e}"))?,
    );
    let mut next = Instant::now();
    loop {
        let t = mono_ns();
        match Session::open(addr).and_then(|mut s| {
            s.query("SELECT 1")?;
            s.close();
            Ok(())
        }) {
            Ok(()) => say(&format!("ok {t}")),
            Err(e) => say(&format!("fail {t} {e}")),
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}
