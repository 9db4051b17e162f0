//! Discovery of pre-existing TCP sockets from /proc, so a late-started agent still sees old connections.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

mod table;

use table::read_table;
pub use table::{parse_tcp_table, TcpEntry};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketOwner {
    pub pid: u32,
    pub comm: String,
    /// From the "0::<path>" line of /proc/<pid>/cgroup; "/" if absent.
    pub cgroup_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExistingSocket {
    pub entry: TcpEntry,
    pub netns_inode: u64,
    pub owner: Option<SocketOwner>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ScanStats {
    pub pids_scanned: u64,
    pub pids_vanished: u64,
    /// Pids whose ns/net or fd directory we may not inspect (e.g. no
    /// CAP_SYS_PTRACE, or a sandbox); their sockets may show up unowned.
    pub pids_denied: u64,
    pub netns_seen: u64,
    pub sockets: u64,
    pub malformed_lines: u64,
    pub unowned_sockets: u64,
}

/// True when an error means the process exited (or became a zombie) under us.
fn is_vanished(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ESRCH)
}

/// Reads tcp and tcp6 of the pid's namespace, returning entries and the malformed-line count.
fn read_tables(proc_root: &Path, pid: u32) -> io::Result<(Vec<TcpEntry>, usize)> {
    let net = proc_root.join(pid.to_string()).join("net");
    let mut entries = Vec::new();
    let mut malformed = read_table(&net.join("tcp"), false, &mut entries)?;
    match read_table(&net.join("tcp6"), true, &mut entries) {
        Ok(bad) => malformed += bad,
        // tcp6 is absent when IPv6 is disabled; only a missing pid is an error.
        Err(e) if is_vanished(&e) && proc_root.join(pid.to_string()).exists() => {}
        Err(e) => return Err(e),
    }
    Ok((entries, malformed))
}

/// Re-reads the tables of one namespace via a pid known to live in it: used to
/// refresh the state of pre-existing sockets. Err if the pid is gone.
pub fn read_netns_tables(proc_root: &Path, pid: u32) -> io::Result<Vec<TcpEntry>> {
    read_tables(proc_root, pid).map(|(entries, _)| entries)
}

fn read_owner(proc_root: &Path, pid: u32) -> io::Result<SocketOwner> {
    let dir = proc_root.join(pid.to_string());
    let comm = fs::read_to_string(dir.join("comm"))?;
    let cgroup = fs::read_to_string(dir.join("cgroup"))?;
    let cgroup_path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    Ok(SocketOwner {
        pid,
        comm: comm.trim_end_matches('\n').to_owned(),
        cgroup_path: cgroup_path.to_owned(),
    })
}

/// Socket inodes held open by `pid`, via its fd symlinks "socket:[<inode>]".
fn socket_inodes(proc_root: &Path, pid: u32) -> io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for fd in fs::read_dir(proc_root.join(pid.to_string()).join("fd"))? {
        // Individual fds may close between readdir and readlink; skip them.
        let Ok(target) = fd.and_then(|fd| fs::read_link(fd.path())) else {
            continue;
        };
        let inode = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok());
        inodes.extend(inode);
    }
    Ok(inodes)
}

/// Accumulated state of one `scan`.
#[derive(Default)]
struct Scan {
    stats: ScanStats,
    tables: Vec<(u64, Vec<TcpEntry>)>,
    owners: HashMap<u64, SocketOwner>,
}

impl Scan {
    /// Processes one pid; the error names what could not be read.
    fn pid(&mut self, root: &Path, pid: u32) -> Result<(), (&'static str, io::Error)> {
        let ns_path = root.join(pid.to_string()).join("ns").join("net");
        let netns = fs::metadata(ns_path).map_err(|e| ("ns/net", e))?.ino();
        // Few namespaces per host, so a linear search is fine.
        if !self.tables.iter().any(|&(n, _)| n == netns) {
            let (entries, bad) = read_tables(root, pid).map_err(|e| ("net/tcp", e))?;
            // Recorded only on success, so the next pid in this namespace
            // retries if this one exited mid-read.
            self.stats.malformed_lines += bad as u64;
            self.tables.push((netns, entries));
        }
        let inodes = socket_inodes(root, pid).map_err(|e| ("fd", e))?;
        if inodes.iter().all(|i| self.owners.contains_key(i)) {
            return Ok(()); // nothing new; skip reading comm/cgroup
        }
        let owner = read_owner(root, pid).map_err(|e| ("comm/cgroup", e))?;
        for inode in inodes {
            self.owners.entry(inode).or_insert_with(|| owner.clone());
        }
        Ok(())
    }
}

