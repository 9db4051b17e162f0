//! Who owns a TCP socket: the cgroup, process and command, captured by
//! cgroup programs that run in the owner's own context.
//!
//! sock_ops cannot capture the owner itself on every kernel: 6.1 refuses
//! `bpf_get_current_pid_tgid` there and 6.12 `bpf_get_current_comm` (the
//! kernel matrix found both; 6.18 allows them). The
//! cgroup_sock_addr `connect4`/`connect6` and cgroup_sock `post_bind4`/
//! `post_bind6` hooks run inside connect() and bind(), in the process that
//! makes the call, and may read the current task on every kernel Sockeye
//! supports. They park the owner under the socket's cookie in `OWNERS`;
//! sock_ops takes it when the socket connects or starts listening.
//! connect4/connect6 also keep the destination of every IPv4/IPv6
//! connect() for the connect() exit tracepoint (`resources`), which sees
//! only the return value: reading the hook's context costs less than an
//! entry tracepoint of its own that copies the sockaddr from user memory.
//!
//! `sock_release` runs when the application closes a socket, before the
//! kernel closes the connection: for a socket still connecting, that is the
//! application aborting its connect (what sock_ops alone cannot tell apart
//! from the kernel closing it on an ICMP error). For a listener that
//! predates the agent it is the only hook that sees the close: sock_ops
//! state callbacks are switched on per socket, at listen(), which the agent
//! was not there to see. Without it, a restart of a server older than the
//! agent would be dated by the /proc refresh, up to an interval late.
//!
//! Every program returns 1 (allow): observing must never refuse a connect,
//! bind or close.
//!
//! # Minimum kernel version
//! `connect4/6`: 4.17; `post_bind4/6`: 4.17; `sock_release`: 5.9; the task
//! helpers in these hooks and `bpf_get_socket_cookie` in cgroup_sock: 5.15
//! or earlier (checked on 6.1 by the kernel matrix).

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
    },
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
    EbpfContext as _,
};
use sockeye_common::{
    counters::Counter,
    event::{flags, EventKind, SockInfo, AF_INET, AF_INET6},
    resources::{syscall, SyscallArgs},
    tcp_state,
};

use crate::{
    emit::{detail, emit, now_ns},
    maps::{count, OWNERS, SOCKETS},
    resources,
    sock_facts::released_facts,
};

const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;
/// Verdict of cgroup sock and sock_addr programs: go ahead.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn sockeye_connect4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn sockeye_connect6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, AF_INET6);
    ALLOW
}

#[cgroup_sock(post_bind4)]
pub fn sockeye_post_bind4(ctx: SockContext) -> i32 {
    on_bind(&ctx);
    ALLOW
}

#[cgroup_sock(post_bind6)]
pub fn sockeye_post_bind6(ctx: SockContext) -> i32 {
    on_bind(&ctx);
    ALLOW
}

#[cgroup_sock(sock_release)]
pub fn sockeye_sock_release(ctx: SockContext) -> i32 {
    // SAFETY: `sock` is the context pointer the kernel passed; the verifier
    // rewrites the load into a read of the socket's state.
    let state = unsafe { read_volatile(addr_of!((*ctx.sock).state)) };
    if state == tcp_state::SYN_SENT as u32 {
        // SAFETY: helper taking the program's context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        if let Some(info) = SOCKETS.get_ptr_mut(cookie) {
            // SAFETY: pointer from a successful map lookup.
            unsafe { (*info).flags |= flags::CLOSED_BY_OWNER };
        }
    } else if state == tcp_state::LISTEN as u32 {
        on_listener_release(&ctx);
    }
    ALLOW
}

