//! Connect errors from tracepoints: `tcp:tcp_receive_reset` (refused) and
//! `sock:inet_sk_error_report` (ICMP unreachable and others).
//!
//! Neither tracepoint identifies the socket in a way sock_ops can match on
//! every kernel, so each records the error under the socket's (remote
//! address, ports) in an LRU map; sock_ops looks it up when a connecting
//! socket closes. The lookup cannot rely on timing: an RST closes the socket
//! at once, but after an ICMP error the socket stays in SYN_SENT until the
//! application gives up and closes it, possibly seconds later.
//!
//! # Minimum kernel version
//! `tcp_receive_reset`: 4.16. `inet_sk_error_report`: 5.15. Field offsets come
//! from tracefs (written by the agent into `TP_OFFSETS`), never hard-coded.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sockeye_common::{
    counters::Counter,
    event::{AF_INET, AF_INET6},
    tracepoint::{ErrorKey, LastError},
};

use crate::{
    emit::now_ns,
    maps::{count, CONNECT_ERRORS, TP_OFFSETS},
    tp_field::read,
};

/// Recorded for every RST; sock_ops turns it into ECONNREFUSED for a
/// connecting socket, as the kernel's `tcp_reset` does.
pub const ECONNRESET: u32 = 104;
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
    let fields = [
        off.rst_family,
        off.rst_daddr,
        off.rst_daddr_v6,
        off.rst_sport,
        off.rst_dport,
    ];
    if let Some(key) = error_key(ctx, fields)? {
        record(&key, ECONNRESET);
    }
    Ok(())
}

fn try_error_report(ctx: &TracePointContext) -> Result<(), i64> {
    let off = TP_OFFSETS.get(0).ok_or(1)?;
    if read::<u16>(ctx, off.err_protocol)? != IPPROTO_TCP {
        return Ok(());
    }
    let error = read::<i32>(ctx, off.err_error)?;
    if error <= 0 {
        return Ok(());
    }
    let fields = [
        off.err_family,
        off.err_daddr,
        off.err_daddr_v6,
        off.err_sport,
        off.err_dport,
    ];
    if let Some(key) = error_key(ctx, fields)? {
        record(&key, error as u32);
    }
    Ok(())
}

/// Reads the socket tuple; `off` is [family, daddr, daddr_v6, sport, dport].
/// None for families other than IPv4/IPv6.
#[inline(always)]
fn error_key(ctx: &TracePointContext, off: [u32; 5]) -> Result<Option<ErrorKey>, i64> {
    let [family, daddr, daddr_v6, sport, dport] = off;
    let Some(remote_addr) = remote_addr(ctx, read::<u16>(ctx, family)?, daddr, daddr_v6)? else {
        return Ok(None);
    };
    Ok(Some(ErrorKey {
        remote_addr,
        local_port: read::<u16>(ctx, sport)?,
        remote_port: read::<u16>(ctx, dport)?,
        _pad: 0,
    }))
}

/// The remote address laid out like `SockEvent::remote_addr`; None for
/// families other than IPv4/IPv6.
#[inline(always)]
fn remote_addr(
    ctx: &TracePointContext,
    family: u16,
    v4_off: u32,
    v6_off: u32,
) -> Result<Option<[u8; 16]>, i64> {
    Ok(match family {
        AF_INET => {
            let b = read::<[u8; 4]>(ctx, v4_off)?;
            Some([b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        }
        AF_INET6 => Some(read::<[u8; 16]>(ctx, v6_off)?),
        _ => None,
    })
}

#[inline(always)]
fn record(key: &ErrorKey, errno: u32) {
    let value = LastError {
        ts_ns: now_ns(),
        errno,
        _pad: 0,
    };
    // An LRU insert only fails on allocation failure; the hint is lost and
    // the close is classified without it.
    if CONNECT_ERRORS.insert(key, value, 0).is_err() {
        count(Counter::ConnectErrorsMapFull);
    }
}
