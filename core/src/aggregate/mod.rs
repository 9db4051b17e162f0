//! Turns socket events into per-flow evidence: connect latency, failures by
//! cause, open sockets by state and age, opens and closes, bytes.

pub mod cause;
pub mod flows;
pub mod histogram;
pub mod listeners;
pub mod outage;
pub mod resources;
pub mod retired;
pub mod sockets;
pub mod time_wait;

use std::net::SocketAddr;

use ahash::HashMap;

use sockeye_common::{
    event::{flags, EventKind},
    tcp_state,
};

use crate::event::{comm_bytes, Event};
use cause::FailureCause;
use flows::{Direction, FlowKey, FlowStats};
use listeners::Listeners;
use resources::ResourceFailures;
use retired::Retired;
use sockets::{FlowCounts, FlowSockets, Home, Origin, SocketTable, TrackedSocket};
use time_wait::TimeWait;

/// Memory bounds of the aggregator.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_sockets: usize,
    pub max_flows: usize,
    /// A flow with no open socket and no event for this long is forgotten.
    pub flow_idle_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sockets: 65_536,
            max_flows: 16_384,
            flow_idle_ns: 15 * 60 * 1_000_000_000,
        }
    }
}

/// User-side losses, exported next to the kernel's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserDrops {
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// Sockets not tracked because the socket table was full.
    pub socket_table_full: u64,
    /// TIME_WAIT connections not counted because the bucket limit was hit.
    pub time_wait_buckets_full: u64,
    /// Flows evicted (with their history) to admit new ones.
    pub flows_evicted: u64,
    /// Resource-failure records that could not be decoded.
    pub resource_decode_errors: u64,
    /// Resource-failure keys forgotten (with their counts) to admit new ones.
    pub resource_keys_evicted: u64,
}

#[derive(Debug)]
pub struct Aggregator {
    pub flows: HashMap<FlowKey, FlowStats>,
    pub sockets: SocketTable,
    pub listeners: Listeners,
    pub time_wait: TimeWait,
    limits: Limits,
    pub events_received: u64,
    /// cgroup ids met for the first time (a new flow or listener) since the
    /// caller last took them: resolve them now, while the cgroup exists.
    pub new_cgroups: Vec<u64>,
    flows_evicted: u64,
    pub decode_errors: u64,
    /// Removed flows whose last counts the metrics have not taken yet.
    pub retired: Retired,
    /// Connects and socket() calls that ran out of ports or fds.
    pub resources: ResourceFailures,
    /// The socket entries of flows evicted while they had sockets open,
    /// until the flow comes back (its next event) or its sockets close:
    /// evicting a flow forgets its history, not what it holds.
    orphans: HashMap<FlowKey, FlowSockets>,
}

/// Where the socket table keeps each flow's sockets: in the flow's stats,
/// or aside for a flow evicted while it had some.
struct Homes<'a> {
    flows: &'a mut HashMap<FlowKey, FlowStats>,
    orphans: &'a mut HashMap<FlowKey, FlowSockets>,
}

impl Home for Homes<'_> {
    fn of(&mut self, flow: &FlowKey) -> &mut FlowSockets {
        if let Some(f) = self.flows.get_mut(flow) {
            return &mut f.sockets;
        }
        self.orphans.entry(*flow).or_default()
    }
}

impl Aggregator {
    pub fn new(limits: Limits) -> Self {
        Self {
            flows: HashMap::default(),
            sockets: SocketTable::new(limits.max_sockets),
            listeners: Listeners::default(),
            // One bucket per (second, flow): a minute of max_flows flows.
            time_wait: TimeWait::new(limits.max_flows.saturating_mul(60)),
            limits,
            events_received: 0,
            new_cgroups: Vec::new(),
            flows_evicted: 0,
            decode_errors: 0,
            retired: Retired::default(),
            resources: ResourceFailures::default(),
            orphans: HashMap::default(),
        }
    }

    /// The socket table, with the flows' entries it keeps.
    fn sockets_and_homes(&mut self) -> (&mut SocketTable, Homes<'_>) {
        (
            &mut self.sockets,
            Homes {
                flows: &mut self.flows,
                orphans: &mut self.orphans,
            },
        )
    }

    /// The counts of `flow`'s tracked sockets (also when the flow was
    /// evicted while it had some).
    pub fn socket_counts(&self, flow: &FlowKey) -> FlowCounts {
        match self.flows.get(flow) {
            Some(f) => f.sockets.counts,
            None => self.orphans.get(flow).map(|s| s.counts).unwrap_or_default(),
        }
    }