/// A listener being closed by its process. One the agent saw start is in
/// `SOCKETS` and its close comes from sock_ops; one that predates the agent
/// is reported here, by the process closing it, with its cookie and
/// namespace but no address or port (this hook may not read them): the
/// start-up scan learned each pre-existing listener's cookie.
#[inline(never)]
fn on_listener_release(ctx: &SockContext) {
    // SAFETY: as in the caller; SCTP listeners have this state too.
    let protocol = unsafe { read_volatile(addr_of!((*ctx.sock).protocol)) };
    if protocol != IPPROTO_TCP {
        return;
    }
    let Some(facts) = released_facts(ctx) else {
        return;
    };
    if SOCKETS.get_ptr(facts.cookie).is_some() {
        return;
    }
    let now = now_ns();
    let pid_tgid = bpf_get_current_pid_tgid();
    let closer = SockInfo {
        start_ns: now,
        state_ns: now,
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        syn_retransmits: 0,
        flags: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let mut d = detail(now, EventKind::Closed, tcp_state::CLOSE);
    d.old_state = tcp_state::LISTEN;
    emit(&facts, Some(&closer), &d);
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, family: u16) {
    // SAFETY: `sock_addr` is the context pointer the kernel passed.
    let (kind, protocol) = unsafe {
        (
            read_volatile(addr_of!((*ctx.sock_addr).type_)),
            read_volatile(addr_of!((*ctx.sock_addr).protocol)),
        )
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    destination(ctx, family, pid_tgid);
    if kind == SOCK_STREAM && protocol == IPPROTO_TCP {
        // SAFETY: helper taking the program's context.
        remember(unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }, pid_tgid);
    }
}

#[inline(always)]
fn on_bind(ctx: &SockContext) {
    // SAFETY: `sock` is the context pointer the kernel passed.
    let (kind, protocol) = unsafe {
        (
            read_volatile(addr_of!((*ctx.sock).type_)),
            read_volatile(addr_of!((*ctx.sock).protocol)),
        )
    };
    if kind == SOCK_STREAM && protocol == IPPROTO_TCP {
        // SAFETY: helper taking the program's context.
        remember(
            unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
            bpf_get_current_pid_tgid(),
        );
    }
}

/// Parks the current process as the owner of socket `cookie`.
#[inline(always)]
fn remember(cookie: u64, pid_tgid: u64) {
    let now = now_ns();
    let owner = SockInfo {
        start_ns: now,
        state_ns: now,
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        syn_retransmits: 0,
        flags: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // An LRU insert only fails on allocation failure; sock_ops then counts
    // the socket as one whose owner was not captured.
    let _ = OWNERS.insert(cookie, owner, 0);
}

/// Keeps the connect's destination for this thread's connect() exit.
#[inline(always)]
fn destination(ctx: &SockAddrContext, family: u16, pid_tgid: u64) {
    // SAFETY: `sock_addr` is the context pointer the kernel passed; the
    // verifier rewrites the loads. user_port is in network order in the
    // low 16 bits.
    let (port, addr) = unsafe {
        let port = u16::from_be(read_volatile(addr_of!((*ctx.sock_addr).user_port)) as u16);
        let mut addr = [0u8; 16];
        if family == AF_INET {
            let ip = read_volatile(addr_of!((*ctx.sock_addr).user_ip4)).to_ne_bytes();
            addr[..4].copy_from_slice(&ip);
        } else {
            // One load per word at a constant offset: the verifier takes
            // no other context access.
            let words = [
                read_volatile(addr_of!((*ctx.sock_addr).user_ip6[0])),
                read_volatile(addr_of!((*ctx.sock_addr).user_ip6[1])),
                read_volatile(addr_of!((*ctx.sock_addr).user_ip6[2])),
                read_volatile(addr_of!((*ctx.sock_addr).user_ip6[3])),
            ];
            for (i, w) in words.iter().enumerate() {
                addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
        }
        (port, addr)
    };
    resources::keep(&SyscallArgs {
        pid_tgid,
        family,
        port,
        syscall: syscall::CONNECT,
        addr,
        ts_ns: now_ns(),
    });
}

/// The owner parked for socket `cookie`, taken out of `OWNERS`, with its
/// times set to `now`; an unknown owner (counted) if none was parked.
#[inline(always)]
pub fn take(cookie: u64, now: u64) -> SockInfo {
    let mut owner = match OWNERS.get_ptr(cookie) {
        // SAFETY: pointer from a successful map lookup.
        Some(p) => unsafe { *p },
        None => {
            count(Counter::OwnerNotCaptured);
            SockInfo {
                start_ns: 0,
                state_ns: 0,
                cgroup_id: 0,
                tgid: 0,
                pid: 0,
                syn_retransmits: 0,
                flags: flags::UNTRACKED,
                comm: [0; 16],
            }
        }
    };
    // Ignore the result: the entry may not exist.
    let _ = OWNERS.remove(cookie);
    owner.start_ns = now;
    owner.state_ns = now;
    owner
}
