//! The refreshing terminal table: one row per flow, grouped by workload,
//! then the listeners, with the loss counters in the header so "nothing
//! seen" can be told apart from "events lost".

use std::fmt::Write as _;

use super::format::{age_s, bytes, duration_ns};
use crate::snapshot::{FlowView, Health, Snapshot};

/// Renders the whole screen as a string (tests can check it without a TTY).
pub fn render(snap: &Snapshot, health: &Health, interval_s: f64, filter: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "sockeye-agent  every {interval_s}s{}  events {}  lost {}  sockets {}  flows {}",
        filter.map(|f| format!("  filter '{f}'")).unwrap_or_default(),
        health.events_received,
        health.lost_total,
        health.tracked_sockets,
        health.flows,
    );
    if health.lost_total > 0 {
        let lost: Vec<String> = health
            .lost
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "LOST: {}", lost.join(" "));
    }
    let _ = writeln!(
        s,
        "\n{:<26} {:<3} {:<28} {:>6} {:>5} {:<16} {:>8} {:>8} {:>8} {:>8} {:>5} {:<22} {:>6} {:>4} {:>9} {:>9} {}",
        "WORKLOAD", "DIR", "REMOTE", "OK", "FAIL", "REF/TMO/UNR/ABT", "P50", "P90", "P99", "MAX",
        "OPEN", "STATES", "OLDEST", ">1m", "+OPN/-CLS", "BYTES", "PROCESS"
    );
    for f in &snap.flows {
        let _ = writeln!(s, "{}", flow_row(f));
    }
    if snap.flows.is_empty() {
        let _ = writeln!(s, "(no TCP activity seen yet)");
    }
    let _ = writeln!(s, "\nLISTENERS");
    for l in &snap.listeners {
        let _ = writeln!(
            s,
            "{:<26} {:<28} {}({})",
            truncate(&l.workload.label(), 26),
            socket(&l.addr, l.port),
            l.comm,
            l.pid
        );
    }
    s
}

fn flow_row(f: &FlowView) -> String {
    let lat = f.connect_latency;
    let get = |k: &str| f.connects_failed.get(k).copied().unwrap_or(0);
    let causes = format!(
        "{}/{}/{}/{}",
        get("refused"),
        get("timed_out"),
        get("unreachable"),
        get("aborted")
    );
    let states: Vec<String> = f
        .states
        .iter()
        .map(|(k, v)| format!("{}:{v}", short_state(k)))
        .collect();
    let dir = match f.direction {
        crate::aggregate::flows::Direction::Outbound => "out",
        crate::aggregate::flows::Direction::Inbound => "in",
    };
    format!(
        "{:<26} {:<3} {:<28} {:>6} {:>5} {:<16} {:>8} {:>8} {:>8} {:>8} {:>5} {:<22} {:>6} {:>4} {:>9} {:>9} {}",
        truncate(&f.workload.label(), 26),
        dir,
        socket(&f.remote, f.port),
        f.connects_ok,
        f.failed_total(),
        causes,
        duration_ns(lat.map(|l| l.p50_ns)),
        duration_ns(lat.map(|l| l.p90_ns)),
        duration_ns(lat.map(|l| l.p99_ns)),
        duration_ns(lat.map(|l| l.max_ns)),
        f.open,
        truncate(&states.join(","), 22),
        if f.open > 0 { age_s(f.oldest_open_s) } else { "-".into() },
        f.open_older_than_1m,
        format!("+{}/-{}", f.interval.opened, f.interval.closed),
        bytes(f.bytes_sent + f.bytes_received),
        if f.last_pid != 0 {
            format!("{}({})", f.last_comm, f.last_pid)
        } else {
            "-".into()
        },
    )
}

fn socket(ip: &std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    }
}

fn short_state(s: &str) -> &str {
    match s {
        "ESTABLISHED" => "EST",
        "CLOSE_WAIT" => "CW",
        "TIME_WAIT" => "TW",
        "SYN_SENT" => "SYN",
        "FIN_WAIT1" => "FW1",
        "FIN_WAIT2" => "FW2",
        "LAST_ACK" => "LA",
        other => other,
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
