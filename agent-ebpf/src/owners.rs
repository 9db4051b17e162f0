//! Who owns a TCP socket: the cgroup, process and command, captured by
//! cgroup programs that run in the owner's own context.
//!
//! sock_ops cannot capture the owner itself on every kernel: 6.1 refuses
//! `bpf_get_current_pid_tgid` there and 6.12 `bpf_get_current_comm` (the
//! kernel matrix found both; 6.18 allows them). The
//! cgroup_sock_addr `connect4`/`connect6` and cgroup_sock `post_bind4`/
//! `post_bind6` hooks run inside connect() and bind(), in the process that
//! makes the call, and may read the current task on every kernel Sockeye
//! supports. They write the owner into the socket's own record (`storage`),
//! where sock_ops finds it when the socket connects or starts listening.
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
//! helpers and socket storage in these hooks: 5.15 or earlier (checked on
//! 6.1 by the kernel matrix).

use core::ffi::c_void;
use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id,
    },
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use sockeye_common::{
    counters::Counter,
    event::{flags, EventKind, SockInfo, AF_INET, AF_INET6},
    resources::{syscall, SyscallArgs},
    tcp_state,
};

use crate::{
    emit::{emit, now_ns, Detail},
    maps::count,
    resources,
    sock_facts::released_facts,
    storage,
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
        // SAFETY: a cgroup_sock program's context is its socket.
        if let Some(r) = unsafe { storage::get(sock(&ctx)) } {
            r.flags |= flags::CLOSED_BY_OWNER;
        }
    } else if state == tcp_state::LISTEN as u32 {
        on_listener_release(&ctx);
    }
    ALLOW
}

/// A listener being closed by its process. One the agent saw start has a
/// record and its close comes from sock_ops; one that predates the agent
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
    // SAFETY: a cgroup_sock program's context is its socket.
    if unsafe { storage::get(sock(ctx)) }.is_some() {
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
    let detail = Detail {
        ts_ns: now,
        kind: EventKind::Closed,
        old_state: tcp_state::LISTEN,
        new_state: tcp_state::CLOSE,
        duration_ns: 0,
        old_state_ns: 0,
        errno: 0,
        flags: 0,
    };
    emit(&facts, Some(&closer), &detail);
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, family: u16) {
    // SAFETY: `sock_addr` is the context pointer the kernel passed.
    let (kind, protocol, sk) = unsafe {
        (
            read_volatile(addr_of!((*ctx.sock_addr).type_)),
            read_volatile(addr_of!((*ctx.sock_addr).protocol)),
            read_volatile(addr_of!((*ctx.sock_addr).__bindgen_anon_1.sk)),
        )
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    destination(ctx, family, pid_tgid);
    if kind == SOCK_STREAM && protocol == IPPROTO_TCP {
        // SAFETY: `bpf_sock_addr.sk` is the connecting socket.
        remember(
            unsafe { storage::get_or_create(sk.cast(), &EMPTY) },
            pid_tgid,
        );
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
        // SAFETY: a cgroup_sock program's context is its socket.
        let r = unsafe { storage::get_or_create(sock(ctx), &EMPTY) };
        remember(r, bpf_get_current_pid_tgid());
    }
}

/// What a new record holds until [`remember`] fills it in.
const EMPTY: SockInfo = SockInfo {
    start_ns: 0,
    state_ns: 0,
    cgroup_id: 0,
    tgid: 0,
    pid: 0,
    syn_retransmits: 0,
    flags: 0,
    comm: [0; 16],
};

/// Writes the current process into the socket's record as its owner.
#[inline(always)]
fn remember(record: Option<&mut SockInfo>, pid_tgid: u64) {
    let Some(r) = record else {
        // No memory for the record: sock_ops counts the socket as one
        // whose owner was not captured.
        count(Counter::SocketsMapFull);
        return;
    };
    let now = now_ns();
    r.start_ns = now;
    r.state_ns = now;
    // SAFETY: helper without arguments.
    r.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    r.tgid = (pid_tgid >> 32) as u32;
    r.pid = pid_tgid as u32;
    r.syn_retransmits = 0;
    r.flags = 0;
    r.comm = bpf_get_current_comm().unwrap_or([0; 16]);
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

/// A cgroup_sock program's context as the socket pointer helpers take.
#[inline(always)]
fn sock(ctx: &SockContext) -> *mut c_void {
    ctx.sock.cast()
}
