//! Reading a tracepoint field at an offset the agent found in tracefs.

use aya_ebpf::programs::TracePointContext;
use sockeye_common::tracepoint::ABSENT;

/// The field at `offset`; an error if this kernel lacks the field
/// ([`ABSENT`]) or the read fails. Callers count the error.
#[inline(always)]
pub fn read<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i64> {
    if offset == ABSENT {
        return Err(1);
    }
    // SAFETY: bpf_probe_read_kernel checks the access; a bad offset fails the read.
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|e| e as i64)
}
