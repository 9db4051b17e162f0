//! Discovery of pre-existing TCP sockets from /proc, so a late-started agent still sees old connections.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

/// One row of /proc/<pid>/net/tcp{,6}.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state number (1 = ESTABLISHED ... 0x0A = LISTEN, 0x0B = CLOSING).
    pub state: u8,
    /// Socket inode; 0 when no struct socket exists (TIME_WAIT, SYN_RECV,
    /// or a connection still waiting in a listener's accept queue).
    pub inode: u64,
    pub tx_queue: u32,
    pub rx_queue: u32,
}

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

/// Why a table line was rejected; only logged, never returned.
#[derive(Debug, thiserror::Error)]
enum LineError {
    #[error("expected at least 10 fields, found {found}")]
    TooFewFields { found: usize },
    #[error("bad {field} field {value:?}")]
    BadField { field: &'static str, value: String },
}

/// Parses up to 8 hex digits; rejects signs and empty input, which
/// `from_str_radix` would otherwise accept or mis-report.
fn hex_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// The kernel prints each in-memory __be32 word as a host-endian u32, so
/// `to_ne_bytes` recovers the original network-order bytes on any host.
fn parse_ip(s: &str, v6: bool) -> Option<IpAddr> {
    if v6 {
        if s.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            let word = hex_u32(s.get(i * 8..i * 8 + 8)?)?;
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        // Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; normalise
        // so the same connection keys identically to eBPF-observed IPv4 events.
        Some(IpAddr::V6(Ipv6Addr::from(bytes)).to_canonical())
    } else {
        if s.len() != 8 {
            return None;
        }
        Some(IpAddr::V4(Ipv4Addr::from(hex_u32(s)?.to_ne_bytes())))
    }
}

fn parse_sockaddr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::try_from(hex_u32(port)?).ok()?;
    Some(SocketAddr::new(parse_ip(ip, v6)?, port))
}

fn parse_line(line: &str, v6: bool) -> Result<TcpEntry, LineError> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let [sl, local, remote, st, queues, _tr, _retrnsmt, _uid, _timeout, inode, ..] = fields[..]
    else {
        let found = fields.len();
        return Err(LineError::TooFewFields { found });
    };
    let bad = |field: &'static str, value: &str| {
        let value = value.to_owned();
        LineError::BadField { field, value }
    };
    if !sl.ends_with(':') {
        return Err(bad("sl", sl));
    }
    let (tx_queue, rx_queue) = queues
        .split_once(':')
        .and_then(|(tx, rx)| Some((hex_u32(tx)?, hex_u32(rx)?)))
        .ok_or_else(|| bad("tx_queue:rx_queue", queues))?;
    Ok(TcpEntry {
        local: parse_sockaddr(local, v6).ok_or_else(|| bad("local_address", local))?,
        remote: parse_sockaddr(remote, v6).ok_or_else(|| bad("rem_address", remote))?,
        state: hex_u32(st)
            .and_then(|s| u8::try_from(s).ok())
            .ok_or_else(|| bad("st", st))?,
        inode: inode.parse().map_err(|_| bad("inode", inode))?,
        tx_queue,
        rx_queue,
    })
}

/// Pure parser of one file's text; malformed lines are skipped and counted
/// (returned count), never a panic. Header lines ("sl ...") and blank lines
/// are ignored rather than counted.
pub fn parse_tcp_table(text: &str, v6: bool) -> (Vec<TcpEntry>, usize) {
    let mut entries = Vec::new();
    let malformed = parse_lines(text.lines(), v6, |e| entries.push(e));
    (entries, malformed)
}

/// Parses each line, hands well-formed entries to `keep`, and returns how
/// many lines were malformed.
fn parse_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    v6: bool,
    mut keep: impl FnMut(TcpEntry),
) -> usize {
    let mut malformed = 0;
    for line in lines {
        let first = line.split_ascii_whitespace().next();
        if first.is_none() || first == Some("sl") {
            continue;
        }
        match parse_line(line, v6) {
            Ok(e) => keep(e),
            Err(err) => {
                malformed += 1;
                log::debug!("skipping malformed tcp table line (v6: {v6}): {err}");
            }
        }
    }
    malformed
}

