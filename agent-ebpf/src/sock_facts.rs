//! Reading a sock_ops callback's socket: addresses, ports, cookies, byte
//! and segment counters; and a closing listener's, from the cgroup
//! sock_release hook.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::{SockContext, SockOpsContext},
    EbpfContext as _,
};
use sockeye_common::event::{AF_INET, AF_INET6};

/// Socket-level facts every event carries, read once per callback.
pub struct SockFacts {
    pub cookie: u64,
    pub netns_cookie: u64,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub bytes_acked: u64,
    pub bytes_received: u64,
    /// Segments received (`tcp_sock.segs_in`, counted before the kernel
    /// handles each one): for a connecting socket that closes, whether
    /// what closed it was a RST.
    pub segs_in: u32,
}

/// Reads the addresses, ports, ids and byte counters of the callback's socket.
///
/// Every context field is read exactly once, up front, with a volatile load:
/// the verifier only accepts context loads at a constant offset from the
/// unmodified context pointer, and without this LLVM may compute a field's
/// address in one branch and load it in another.
#[inline(always)]
pub fn facts(ctx: &SockOpsContext, with_netns: bool) -> Option<SockFacts> {
    let ops = ctx.ops;
    // SAFETY: `ops` is the context pointer the kernel passed; the verifier
    // rewrites these loads into safe accesses of the socket.
    let (family, lip4, rip4, lip6, rip6, lport, rport, bytes_acked, bytes_received, segs_in) = unsafe {
        (
            read_volatile(addr_of!((*ops).family)),
            read_volatile(addr_of!((*ops).local_ip4)),
            read_volatile(addr_of!((*ops).remote_ip4)),
            [
                read_volatile(addr_of!((*ops).local_ip6[0])),
                read_volatile(addr_of!((*ops).local_ip6[1])),
                read_volatile(addr_of!((*ops).local_ip6[2])),
                read_volatile(addr_of!((*ops).local_ip6[3])),
            ],
            [
                read_volatile(addr_of!((*ops).remote_ip6[0])),
                read_volatile(addr_of!((*ops).remote_ip6[1])),
                read_volatile(addr_of!((*ops).remote_ip6[2])),
                read_volatile(addr_of!((*ops).remote_ip6[3])),
            ],
            read_volatile(addr_of!((*ops).local_port)),
            read_volatile(addr_of!((*ops).remote_port)),
            read_volatile(addr_of!((*ops).bytes_acked)),
            read_volatile(addr_of!((*ops).bytes_received)),
            read_volatile(addr_of!((*ops).segs_in)),
        )
    };
    let family = family as u16;
    let (local_addr, remote_addr) = match family {
        AF_INET => (v4(lip4), v4(rip4)),
        AF_INET6 => (v6(lip6), v6(rip6)),
        _ => return None,
    };
    // SAFETY: helpers that take the sock_ops context itself.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let netns_cookie = if with_netns {
        // SAFETY: as above.
        unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }
    } else {
        0
    };
    Some(SockFacts {
        cookie,
        netns_cookie,
        family,
        local_port: lport as u16,
        // remote_port holds the network-order port in its upper 16 bits.
        remote_port: u16::from_be((rport >> 16) as u16),
        local_addr,
        remote_addr,
        bytes_acked,
        bytes_received,
        segs_in,
    })
}

/// The ids of a socket seen by the cgroup sock_release hook. The kernel
/// lets that hook read neither addresses nor ports (only the post_bind
/// hooks may): the agent knows the socket by its cookie.
#[inline(always)]
pub fn released_facts(ctx: &SockContext) -> Option<SockFacts> {
    // SAFETY: `sock` is the context pointer the kernel passed; the verifier
    // rewrites the load into a read of the socket.
    let family = unsafe { read_volatile(addr_of!((*ctx.sock).family)) } as u16;
    if family != AF_INET && family != AF_INET6 {
        return None;
    }
    // SAFETY: helpers that take the cgroup_sock context itself.
    let (cookie, netns_cookie) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    Some(SockFacts {
        cookie,
        netns_cookie,
        family,
        local_port: 0,
        remote_port: 0,
        local_addr: [0; 16],
        remote_addr: [0; 16],
        bytes_acked: 0,
        bytes_received: 0,
        segs_in: 0,
    })
}

#[inline(always)]
pub fn v4(addr: u32) -> [u8; 16] {
    // The u32 holds the address in network order; its in-memory bytes are the
    // address bytes.
    let b = addr.to_ne_bytes();
    [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

#[inline(always)]
pub fn v6(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}