    /// A tracked socket's new state, seen at `since_ns` (the start-up
    /// scan's refresh; the kernel's changes come as events).
    pub fn set_socket_state(&mut self, id: u64, state: u8, since_ns: u64) {
        let (sockets, mut homes) = self.sockets_and_homes();
        sockets.set_state(id, state, since_ns, &mut homes);
    }

    pub fn drops(&self) -> UserDrops {
        UserDrops {
            decode_errors: self.decode_errors,
            socket_table_full: self.sockets.rejected,
            time_wait_buckets_full: self.time_wait.dropped,
            flows_evicted: self.flows_evicted,
            resource_decode_errors: self.resources.decode_errors,
            resource_keys_evicted: self.resources.evicted,
        }
    }

    /// Decodes and applies one ring buffer record; bad records are counted.
    pub fn handle_record(&mut self, bytes: &[u8]) {
        match Event::decode(bytes) {
            Ok(ev) => self.handle(&ev),
            Err(e) => {
                self.decode_errors += 1;
                log::debug!("dropping undecodable event: {e}");
            }
        }
    }

    pub fn handle(&mut self, ev: &Event) {
        self.events_received += 1;
        let r = &ev.raw;
        match ev.kind {
            EventKind::Listen => {
                self.new_cgroups.push(r.cgroup_id);
                self.listeners.started(ev);
            }
            EventKind::ConnectStart => {
                let key = self.outbound_key(ev);
                self.flow(key, ev);
                self.track(ev, key, tcp_state::SYN_SENT, r.ts_ns);
            }
            EventKind::Established => {
                let key = self.outbound_key(ev);
                let flow = self.flow(key, ev);
                flow.record_open();
                flow.outage.succeeded(r.ts_ns);
                flow.syn_retransmits += u64::from(r.syn_retransmits);
                if r.duration_ns > 0 {
                    flow.latency.record(r.duration_ns);
                }
                // The connect started when the socket entered SYN_SENT.
                let opened = r.ts_ns.saturating_sub(r.duration_ns);
                self.track(ev, key, tcp_state::ESTABLISHED, opened);
            }
            EventKind::Accepted => {
                self.listeners.saw_local_addr(r.netns_cookie, ev.local);
                let key = self.inbound_key(ev);
                self.flow(key, ev).record_open();
                self.track(ev, key, tcp_state::ESTABLISHED, r.ts_ns);
            }
            EventKind::StateChange => {
                let (sockets, mut homes) = self.sockets_and_homes();
                if let Some(s) = sockets.set_state(r.cookie, r.new_state, r.ts_ns, &mut homes) {
                    let (key, opened) = (s.flow, s.opened_ns);
                    let flow = self.flow(key, ev);
                    // The client closed an accepted connection this side had
                    // not answered yet: it gave up waiting.
                    if r.new_state == tcp_state::CLOSE_WAIT
                        && key.direction == Direction::Inbound
                        && r.bytes_acked == 0
                    {
                        if flow.unanswered.len() == flows::UNANSWERED_KEPT {
                            flow.unanswered.pop_front();
                        }
                        flow.unanswered
                            .push_back((r.ts_ns, r.ts_ns.saturating_sub(opened)));
                    }
                }
            }
            EventKind::Closed => self.closed(ev),
        }
    }

