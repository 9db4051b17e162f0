//! The text format of /proc/<pid>/net/tcp{,6}: one row per socket, parsed
//! defensively (a malformed row is skipped and counted, never a panic).

use std::{
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

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
pub(super) fn read_table(path: &Path, v6: bool, entries: &mut Vec<TcpEntry>) -> io::Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
