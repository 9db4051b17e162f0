//! A TCP peer for tests, run inside test pods.
//!
//!   netpeer listen ADDR MODE [BACKLOG]
//!                                    MODE: close (accept, close at once),
//!                                    hold (accept, never close),
//!                                    read (accept, read until EOF, close),
//!                                    reply (accept, read "ping", answer
//!                                    "pong", close), none (never accept),
//!                                    redis (answer PING until told to
//!                                    `refuse` on stdin, then refuse)
//!   netpeer connect ADDR COUNT HOLD TIMEOUT_MS
//!                                    HOLD: hold (keep sockets open), close,
//!                                    or exchange (send "ping", read the
//!                                    4-byte answer, keep the socket open)
//!   netpeer udp ADDR HEX             send one datagram (bytes in hex), for
//!                                    malformed DNS packets
//!   netpeer redis-pool ADDR SIZE PERIOD_MS
//!   netpeer redis-churn ADDR PERIOD_MS TIMEOUT_MS
//!                                    Redis clients (see `redis.rs`)
//!   netpeer pg-pool ADDR SIZE
//!   netpeer pg-churn ADDR PERIOD_MS  PostgreSQL clients (see `pg.rs`)
//!   netpeer health ADDR DEPENDENCY   an HTTP /healthz that waits on DEPENDENCY
//!   netpeer probe ADDR PATH TIMEOUT_MS PERIOD_MS
//!                                    the kubelet's HTTP probe of it
//!
//! Prints "ready" once listening, one "ok <µs>"/"err <errno>" per connect,
//! then "done"; holds (sleeps) until killed when asked to.

mod listen;
mod pg;
mod redis;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("listen") if args.len() == 4 || args.len() == 5 => {
            listen::listen(&args[2], &args[3], args.get(4).map(String::as_str))
        }
        Some("connect") if args.len() == 6 => connect(&args[2], &args[3], &args[4], &args[5]),
        Some("udp") if args.len() == 4 => udp(&args[2], &args[3]),
        Some("redis-pool") if args.len() == 5 => redis::pool(&args[2], &args[3], &args[4]),
        Some("redis-churn") if args.len() == 5 => redis::churn(&args[2], &args[3], &args[4]),
        Some("pg-pool") if args.len() == 4 => pg::pool(&args[2], &args[3]),
        Some("health") if args.len() == 4 => listen::health(&args[2], &args[3]),
        Some("probe") if args.len() == 6 => listen::probe(&args[2], &args[3], &args[4], &args[5]),
        Some("pg-churn") if args.len() == 4 => pg::churn(&args[2], &args[3]),
        _ => Err("usage: netpeer listen ADDR close|hold|read|reply|none [BACKLOG] | netpeer connect ADDR COUNT hold|close|exchange TIMEOUT_MS | netpeer udp ADDR HEX | netpeer redis-pool ADDR SIZE PERIOD_MS | netpeer redis-churn ADDR PERIOD_MS TIMEOUT_MS | netpeer pg-pool ADDR SIZE | netpeer pg-churn ADDR PERIOD_MS | netpeer health ADDR DEPENDENCY | netpeer probe ADDR PATH TIMEOUT_MS PERIOD_MS".into()),
    };
    if let Err(e) = result {
        eprintln!("netpeer: {e}");
        std::process::exit(2);
    }
}

const fn libc_etimedout() -> i32 {
    110
}

/// CLOCK_MONOTONIC in ns: the clock of the kernel's timestamps and so of
/// the agent's findings, shared by every process on the machine.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The errno the application sees; connect_timeout's own deadline is not
/// an OS error, so it is reported as the ETIMEDOUT it stands for.
fn errno(e: &std::io::Error) -> i32 {
    match e.raw_os_error() {
        Some(n) => n,
        None if e.kind() == std::io::ErrorKind::TimedOut => libc_etimedout(),
        None => 0,
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn connect(addr: &str, count: &str, hold: &str, timeout_ms: &str) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let count: u32 = count.parse().map_err(|e| format!("bad count: {e}"))?;
    let timeout = Duration::from_millis(
        timeout_ms
            .parse()
            .map_err(|e| format!("bad timeout: {e}"))?,
    );
    let mut held = Vec::new();
    for _ in 0..count {
        let start = Instant::now();
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(mut s) => {
                let elapsed = start.elapsed().as_micros();
                match hold {
                    // Send nothing: a server that closes at once would
                    // answer unread data with a RST instead of a FIN.
                    "hold" => held.push(s),
                    "exchange" => {
                        // The answer is read, so the server's FIN leaves
                        // the socket in CLOSE_WAIT here, not reset.
                        let mut reply = [0u8; 4];
                        s.write_all(b"ping")
                            .and_then(|()| s.read_exact(&mut reply))
                            .map_err(|e| format!("exchange: {e}"))?;
                        held.push(s);
                    }
                    _ => {
                        let _ = s.write_all(b"ping");
                    }
                }
                say(&format!("ok {elapsed}"));
            }
            Err(e) => say(&format!("err {}", errno(&e))),
        }
    }
    say("done");
    if hold != "close" {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}

fn udp(addr: &str, hex: &str) -> Result<(), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    if !hex.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|e| format!("bad hex: {e}"))?;
    let local = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = std::net::UdpSocket::bind(local).map_err(|e| e.to_string())?;
    sock.send_to(&bytes, addr).map_err(|e| e.to_string())?;
    say("done");
    Ok(())
}
