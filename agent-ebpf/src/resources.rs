//! connect() and socket() calls that failed because a resource ran out
//! (no free local port, the fd limit, memory), from the syscall tracepoints.
//!
//! These failures happen before TCP has a connection to report: a connect
//! that finds no free local port fails in `inet_hash_connect` before any
//! SYN, a socket() over the fd limit never gets a socket. sock_ops and the
//! cgroup hooks never see them.
//!
//! The exit tracepoints only see the return value, so each entry
//! tracepoint keeps what the exit needs (the destination of connect(), the
//! domain of socket()) under the thread's pid_tgid. Entries are overwritten
//! in place by the thread's next call and never deleted: a lookup per call
//! is cheaper than an insert at entry plus a delete at every exit. The
//! success path of an exit is one field read and a compare.
//!
//! # Minimum kernel version
//! The syscall tracepoints need `CONFIG_FTRACE_SYSCALLS` (a kernel without
//! them runs the agent with the feature off); `bpf_probe_read_user`: 5.5.
//! Field offsets come from tracefs.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::bpf_get_current_cgroup_id,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use sockeye_common::{
    counters::Counter,
    event::{AF_INET, AF_INET6},
    resources::{is_exhaustion, syscall, ResourceFailure, SyscallArgs},
};

use crate::{
    emit::now_ns,
    maps::{count, RESOURCE_EVENTS, SYSCALL_ARGS, TP_OFFSETS},
    tp_field::read,
};

