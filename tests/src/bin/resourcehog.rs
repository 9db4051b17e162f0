//! Runs a process out of local ports or file descriptors, for tests.
//!
//!   resourcehog ports ADDR EXTRA INTERVAL_MS
//!       connects to ADDR and holds every connection until connect() fails
//!       with EADDRNOTAVAIL (no free local port), then tries EXTRA more
//!       times, INTERVAL_MS apart
//!   resourcehog fds NOFILE EXTRA INTERVAL_MS
//!       lowers its RLIMIT_NOFILE (soft and hard) to NOFILE, opens TCP
//!       sockets until socket() fails with EMFILE, then tries EXTRA more
//!       times, INTERVAL_MS apart
//!
//! Prints "held N" (what it got before the first failure), "failed M"
//! (failures with that errno, the first included; any other outcome is an
//! error), then "done", and holds everything until killed.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Gives up if the resource never runs out (the limit was not applied).
const MAX_HELD: usize = 100_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match (args.get(1).map(String::as_str), args.len()) {
        (Some("ports"), 5) => ports(&args[2], &args[3], &args[4]),
        (Some("fds"), 5) => fds(&args[2], &args[3], &args[4]),
        _ => Err(
            "usage: resourcehog ports ADDR EXTRA INTERVAL_MS | resourcehog fds NOFILE EXTRA INTERVAL_MS"
                .into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("resourcehog: {e}");
        std::process::exit(2);
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn number<T: std::str::FromStr>(what: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("bad {what}: {v}"))
}

/// Holds what it made and sleeps until killed.
fn hold<T>(held: Vec<T>) -> ! {
    say("done");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        let _ = &held;
    }
}

fn ports(addr: &str, extra: &str, interval_ms: &str) -> Result<(), String> {
    let addr: SocketAddr = number("address", addr)?;
    let extra: usize = number("extra", extra)?;
    let interval = Duration::from_millis(number("interval", interval_ms)?);
    let mut held = Vec::new();
    let attempt = || match TcpStream::connect(addr) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(None),
        Err(e) => Err(format!("connect {addr}: {e}")),
    };
    loop {
        match attempt()? {
            Some(s) if held.len() < MAX_HELD => held.push(s),
            Some(_) => return Err(format!("{MAX_HELD} connections and still a free port")),
            None => break,
        }
    }
    say(&format!("held {}", held.len()));
    for _ in 0..extra {
        std::thread::sleep(interval);
        if let Some(s) = attempt()? {
            return Err(format!("connect succeeded after the ports ran out: {s:?}"));
        }
    }
    say(&format!("failed {}", extra + 1));
    hold(held)
}

fn fds(nofile: &str, extra: &str, interval_ms: &str) -> Result<(), String> {
    let nofile: u64 = number("nofile", nofile)?;
    let extra: usize = number("extra", extra)?;
    let interval = Duration::from_millis(number("interval", interval_ms)?);
    let limit = libc::rlimit {
        rlim_cur: nofile,
        rlim_max: nofile,
    };
    // SAFETY: setrlimit with a valid, fully initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
    }
    let attempt = || -> Result<Option<i32>, String> {
        // SAFETY: plain socket creation; the fd is kept until exit.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if fd >= 0 {
            return Ok(Some(fd));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EMFILE) => Ok(None),
            _ => Err(format!("socket: {e}")),
        }
    };
    let mut held = Vec::new();
    loop {
        match attempt()? {
            Some(fd) if held.len() < MAX_HELD => held.push(fd),
            Some(_) => return Err(format!("{MAX_HELD} sockets and still below the limit")),
            None => break,
        }
    }
    say(&format!("held {}", held.len()));
    for _ in 0..extra {
        std::thread::sleep(interval);
        if let Some(fd) = attempt()? {
            return Err(format!("socket() succeeded over the limit: fd {fd}"));
        }
    }
    say(&format!("failed {}", extra + 1));
    hold(held)
}
