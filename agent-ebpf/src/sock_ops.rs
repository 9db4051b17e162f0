//! The TCP lifecycle from a sock_ops program on the cgroup v2 root.
//!
//! sock_ops is a stable, cgroup-attached hook that sees every TCP socket of
//! every cgroup below the root: connect start, active and passive
//! establishment, listen, retransmission timeouts and (once we ask for them
//! per socket) every state change. Many callbacks run in softirq context,
//! where "the current task" is whoever was interrupted, and sock_ops cannot
//! read a socket's cgroup (`bpf_sk_cgroup_id` is not allowed there). So the
//! owner (cgroup, process, command) is captured where the kernel runs in the
//! owner's own context (connect, listen), kept per socket, and inherited by
//! accepted sockets from their listener; the agent seeds the listener map
//! with listeners that predate it.
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
//! Per-socket state is in hash maps keyed by the socket cookie, not in
//! socket storage (`BPF_MAP_TYPE_SK_STORAGE`): creating a socket's storage
//! measured 1.2 us on 6.18 (two memory-accounted allocations, and a third
//! when a listener's is copied to each accepted socket), more than the
//! hash inserts, lookups and deletes it saves.
//!
//! # Minimum kernel version
//! sock_ops with `bytes_acked`/`bytes_received`/`segs_in`: 4.16; `TCP_LISTEN_CB`: 4.19;
//! `bpf_get_netns_cookie` in sock_ops: 5.8.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB,
    },
    helpers::generated::bpf_get_socket_cookie,
    macros::sock_ops,
    programs::SockOpsContext,
    EbpfContext as _,
};
use sockeye_common::{
    counters::Counter,
    event::{flags, EventKind, SockInfo},
    tcp_state,
};

