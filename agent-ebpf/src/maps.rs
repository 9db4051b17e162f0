//! Every map the kernel programs use, named from `sockeye_common::names`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use sockeye_common::{
    counters::{Counter, COUNTER_COUNT},
    event::{ListenerKey, SockInfo},
    resources::SyscallArgs,
    tracepoint::TracepointOffsets,
};

/// Default sizes; the agent overrides them at load time from its config.
const RINGBUF_BYTES: u32 = 4 << 20;
const MAX_SOCKETS: u32 = 65_536;
const MAX_LISTENERS: u32 = 4_096;
const MAX_OWNERS: u32 = 16_384;
const DNS_RINGBUF_BYTES: u32 = 2 << 20;
/// Failed connects and socket() calls: 80 bytes each with the ring's
/// header, so about 13,000 between two drains (every 20 ms), 650,000 a
/// second. 256 KiB lost 36% of a single thread's tight socket() loop over
/// its fd limit (254,000 failures/s); faster loops lose records, counted in
/// `kernel_resource_ringbuf_full`.
const RESOURCE_RINGBUF_BYTES: u32 = 1 << 20;

#[map(name = "SOCKEYE_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RINGBUF_BYTES, 0);

/// Cgroup names: a few per container start, so small.
#[map(name = "SOCKEYE_CGROUP_EVENTS")]
pub static CGROUP_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// DNS queries and answers ([`sockeye_common::dns::DnsPacket`], 408 bytes
/// each): separate from the TCP events so a DNS flood cannot crowd them out.
#[map(name = "SOCKEYE_DNS_EVENTS")]
pub static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(DNS_RINGBUF_BYTES, 0);

/// Separate from the TCP events so a retry loop hitting EMFILE cannot
/// crowd them out.
#[map(name = "SOCKEYE_RESOURCE_EVENTS")]
pub static RESOURCE_EVENTS: RingBuf = RingBuf::with_byte_size(RESOURCE_RINGBUF_BYTES, 0);

/// What a thread's socket() or connect() is about, kept on the CPU it
/// runs on for the syscall's exit (see `resources`): one slot per CPU,
/// tagged with the thread.
#[map(name = "SOCKEYE_SYSCALL_ARGS")]
pub static SYSCALL_ARGS: PerCpuArray<SyscallArgs> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SOCKEYE_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[map(name = "SOCKEYE_SOCKETS")]
pub static SOCKETS: HashMap<u64, SockInfo> = HashMap::with_max_entries(MAX_SOCKETS, 0);

#[map(name = "SOCKEYE_LISTENERS")]
pub static LISTENERS: HashMap<ListenerKey, SockInfo> = HashMap::with_max_entries(MAX_LISTENERS, 0);

/// LRU on purpose: an owner parked at connect() or bind() is taken when the
/// socket connects or listens, but a connect that fails before it reaches
/// TCP, or a bound socket that never listens, leaves its entry behind; the
/// oldest such entries are the ones to lose.
#[map(name = "SOCKEYE_OWNERS")]
pub static OWNERS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(MAX_OWNERS, 0);

#[map(name = "SOCKEYE_TP_OFFSETS")]
pub static TP_OFFSETS: Array<TracepointOffsets> = Array::with_max_entries(1, 0);

/// Adds one to a per-CPU counter. Per-CPU, so no atomics are needed.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from the map lookup and is valid for this
        // CPU's slot; programs are not preempted by each other on one CPU.
        unsafe { *slot += 1 };
    }
}
