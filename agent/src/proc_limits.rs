//! The limit a failed connect() or socket() ran into, read from /proc
//! right after the failure: the local port range of the process's network
//! namespace, its open-file limit (and how many files it has open), or the
//! node's file table.

use std::{fs::File, io, os::fd::AsRawFd, path::Path};

use sockeye_common::resources::errno;

use crate::aggregate::resources::Limit;

/// Open descriptors are counted only below this limit: a directory
/// listing of a million fds would cost more than the evidence is worth.
const MAX_FDS_COUNTED: u64 = 65_536;

/// The limit behind `errno` for process `tgid`; None when there is none
/// (ENOBUFS, ENOMEM) or it could not be read (the process is gone).
pub fn read(proc_root: &Path, errno: u32, tgid: u32) -> Option<Limit> {
    let result = match errno {
        errno::EADDRNOTAVAIL => port_range(proc_root, tgid),
        errno::EMFILE => open_files(proc_root, tgid),
        errno::ENFILE => system_files(proc_root),
        _ => return None,
    };
    result
        .map_err(|e| log::debug!("limit for errno {errno} of pid {tgid}: {e}"))
        .ok()
}

/// `net.ipv4.ip_local_port_range` as the process's network namespace has
/// it (the sysctl is per namespace, and /proc/sys shows the reading
/// thread's). Runs on a short-lived thread because `setns` switches only
/// the calling thread.
pub fn port_range(proc_root: &Path, tgid: u32) -> io::Result<Limit> {
    let ns = File::open(proc_root.join(tgid.to_string()).join("ns/net"))?;
    let path = proc_root.join("sys/net/ipv4/ip_local_port_range");
    let text = std::thread::spawn(move || -> io::Result<String> {
        // SAFETY: setns on a valid namespace fd; affects only this thread,
        // which ends right after.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        std::fs::read_to_string(path)
    })
    .join()
    .map_err(|_| io::Error::other("port range thread panicked"))??;
    let (low, high) = parse_port_range(&text).ok_or_else(|| bad("ip_local_port_range", &text))?;
    Ok(Limit::PortRange { low, high })
}

/// RLIMIT_NOFILE from /proc/<pid>/limits, and the descriptors open now.
pub fn open_files(proc_root: &Path, tgid: u32) -> io::Result<Limit> {
    let dir = proc_root.join(tgid.to_string());
    let text = std::fs::read_to_string(dir.join("limits"))?;
    let (soft, hard) = parse_nofile(&text).ok_or_else(|| bad("limits", &text))?;
    let open = match soft {
        Some(s) if s <= MAX_FDS_COUNTED => std::fs::read_dir(dir.join("fd"))
            .ok()
            .map(|d| d.count() as u64),
        _ => None,
    };
    Ok(Limit::OpenFiles { soft, hard, open })
}

/// `fs.file-nr`: allocated file handles and `fs.file-max` (node-wide).
pub fn system_files(proc_root: &Path) -> io::Result<Limit> {
    let text = std::fs::read_to_string(proc_root.join("sys/fs/file-nr"))?;
    let (allocated, max) = parse_file_nr(&text).ok_or_else(|| bad("file-nr", &text))?;
    Ok(Limit::SystemFiles { allocated, max })
}

fn bad(what: &str, text: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "unexpected {what}: {:?}",
            text.chars().take(200).collect::<String>()
        ),
    )
}

/// "32768\t60999\n" -> (32768, 60999).
pub fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(|v| v.parse::<u16>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(low)), Some(Ok(high)), None) if low <= high => Some((low, high)),
        _ => None,
    }
}

/// The "Max open files" line of /proc/<pid>/limits: (soft, hard), None
/// for "unlimited".
pub fn parse_nofile(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let mut it = rest.split_whitespace();
    let value = |v: Option<&str>| -> Option<Option<u64>> {
        match v? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some((value(it.next())?, value(it.next())?))
}

/// "allocated unused max" -> (allocated, max).
pub fn parse_file_nr(text: &str) -> Option<(u64, u64)> {
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    match v[..] {
        [allocated, _unused, max] => Some((allocated, max)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str =
        "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            1024                 1048576              files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn parses_the_proc_formats() {
        assert_eq!(parse_nofile(LIMITS), Some((Some(1024), Some(1048576))));
        assert_eq!(
            parse_nofile(
                "Max open files            unlimited            unlimited            files\n"
            ),
            Some((None, None))
        );
        assert_eq!(
            parse_nofile("Max cpu time unlimited unlimited seconds\n"),
            None
        );
        assert_eq!(parse_nofile("Max open files  x 5 files\n"), None);
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("40000 40003"), Some((40000, 40003)));
        assert_eq!(parse_port_range("5 4"), None);
        assert_eq!(parse_port_range("1 2 3"), None);
        assert_eq!(parse_port_range("70000 80000"), None);
        assert_eq!(
            parse_file_nr("3264\t0\t9223372036854775807\n"),
            Some((3264, 9223372036854775807))
        );
        assert_eq!(parse_file_nr("1 2"), None);
        assert_eq!(parse_file_nr("a b c"), None);
    }

    #[test]
    fn reads_this_processs_limits() {
        let proc_root = Path::new("/proc");
        let me = std::process::id();
        match open_files(proc_root, me).unwrap() {
            Limit::OpenFiles { soft, open, .. } => {
                let mut rl = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: getrlimit writes into the struct we pass.
                assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
                let want = (rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur);
                assert_eq!(soft, want);
                assert!(
                    open.is_none_or(|n| n >= 3),
                    "stdin, stdout, stderr: {open:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let (low, high) = parse_port_range(&host).unwrap();
        // Our own namespace: needs CAP_SYS_ADMIN for setns, as the agent has.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(
                port_range(proc_root, me).unwrap(),
                Limit::PortRange { low, high }
            );
        }
        assert!(
            matches!(system_files(proc_root).unwrap(), Limit::SystemFiles { max, .. } if max > 0)
        );
        assert!(read(proc_root, errno::ENOBUFS, me).is_none());
        assert!(
            read(proc_root, errno::EMFILE, u32::MAX).is_none(),
            "no such process"
        );
    }
}
