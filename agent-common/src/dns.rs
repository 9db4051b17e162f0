//! DNS packets copied by the cgroup_skb programs: the addressing the kernel
//! knows, plus the first bytes of the DNS payload. The DNS message itself is
//! parsed in user space, where a malformed packet costs a counter, not a
//! verifier headache.

/// Payload bytes copied per packet. Enough for everything the agent reads:
/// the TCP length prefix (2), the header (12), the longest legal name in the
/// question (255) and its type and class (4) is 273; the rest of a response
/// (answers, EDNS) is not needed, so it is not copied.
pub const DNS_CAPTURE: usize = 320;

/// Most ports that can be watched at once (`--dns-ports`).
pub const MAX_DNS_PORTS: u32 = 16;

/// Which way the packet went through the socket's cgroup hook.
pub mod direction {
    /// Leaving a local socket towards a DNS port: a query from a client here.
    pub const EGRESS: u8 = 0;
    /// Arriving at a local socket from a DNS port: an answer to a client here.
    pub const INGRESS: u8 = 1;
}

/// TCP header flags we forward (the low byte of the TCP flags field).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsPacket {
    /// CLOCK_MONOTONIC nanoseconds when the hook ran.
    pub ts_ns: u64,
    /// cgroup v2 id of the local socket (the container's cgroup).
    pub cgroup_id: u64,
    /// Sending process, when the packet left in the context of a task of the
    /// socket's own cgroup; 0 otherwise (ingress, softirq, unknown).
    pub tgid: u32,
    /// L4 payload length (the whole DNS message, or TCP segment, on the wire).
    pub payload_len: u32,
    /// TCP sequence number of the first payload byte (0 for UDP).
    pub tcp_seq: u32,
    /// Bytes of `payload` filled: min(payload_len, DNS_CAPTURE).
    pub captured: u16,
    /// Source and destination ports, host byte order.
    pub sport: u16,
    pub dport: u16,
    /// 4 or 6: the IP version of the packet (not of the socket).
    pub ip_version: u8,
    /// IPPROTO_UDP (17) or IPPROTO_TCP (6).
    pub protocol: u8,
    /// [`direction::EGRESS`] or [`direction::INGRESS`].
    pub direction: u8,
    /// TCP flags ([`tcp_flags`]); 0 for UDP.
    pub tcp_flags: u8,
    pub _pad: [u8; 2],
    /// Sending process's name when `tgid` is set.
    pub comm: [u8; 16],
    /// Addresses in network byte order; IPv4 uses the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub payload: [u8; DNS_CAPTURE],
}

const _: () = assert!(core::mem::size_of::<DnsPacket>() == 88 + DNS_CAPTURE);
const _: () = assert!(core::mem::size_of::<DnsPacket>().is_multiple_of(8));
