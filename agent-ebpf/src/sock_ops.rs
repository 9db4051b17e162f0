//! The TCP lifecycle from a sock_ops program on the cgroup v2 root.
//!
//! sock_ops is a stable, cgroup-attached hook that sees every TCP socket of
//! every cgroup below the root: connect start, active and passive
//! establishment, listen, retransmission timeouts and (once we ask for them
//! per socket) every state change. Many callbacks run in softirq context,
//! where "the current task" is whoever was interrupted, and sock_ops cannot
//! read a socket's cgroup (`bpf_sk_cgroup_id` is not allowed there). So the
//! owner (cgroup, process, command) is captured where the kernel runs in the
//! owner's own context (connect, bind: see `owners`), kept in the socket's
//! own storage (`storage`), and copied by the kernel to accepted sockets
//! from their listener; the agent seeds the listener map with listeners
//! that predate it.
//!
//!
//! Why a connect failed is told by what this program already sees: the
//! kernel's SYN retries running out (RTO callback, `expired`), a segment
//! received while connecting (it can only have been the RST that closed
//! it: a SYN-ACK would have established it; the kernel counts it in
//! `segs_in` before handling it), the owner's close (`sock_release` marks
//! the socket), or none of these: an ICMP error. ICMP errors that reach a
//! connecting socket (host or network unreachable, a port-unreachable from
//! a firewall) are all "unreachable" then; the agent tells no more apart.
//!
//! # Minimum kernel version
//! sock_ops with `bytes_acked`/`bytes_received`/`segs_in`: 4.16;
//! `TCP_LISTEN_CB`: 4.19; `bpf_get_netns_cookie` in sock_ops: 5.8; socket
//! storage: see `storage`.

use core::ffi::c_void;
use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB,
    },
    macros::sock_ops,
    programs::SockOpsContext,
};
use sockeye_common::{
    counters::Counter,
    event::{flags, EventKind, SockInfo},
    tcp_state,
};

use crate::{
    emit::{detail, emit, listener_key, now_ns, Detail},
    maps::{count, LISTENERS},
    sock_facts::{facts, SockFacts},
    storage,
};

const ECONNREFUSED: u32 = 111;
const ETIMEDOUT: u32 = 110;

/// Each handler is its own BPF subprogram (`#[inline(never)]`): inlined into
/// one function their stack slots add up past the 512-byte limit, while as
/// calls only the deepest one counts.
#[sock_ops]
pub fn sockeye_sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => on_connect(&ctx),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_active_established(&ctx),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_passive_established(&ctx),
        BPF_SOCK_OPS_TCP_LISTEN_CB => on_listen(&ctx),
        BPF_SOCK_OPS_STATE_CB => on_state(&ctx),
        BPF_SOCK_OPS_RTO_CB => on_rto(&ctx),
        _ => {}
    }
    // sock_ops return values only matter for ops that ask for a reply; 1 is "ok".
    1
}

/// Starts the connect's clock in the record connect4/connect6 made in this
/// very connect() call; emits nothing. Most connects finish (or fail)
/// within a round trip, and their Established/Closed event carries the
/// start time, so a ConnectStart event per connect would be pure overhead.
/// A connect still pending at its first SYN retransmission is announced by
/// `on_rto`.
#[inline(never)]
fn on_connect(ctx: &SockOpsContext) {
    let now = now_ns();
    match record(ctx) {
        Some(r) => {
            r.start_ns = now;
            r.state_ns = now;
            r.syn_retransmits = 0;
        }
        None => {
            count(Counter::OwnerNotCaptured);
            create(ctx, &unknown_owner(now));
        }
    }
    // RTO callbacks tell SYN retransmissions and connect timeouts apart.
    set_flags(ctx, BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG);
}

#[inline(never)]
fn on_active_established(ctx: &SockOpsContext) {
    let Some(facts) = facts(ctx, true) else {
        return;
    };
    // Already on if we saw the connect start; not for one that started
    // before the agent attached.
    set_flags(ctx, BPF_SOCK_OPS_STATE_CB_FLAG);
    let now = now_ns();
    let mut d = detail(now, EventKind::Established, tcp_state::ESTABLISHED);
    d.old_state = tcp_state::SYN_SENT;
    let owner = record(ctx).map(|r| {
        d.duration_ns = now.saturating_sub(r.start_ns);
        d.old_state_ns = r.start_ns;
        r.state_ns = now;
        &*r
    });
    emit(&facts, owner, &d);
}

