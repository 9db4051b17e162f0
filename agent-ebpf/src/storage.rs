//! Per-socket state in socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`).
//!
//! Every TCP socket the agent follows carries one [`SockInfo`] in its own
//! storage: found from the socket itself (no hash lookup keyed by a
//! cookie, no bucket lock), freed by the kernel with the socket (no delete
//! at close, no entry left behind by a socket whose close we missed), and
//! copied by the kernel from a listener to each socket it accepts
//! (`BPF_F_CLONE`), which is how an accepted socket inherits its owner.
//!
//! aya-ebpf 0.2 wraps this map type only for sock_addr programs and
//! without `BPF_F_CLONE`, so the map definition is written out here (the
//! layout its `btf_map` loader expects) and `bpf_sk_storage_get` is called
//! through the helper bindings.
//!
//! # Minimum kernel version
//! sk_storage: 5.2, `BPF_F_CLONE`: 5.3; from sock_ops and cgroup_skb: 5.3;
//! from cgroup_sock and cgroup_sock_addr: before 6.1 (checked on 6.1 by
//! the kernel matrix).

use core::ffi::c_void;
use core::ptr::{null, null_mut};

use aya_ebpf::{
    bindings::{
        bpf_map_type::BPF_MAP_TYPE_SK_STORAGE, BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE,
    },
    helpers::generated::bpf_sk_storage_get,
    macros::btf_map,
};
use sockeye_common::event::SockInfo;

/// `BPF_F_CLONE` (uapi): an accepted socket gets a copy of its listener's
/// value. Not in aya-ebpf 0.2's bindings.
const BPF_F_CLONE: u32 = 1 << 9;
const MAP_FLAGS: usize = (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize;

/// A BTF map definition: the loader reads type, key, value, size and
/// flags from the field types (pointers to arrays whose length is the
/// number), never from values. sk_storage requires `max_entries` 0 and
/// `BPF_F_NO_PREALLOC`, and an `int` key (the socket, from user space its
/// fd).
#[repr(C)]
pub struct SockStorage {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const SockInfo,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; MAP_FLAGS],
}

// SAFETY: the fields are placeholders the loader replaces with the map;
// nothing reads or writes them from the programs.
unsafe impl Sync for SockStorage {}

#[btf_map(name = "SOCKEYE_SOCK_STATE")]
pub static SOCK_STATE: SockStorage = SockStorage {
    r#type: null(),
    key: null(),
    value: null(),
    max_entries: null(),
    map_flags: null(),
};

/// The socket's record, if it has one.
///
/// # Safety
/// `sk` must be a socket pointer the verifier accepts for
/// `bpf_sk_storage_get` in this program type: `bpf_sock_ops.sk` (checked
/// for null), `bpf_sock_addr.sk`, or a cgroup_sock program's context.
#[inline(always)]
pub unsafe fn get(sk: *mut c_void) -> Option<&'static mut SockInfo> {
    // SAFETY: the caller vouches for `sk`; the map pointer is our map.
    let p = unsafe { bpf_sk_storage_get(map(), sk, null_mut(), 0) }.cast::<SockInfo>();
    // SAFETY: a non-null result points to this socket's value, which lives
    // as long as the socket; the callers run under the socket's lock or in
    // its owner's syscall, so no other program writes it at the same time.
    unsafe { p.as_mut() }
}

/// The socket's record, created from `init` if it has none; None only if
/// the kernel could not allocate it.
///
/// # Safety
/// As for [`get`].
#[inline(always)]
pub unsafe fn get_or_create(sk: *mut c_void, init: &SockInfo) -> Option<&'static mut SockInfo> {
    // SAFETY: as in `get`; the helper copies `init` into a new value and
    // does not keep the pointer.
    let p = unsafe {
        bpf_sk_storage_get(
            map(),
            sk,
            (init as *const SockInfo).cast_mut().cast(),
            BPF_SK_STORAGE_GET_F_CREATE as u64,
        )
    }
    .cast::<SockInfo>();
    // SAFETY: as in `get`.
    unsafe { p.as_mut() }
}

#[inline(always)]
fn map() -> *mut c_void {
    core::ptr::from_ref(&SOCK_STATE).cast_mut().cast()
}
