//! The kernel's netlink and inet_diag structures, written and read by hand:
//! every read is bounds-checked and odd input is an error, never a panic.
//!
//! Layouts from include/uapi/linux/{netlink,inet_diag,sock_diag,tcp}.h. They
//! are stable ABI: structs only grow at the end, which is why `tcp_info` is
//! read field by field up to the length the kernel sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{SocketInfo, TcpInfo};

pub const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// `SOCK_DIAG_BY_FAMILY` (sock_diag.h): both the request and each answer.
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x100 | 0x200;

/// `struct inet_diag_req_v2`.
const REQ_V2_LEN: usize = 56;
/// `struct inet_diag_msg`.
const DIAG_MSG_LEN: usize = 72;
const NLA_HDRLEN: usize = 4;
/// Attribute type bits; the top two are flags (nested, net byte order).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Request attribute: a filter program (`INET_DIAG_REQ_BYTECODE`).
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Answer attribute: `struct tcp_info` (asked for with `idiag_ext`).
pub const INET_DIAG_INFO: u16 = 2;
/// Answer attribute: the socket's cgroup v2 id (Linux 5.7+, always sent).
const INET_DIAG_CGROUP_ID: u16 = 21;

/// Offsets into `struct tcp_info`.
const TCPI_LAST_DATA_SENT: usize = 44;
const TCPI_LAST_DATA_RECV: usize = 52;
const TCPI_LAST_ACK_RECV: usize = 56;
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;

/// A message the kernel sent that does not have the shape its type promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{what} is cut short: needs {need} bytes, {have} there")]
    Short {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what} claims {len} bytes where {room} remain (at least {min})")]
    Length {
        what: &'static str,
        len: usize,
        room: usize,
        min: usize,
    },
    #[error("address family {0} is neither AF_INET nor AF_INET6")]
    Family(u8),
    #[error("the kernel reported lost messages (NLMSG_OVERRUN)")]
    Overrun,
}

fn short(what: &'static str, need: usize, have: usize) -> Malformed {
    Malformed::Short { what, need, have }
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn bytes<const N: usize>(buf: &[u8], at: usize, what: &'static str) -> Result<[u8; N], Malformed> {
    at.checked_add(N)
        .and_then(|end| buf.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| short(what, at.saturating_add(N), buf.len()))
}

fn u16_ne(buf: &[u8], at: usize, what: &'static str) -> Result<u16, Malformed> {
    bytes(buf, at, what).map(u16::from_ne_bytes)
}

fn u32_ne(buf: &[u8], at: usize, what: &'static str) -> Result<u32, Malformed> {
    bytes(buf, at, what).map(u32::from_ne_bytes)
}

fn i32_ne(buf: &[u8], at: usize, what: &'static str) -> Result<i32, Malformed> {
    bytes(buf, at, what).map(i32::from_ne_bytes)
}

fn u64_ne(buf: &[u8], at: usize, what: &'static str) -> Result<u64, Malformed> {
    bytes(buf, at, what).map(u64::from_ne_bytes)
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for TCP over `family`, for sockets
/// whose state bit is set in `states`, asking for the `ext` attributes,
/// filtered in the kernel by `bytecode` (empty: no filter).
pub fn dump_request(seq: u32, family: u8, states: u32, ext: u8, bytecode: &[u8]) -> Vec<u8> {
    let attr_len = if bytecode.is_empty() {
        0
    } else {
        NLA_HDRLEN + align4(bytecode.len())
    };
    let total = NLMSG_HDRLEN + REQ_V2_LEN + attr_len;
    let mut out = Vec::with_capacity(total);
    // struct nlmsghdr
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
                                                // struct inet_diag_req_v2
    out.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, ext, 0]);
    out.extend_from_slice(&states.to_ne_bytes());
    // struct inet_diag_sockid: zero ports and addresses match every socket in
    // a dump (the bytecode does the filtering).
    out.resize(NLMSG_HDRLEN + REQ_V2_LEN, 0);
    if !bytecode.is_empty() {
        out.extend_from_slice(&((NLA_HDRLEN + bytecode.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        out.extend_from_slice(bytecode);
        out.resize(total, 0);
    }
    out
}

/// One netlink message of a datagram, by what the dump needs to do with it.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A socket (`struct inet_diag_msg` and its attributes).
    Socket(&'a [u8]),
    /// The dump is complete; a negative value is an error the dump hit.
    Done(i32),
    /// `NLMSG_ERROR`: 0 acknowledges, a negative errno refuses the request.
    Error(i32),
    /// A type a dump answer does not carry (or a no-op); skipped.
    Other(u16),
}

/// Splits a datagram into its messages, keeping only those answering `seq`.
pub struct Messages<'a> {
    buf: &'a [u8],
    seq: u32,
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8], seq: u32) -> Self {
        Self { buf, seq }
    }

    fn next_message(&mut self) -> Result<Option<Message<'a>>, Malformed> {
        loop {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let len = u32_ne(self.buf, 0, "netlink header")? as usize;
            if len < NLMSG_HDRLEN || len > self.buf.len() {
                return Err(Malformed::Length {
                    what: "netlink message",
                    len,
                    room: self.buf.len(),
                    min: NLMSG_HDRLEN,
                });
            }
            let ty = u16_ne(self.buf, 4, "netlink header")?;
            let seq = u32_ne(self.buf, 8, "netlink header")?;
            let payload = &self.buf[NLMSG_HDRLEN..len];
            // The last message of a datagram may omit its alignment padding.
            self.buf = self.buf.get(align4(len)..).unwrap_or_default();
            if seq != self.seq {
                // An answer to an earlier request (one that timed out).
                continue;
            }
            return Ok(Some(match ty {
                SOCK_DIAG_BY_FAMILY => Message::Socket(payload),
                NLMSG_DONE => Message::Done(if payload.is_empty() {
                    0
                } else {
                    i32_ne(payload, 0, "NLMSG_DONE status")?
                }),
                NLMSG_ERROR => Message::Error(i32_ne(payload, 0, "NLMSG_ERROR code")?),
                NLMSG_OVERRUN => return Err(Malformed::Overrun),
                NLMSG_NOOP => Message::Other(ty),
                other => Message::Other(other),
            }));
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_message() {
            Ok(m) => m.map(Ok),
            Err(e) => {
                // Nothing after a broken length can be trusted.
                self.buf = &[];
                Some(Err(e))
            }
        }
    }
}