/// Streams one table file, keeping only sockets with an inode: a busy host's
/// table can hold hundreds of thousands of TIME_WAIT rows (inode 0), which
/// belong to no process and must not be held in memory at once.
fn read_table(path: &Path, v6: bool, entries: &mut Vec<TcpEntry>) -> io::Result<usize> {
    let mut reader = io::BufReader::new(fs::File::open(path)?);
    let mut line = String::new();
    let mut malformed = 0;
    loop {
        line.clear();
        if io::BufRead::read_line(&mut reader, &mut line)? == 0 {
            return Ok(malformed);
        }
        malformed += parse_lines(std::iter::once(line.as_str()), v6, |e| {
            if e.inode != 0 {
                entries.push(e);
            }
        });
    }
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
    use std::net::{TcpListener, TcpStream};

    const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0F02000A:C350 2E1C11AC:01BB 01 00000010:00000000 01:00000014 00000000  1000        0 23456 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:D431 08 00000000:00000001 00:00000000 00000000     0        0 34567 1 0000000000000000 20 4 0 10 -1
   3: 0100007F:1F90 0100007F:D432 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: B80D0120000000000000000001000000:01BB B80D0120000000000000000002000000:E2A4 01 00000000:00000000 02:00000FA0 00000000  1000        0 222 2 0000000000000000 20 4 29 10 -1
   2: 0000000000000000FFFF00000100000A:0050 0000000000000000FFFF00000200000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 0 10 -1
";

    /// One "local remote state inode tx rx" string per parsed row.
    fn rows(text: &str, v6: bool) -> (Vec<String>, usize) {
        let (entries, bad) = parse_tcp_table(text, v6);
        let fmt = |e: &TcpEntry| {
            let (l, r, st, ino) = (e.local, e.remote, e.state, e.inode);
            format!("{l} {r} {st:02x} {ino} {} {}", e.tx_queue, e.rx_queue)
        };
        (entries.iter().map(fmt).collect(), bad)
    }

    #[test]
    fn parses_ipv4_table() {
        let want = [
            "127.0.0.1:8080 0.0.0.0:0 0a 12345 0 0",
            "10.0.2.15:50000 172.17.28.46:443 01 23456 16 0",
            "127.0.0.1:8080 127.0.0.1:54321 08 34567 0 1",
            "127.0.0.1:8080 127.0.0.1:54322 06 0 0 0",
        ];
        assert_eq!(rows(TCP4, false), (want.map(String::from).to_vec(), 0));
    }

    #[test]
    fn parses_ipv6_table_and_maps_v4() {
        let want = [
            "[::1]:22 [::]:0 0a 111 0 0",
            "[2001:db8::1]:443 [2001:db8::2]:58020 01 222 0 0",
            "10.0.0.1:80 10.0.0.2:40000 01 333 0 0",
        ];
        assert_eq!(rows(TCP6, true), (want.map(String::from).to_vec(), 0));
    }

    #[test]
    fn malformed_lines_are_counted() {
        let text = "  sl  local_address rem_address   st
   0: 0100007F:1F90 00000000:0000 0A
   1: 0100007G:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1
   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 -5 1
   3: 0100007F:11F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5 1
   4: 0100007F:+F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5 1
   5: 0100007F:1F90 00000000:0000 1FF 00000000:00000000 00:00000000 00000000 0 0 5 1
   6: 0100007F:1F90 00000000:0000 0A 00000000 00:00000000 00000000 0 0 5 1
   7: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 7 1

   8: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 8 1
   9: €€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 9 1
";
        let (e, bad) = parse_tcp_table(text, false);
        assert_eq!(bad, 8);
        assert_eq!(e.iter().map(|e| e.inode).collect::<Vec<_>>(), vec![7, 8]);
        // A v4 table parsed as v6 (and vice versa) is malformed, not a panic.
        assert_eq!(parse_tcp_table(TCP4, true), (Vec::new(), 4));
        assert_eq!(parse_tcp_table(TCP6, false), (Vec::new(), 3));
        assert_eq!(parse_tcp_table(text, true).1, 10);
    }

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
