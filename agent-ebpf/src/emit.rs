//! Fills and submits one `SockEvent` into the ring buffer, counting failures.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    maps::RingBuf,
};
use sockeye_common::{
    counters::Counter,
    event::{EventKind, ListenerKey, SockEvent, SockInfo},
};

use crate::{
    maps::{count, EVENTS},
    sock_facts::SockFacts,
};

/// Below this much unread data the producer does not wake the agent: it drains
/// on a short timer instead. At high event rates this saves a wakeup per event,
/// which is most of the cost of a ring buffer submit.
const WAKEUP_THRESHOLD_BYTES: u64 = 256 * 1024;

/// Event-specific fields.
pub struct Detail {
    /// When it happened. Taken once per program run: the clock read is a
    /// measurable part of the program's cost on virtualised hosts.
    pub ts_ns: u64,
    pub kind: EventKind,
    pub old_state: u8,
    pub new_state: u8,
    pub duration_ns: u64,
    pub old_state_ns: u64,
    pub errno: u32,
    pub flags: u32,
}

/// A detail with only the time, kind and new state set.
#[inline(always)]
pub fn detail(ts_ns: u64, kind: EventKind, new_state: u8) -> Detail {
    Detail {
        ts_ns,
        kind,
        old_state: 0,
        new_state,
        duration_ns: 0,
        old_state_ns: 0,
        errno: 0,
        flags: 0,
    }
}

/// The key of a listener in `LISTENERS`: its namespace and port.
#[inline(always)]
pub fn listener_key(facts: &SockFacts) -> ListenerKey {
    ListenerKey {
        netns_cookie: facts.netns_cookie,
        port: facts.local_port as u32,
        _pad: 0,
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments, always safe to call.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn emit(facts: &SockFacts, owner: Option<&SockInfo>, detail: &Detail) {
    let Some(mut entry) = EVENTS.reserve::<SockEvent>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    let (cgroup_id, tgid, pid, comm, syn_retransmits, owner_flags) = match owner {
        Some(o) => (o.cgroup_id, o.tgid, o.pid, o.comm, o.syn_retransmits, 0),
        None => (
            0,
            0,
            0,
            [0u8; 16],
            0,
            sockeye_common::event::flags::UNTRACKED,
        ),
    };
    // Fill the reserved slot in place: building the event on the stack and
    // copying it would take 144 of the program's 512 stack bytes.
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to the reserved, writable, correctly sized slot;
    // every field is written before submit.
    unsafe {
        (*ev).ts_ns = detail.ts_ns;
        (*ev).cookie = facts.cookie;
        (*ev).cgroup_id = cgroup_id;
        (*ev).netns_cookie = facts.netns_cookie;
        (*ev).duration_ns = detail.duration_ns;
        (*ev).old_state_ns = detail.old_state_ns;
        (*ev).bytes_acked = facts.bytes_acked;
        (*ev).bytes_received = facts.bytes_received;
        (*ev).tgid = tgid;
        (*ev).pid = pid;
        (*ev).kind = detail.kind as u32;
        (*ev).errno = detail.errno;
        (*ev).syn_retransmits = syn_retransmits;
        (*ev).flags = detail.flags | owner_flags;
        (*ev).family = facts.family;
        (*ev).local_port = facts.local_port;
        (*ev).remote_port = facts.remote_port;
        (*ev).old_state = detail.old_state;
        (*ev).new_state = detail.new_state;
        (*ev).local_addr = facts.local_addr;
        (*ev).remote_addr = facts.remote_addr;
        (*ev).comm = comm;
    }
    entry.submit(wakeup_flags(&EVENTS));
    count(Counter::EventsEmitted);
}

/// Submit flags for a ring buffer record: wake the agent only once a lot of
/// data is waiting (see [`WAKEUP_THRESHOLD_BYTES`]).
#[inline(always)]
pub fn wakeup_flags(ring: &RingBuf) -> u64 {
    let wake = if ring.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_THRESHOLD_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    wake as u64
}