#[inline(never)]
fn on_passive_established(ctx: &SockOpsContext) {
    let Some(facts) = facts(ctx, true) else {
        return;
    };
    set_flags(ctx, BPF_SOCK_OPS_STATE_CB_FLAG);
    let now = now_ns();
    // The kernel copied the listener's record when it created this socket.
    let record = match record(ctx) {
        Some(r) => Some(r),
        None => {
            // The listener has none: it predates the agent (the agent seeded
            // its owner in LISTENERS), or its own record could not be made.
            let owner = match LISTENERS.get_ptr(listener_key(&facts)) {
                // SAFETY: pointer from a successful map lookup.
                Some(l) => unsafe { *l },
                None => unknown_owner(0),
            };
            create(ctx, &owner)
        }
    };
    let mut d = detail(now, EventKind::Accepted, tcp_state::ESTABLISHED);
    d.old_state = tcp_state::SYN_RECV;
    let owner = match record {
        Some(r) => {
            r.start_ns = now;
            r.state_ns = now;
            r.syn_retransmits = 0;
            // Only whether the owner is known carries over from the listener.
            r.flags &= flags::UNTRACKED;
            d.flags = r.flags;
            Some(&*r)
        }
        None => {
            d.flags = flags::UNTRACKED;
            None
        }
    };
    emit(&facts, owner, &d);
}

#[inline(never)]
fn on_listen(ctx: &SockOpsContext) {
    let Some(facts) = facts(ctx, true) else {
        return;
    };
    let now = now_ns();
    let record = match record(ctx) {
        Some(r) => Some(r),
        None => {
            count(Counter::OwnerNotCaptured);
            create(ctx, &unknown_owner(now))
        }
    };
    let Some(r) = record else {
        emit(
            &facts,
            None,
            &detail(now, EventKind::Listen, tcp_state::LISTEN),
        );
        return;
    };
    r.start_ns = now;
    r.state_ns = now;
    // Accepted sockets get the owner from the listener's record; the map
    // is the fallback for one the kernel could not copy.
    if LISTENERS.insert(listener_key(&facts), &*r, 0).is_err() {
        count(Counter::ListenersMapFull);
    }
    // The STATE flag makes the listener's close (LISTEN -> CLOSE) visible, and
    // accepted children inherit it.
    set_flags(ctx, BPF_SOCK_OPS_STATE_CB_FLAG);
    emit(
        &facts,
        Some(&*r),
        &detail(now, EventKind::Listen, tcp_state::LISTEN),
    );
}

#[inline(never)]
fn on_state(ctx: &SockOpsContext) {
    let old = ctx.arg(0) as u8;
    let new = ctx.arg(1) as u8;
    // Established transitions are reported by the Established/Accepted events.
    if new == tcp_state::ESTABLISHED {
        return;
    }
    // A failed connect's Closed is its only event: give it the namespace.
    // So is a pre-existing listener's (the agent knows it from /proc, by
    // inode): the namespace tells it apart from other pods' listeners on
    // the same port. Both are rare enough for the helper call.
    let Some(facts) = facts(ctx, matches!(old, tcp_state::SYN_SENT | tcp_state::LISTEN)) else {
        return;
    };
    let now = now_ns();
    let (owner, old_state_ns) = match record(ctx) {
        Some(r) => {
            let since = r.state_ns;
            r.state_ns = now;
            (Some(&*r), since)
        }
        None => {
            count(Counter::UntrackedSocket);
            (None, 0)
        }
    };
    if new != tcp_state::CLOSE {
        // Healthy sockets pass through these within a round trip; streaming
        // them would cost two events per connection. The next event carries
        // the time they were entered (old_state_ns).
        if matches!(
            new,
            tcp_state::FIN_WAIT1 | tcp_state::LAST_ACK | tcp_state::CLOSING
        ) {
            return;
        }
        let mut d = detail(now, EventKind::StateChange, new);
        d.old_state = old;
        d.old_state_ns = old_state_ns;
        emit(&facts, owner, &d);
        return;
    }

    let mut d = detail(now, EventKind::Closed, tcp_state::CLOSE);
    d.old_state = old;
    d.old_state_ns = old_state_ns;
    if let Some(o) = owner {
        d.duration_ns = now.saturating_sub(o.start_ns);
        d.flags = o.flags & flags::CONNECT_TIMED_OUT;
    }
    if old == tcp_state::SYN_SENT {
        failed_connect_cause(&facts, owner, &mut d);
    } else if old == tcp_state::FIN_WAIT2 || old == tcp_state::CLOSING {
        // Handed to a TIME_WAIT minisocket. (A RST in these states also
        // lands here; it is rare enough not to be told apart.)
        d.flags |= flags::ENTERED_TIME_WAIT;
    }
    if old == tcp_state::LISTEN {
        remove_listener(&facts, owner);
    }
    emit(&facts, owner, &d);
    // Nothing to delete: the record goes with the socket.
}

