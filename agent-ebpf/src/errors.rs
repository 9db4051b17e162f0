//! Connect errors from tracepoints: `tcp:tcp_receive_reset` (refused) and
//! `sock:inet_sk_error_report` (ICMP unreachable and others).
//!
//! Neither tracepoint identifies the socket in a way sock_ops can match (no
//! cookie on older kernels, and a socket pointer sock_ops cannot see), but both
//! fire in the same softirq, on the same CPU, immediately before the state
//! change to CLOSE that sock_ops reports. So each writes the error and the
//! ports into a per-CPU slot, and sock_ops picks it up when a connecting
//! socket closes with the same ports a moment later.
//!
//! # Minimum kernel version
//! `tcp_receive_reset`: 4.16. `inet_sk_error_report`: 5.15. Field offsets come
//! from tracefs (written by the agent into `TP_OFFSETS`), never hard-coded.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockeye_common::{
    counters::Counter,
    event::{AF_INET, AF_INET6},
    tracepoint::{LastError, ABSENT},
};

use crate::{
    emit::now_ns,
    maps::{count, LAST_ERROR, TP_OFFSETS},
};

/// Recorded for every RST; sock_ops turns it into ECONNREFUSED for a
/// connecting socket, as the kernel's `tcp_reset` does.
const ECONNRESET: u32 = 104;
const IPPROTO_TCP: u16 = 6;

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn sockeye_tcp_receive_reset(ctx: TracePointContext) -> u32 {
    if try_receive_reset(&ctx).is_err() {
        count(Counter::TracepointReadFailed);
    }
    0
}

#[tracepoint(category = "sock", name = "inet_sk_error_report")]
pub fn sockeye_inet_sk_error_report(ctx: TracePointContext) -> u32 {
    if try_error_report(&ctx).is_err() {
        count(Counter::TracepointReadFailed);
    }
    0
}

fn try_receive_reset(ctx: &TracePointContext) -> Result<(), i64> {
    let off = TP_OFFSETS.get(0).ok_or(1)?;
    if !is_inet(read_u16(ctx, off.rst_family)?) {
        return Ok(());
    }
    let sport = read_u16(ctx, off.rst_sport)?;
    let dport = read_u16(ctx, off.rst_dport)?;
    record(ECONNRESET, sport, dport);
    Ok(())
}

fn try_error_report(ctx: &TracePointContext) -> Result<(), i64> {
    let off = TP_OFFSETS.get(0).ok_or(1)?;
    if read_u16(ctx, off.err_protocol)? != IPPROTO_TCP || !is_inet(read_u16(ctx, off.err_family)?)
    {
        return Ok(());
    }
    let error = read_i32(ctx, off.err_error)?;
    if error <= 0 {
        return Ok(());
    }
    let sport = read_u16(ctx, off.err_sport)?;
    let dport = read_u16(ctx, off.err_dport)?;
    record(error as u32, sport, dport);
    Ok(())
}

#[inline(always)]
fn record(errno: u32, sport: u16, dport: u16) {
    if let Some(slot) = LAST_ERROR.get_ptr_mut(0) {
        // SAFETY: valid per-CPU slot from the map lookup.
        unsafe {
            *slot = LastError {
                ts_ns: now_ns(),
                errno,
                sport,
                dport,
            }
        };
    }
}

#[inline(always)]
fn is_inet(family: u16) -> bool {
    family == AF_INET || family == AF_INET6
}

#[inline(always)]
fn read_u16(ctx: &TracePointContext, offset: u32) -> Result<u16, i64> {
    if offset == ABSENT {
        return Err(1);
    }
    // SAFETY: bpf_probe_read_kernel checks the access; a bad offset fails the read.
    unsafe { ctx.read_at::<u16>(offset as usize) }.map_err(|e| e as i64)
}

#[inline(always)]
fn read_i32(ctx: &TracePointContext, offset: u32) -> Result<i32, i64> {
    if offset == ABSENT {
        return Err(1);
    }
    // SAFETY: as above.
    unsafe { ctx.read_at::<i32>(offset as usize) }.map_err(|e| e as i64)
}