/// `sizeof(struct sockaddr_in)`; the kernel refuses shorter IPv4 addresses.
const SOCKADDR_IN_LEN: u32 = 16;
/// `SIN6_LEN_RFC2133`: the shortest IPv6 address the kernel accepts.
const SOCKADDR_IN6_LEN: u32 = 24;
/// Offset of `sin6_addr` in `struct sockaddr_in6`.
const SIN6_ADDR_OFFSET: u64 = 8;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sockeye_sys_enter_connect(ctx: TracePointContext) -> u32 {
    if try_enter_connect(&ctx).is_err() {
        count(Counter::TracepointReadFailed);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sockeye_sys_exit_connect(ctx: TracePointContext) -> u32 {
    let Some(off) = TP_OFFSETS.get(0) else {
        return 0;
    };
    if try_exit(&ctx, off.connect_ret, syscall::CONNECT).is_err() {
        count(Counter::TracepointReadFailed);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_socket")]
pub fn sockeye_sys_enter_socket(ctx: TracePointContext) -> u32 {
    if try_enter_socket(&ctx).is_err() {
        count(Counter::TracepointReadFailed);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_socket")]
pub fn sockeye_sys_exit_socket(ctx: TracePointContext) -> u32 {
    let Some(off) = TP_OFFSETS.get(0) else {
        return 0;
    };
    if try_exit(&ctx, off.socket_ret, syscall::SOCKET).is_err() {
        count(Counter::TracepointReadFailed);
    }
    0
}

fn try_enter_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let off = TP_OFFSETS.get(0).ok_or(1)?;
    // Syscall arguments are 8-byte fields; `int addrlen` is the low half
    // (little endian, the only byte order BPF targets here).
    let uaddr = read::<u64>(ctx, off.connect_addr)?;
    let addrlen = read::<u32>(ctx, off.connect_addrlen)?;
    remember(&destination(uaddr, addrlen));
    Ok(())
}

fn try_enter_socket(ctx: &TracePointContext) -> Result<(), i64> {
    let off = TP_OFFSETS.get(0).ok_or(1)?;
    let family = read::<u32>(ctx, off.socket_family)?;
    remember(&SyscallArgs {
        // Domains are small numbers (AF_MAX is under 64); a larger value
        // fails socket() with EAFNOSUPPORT, not an errno we report.
        family: family as u16,
        syscall: syscall::SOCKET,
        ..SyscallArgs::default()
    });
    Ok(())
}

/// The connect's destination. A sockaddr that cannot be read (not resident,
/// or a bad pointer the syscall will refuse with EFAULT) leaves family 0:
/// unknown, which the exit reports without a destination.
#[inline(always)]
fn destination(uaddr: u64, addrlen: u32) -> SyscallArgs {
    let mut args = SyscallArgs {
        syscall: syscall::CONNECT,
        ..SyscallArgs::default()
    };
    // family (host order), port (network order), IPv4 address: the first
    // 8 bytes of sockaddr_in, and the first 4 of sockaddr_in6.
    // SAFETY: bpf_probe_read_user checks the access and fails on a bad address.
    let Ok(head) = (unsafe { bpf_probe_read_user(uaddr as *const [u8; 8]) }) else {
        return args;
    };
    let family = u16::from_ne_bytes([head[0], head[1]]);
    let port = u16::from_be_bytes([head[2], head[3]]);
    match family {
        AF_INET if addrlen >= SOCKADDR_IN_LEN => {
            args.family = AF_INET;
            args.port = port;
            args.addr[..4].copy_from_slice(&head[4..8]);
        }
        AF_INET6 if addrlen >= SOCKADDR_IN6_LEN => {
            let src = (uaddr + SIN6_ADDR_OFFSET) as *const [u8; 16];
            // SAFETY: as above.
            if let Ok(addr) = unsafe { bpf_probe_read_user(src) } {
                args.family = AF_INET6;
                args.port = port;
                args.addr = addr;
            }
        }
        AF_INET | AF_INET6 => {}
        // Another family (AF_UNIX, ...): remembered so the exit skips it.
        other => args.family = other,
    }
    args
}

/// Keeps `args` for this thread's exit tracepoint. A thread that called
/// before has an entry: it is overwritten in place, which costs a lookup
/// and no allocation (a map update would take a new LRU node every call).
/// Only this thread reads or writes its entry, so no one sees it half
/// written.
#[inline(always)]
fn remember(args: &SyscallArgs) {
    let key = bpf_get_current_pid_tgid();
    if let Some(slot) = SYSCALL_ARGS.get_ptr_mut(key) {
        // SAFETY: the pointer comes from the map lookup and stays valid
        // while this program runs.
        unsafe { *slot = *args };
        return;
    }
    // An LRU insert fails only when no node can be allocated; the thread
    // has no entry then, so its exit counts a miss rather than reading a
    // stale destination.
    let _ = SYSCALL_ARGS.insert(key, args, 0);
}

fn try_exit(ctx: &TracePointContext, ret_offset: u32, which: u32) -> Result<(), i64> {
    let ret = read::<i64>(ctx, ret_offset)?;
    if ret >= 0 {
        return Ok(());
    }
    let errno = ret.unsigned_abs() as u32;
    if !is_exhaustion(errno) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: as in `remember`.
    let args = SYSCALL_ARGS.get_ptr(pid_tgid).map(|p| unsafe { *p });
    let args = match args {
        Some(a) if a.syscall == which && (a.family == AF_INET || a.family == AF_INET6) => a,
        // Another domain (a Unix socket, netlink, ...): not a TCP/IP connect.
        Some(a) if a.syscall == which && a.family != 0 => return Ok(()),
        _ => {
            count(Counter::SyscallArgsMissed);
            SyscallArgs::default()
        }
    };
    let Some(mut entry) = RESOURCE_EVENTS.reserve::<ResourceFailure>(0) else {
        count(Counter::ResourceRingbufFull);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to the reserved, writable slot; every field is
    // written before submit. The helpers take no pointers but `comm`'s.
    unsafe {
        (*ev).ts_ns = now_ns();
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).tgid = (pid_tgid >> 32) as u32;
        (*ev).pid = pid_tgid as u32;
        (*ev).errno = errno;
        (*ev).syscall = which;
        (*ev).family = args.family;
        (*ev).port = args.port;
        (*ev)._pad = 0;
        (*ev).addr = args.addr;
        (*ev).comm = bpf_get_current_comm().unwrap_or([0u8; 16]);
    }
    // No wakeup: the agent drains every 20 ms, and a failure is no hurry.
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    count(Counter::ResourceFailuresEmitted);
    Ok(())
}
