//! Types and names shared by Sockeye's kernel programs and its user-space agent.
//!
//! Everything that crosses the kernel/user boundary is defined here once: event
//! layouts, map and program names, counter indices. Layouts are `#[repr(C)]`
//! with explicit padding and `const` size checks so both sides agree byte for
//! byte.
#![no_std]

pub mod cgroup;
pub mod counters;
pub mod dns;
pub mod event;
pub mod names;
pub mod resources;
pub mod tcp_state;
pub mod tracepoint;

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: every type below is `#[repr(C)]`, made only of integers and
    // integer arrays, has no implicit padding (checked by const asserts in its
    // module), so any bit pattern is a valid value.
    unsafe impl aya::Pod for crate::event::SockEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::tracepoint::TracepointOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::event::SockInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::event::ListenerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::cgroup::CgroupEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::dns::DnsPacket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::resources::SyscallArgs {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::resources::ResourceFailure {}
}