use crate::{
    emit::{detail, emit, listener_key, now_ns, Detail},
    maps::{count, LISTENERS, SOCKETS},
    owners,
    sock_facts::{facts, SockFacts},
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

/// Records the owner; emits nothing. Most connects finish (or fail) within
/// a round trip, and their Established/Closed event carries the start time,
/// so a ConnectStart event per connect would be pure overhead. A connect
/// still pending at its first SYN retransmission is announced by `on_rto`.
#[inline(never)]
fn on_connect(ctx: &SockOpsContext) {
    // SAFETY: helper taking the sock_ops context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    insert_socket(cookie, &owners::take(cookie, now_ns()));
    // RTO callbacks tell SYN retransmissions and connect timeouts apart.
    set_flags(ctx, BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG);
}

#[inline(never)]
fn on_active_established(ctx: &SockOpsContext) {
    let Some(facts) = facts(ctx, true) else {
        return;
    };
    set_flags(ctx, BPF_SOCK_OPS_STATE_CB_FLAG);
    let now = now_ns();
    let mut d = detail(now, EventKind::Established, tcp_state::ESTABLISHED);
    d.old_state = tcp_state::SYN_SENT;
    let owner = SOCKETS.get_ptr_mut(facts.cookie).map(|p| {
        // SAFETY: pointer from a successful map lookup; the socket lock
        // serialises this socket's callbacks.
        unsafe {
            d.duration_ns = now.saturating_sub((*p).start_ns);
            d.old_state_ns = (*p).start_ns;
            (*p).state_ns = now;
            &*p
        }
    });
    emit(&facts, owner, &d);
}

#[inline(never)]
fn on_passive_established(ctx: &SockOpsContext) {
    let Some(facts) = facts(ctx, true) else {
        return;
    };
    set_flags(ctx, BPF_SOCK_OPS_STATE_CB_FLAG);
    let key = listener_key(&facts);
    let now = now_ns();
    let mut info = match LISTENERS.get_ptr(key) {
        // SAFETY: pointer from a successful map lookup.
        Some(l) => unsafe { *l },
        // No record of the listener: its map was full, or it predates the
        // agent and could not be seeded. The owner is unknown; say so.
        None => SockInfo {
            start_ns: 0,
            state_ns: 0,
            cgroup_id: 0,
            tgid: 0,
            pid: 0,
            syn_retransmits: 0,
            flags: flags::UNTRACKED,
            comm: [0; 16],
        },
    };
    info.start_ns = now;
    info.state_ns = now;
    info.syn_retransmits = 0;
    let tracked = insert_socket(facts.cookie, &info);
    let mut d = detail(now, EventKind::Accepted, tcp_state::ESTABLISHED);
    d.old_state = tcp_state::SYN_RECV;
    d.flags = info.flags;
    emit(&facts, tracked.then_some(&info), &d);
}

#[inline(never)]
fn on_listen(ctx: &SockOpsContext) {
    let Some(facts) = facts(ctx, true) else {
        return;
    };
    let now = now_ns();
    let info = owners::take(facts.cookie, now);
    let tracked = insert_socket(facts.cookie, &info);
    // By reference: by value, `info` is copied onto the stack once more, and
    // on_listen's frame plus its callee's no longer fit 6.1's 512-byte
    // stack limit for a call chain (the kernel matrix found it).
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "a by-value copy costs stack that 6.1's verifier does not allow"
    )]
    let inserted = LISTENERS.insert(listener_key(&facts), &info, 0);
    if inserted.is_err() {
        count(Counter::ListenersMapFull);
    }
    // The STATE flag makes the listener's close (LISTEN -> CLOSE) visible, and
    // accepted children inherit it.
    set_flags(ctx, BPF_SOCK_OPS_STATE_CB_FLAG);
    emit(
        &facts,
        tracked.then_some(&info),
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
    let (owner, old_state_ns) = match SOCKETS.get_ptr_mut(facts.cookie) {
        // SAFETY: pointer from a successful map lookup; one socket's
        // callbacks are serialised by the socket lock.
        Some(p) => unsafe {
            let since = (*p).state_ns;
            (*p).state_ns = now;
            (Some(&*p), since)
        },
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
        // lands here; it is rare enough not to pay a map lookup per close.)
        d.flags |= flags::ENTERED_TIME_WAIT;
    }
    if old == tcp_state::LISTEN {
        remove_listener(&facts, owner);
    }
    emit(&facts, owner, &d);
    // Ignore the result: the socket may never have been in the map.
    let _ = SOCKETS.remove(facts.cookie);
}

#[inline(never)]
fn on_rto(ctx: &SockOpsContext) {
    // SAFETY: ctx.ops is the context pointer the kernel passed us.
    let state = unsafe { read_volatile(addr_of!((*ctx.ops).state)) } as u8;
    if state != tcp_state::SYN_SENT {
        return;
    }
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(info) = SOCKETS.get_ptr_mut(cookie) else {
        return;
    };
    // args[2] is "expired": the kernel is giving up on this connect.
    let expired = ctx.arg(2) != 0;
    // SAFETY: pointer from a successful map lookup; one socket's callbacks are
    // serialised by the socket lock.
    let first_retransmit = unsafe {
        if expired {
            (*info).flags |= flags::CONNECT_TIMED_OUT;
            false
        } else {
            (*info).syn_retransmits += 1;
            (*info).syn_retransmits == 1
        }
    };
    // This connect is slow (its first SYN got no answer within the initial
    // RTO): make it visible as pending now rather than when it ends.
    if first_retransmit {
        if let Some(facts) = facts(ctx, true) {
            // SAFETY: as above.
            let owner = unsafe { &*info };
            let start = owner.start_ns;
            emit(
                &facts,
                Some(owner),
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

/// Inserts (or replaces) the socket's record; false (counted) if the map is
/// full. Callers emit from their own copy rather than look the entry up again.
#[inline(always)]
fn insert_socket(cookie: u64, info: &SockInfo) -> bool {
    if SOCKETS.insert(cookie, info, 0).is_err() {
        count(Counter::SocketsMapFull);
        return false;
    }
    true
}
