//! Names of new cgroups from `cgroup:cgroup_mkdir`, so a container that
//! lives for milliseconds (a Job, a crash loop) is still named after its
//! cgroup is gone: user space could not look the id up in time.
//!
//! # Minimum kernel version
//! 4.13 (the tracepoint); offsets come from tracefs.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint, programs::TracePointContext,
    EbpfContext as _,
};
use sockeye_common::{
    cgroup::{CgroupEvent, CGROUP_PATH_MAX},
    counters::Counter,
};

use crate::{
    maps::{count, CGROUP_EVENTS, TP_OFFSETS},
    tp_field::read,
};

/// The cgroup v2 hierarchy's id; v1 hierarchies (hybrid hosts) have others.
const DEFAULT_HIERARCHY: i32 = 0;

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn sockeye_cgroup_mkdir(ctx: TracePointContext) -> u32 {
    if try_mkdir(&ctx).is_err() {
        count(Counter::TracepointReadFailed);
    }
    0
}

fn try_mkdir(ctx: &TracePointContext) -> Result<(), i64> {
    let off = TP_OFFSETS.get(0).ok_or(1)?;
    if read::<i32>(ctx, off.mkdir_root)? != DEFAULT_HIERARCHY {
        return Ok(());
    }
    let id = read::<u64>(ctx, off.mkdir_id)?;
    let loc = read::<u32>(ctx, off.mkdir_path)?;
    let (data_off, data_len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);

    let Some(mut entry) = CGROUP_EVENTS.reserve::<CgroupEvent>(0) else {
        count(Counter::RingbufFull);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved slot; the string is read from the
    // tracepoint record with a bounds-checked helper into the slot's array.
    let copied = unsafe {
        (*ev).id = id;
        let src = (ctx.as_ptr() as *const u8).add(data_off);
        bpf_probe_read_kernel_str_bytes(src, &mut (*ev).path).map_or(0, |s| s.len())
    };
    // SAFETY: as above.
    unsafe {
        (*ev).path_len = copied as u32;
        // data_len counts the NUL.
        (*ev).truncated = u32::from(data_len > CGROUP_PATH_MAX);
    }
    entry.submit(0);
    Ok(())
}