/// Walks /proc (root parameter for tests, normally "/proc"), reads each
/// network namespace's tcp/tcp6 tables once, and attributes socket inodes to
/// the first (lowest) pid holding them. Vanished processes are counted, not
/// errors. Returns every socket with inode != 0 (TIME_WAIT rows are skipped).
pub fn scan(proc_root: &Path) -> (Vec<ExistingSocket>, ScanStats) {
    let mut scan = Scan::default();
    let mut pids: Vec<u32> = match fs::read_dir(proc_root) {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(err) => {
            log::warn!("cannot list {}: {err}", proc_root.display());
            return (Vec::new(), scan.stats);
        }
    };
    // Ascending order makes "first pid wins" deterministic (parents tend to
    // have lower pids than the children they forked sockets into).
    pids.sort_unstable();
    for pid in pids {
        scan.stats.pids_scanned += 1;
        match scan.pid(proc_root, pid) {
            Ok(()) => {}
            Err((_, err)) if is_vanished(&err) => scan.stats.pids_vanished += 1,
            Err((what, err)) => {
                scan.stats.pids_denied += 1;
                log::debug!("cannot read {what} of pid {pid}: {err}");
            }
        }
    }

    let (mut stats, owners) = (scan.stats, scan.owners);
    stats.netns_seen = scan.tables.len() as u64;
    let mut sockets = Vec::new();
    for (netns_inode, entries) in scan.tables {
        for entry in entries.into_iter().filter(|e| e.inode != 0) {
            let owner = owners.get(&entry.inode).cloned();
            stats.unowned_sockets += u64::from(owner.is_none());
            let socket = ExistingSocket {
                entry,
                netns_inode,
                owner,
            };
            sockets.push(socket);
        }
    }
    stats.sockets = sockets.len() as u64;
    (sockets, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    #[test]
    fn scan_finds_own_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = listener.local_addr().expect("addr");
        let client = TcpStream::connect(server).expect("connect");
        // Not-yet-accepted children have inode 0, so accept first.
        let _accepted = listener.accept().expect("accept");
        let client = client.local_addr().expect("addr");
        // Dual-stack check, skipped where IPv6 is unavailable.
        let v6 = TcpListener::bind("[::]:0").ok().and_then(|l| {
            let port = l.local_addr().ok()?.port();
            let c6 = TcpStream::connect(("::1", port)).ok()?;
            let c4 = TcpStream::connect(("127.0.0.1", port)).ok()?;
            let accepted = (l.accept().ok()?, l.accept().ok()?);
            Some((port, c6, c4, accepted, l))
        });

        let (sockets, stats) = scan(Path::new("/proc"));
        let me = std::process::id();
        assert!(stats.netns_seen >= 1, "{stats:?}");
        assert_eq!(stats.sockets, sockets.len() as u64);
        let find = |local: SocketAddr| sockets.iter().find(|s| s.entry.local == local);

        let listen = find(server).unwrap_or_else(|| panic!("no listener: {stats:?}"));
        assert_eq!(listen.entry.state, 0x0A);
        let owner = listen.owner.as_ref().expect("listener owner");
        assert_eq!(owner.pid, me);
        assert!(!owner.comm.is_empty() && owner.cgroup_path.starts_with('/'));
        let est = find(client).expect("client socket");
        assert_eq!((est.entry.remote, est.entry.state), (server, 1));
        assert_eq!(est.owner.as_ref().map(|o| o.pid), Some(me));
        assert_eq!(est.netns_inode, listen.netns_inode);

        if let Some((port, c6, c4, _, _)) = v6 {
            let c6 = c6.local_addr().expect("addr");
            assert_eq!(find(c6).map(|s| s.entry.state), Some(1));
            // The accepted IPv4 peer sits in tcp6 as ::ffff:127.0.0.1.
            let local = SocketAddr::from(([127, 0, 0, 1], port));
            let c4 = c4.local_addr().ok();
            assert!(find(local).is_some_and(|s| Some(s.entry.remote) == c4));
        }

        // The refresh path sees the same sockets through our own pid.
        let fresh = read_netns_tables(Path::new("/proc"), me).expect("own tables");
        assert!(fresh.iter().any(|e| e.local == client && e.state == 1));
        assert!(read_netns_tables(Path::new("/proc"), u32::MAX).is_err());
    }
}
