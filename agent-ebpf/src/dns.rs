//! DNS queries and answers from cgroup_skb programs on the cgroup v2 root.
//!
//! cgroup_skb runs for every packet of every socket below the root, egress
//! and ingress, with the packet starting at its IP header and the socket
//! attached (so `bpf_skb_cgroup_id` names the socket's container, even for
//! an answer that arrives in softirq). It is a stable hook: no kprobes.
//!
//! The kernel side only filters (UDP or TCP, a watched port in the right
//! direction) and copies the first [`DNS_CAPTURE`] payload bytes; the DNS
//! message is parsed in user space. Queries are taken on egress to a DNS
//! port, answers on ingress from one: the client's view, which is what a
//! container experiences. A DNS server in a container shows up as a client
//! too when it asks its upstream.
//!
//! Programs always return 1 (let the packet through): observing must never
//! drop traffic.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    },
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use sockeye_common::{
    counters::Counter,
    dns::{direction, DnsPacket, DNS_CAPTURE, MAX_DNS_PORTS},
};

use crate::{
    emit::{now_ns, wakeup_flags},
    maps::{count, DNS_EVENTS},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// IPv6 next-header values of extension headers that may precede UDP/TCP:
/// hop-by-hop, routing, fragment, authentication, destination options.
const IPV6_EXTENSIONS: [u8; 5] = [0, 43, 44, 51, 60];
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
/// Extension headers followed before giving up (and counting the packet).
const MAX_IPV6_EXTENSIONS: usize = 3;
const UDP_HEADER: u32 = 8;
const TCP_SYN_FIN_RST: u8 = 0x07;
/// cgroup_skb verdict: let the packet through.
const PASS: i32 = 1;

/// Ports watched for DNS, host byte order, 0 = unused slot. Read-only data
/// the agent sets at load time (`--dns-ports`): every packet of the node
/// passes this check, and a few compares against constants cost less than
/// a map lookup.
#[unsafe(no_mangle)]
static SOCKEYE_DNS_PORT_LIST: [u16; MAX_DNS_PORTS as usize] = [0; MAX_DNS_PORTS as usize];

#[inline(always)]
fn watched(port: u16) -> bool {
    for slot in &SOCKEYE_DNS_PORT_LIST {
        // SAFETY: a read of static data; volatile so the compiler does not
        // fold the all-zero initial value into the program.
        let p = unsafe { core::ptr::read_volatile(slot) };
        if p == 0 {
            return false;
        }
        if p == port {
            return true;
        }
    }
    false
}

/// Reads a `T` at `offset` bytes into the packet: straight from the linear
/// part when it is there (most packets: a pointer compare and a load),
/// otherwise through `bpf_skb_load_bytes` (paged data).
#[inline(always)]
fn read<T: Copy>(ctx: &SkBuffContext, offset: usize) -> Option<T> {
    // SAFETY: `skb` is the program's context pointer; data and data_end are
    // readable in cgroup_skb programs loaded with CAP_BPF.
    let (start, end) = unsafe {
        (
            (*ctx.skb.skb).data as usize,
            (*ctx.skb.skb).data_end as usize,
        )
    };
    if start + offset + core::mem::size_of::<T>() <= end {
        // SAFETY: bounds checked against data_end just above, which is
        // also what the verifier requires.
        return Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) });
    }
    ctx.load::<T>(offset).ok()
}

/// Queries leaving containers, with the sending process.
#[cgroup_skb(egress)]
pub fn sockeye_dns_egress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, direction::EGRESS, true);
    PASS
}

/// Queries leaving containers, for kernels that refuse task helpers in
/// cgroup_skb programs (the agent loads this one if the first is rejected).
#[cgroup_skb(egress)]
pub fn sockeye_dns_egress_no_task(ctx: SkBuffContext) -> i32 {
    capture(&ctx, direction::EGRESS, false);
    PASS
}

/// Answers reaching containers. No process: it runs in softirq context.
#[cgroup_skb(ingress)]
pub fn sockeye_dns_ingress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, direction::INGRESS, false);
    PASS
}

/// Where the IP header says the L4 header is.
struct L4 {
    version: u8,
    protocol: u8,
    offset: u32,
}

