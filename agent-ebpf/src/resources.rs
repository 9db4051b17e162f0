//! connect() and socket() calls that failed because a resource ran out
//! (no free local port, the fd limit, memory), from the syscall tracepoints.
//!
//! These failures happen before TCP has a connection to report: a connect
//! that finds no free local port fails in `inet_hash_connect` before any
//! SYN, a socket() over the fd limit never gets a socket. sock_ops and the
//! cgroup hooks never see them.
//!
//! The exit tracepoints only see the return value, so what the exit needs
//! is kept before: the domain of socket() by the socket() entry
//! tracepoint, the destination of connect() by the connect4/connect6 hooks
//! (`owners`), which run inside every connect() of an IPv4/IPv6 socket
//! before the kernel looks for a local port, and read the destination from
//! their context rather than from user memory.
//!
//! It is kept in a per-CPU slot tagged with the thread, not in a map keyed
//! by thread: the failures reported happen at once (no port, no fd), on
//! the CPU that ran the entry, so the slot is still the thread's; a per-CPU
//! array lookup is an address computation, a hash lookup per call is not.
//! A thread that slept and moved to another CPU in between finds another
//! thread's tag there: its failure is still reported, without destination
//! or domain, and counted (`kernel_syscall_args_missed`). The success path
//! of an exit is one field read and a compare.
//!
//! # Minimum kernel version
//! The syscall tracepoints need `CONFIG_FTRACE_SYSCALLS` (a kernel without
//! them runs the agent with the feature off). Field offsets come from
//! tracefs.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id,
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

/// A failure for want of a port, fd or memory happens microseconds after
/// connect4/connect6 ran in the same call; a destination kept longer ago
/// than this belongs to an earlier connect.
const STALE_NS: u64 = 100_000_000;

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

fn try_enter_socket(ctx: &TracePointContext) -> Result<(), i64> {
    let off = TP_OFFSETS.get(0).ok_or(1)?;
    let family = read::<u32>(ctx, off.socket_family)?;
    keep(&SyscallArgs {
        pid_tgid: bpf_get_current_pid_tgid(),
        // Domains are small numbers (AF_MAX is under 64); a larger value
        // fails socket() with EAFNOSUPPORT, not an errno we report.
        family: family as u16,
        syscall: syscall::SOCKET,
        ..SyscallArgs::default()
    });
    Ok(())
}

/// Keeps `args` (tagged with its thread) in this CPU's slot for the
/// syscall's exit.
#[inline(always)]
pub fn keep(args: &SyscallArgs) {
    if let Some(slot) = SYSCALL_ARGS.get_ptr_mut(0) {
        // SAFETY: the pointer is this CPU's slot; the programs that write
        // it run in process context, one at a time on a CPU.
        unsafe { *slot = *args };
    }
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
    // SAFETY: as in `keep`.
    let args = SYSCALL_ARGS
        .get_ptr(0)
        .map(|p| unsafe { *p })
        .filter(|a| a.pid_tgid == pid_tgid);
    let args = match args {
        // A connect's destination is kept by connect4/connect6, which do
        // not run for other families: one older than a connect can take is
        // an earlier connect's, left behind by a call they did not see.
        Some(a) if a.syscall == syscall::CONNECT && a.ts_ns < now_ns().saturating_sub(STALE_NS) => {
            count(Counter::SyscallArgsMissed);
            SyscallArgs::default()
        }
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
