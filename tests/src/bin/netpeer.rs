//! A TCP peer for tests, run inside test pods.
//!
//!   netpeer listen ADDR MODE        MODE: close (accept, close at once),
//!                                    hold (accept, never close),
//!                                    read (accept, read until EOF, close)
//!   netpeer connect ADDR COUNT HOLD TIMEOUT_MS
//!                                    HOLD: hold (keep sockets open) or close
//!   netpeer udp ADDR HEX             send one datagram (bytes in hex), for
//!                                    malformed DNS packets
//!
//! Prints "ready" once listening, one "ok <µs>"/"err <errno>" per connect,
//! then "done"; holds (sleeps) until killed when asked to.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("listen") if args.len() == 4 => listen(&args[2], &args[3]),
        Some("connect") if args.len() == 6 => connect(&args[2], &args[3], &args[4], &args[5]),
        Some("udp") if args.len() == 4 => udp(&args[2], &args[3]),
        _ => Err("usage: netpeer listen ADDR close|hold|read | netpeer connect ADDR COUNT hold|close TIMEOUT_MS | netpeer udp ADDR HEX".into()),
    };
    if let Err(e) = result {
        eprintln!("netpeer: {e}");
        std::process::exit(2);
    }
}

const fn libc_etimedout() -> i32 {
    110
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn listen(addr: &str, mode: &str) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    say("ready");
    let mut held = Vec::new();
    for conn in listener.incoming() {
        let mut conn = conn.map_err(|e| format!("accept: {e}"))?;
        match mode {
            "close" => drop(conn),
            "hold" => held.push(conn),
            "read" => {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            }
            other => return Err(format!("unknown mode {other}")),
        }
    }
    Ok(())
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
                say(&format!("ok {}", start.elapsed().as_micros()));
                if hold == "hold" {
                    // Send nothing: a server that closes at once would
                    // answer unread data with a RST instead of a FIN.
                    held.push(s);
                } else {
                    let _ = s.write_all(b"ping");
                }
            }
            // connect_timeout's own deadline is not an OS error: report it
            // as the ETIMEDOUT the application sees.
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && e.raw_os_error().is_none() => {
                say(&format!("err {}", libc_etimedout()))
            }
            Err(e) => say(&format!("err {}", e.raw_os_error().unwrap_or(0))),
        }
    }
    say("done");
    if hold == "hold" {
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
