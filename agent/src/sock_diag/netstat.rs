//! The kernel's per-namespace protocol counters (`/proc/<pid>/net/netstat`
//! and `snmp`): listeners that dropped connections because their accept
//! queue was full.

use std::{io, path::Path};

/// TcpExt counters of one network namespace, since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenCounters {
    /// Connections refused because a listener's accept queue was full
    /// (`LINUX_MIB_LISTENOVERFLOWS`).
    pub overflows: u64,
    /// Connections a listener dropped for any reason, overflows included
    /// (`LINUX_MIB_LISTENDROPS`).
    pub drops: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetstatError {
    #[error("process {pid} is gone ({path} does not exist)")]
    ProcessGone { pid: u32, path: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} has no counter {group}:{name}")]
    Missing {
        path: String,
        group: &'static str,
        name: &'static str,
    },
}

/// ListenOverflows and ListenDrops of the network namespace `pid` lives in
/// (/proc/<pid>/net is that process's namespace's view).
pub fn listen_overflows(proc_root: &Path, pid: u32) -> Result<ListenCounters, NetstatError> {
    let path = proc_root.join(pid.to_string()).join("net/netstat");
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH) {
            NetstatError::ProcessGone {
                pid,
                path: shown.clone(),
            }
        } else {
            NetstatError::Read {
                path: shown.clone(),
                source,
            }
        }
    })?;
    let get = |name: &'static str| {
        counter(&text, "TcpExt", name).ok_or(NetstatError::Missing {
            path: shown.clone(),
            group: "TcpExt",
            name,
        })
    };
    Ok(ListenCounters {
        overflows: get("ListenOverflows")?,
        drops: get("ListenDrops")?,
    })
}

/// A counter from the text of /proc/net/netstat or /proc/net/snmp: each
/// group is a line of names followed by a line of values, both prefixed
/// `Group:`. `None` when the group or name is absent or its value is not a
/// number (the kernel prints signed values only for Tcp:MaxConn).
pub fn counter(text: &str, group: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let Some(names) = strip_group(names, group) else {
            continue;
        };
        let values = strip_group(lines.next()?, group)?;
        return names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok());
    }
    None
}

fn strip_group<'a>(line: &'a str, group: &str) -> Option<&'a str> {
    line.strip_prefix(group)?.strip_prefix(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSTAT: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPSynRetrans
TcpExt: 0 0 17 19 4
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
";

    #[test]
    fn reads_named_counters_of_a_group() {
        assert_eq!(counter(NETSTAT, "TcpExt", "ListenOverflows"), Some(17));
        assert_eq!(counter(NETSTAT, "TcpExt", "ListenDrops"), Some(19));
        assert_eq!(counter(NETSTAT, "TcpExt", "TCPSynRetrans"), Some(4));
        assert_eq!(counter(NETSTAT, "IpExt", "InNoRoutes"), Some(0));
    }

    #[test]
    fn absent_or_odd_input_is_none_not_a_panic() {
        assert_eq!(counter(NETSTAT, "TcpExt", "Nope"), None);
        assert_eq!(
            counter(NETSTAT, "Tcp", "ListenDrops"),
            None,
            "Tcp is not TcpExt"
        );
        assert_eq!(counter("", "TcpExt", "ListenDrops"), None);
        // A names line without its values line, or a short values line.
        assert_eq!(counter("TcpExt: A B\n", "TcpExt", "A"), None);
        assert_eq!(counter("TcpExt: A B\nTcpExt: 1\n", "TcpExt", "B"), None);
        assert_eq!(counter("TcpExt: A B\nTcpExt: 1 x\n", "TcpExt", "B"), None);
        assert_eq!(counter("TcpExt: A\nIpExt: 1\n", "TcpExt", "A"), None);
    }

    #[test]
    fn this_kernel_has_the_listen_counters() {
        let c = listen_overflows(Path::new("/proc"), std::process::id()).expect("own netstat");
        assert!(c.drops >= c.overflows, "{c:?}");
    }

    #[test]
    fn a_missing_process_is_reported_as_gone() {
        let err = listen_overflows(Path::new("/proc"), u32::MAX).unwrap_err();
        assert!(matches!(err, NetstatError::ProcessGone { .. }), "{err}");
    }
}