    fn closed(&mut self, ev: &Event) {
        let r = &ev.raw;
        if r.old_state == tcp_state::LISTEN {
            self.listeners.stopped(ev);
            return;
        }
        let (sockets, mut homes) = self.sockets_and_homes();
        let tracked = sockets.remove_at(r.cookie, r.ts_ns, &mut homes);
        // A close of a socket we never saw open (a failed connect, or the
        // table was full) still counts, against a best-guess flow.
        let key = match &tracked {
            Some(s) => s.flow,
            None => self.outbound_key(ev),
        };
        let peer_cgroup = tracked.as_ref().map_or(0, |s| s.peer_cgroup);
        let flow = self.flow(key, ev);
        if peer_cgroup != 0 {
            flow.peer_cgroup = peer_cgroup;
        }
        if r.old_state == tcp_state::SYN_SENT {
            let cause = FailureCause::classify(r.errno, r.flags);
            if cause == FailureCause::Other {
                log::debug!("connect failed with errno {}", r.errno);
            }
            flow.record_failure(cause);
            flow.outage.failed(cause, r.ts_ns);
            flow.syn_retransmits += u64::from(r.syn_retransmits);
            return;
        }
        flow.closed += 1;
        flow.window.closed += 1;
        flow.bytes_sent += r.bytes_acked;
        flow.bytes_received += r.bytes_received;
        if r.duration_ns > 0 && r.duration_ns <= flows::SHORT_SESSION_NS {
            match closed_first(r.old_state, key.direction) {
                Some(Side::Peer) => {
                    if r.bytes_received <= flows::FEW_BYTES {
                        flow.short_closed_by_peer += 1;
                    }
                    if key.direction == Direction::Inbound
                        && (1..=flows::FEW_BYTES).contains(&r.bytes_acked)
                    {
                        flow.short_answered_closed_by_peer += 1;
                    }
                }
                Some(Side::Here) if r.bytes_acked <= flows::FEW_BYTES => {
                    flow.short_closed_here += 1;
                }
                _ => {}
            }
        }
        if ev.has_flag(flags::ENTERED_TIME_WAIT) {
            self.time_wait.add(key, r.ts_ns);
        }
    }

    fn outbound_key(&self, ev: &Event) -> FlowKey {
        Self::key(ev, Direction::Outbound)
    }

    fn inbound_key(&self, ev: &Event) -> FlowKey {
        Self::key(ev, Direction::Inbound)
    }

    fn key(ev: &Event, direction: Direction) -> FlowKey {
        let r = &ev.raw;
        FlowKey::new(
            r.cgroup_id,
            direction,
            ev.remote,
            r.local_port,
            r.remote_port,
        )
    }

    fn track(&mut self, ev: &Event, flow: FlowKey, state: u8, opened_ns: u64) {
        let mut socket = TrackedSocket::new(flow, state, opened_ns, ev.raw.tgid, Origin::Kernel);
        socket.state_since_ns = ev.raw.ts_ns;
        let (sockets, mut homes) = self.sockets_and_homes();
        sockets.upsert(ev.raw.cookie, socket, &mut homes, |existing| {
            // Keep the original open time (ConnectStart came first).
            existing.state = state;
            existing.state_since_ns = ev.raw.ts_ns;
            existing.flow = flow;
            if ev.raw.tgid != 0 {
                existing.tgid = ev.raw.tgid;
            }
        });
        // The client's end: our own end going out, the peer's coming in.
        let (addr, port) = match flow.direction {
            Direction::Outbound => (ev.local, ev.raw.local_port),
            Direction::Inbound => (ev.remote, ev.raw.remote_port),
        };
        if port != 0 && !addr.is_unspecified() {
            sockets.set_client_end(ev.raw.cookie, SocketAddr::new(addr, port), &mut homes);
        }
    }

    /// The flow's stats, created if needed (evicting the stalest idle flow
    /// when the table is full).
    fn flow(&mut self, key: FlowKey, ev: &Event) -> &mut FlowStats {
        self.flow_seen(key, ev.raw.ts_ns, ev.raw.tgid, ev.raw.comm)
    }

    /// The flow's stats, created if needed (evicting when the table is
    /// full, and noting a new cgroup), touched by `tgid`/`comm` at `ts_ns`.
    fn flow_seen(&mut self, key: FlowKey, ts_ns: u64, tgid: u32, comm: [u8; 16]) -> &mut FlowStats {
        self.make_room_for(&key);
        let new_cgroups = &mut self.new_cgroups;
        let orphans = &mut self.orphans;
        let flow = self.flows.entry(key).or_insert_with(|| {
            new_cgroups.push(key.cgroup_id);
            FlowStats {
                // Back after an eviction: its sockets were kept aside.
                sockets: if orphans.is_empty() {
                    FlowSockets::default()
                } else {
                    orphans.remove(&key).unwrap_or_default()
                },
                ..FlowStats::default()
            }
        });
        flow.touch(ts_ns, tgid, comm);
        flow
    }

    /// Evicts before inserting a new key into a full flow table. The length
    /// check comes first so the common case costs no extra lookup.
    fn make_room_for(&mut self, key: &FlowKey) {
        if self.flows.len() >= self.limits.max_flows && !self.flows.contains_key(key) {
            self.evict_one();
        }
    }

