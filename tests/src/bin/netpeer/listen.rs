//! `netpeer listen`: a server that accepts and then closes, holds, reads,
//! answers once, or never accepts at all.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    os::fd::FromRawFd,
};

use crate::say;

pub fn listen(addr: &str, mode: &str, backlog: Option<&str>) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let listener = match backlog {
        None => TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?,
        Some(b) => {
            let backlog: i32 = b.parse().map_err(|e| format!("bad backlog {b}: {e}"))?;
            bind_with_backlog(addr, backlog)?
        }
    };
    say("ready");
    if mode == "none" {
        // The accept queue fills up (backlog + 1 connections) and further
        // SYNs are dropped: a server too busy to accept.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    if mode == "redis" {
        return redis_like(listener);
    }
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
            "reply" => {
                // Read the whole request first: closing with unread data
                // would send a RST instead of a FIN.
                let mut req = [0u8; 4];
                if conn.read_exact(&mut req).is_ok() {
                    let _ = conn.write_all(b"pong");
                }
                drop(conn);
            }
            other => return Err(format!("unknown mode {other}")),
        }
    }
    Ok(())
}

/// Mode `redis`: answers RESP `PING` with `+PONG` on every connection
/// until `refuse` comes on stdin; from then on it says
/// `-ERR invalid password` to each new connection and closes it at once
/// (a server whose secret changed under its clients).
fn redis_like(listener: TcpListener) -> Result<(), String> {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let refuse = Arc::new(AtomicBool::new(false));
    let flag = refuse.clone();
    let commands = crate::redis::stdin_commands();
    std::thread::spawn(move || {
        while let Ok(cmd) = commands.recv() {
            if cmd.trim() == "refuse" {
                flag.store(true, Ordering::SeqCst);
                say("refusing");
            }
        }
    });
    for conn in listener.incoming() {
        let mut conn = conn.map_err(|e| format!("accept: {e}"))?;
        if refuse.load(Ordering::SeqCst) {
            let _ = conn.write_all(b"-ERR invalid password\r\n");
            drop(conn);
            continue;
        }
        std::thread::spawn(move || {
            // "*1\r\n$4\r\nPING\r\n" per command, until the client closes.
            let mut req = [0u8; 14];
            while conn.read_exact(&mut req).is_ok() {
                if conn.write_all(b"+PONG\r\n").is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// `TcpListener::bind` always asks for a backlog of 128; the tests need a
/// small one to fill.
fn bind_with_backlog(addr: SocketAddr, backlog: i32) -> Result<TcpListener, String> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscalls on a descriptor this function owns; the
    // sockaddr structs are fully initialised and their sizes passed.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        // Owned from here: closed on every error path.
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let rc = match addr {
            SocketAddr::V4(a) => {
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                let sa = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                libc::bind(
                    fd,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if rc != 0 {
            return Err(format!("bind {addr}: {}", std::io::Error::last_os_error()));
        }
        if libc::listen(fd, backlog) != 0 {
            return Err(format!(
                "listen {addr}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(listener)
    }
}

/// `netpeer health ADDR DEPENDENCY`: an HTTP server whose every request
/// (a health check) first connects to DEPENDENCY, trying again every
/// 200 ms for up to 10 s, and only then answers 200 (503 if it never
/// could): an app whose /healthz waits on its database.
pub fn health(addr: &str, dependency: &str) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let dep: SocketAddr = dependency
        .parse()
        .map_err(|e| format!("bad address {dependency}: {e}"))?;
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    say("ready");
    for conn in listener.incoming() {
        let mut conn = conn.map_err(|e| format!("accept: {e}"))?;
        std::thread::spawn(move || {
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && req.len() < 8192 {
                match conn.read(&mut byte) {
                    Ok(1) => req.push(byte[0]),
                    _ => return,
                }
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let up = loop {
                if std::net::TcpStream::connect_timeout(&dep, std::time::Duration::from_secs(1))
                    .is_ok()
                {
                    break true;
                }
                if std::time::Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            };
            let status = if up {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = conn.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        });
    }
    Ok(())
}

/// `netpeer probe ADDR PATH TIMEOUT_MS PERIOD_MS`: the kubelet's HTTP
/// probe: every PERIOD_MS (at once after one that took longer, as the
/// kubelet's ticker does) GET PATH, and give
/// up after TIMEOUT_MS without an answer, closing the connection. Prints
/// `ok <t>`, `timeout <t>` or `err <t> <why>` per probe (`<t>` when it began).
pub fn probe(addr: &str, path: &str, timeout_ms: &str, period_ms: &str) -> Result<(), String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let ms = |v: &str| {
        v.parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|e| format!("bad duration {v}: {e}"))
    };
    let (timeout, period) = (ms(timeout_ms)?, ms(period_ms)?);
    loop {
        let started = std::time::Instant::now();
        let t = crate::mono_ns();
        let outcome = (|| -> Result<(), String> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .map_err(|e| format!("write: {e}"))?;
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(n) if n > 0 => Ok(()),
                Ok(_) => Err("closed".into()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Err("timeout".into())
                }
                Err(e) => Err(format!("read: {e}")),
            }
        })();
        match outcome {
            Ok(()) => say(&format!("ok {t}")),
            Err(e) if e == "timeout" => say(&format!("timeout {t}")),
            Err(e) => say(&format!("err {t} {e}")),
        }
        if let Some(rest) = period.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}