/// The packet's addresses, read only for a packet that is kept.
struct Addrs {
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// Most packets are not DNS: they return after the IP header's protocol
/// and the ports are read and compared, before anything is copied.
#[inline(always)]
fn capture(ctx: &SkBuffContext, dir: u8, with_task: bool) {
    let Some(ip) = l4_header(ctx) else {
        return;
    };
    let Some(ports) = read::<[u8; 4]>(ctx, ip.offset as usize) else {
        count(Counter::DnsReadFailed);
        return;
    };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    let dns_port = if dir == direction::EGRESS {
        dport
    } else {
        sport
    };
    if !watched(dns_port) {
        return;
    }
    let (header_len, tcp_seq, tcp_flags) = if ip.protocol == IPPROTO_TCP {
        let Some(tcp) = read::<[u8; 14]>(ctx, ip.offset as usize) else {
            count(Counter::DnsReadFailed);
            return;
        };
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        ((tcp[12] >> 4) as u32 * 4, seq, tcp[13])
    } else {
        (UDP_HEADER, 0, 0)
    };
    let payload_off = ip.offset + header_len;
    let payload_len = ctx.len().saturating_sub(payload_off);
    // Pure ACKs carry nothing; SYN/FIN/RST let user space follow the TCP
    // stream (where each message starts) and forget it when it ends.
    if payload_len == 0 && tcp_flags & TCP_SYN_FIN_RST == 0 {
        return;
    }
    let Some(addrs) = addresses(ctx, ip.version) else {
        count(Counter::DnsReadFailed);
        return;
    };
    emit(
        ctx,
        &ip,
        &addrs,
        Packet {
            dir,
            with_task,
            sport,
            dport,
            tcp_seq,
            tcp_flags,
            payload_off,
            payload_len,
        },
    );
}

#[inline(always)]
fn l4_header(ctx: &SkBuffContext) -> Option<L4> {
    // SAFETY: `skb` is the program's context pointer.
    let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    if proto == ETH_P_IP {
        // Version/IHL, and flags/fragment offset through protocol.
        let Some(h) = read::<[u8; 10]>(ctx, 0) else {
            count(Counter::DnsReadFailed);
            return None;
        };
        let protocol = h[9];
        // A non-first fragment has no L4 header. The hooks see whole packets
        // (egress runs before fragmentation, ingress after reassembly), so
        // this is defensive, and the first fragment carries the DNS header.
        let frag_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
        if (protocol != IPPROTO_UDP && protocol != IPPROTO_TCP) || frag_offset != 0 {
            return None;
        }
        Some(L4 {
            version: 4,
            protocol,
            offset: (h[0] & 0x0f) as u32 * 4,
        })
    } else if proto == ETH_P_IPV6 {
        // The next-header byte of the fixed IPv6 header.
        let Some(next) = read::<u8>(ctx, 6) else {
            count(Counter::DnsReadFailed);
            return None;
        };
        let (protocol, offset) = skip_ipv6_extensions(ctx, next)?;
        Some(L4 {
            version: 6,
            protocol,
            offset,
        })
    } else {
        None
    }
}

/// Source and destination addresses of an IPv4 or IPv6 header.
#[inline(always)]
fn addresses(ctx: &SkBuffContext, version: u8) -> Option<Addrs> {
    let mut a = Addrs {
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if version == 4 {
        let both = read::<[u8; 8]>(ctx, 12)?;
        a.saddr[..4].copy_from_slice(&both[..4]);
        a.daddr[..4].copy_from_slice(&both[4..]);
    } else {
        a.saddr = read::<[u8; 16]>(ctx, 8)?;
        a.daddr = read::<[u8; 16]>(ctx, 24)?;
    }
    Some(a)
}

/// Follows up to [`MAX_IPV6_EXTENSIONS`] extension headers after the fixed
/// IPv6 header. Returns the upper-layer protocol and its offset, or None for
/// anything but UDP/TCP. Packets that still have extension headers after
/// that, or whose headers cannot be read, are counted: they may be DNS.
#[inline(always)]
fn skip_ipv6_extensions(ctx: &SkBuffContext, first: u8) -> Option<(u8, u32)> {
    let (mut next, mut off) = (first, 40u32);
    for _ in 0..MAX_IPV6_EXTENSIONS {
        if !IPV6_EXTENSIONS.contains(&next) {
            break;
        }
        let Some(ext) = read::<[u8; 4]>(ctx, off as usize) else {
            count(Counter::DnsReadFailed);
            return None;
        };
        let len = match next {
            IPV6_FRAGMENT => {
                // Only the first fragment carries the UDP/TCP header.
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return None;
                }
                8
            }
            IPV6_AUTH => (ext[1] as u32 + 2) * 4,
            _ => (ext[1] as u32 + 1) * 8,
        };
        next = ext[0];
        off += len;
    }
    if next == IPPROTO_UDP || next == IPPROTO_TCP {
        return Some((next, off));
    }
    if IPV6_EXTENSIONS.contains(&next) {
        count(Counter::DnsSkippedIpv6Extension);
    }
    None
}

struct Packet {
    dir: u8,
    with_task: bool,
    sport: u16,
    dport: u16,
    tcp_seq: u32,
    tcp_flags: u8,
    payload_off: u32,
    payload_len: u32,
}

#[inline(always)]
fn emit(ctx: &SkBuffContext, ip: &L4, addrs: &Addrs, p: Packet) {
    // SAFETY: the context pointer is a valid __sk_buff for this program.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let (tgid, comm) = if p.with_task && unsafe { bpf_get_current_cgroup_id() } == cgroup_id {
        // Only trust the current task when it belongs to the socket's own
        // cgroup: egress can also run from softirq (e.g. a TCP retransmit),
        // where "current" is whoever was interrupted.
        (
            (bpf_get_current_pid_tgid() >> 32) as u32,
            bpf_get_current_comm().unwrap_or([0; 16]),
        )
    } else {
        (0, [0u8; 16])
    };
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsPacket>(0) else {
        count(Counter::DnsRingbufFull);
        return;
    };
    let ev = entry.as_mut_ptr();
    let captured = p.payload_len.min(DNS_CAPTURE as u32);
    // SAFETY: `ev` points to the reserved, writable, correctly sized slot;
    // every header field is written before submit, and the payload copy is
    // bounded by DNS_CAPTURE, the size of `payload`.
    let copied = unsafe {
        (*ev).ts_ns = now_ns();
        (*ev).cgroup_id = cgroup_id;
        (*ev).tgid = tgid;
        (*ev).payload_len = p.payload_len;
        (*ev).tcp_seq = p.tcp_seq;
        (*ev).captured = captured as u16;
        (*ev).sport = p.sport;
        (*ev).dport = p.dport;
        (*ev).ip_version = ip.version;
        (*ev).protocol = ip.protocol;
        (*ev).direction = p.dir;
        (*ev).tcp_flags = p.tcp_flags;
        (*ev)._pad = [0; 2];
        (*ev).comm = comm;
        (*ev).saddr = addrs.saddr;
        (*ev).daddr = addrs.daddr;
        // The helper's length must be provably in [1, DNS_CAPTURE], in the
        // very register passed to it. 6.1's verifier learns nothing from
        // `len != 0` (it refused the program with "R3 min value is outside
        // of the allowed memory range") but does from an unsigned `>=`, so
        // bound `len - 1` and pass it back + 1. black_box keeps LLVM from
        // folding the bound into a check on `payload_len`. Computed here,
        // right before its use, so it stays in one register: 6.1 does not
        // carry a bound across two loads of a spilled value ("R4 unbounded
        // memory access").
        let len_minus_one = core::hint::black_box(captured.wrapping_sub(1));
        if captured == 0 {
            true
        } else if len_minus_one >= DNS_CAPTURE as u32 {
            false
        } else {
            bpf_skb_load_bytes(
                ctx.skb.skb.cast(),
                p.payload_off,
                (*ev).payload.as_mut_ptr().cast(),
                len_minus_one + 1,
            ) == 0
        }
    };
    if !copied {
        entry.discard(0);
        count(Counter::DnsReadFailed);
        return;
    }
    entry.submit(wakeup_flags(&DNS_EVENTS));
    count(Counter::DnsPacketsEmitted);
}