    /// Adds a socket found by the start-up scan, owned by `tgid`/`comm`,
    /// with the client's end of its connection (see [`TrackedSocket::client`]).
    #[expect(
        clippy::too_many_arguments,
        reason = "one socket's facts, from one scan entry"
    )]
    pub fn add_preexisting(
        &mut self,
        id: u64,
        flow: FlowKey,
        state: u8,
        now_ns: u64,
        tgid: u32,
        comm: &str,
        client: Option<SocketAddr>,
    ) {
        let f = self.flow_seen(flow, now_ns, tgid, comm_bytes(comm));
        if flow.direction == Direction::Outbound && state != tcp_state::SYN_SENT {
            f.outage.connected();
        }
        let socket = TrackedSocket::new(flow, state, now_ns, tgid, Origin::Preexisting);
        self.insert_socket(id, socket);
        if let Some(c) = client {
            let (sockets, mut homes) = self.sockets_and_homes();
            sockets.set_client_end(id, c, &mut homes);
        }
    }

    /// Tracks a socket learned of other than by its events (the start-up
    /// scan), or replaces it; false if the table is full (counted).
    pub fn insert_socket(&mut self, id: u64, socket: TrackedSocket) -> bool {
        let (sockets, mut homes) = self.sockets_and_homes();
        sockets.insert(id, socket, &mut homes)
    }

    /// Evicts the stalest sixteenth of the flows, preferring flows without
    /// open sockets. Evicting in batches keeps the O(flows) scan rare when
    /// new flows keep arriving at a full table.
    fn evict_one(&mut self) {
        let mut candidates: Vec<(bool, u64, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, f)| (!f.sockets.is_empty(), f.last_activity_ns, *k))
            .collect();
        let n = (self.limits.max_flows / 16).clamp(1, candidates.len().max(1));
        if candidates.len() > n {
            candidates.select_nth_unstable(n);
        }
        for (_, _, k) in candidates.into_iter().take(n) {
            if let Some(mut f) = self.flows.remove(&k) {
                if !f.sockets.is_empty() {
                    self.orphans.insert(k, std::mem::take(&mut f.sockets));
                }
                self.retired.keep(k, f);
            }
            self.flows_evicted += 1;
        }
    }

    /// Housekeeping: expires TIME_WAIT counts and forgets idle flows.
    pub fn sweep(&mut self, now_ns: u64) {
        self.time_wait.expire(now_ns);
        self.orphans.retain(|_, s| !s.is_empty());
        let idle = self.limits.flow_idle_ns;
        let tw = &self.time_wait;
        let gone: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(k, f)| {
                f.sockets.is_empty()
                    && tw.count(k) == 0
                    && now_ns.saturating_sub(f.last_activity_ns) >= idle
            })
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(f) = self.flows.remove(&k) {
                self.retired.keep(k, f);
            }
        }
    }

    /// Closes a tracked socket whose close event never came (the kernel no
    /// longer has it: `reconcile`): it leaves the table and counts as a
    /// close of its flow. Returns whether it was tracked.
    pub fn forget_socket(&mut self, id: u64, now_ns: u64) -> bool {
        let (sockets, mut homes) = self.sockets_and_homes();
        let Some(s) = sockets.remove_at(id, now_ns, &mut homes) else {
            return false;
        };
        if let Some(f) = self.flows.get_mut(&s.flow) {
            f.closed += 1;
            f.window.closed += 1;
            f.last_activity_ns = now_ns;
        }
        true
    }

    /// Starts a new output window.
    pub fn reset_window(&mut self) {
        for f in self.flows.values_mut() {
            f.window = Default::default();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

/// One end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Here,
    Peer,
}

/// Which side closed a connection first, from the state it closed from:
/// the peer's FIN came first if we closed from LAST_ACK or CLOSE_WAIT; ours
/// did if we went through FIN_WAIT or CLOSING. A reset from ESTABLISHED is
/// the server's doing (it closed with the request unread): the peer's for a
/// client, ours for a server.
fn closed_first(old_state: u8, direction: Direction) -> Option<Side> {
    match old_state {
        tcp_state::LAST_ACK | tcp_state::CLOSE_WAIT => Some(Side::Peer),
        tcp_state::FIN_WAIT1 | tcp_state::FIN_WAIT2 | tcp_state::CLOSING | tcp_state::TIME_WAIT => {
            Some(Side::Here)
        }
        tcp_state::ESTABLISHED => Some(match direction {
            Direction::Outbound => Side::Peer,
            Direction::Inbound => Side::Here,
        }),
        _ => None,
    }
}
