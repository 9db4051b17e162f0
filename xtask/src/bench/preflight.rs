//! Checks of the machine that decide whether the figures mean anything:
//! loopback TCP settings that bound the workload's rate, and other processes
//! holding BPF programs (a TCP tracer already attached, e.g. a test of the
//! agent itself, runs on every connection of the "baseline" too).

use std::fs;

use super::workload::DESTINATIONS;

/// Loopback TCP settings as `(name, value)` pairs, plus warnings.
pub fn tcp_settings() -> (Vec<(String, String)>, Vec<String>) {
    let read = |name: &str| {
        fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".to_string())
    };
    let mut settings = Vec::new();
    let mut warnings = Vec::new();

    // tcp_tw_reuse: 1 = always, 2 = loopback only (the default since 4.19).
    // With 0 a TIME_WAIT tuple cannot be reused by a new connect for 60 s.
    // The workload puts TIME_WAIT on the server side and spreads
    // destinations, so it should not depend on this; shown for the record.
    let tw_reuse = read("tcp_tw_reuse");
    if tw_reuse == "0" {
        warnings.push(
            "net.ipv4.tcp_tw_reuse=0: TIME_WAIT tuples are never reused; \
             watch for connect errors"
                .to_string(),
        );
    }
    settings.push(("tcp_tw_reuse".to_string(), tw_reuse));

    let range = read("ip_local_port_range");
    let ports = range
        .split(' ')
        .filter_map(|p| p.parse::<u64>().ok())
        .collect::<Vec<_>>();
    let range = match ports[..] {
        [low, high] => {
            let tuples = (high.saturating_sub(low) + 1) * u64::from(DESTINATIONS);
            format!("{range} (x{DESTINATIONS} destinations = {tuples} tuples)")
        }
        _ => range,
    };
    settings.push(("ip_local_port_range".to_string(), range));

    // Past this many TIME_WAIT sockets the kernel skips TIME_WAIT (counted
    // as TCPTimeWaitOverflow); at these rates that happens within seconds.
    // It changes the per-connection kernel work as the table fills, which
    // is why a warm-up round runs first.
    settings.push(("tcp_max_tw_buckets".to_string(), read("tcp_max_tw_buckets")));
    (settings, warnings)
}

/// Processes other than this one and `exclude` that hold BPF program or
/// link file descriptors, as "comm (pid N)".
///
/// Programs attached and then left without any holder (pinned, or legacy
/// cgroup attachments) are not seen; a running tracer or test is.
pub fn foreign_bpf_holders(exclude: Option<u32>) -> Vec<String> {
    let own = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own || Some(pid) == exclude {
            continue;
        }
        // Processes come and go while we look; unreadable ones are skipped.
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds_bpf = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                target == "anon_inode:bpf-prog" || target == "anon_inode:bpf_link"
            })
        });
        if holds_bpf {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            holders.push(format!("{} (pid {pid})", comm.trim()));
        }
    }
    holders
}
