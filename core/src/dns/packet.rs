//! Decodes a [`DnsPacket`] record from the DNS ring buffer into addresses
//! and a borrowed payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sockeye_common::dns::{direction, DnsPacket, DNS_CAPTURE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One packet to or from a DNS port, as the kernel saw it.
#[derive(Debug, Clone)]
pub struct Packet<'a> {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    /// Sending process, 0 when unknown.
    pub tgid: u32,
    pub comm: [u8; 16],
    pub transport: Transport,
    /// True for a packet leaving a local socket (towards the DNS port).
    pub egress: bool,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub tcp_seq: u32,
    pub tcp_flags: u8,
    /// Length on the wire; `payload` may be shorter (only the start is copied).
    pub payload_len: u32,
    pub payload: &'a [u8],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("DNS record of {0} bytes, expected {size}", size = std::mem::size_of::<DnsPacket>())]
    Size(usize),
    #[error("DNS record with unknown IP version {0}")]
    IpVersion(u8),
    #[error("DNS record with unknown protocol {0}")]
    Protocol(u8),
    #[error("DNS record claims {0} captured bytes, more than {DNS_CAPTURE}")]
    Captured(u16),
}

/// The record is copied out (it is 408 bytes) because ring buffer memory
/// has no alignment guarantee for a `u64` field.
pub fn decode(bytes: &[u8]) -> Result<DnsPacket, DecodeError> {
    if bytes.len() < std::mem::size_of::<DnsPacket>() {
        return Err(DecodeError::Size(bytes.len()));
    }
    // SAFETY: DnsPacket is plain old data (integers and byte arrays, no
    // padding), the slice is long enough, and read_unaligned has no
    // alignment requirement.
    let raw = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DnsPacket>()) };
    Ok(raw)
}

/// Borrows the payload from `raw` and checks the fields user space relies on.
pub fn view(raw: &DnsPacket) -> Result<Packet<'_>, DecodeError> {
    let transport = match raw.protocol {
        17 => Transport::Udp,
        6 => Transport::Tcp,
        p => return Err(DecodeError::Protocol(p)),
    };
    let (src, dst) = match raw.ip_version {
        4 => (
            IpAddr::V4(Ipv4Addr::new(
                raw.saddr[0],
                raw.saddr[1],
                raw.saddr[2],
                raw.saddr[3],
            )),
            IpAddr::V4(Ipv4Addr::new(
                raw.daddr[0],
                raw.daddr[1],
                raw.daddr[2],
                raw.daddr[3],
            )),
        ),
        6 => (
            IpAddr::V6(Ipv6Addr::from(raw.saddr)),
            IpAddr::V6(Ipv6Addr::from(raw.daddr)),
        ),
        v => return Err(DecodeError::IpVersion(v)),
    };
    let captured = raw.captured as usize;
    if captured > DNS_CAPTURE {
        return Err(DecodeError::Captured(raw.captured));
    }
    Ok(Packet {
        ts_ns: raw.ts_ns,
        cgroup_id: raw.cgroup_id,
        tgid: raw.tgid,
        comm: raw.comm,
        transport,
        egress: raw.direction == direction::EGRESS,
        src: SocketAddr::new(src, raw.sport),
        dst: SocketAddr::new(dst, raw.dport),
        tcp_seq: raw.tcp_seq,
        tcp_flags: raw.tcp_flags,
        payload_len: raw.payload_len,
        payload: &raw.payload[..captured],
    })
}