fn ip_of(family: u8, raw: [u8; 16]) -> Result<IpAddr, Malformed> {
    match i32::from(family) {
        libc::AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        // As the event decoder does: v4-mapped addresses of dual-stack
        // sockets become IPv4, so they compare equal to the flows' addresses.
        libc::AF_INET6 => Ok(Ipv6Addr::from(raw).to_canonical()),
        _ => Err(Malformed::Family(family)),
    }
}

/// Reads one `struct inet_diag_msg` and the attributes that follow it.
pub fn parse_socket(p: &[u8]) -> Result<SocketInfo, Malformed> {
    if p.len() < DIAG_MSG_LEN {
        return Err(short("inet_diag_msg", DIAG_MSG_LEN, p.len()));
    }
    let family = p[0];
    let state = p[1];
    let sport = u16::from_be_bytes(bytes(p, 4, "idiag_sport")?);
    let dport = u16::from_be_bytes(bytes(p, 6, "idiag_dport")?);
    let src = ip_of(family, bytes(p, 8, "idiag_src")?)?;
    let dst = ip_of(family, bytes(p, 24, "idiag_dst")?)?;
    // sock_diag_save_cookie: cookie[0] is the low half, both in host order.
    let cookie =
        u64::from(u32_ne(p, 44, "idiag_cookie")?) | u64::from(u32_ne(p, 48, "idiag_cookie")?) << 32;
    let mut info = SocketInfo {
        cookie,
        state,
        local: SocketAddr::new(src, sport),
        remote: SocketAddr::new(dst, dport),
        rqueue: u32_ne(p, 56, "idiag_rqueue")?,
        wqueue: u32_ne(p, 60, "idiag_wqueue")?,
        uid: u32_ne(p, 64, "idiag_uid")?,
        inode: u32_ne(p, 68, "idiag_inode")?,
        cgroup_id: None,
        tcp: None,
    };
    let mut attrs = &p[DIAG_MSG_LEN..];
    while !attrs.is_empty() {
        let len = usize::from(u16_ne(attrs, 0, "attribute header")?);
        if len < NLA_HDRLEN || len > attrs.len() {
            return Err(Malformed::Length {
                what: "attribute",
                len,
                room: attrs.len(),
                min: NLA_HDRLEN,
            });
        }
        let ty = u16_ne(attrs, 2, "attribute header")? & NLA_TYPE_MASK;
        let value = &attrs[NLA_HDRLEN..len];
        match ty {
            INET_DIAG_INFO => info.tcp = Some(parse_tcp_info(value)?),
            INET_DIAG_CGROUP_ID => info.cgroup_id = Some(u64_ne(value, 0, "INET_DIAG_CGROUP_ID")?),
            _ => {}
        }
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    Ok(info)
}

/// The fields of `struct tcp_info` we use. The times are there since 2.6;
/// the byte counts since 4.1/4.2, so a shorter struct leaves them `None`.
pub fn parse_tcp_info(v: &[u8]) -> Result<TcpInfo, Malformed> {
    let opt = |at: usize| u64_ne(v, at, "tcp_info").ok();
    Ok(TcpInfo {
        last_data_sent_ms: u32_ne(v, TCPI_LAST_DATA_SENT, "tcp_info up to tcpi_last_data_sent")?,
        last_data_recv_ms: u32_ne(v, TCPI_LAST_DATA_RECV, "tcp_info up to tcpi_last_data_recv")?,
        last_ack_recv_ms: u32_ne(v, TCPI_LAST_ACK_RECV, "tcp_info up to tcpi_last_ack_recv")?,
        bytes_acked: opt(TCPI_BYTES_ACKED),
        bytes_received: opt(TCPI_BYTES_RECEIVED),
    })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
