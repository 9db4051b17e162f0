//! "no free local port: 6 connects to 10.0.0.5:6379 failed with
//! EADDRNOTAVAIL in the last 60 s (last by pid 4411 (php-fpm))".

use sockeye_common::resources::errno;

use super::{number, plain, Cx, Words};
use crate::findings::Fact;

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let name = about(cx, "errno");
    let process = about(cx, "process");
    let what = about(cx, "lead_failures");
    let recent = cx.n("lead_failures");
    let window = seconds(cx.v.fact("window_s").map_or(0, Fact::ns));
    let lead = cx.n("errno") as u32;
    let pid = cx.n("process");
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "failures" => format!("{} {} in the last {window}", f.n(), cx.about_of(f)),
            "failing_for_s" => format!(
                "failing for {} ({} failures in this episode, {} since the agent started)",
                seconds(f.ns()),
                cx.n("episode_failures"),
                cx.n("total_failures")
            ),
            "port_range_ports" => format!(
                "local port range {}-{} ({} ports) in the network namespace of {}",
                cx.n("port_range_low"),
                cx.n("port_range_high"),
                f.n(),
                cx.about_of(f)
            ),
            "sockets_to_destination" => format!(
                "the agent sees {} sockets from this workload to {} ({} open, {} in TIME_WAIT)",
                f.n(),
                cx.about_of(f),
                cx.n("open_to_destination"),
                cx.n("time_wait_to_destination")
            ),
            "nofile_soft" => {
                let show = |v: f64| {
                    if v.is_finite() {
                        number(v)
                    } else {
                        "unlimited".to_string()
                    }
                };
                let mut s = format!(
                    "{}: RLIMIT_NOFILE {} (hard {})",
                    cx.about_of(f),
                    show(f.value),
                    show(cx.value("nofile_hard"))
                );
                if cx.has("files_open") {
                    s.push_str(&format!(
                        ", {} files open just after the failure",
                        cx.n("files_open")
                    ));
                }
                s
            }
            "file_handles_allocated" => format!(
                "the node has {} file handles allocated of fs.file-max {}",
                f.n(),
                cx.n("file_max")
            ),
            "errno"
            | "process"
            | "window_s"
            | "lead_failures"
            | "episode_failures"
            | "total_failures"
            | "port_range_low"
            | "port_range_high"
            | "open_to_destination"
            | "time_wait_to_destination"
            | "nofile_hard"
            | "files_open"
            | "file_max" => return None,
            _ => plain(f),
        })
    });
    let summary = match lead {
        errno::EADDRNOTAVAIL => format!(
            "no free local port: {recent} {what} failed with {name} in the last {window} (last by {process})"
        ),
        errno::EMFILE => format!(
            "{process} hit its open-file limit: {recent} {what} failed with {name} in the last {window}"
        ),
        errno::ENFILE => format!(
            "the node is out of file handles: {recent} {what} by {process} failed with {name} in the last {window}"
        ),
        _ => format!(
            "the kernel had no memory for sockets: {recent} {what} failed with {name} in the last {window} (last by {process})"
        ),
    };
    let next_step = match lead {
        errno::EADDRNOTAVAIL => "Reuse connections (keep-alive, a connection pool) instead of opening one per request: every connection this side closes holds its local port in TIME_WAIT for 60 s. If the connection rate is real, widen net.ipv4.ip_local_port_range in the pod's network namespace or spread connects over more destination addresses.".to_string(),
        errno::EMFILE => format!("Look for leaked descriptors in pid {pid} (ls -l /proc/{pid}/fd shows what they are); if the load needs that many, raise the process's open-file limit (ulimit -n, systemd LimitNOFILE, the container runtime's nofile ulimit)."),
        errno::ENFILE => "The node's file table is full: find the processes holding the most files (ls /proc/*/fd | wc -l per process) and raise fs.file-max only if their use is legitimate.".to_string(),
        _ => "The kernel could not allocate socket memory: check the node's memory pressure (free -m, /proc/net/sockstat against net.ipv4.tcp_mem) and the pod's memory limit.".to_string(),
    };
    Words {
        summary,
        facts,
        next_step,
    }
}

fn about(cx: &mut Cx<'_, '_>, key: &str) -> String {
    match cx.v.fact(key).cloned() {
        Some(f) => cx.about_of(&f),
        None => String::new(),
    }
}

/// "60 s", "2.5 s", "3 min".
fn seconds(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s >= 120.0 {
        format!("{:.0} min", s / 60.0)
    } else if s >= 10.0 || s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    const S: u64 = 1_000_000_000;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(super::seconds(60 * S), "60 s");
        assert_eq!(super::seconds(3 * S), "3 s");
        assert_eq!(super::seconds(2 * S + S / 2), "2.5 s");
        assert_eq!(super::seconds(600 * S), "10 min");
    }
}