#[inline(never)]
fn on_rto(ctx: &SockOpsContext) {
    // SAFETY: ctx.ops is the context pointer the kernel passed us.
    let state = unsafe { read_volatile(addr_of!((*ctx.ops).state)) } as u8;
    if state != tcp_state::SYN_SENT {
        return;
    }
    let Some(r) = record(ctx) else {
        return;
    };
    // args[2] is "expired": the kernel is giving up on this connect.
    if ctx.arg(2) != 0 {
        r.flags |= flags::CONNECT_TIMED_OUT;
        return;
    }
    r.syn_retransmits += 1;
    // This connect is slow (its first SYN got no answer within the initial
    // RTO): make it visible as pending now rather than when it ends.
    if r.syn_retransmits == 1 {
        if let Some(facts) = facts(ctx, true) {
            let start = r.start_ns;
            emit(
                &facts,
                Some(&*r),
                &detail(start, EventKind::ConnectStart, tcp_state::SYN_SENT),
            );
        }
    }
}

/// Why a connect failed, from what this program saw: the kernel's SYN
/// retries running out, a segment received while connecting (the RST that
/// refused it: a SYN-ACK would have established the socket), or (neither)
/// who closed the socket.
#[inline(always)]
fn failed_connect_cause(facts: &SockFacts, owner: Option<&SockInfo>, d: &mut Detail) {
    if d.flags & flags::CONNECT_TIMED_OUT != 0 {
        d.errno = ETIMEDOUT;
        return;
    }
    if facts.segs_in > 0 {
        d.errno = ECONNREFUSED;
        return;
    }
    // No RST, no timeout: the application's close() passes the
    // sock_release hook first, which marks the socket; the kernel's
    // ICMP-triggered close does not.
    if let Some(o) = owner {
        d.flags |= o.flags & flags::CLOSED_BY_OWNER;
    }
}

fn remove_listener(facts: &SockFacts, owner: Option<&SockInfo>) {
    let key = listener_key(facts);
    // With SO_REUSEPORT several sockets share the key: only remove the entry
    // if it is this socket's.
    if let (Some(entry), Some(o)) = (LISTENERS.get_ptr(key), owner) {
        // SAFETY: pointer from a successful map lookup.
        if unsafe { (*entry).start_ns } == o.start_ns {
            let _ = LISTENERS.remove(key);
        }
    }
}

/// The callback's full socket; None for a request socket (which has no
/// storage, and whose callbacks we do not use).
#[inline(always)]
fn sock(ctx: &SockOpsContext) -> Option<*mut c_void> {
    // SAFETY: ctx.ops is the context pointer the kernel passed us; the
    // verifier rewrites the load (NULL unless the socket is a full one).
    let sk = unsafe { read_volatile(addr_of!((*ctx.ops).__bindgen_anon_2.sk)) };
    (!sk.is_null()).then_some(sk.cast())
}

/// The record of the callback's socket, if it has one.
#[inline(always)]
fn record<'a>(ctx: &SockOpsContext) -> Option<&'a mut SockInfo> {
    // SAFETY: `sk` is this callback's full socket, checked for null; the
    // socket lock serialises its callbacks.
    sock(ctx).and_then(|sk| unsafe { storage::get(sk) })
}

/// Gives the callback's socket a record made from `init`; None (counted)
/// if the kernel could not allocate it.
#[inline(always)]
fn create<'a>(ctx: &SockOpsContext, init: &SockInfo) -> Option<&'a mut SockInfo> {
    // SAFETY: as in `record`.
    let r = sock(ctx).and_then(|sk| unsafe { storage::get_or_create(sk, init) });
    if r.is_none() {
        count(Counter::SocketsMapFull);
    }
    r
}

/// The record of a socket whose owner was not captured.
#[inline(always)]
fn unknown_owner(now: u64) -> SockInfo {
    SockInfo {
        start_ns: now,
        state_ns: now,
        cgroup_id: 0,
        tgid: 0,
        pid: 0,
        syn_retransmits: 0,
        flags: flags::UNTRACKED,
        comm: [0; 16],
    }
}

/// Adds callback flags. The helper replaces the socket's whole flag set,
/// so keep what is there: other sock_ops programs (a CNI, another agent) may
/// rely on their own flags, and clearing ours (e.g. RTO once established)
/// could clear theirs. RTO callbacks only fire on timeouts, so keeping ours
/// costs little.
#[inline(always)]
fn set_flags(ctx: &SockOpsContext, wanted: u32) {
    let current = ctx.cb_flags();
    if current & wanted == wanted {
        return;
    }
    if ctx.set_cb_flags((current | wanted) as i32).is_err() {
        count(Counter::CbFlagsFailed);
    }
}
