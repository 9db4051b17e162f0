//! The table of sockets open right now, bounded, with per-flow summaries of
//! their states and ages. When both ends of a connection are on this node,
//! the client's socket and the server's accepted one are linked: a
//! connection is then judged once, and a server holding connections whose
//! client is gone can be told apart from one whose client still uses them.

use std::net::SocketAddr;

use ahash::HashMap;
use smallvec::SmallVec;

use sockeye_common::tcp_state;

use super::flows::{Direction, FlowKey};

/// Where the agent learned about a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From the kernel programs, with an exact open time.
    Kernel,
    /// From the start-up scan of /proc: it predates the agent, so its real
    /// age is unknown and counted from the agent's start (a lower bound).
    Preexisting,
}

#[derive(Debug, Clone, Copy)]
pub struct TrackedSocket {
    pub flow: FlowKey,
    pub state: u8,
    pub opened_ns: u64,
    /// When it entered `state` (the open time until a state change).
    pub state_since_ns: u64,
    /// The process that opened it (0 if unknown): a leak's evidence names it.
    pub tgid: u32,
    pub origin: Origin,
    /// The client's end of the connection, its address and port: the one
    /// thing both sockets of a connection agree on (a Service's DNAT
    /// changes what the client dialled, not where it dialled from). None
    /// while unknown (a connect not yet established).
    pub client: Option<SocketAddr>,
    /// The other socket of the connection, when it is on this node too.
    pub peer: Option<u64>,
    /// The cgroup of that other socket's owner (known after it closed).
    pub peer_cgroup: u64,
    /// When the linked peer's socket closed. A server socket still
    /// established long after its client's closed never saw the close:
    /// the client is gone without a FIN.
    pub peer_closed_ns: Option<u64>,
    /// Its place in its flow's list of sockets (kept by the table).
    slot: u32,
}

impl TrackedSocket {
    pub fn new(flow: FlowKey, state: u8, opened_ns: u64, tgid: u32, origin: Origin) -> Self {
        Self {
            flow,
            state,
            opened_ns,
            state_since_ns: opened_ns,
            tgid,
            origin,
            client: None,
            peer: None,
            peer_cgroup: 0,
            peer_closed_ns: None,
            slot: 0,
        }
    }
}

/// How many of a flow's sockets are in each state that matters, kept as
/// sockets come, change and go, so that an evaluation does not recount
/// them: on full tables that pass was a third of its time. LISTEN
/// sockets are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// Not closed, not listening.
    pub open: u64,
    /// Connects in progress (SYN sent, no answer yet).
    pub connecting: u64,
    pub established: u64,
    pub close_wait: u64,
    /// Sockets whose connection's other end is on this node too.
    pub linked: u64,
}

impl FlowCounts {
    /// Adds (`add`) or takes away what `s` counts for.
    fn count(&mut self, s: &TrackedSocket, add: bool) {
        if s.state == tcp_state::LISTEN {
            return;
        }
        let n = |c: &mut u64, yes: bool| {
            if yes {
                *c = if add { *c + 1 } else { c.saturating_sub(1) };
            }
        };
        n(&mut self.open, true);
        n(&mut self.connecting, s.state == tcp_state::SYN_SENT);
        n(&mut self.established, s.state == tcp_state::ESTABLISHED);
        n(&mut self.close_wait, s.state == tcp_state::CLOSE_WAIT);
        n(&mut self.linked, s.peer.is_some());
    }
}

/// One flow's sockets in the table: their counts, and their ids for what
/// only a pass over them can tell (ages, owners, peers). The table keeps
/// it in the flow's own stats ([`Home`]): that entry is touched by every
/// event of the flow anyway, so keeping it costs no lookup of its own,
/// and an evaluation reads it as it walks the flows.
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct FlowSockets {
    pub counts: FlowCounts,
    /// The empty slots.
    free: SmallVec<[u32; 2]>,
    /// Socket ids by slot (a socket knows its slot). A close empties its
    /// slot for the next socket to take, so no other socket moves: moving
    /// one meant finding it in the table, a cache miss per close. Inline
    /// for the few sockets most flows have.
    slots: SmallVec<[Option<u64>; 4]>,
}

/// A flow with more empty slots than this, and more empty than full, has
/// them squeezed out (after a burst of connections ended).
const FREE_KEPT: usize = 8;

impl FlowSockets {
    /// The ids of the flow's sockets (listening ones too).
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().flatten().copied()
    }

    /// No socket of the flow is in the table.
    pub fn is_empty(&self) -> bool {
        self.slots.len() == self.free.len()
    }

    /// Puts `id` in an empty slot (or a new one); returns the slot.
    fn add(&mut self, id: u64) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(id);
                slot
            }
            None => {
                self.slots.push(Some(id));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Empties `slot` if `id` is in it. True when the empty slots are now
    /// too many to keep (see [`FREE_KEPT`]).
    fn take(&mut self, slot: u32, id: u64) -> bool {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if *s == Some(id) {
                *s = None;
                self.free.push(slot);
            }
        }
        if self.is_empty() {
            self.slots.clear();
            self.free.clear();
            return false;
        }
        self.free.len() > FREE_KEPT && self.free.len() * 2 > self.slots.len()
    }
}

/// Where each flow's [`FlowSockets`] live (the aggregator's flow table).
/// The socket table's changes go through it, so the two always agree.
pub trait Home {
    /// `flow`'s entry, made if it has none.
    fn of(&mut self, flow: &FlowKey) -> &mut FlowSockets;
}

/// A table of its own, for tests of the socket table alone.
#[cfg(test)]
impl Home for HashMap<FlowKey, FlowSockets> {
    fn of(&mut self, flow: &FlowKey) -> &mut FlowSockets {
        self.entry(*flow).or_default()
    }
}

/// Ages and states of one flow's open sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpenSummary {
    /// Sockets not yet closed. TIME_WAIT connections are not in the table
    /// (see `time_wait`); the snapshot adds their count to `by_state`.
    pub open: u64,
    pub by_state: [u64; tcp_state::STATE_COUNT],
    pub oldest_age_ns: u64,
    pub older_than_1m: u64,
    pub older_than_10m: u64,
    pub older_than_1h: u64,
    pub preexisting: u64,
}

const MINUTE_NS: u64 = 60_000_000_000;

#[derive(Debug)]
pub struct SocketTable {
    sockets: HashMap<u64, TrackedSocket>,
    max: usize,
    /// Sockets not tracked because the table was full.
    pub rejected: u64,
    /// (direction, client end) -> socket: the client's socket is outbound,
    /// the server's accepted one inbound, both keyed by the client's end.
    ends: HashMap<(Direction, SocketAddr), u64>,
    /// Client ends claimed by a second socket while the first was still
    /// in the table (a port reused across namespaces with the same
    /// address): the newer one is linked.
    pub ends_reused: u64,
}

impl SocketTable {
    pub fn new(max: usize) -> Self {
        Self {
            sockets: HashMap::default(),
            max,
            rejected: 0,
            ends: HashMap::default(),
            ends_reused: 0,
        }
    }

    /// Records `id`'s client end and links it to the other socket of its
    /// connection if that one is on this node too. Returns the peer.
    pub fn set_client_end(
        &mut self,
        id: u64,
        client: SocketAddr,
        home: &mut impl Home,
    ) -> Option<u64> {
        let s = self.sockets.get_mut(&id)?;
        if s.client == Some(client) {
            return s.peer;
        }
        s.client = Some(client);
        let (direction, own_cgroup) = (s.flow.direction, s.flow.cgroup_id);
        if let Some(old) = self.ends.insert((direction, client), id) {
            if old != id {
                self.ends_reused += 1;
            }
        }
        let other = match direction {
            Direction::Outbound => Direction::Inbound,
            Direction::Inbound => Direction::Outbound,
        };
        let peer = *self.ends.get(&(other, client))?;
        let peer_cgroup = self.change(peer, home, |p| {
            p.peer = Some(id);
            p.peer_cgroup = own_cgroup;
            p.peer_closed_ns = None;
            p.flow.cgroup_id
        })?;
        self.change(id, home, |s| {
            s.peer = Some(peer);
            s.peer_cgroup = peer_cgroup;
        });
        Some(peer)
    }

    pub fn get(&self, id: u64) -> Option<&TrackedSocket> {
        self.sockets.get(&id)
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Inserts or replaces; when full, a new socket is rejected and counted.
    pub fn insert(&mut self, id: u64, socket: TrackedSocket, home: &mut impl Home) -> bool {
        self.upsert(id, socket, home, |existing| {
            let slot = existing.slot;
            *existing = socket;
            existing.slot = slot;
        })
    }

    /// Inserts `socket`, or lets `update` change the existing entry; when
    /// full, a new socket is rejected and counted. One hash lookup.
    pub fn upsert(
        &mut self,
        id: u64,
        mut socket: TrackedSocket,
        home: &mut impl Home,
        update: impl FnOnce(&mut TrackedSocket),
    ) -> bool {
        use std::collections::hash_map::Entry;
        let full = self.sockets.len() >= self.max;
        match self.sockets.entry(id) {
            Entry::Occupied(e) => {
                let s = e.into_mut();
                let before = *s;
                update(s);
                let after = *s;
                self.recount(id, &before, &after, home);
                true
            }
            Entry::Vacant(_) if full => {
                self.rejected += 1;
                false
            }
            Entry::Vacant(e) => {
                let f = home.of(&socket.flow);
                socket.slot = f.add(id);
                f.counts.count(&socket, true);
                e.insert(socket);
                true
            }
        }
    }

    /// A socket's new state, entered at `since_ns`; the socket as it is
    /// now (a copy: looking it up again would be a second hash lookup on
    /// every state change).
    pub fn set_state(
        &mut self,
        id: u64,
        state: u8,
        since_ns: u64,
        home: &mut impl Home,
    ) -> Option<TrackedSocket> {
        self.change(id, home, |s| {
            s.state = state;
            s.state_since_ns = since_ns;
            *s
        })
    }

    /// Lets `update` change socket `id`, and keeps its flow's entry true.
    /// Every change to what a socket counts for (its flow, state, peer)
    /// goes through here or `upsert`; nothing outside the table may change
    /// a socket at all.
    fn change<T>(
        &mut self,
        id: u64,
        home: &mut impl Home,
        update: impl FnOnce(&mut TrackedSocket) -> T,
    ) -> Option<T> {
        let s = self.sockets.get_mut(&id)?;
        let before = *s;
        let out = update(s);
        let after = *s;
        self.recount(id, &before, &after, home);
        Some(out)
    }

    /// Moves what socket `id` counts for from `before` to `after` (and to
    /// its new flow's entry if it changed flow).
    fn recount(
        &mut self,
        id: u64,
        before: &TrackedSocket,
        after: &TrackedSocket,
        home: &mut impl Home,
    ) {
        if before.flow != after.flow {
            self.leave(id, before, home);
            let f = home.of(&after.flow);
            let slot = f.add(id);
            f.counts.count(after, true);
            if let Some(s) = self.sockets.get_mut(&id) {
                s.slot = slot;
            }
            return;
        }
        let same = before.state == after.state && before.peer.is_some() == after.peer.is_some();
        if same {
            return;
        }
        let f = home.of(&after.flow);
        f.counts.count(before, false);
        f.counts.count(after, true);
    }

    /// Takes socket `s` (id `id`) out of its flow's entry.
    fn leave(&mut self, id: u64, s: &TrackedSocket, home: &mut impl Home) {
        let f = home.of(&s.flow);
        f.counts.count(s, false);
        if f.take(s.slot, id) {
            // Squeezed: each socket left learns its new slot. Rare (more
            // than half the slots empty), so a close costs O(1) on average.
            f.free.clear();
            f.slots.retain(|other| other.is_some());
            for (slot, other) in f.slots.iter().flatten().enumerate() {
                if let Some(m) = self.sockets.get_mut(other) {
                    m.slot = slot as u32;
                }
            }
        }
    }

    /// Removes a socket that closed at `now_ns`; its linked peer learns
    /// when.
    pub fn remove_at(
        &mut self,
        id: u64,
        now_ns: u64,
        home: &mut impl Home,
    ) -> Option<TrackedSocket> {
        let s = self.sockets.remove(&id)?;
        self.leave(id, &s, home);
        if let Some(client) = s.client {
            let key = (s.flow.direction, client);
            if self.ends.get(&key) == Some(&id) {
                self.ends.remove(&key);
            }
        }
        if let Some(p) = s.peer.and_then(|p| self.sockets.get_mut(&p)) {
            if p.peer == Some(id) {
                p.peer_closed_ns = Some(now_ns);
            }
        }
        Some(s)
    }

    /// The sockets of `ids` (a flow's [`FlowSockets::ids`]).
    pub fn of_ids<'s>(
        &'s self,
        ids: impl Iterator<Item = u64> + 's,
    ) -> impl Iterator<Item = (u64, &'s TrackedSocket)> + 's {
        ids.filter_map(|id| Some((id, self.sockets.get(&id)?)))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &TrackedSocket)> {
        self.sockets.iter()
    }

    /// Per-flow summaries of the sockets in the table.
    pub fn summarize(&self, now_ns: u64) -> HashMap<FlowKey, OpenSummary> {
        let mut out: HashMap<FlowKey, OpenSummary> = HashMap::default();
        for s in self.sockets.values() {
            let sum = out.entry(s.flow).or_default();
            if let Some(n) = sum.by_state.get_mut(s.state as usize) {
                *n += 1;
            }
            if s.state == tcp_state::LISTEN {
                continue;
            }
            sum.open += 1;
            if s.origin == Origin::Preexisting {
                sum.preexisting += 1;
            }
            let age = now_ns.saturating_sub(s.opened_ns);
            sum.oldest_age_ns = sum.oldest_age_ns.max(age);
            sum.older_than_1m += u64::from(age > MINUTE_NS);
            sum.older_than_10m += u64::from(age > 10 * MINUTE_NS);
            sum.older_than_1h += u64::from(age > 60 * MINUTE_NS);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::aggregate::flows::Direction;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            cgroup_id: 1,
            direction: Direction::Outbound,
            remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        }
    }

    fn sock(port: u16, state: u8, opened_ns: u64) -> TrackedSocket {
        TrackedSocket::new(key(port), state, opened_ns, 0, Origin::Kernel)
    }

    #[test]
    fn summarizes_ages_and_states() {
        let mut t = SocketTable::new(10);
        let mut home = HashMap::default();
        let now = 2 * 3600 * 1_000_000_000;
        t.insert(
            1,
            sock(80, tcp_state::ESTABLISHED, now - 5 * MINUTE_NS),
            &mut home,
        );
        t.insert(
            2,
            sock(80, tcp_state::CLOSE_WAIT, now - 90 * MINUTE_NS),
            &mut home,
        );
        t.insert(3, sock(80, tcp_state::ESTABLISHED, now - 1), &mut home);
        let s = &t.summarize(now)[&key(80)];
        assert_eq!(s.open, 3);
        assert_eq!(s.by_state[tcp_state::ESTABLISHED as usize], 2);
        assert_eq!(s.by_state[tcp_state::CLOSE_WAIT as usize], 1);
        assert_eq!(s.oldest_age_ns, 90 * MINUTE_NS);
        assert_eq!(
            (s.older_than_1m, s.older_than_10m, s.older_than_1h),
            (2, 1, 1)
        );
    }

    #[test]
    fn full_table_rejects_and_counts() {
        let mut t = SocketTable::new(1);
        let mut home = HashMap::default();
        assert!(t.insert(1, sock(1, tcp_state::ESTABLISHED, 0), &mut home));
        assert!(!t.insert(2, sock(1, tcp_state::ESTABLISHED, 0), &mut home));
        assert!(
            t.insert(1, sock(1, tcp_state::CLOSE_WAIT, 0), &mut home),
            "replacing is fine"
        );
        assert_eq!(t.rejected, 1);
    }

    /// After a burst, a flow's empty slots are squeezed out, and the
    /// sockets left still find theirs.
    #[test]
    fn a_bursts_empty_slots_are_squeezed_out() {
        let mut t = SocketTable::new(100);
        let mut home: HashMap<FlowKey, FlowSockets> = HashMap::default();
        for id in 0..40 {
            t.insert(id, sock(80, tcp_state::ESTABLISHED, 0), &mut home);
        }
        for id in (0..40).filter(|id| id % 8 != 0) {
            t.remove_at(id, 1, &mut home);
        }
        let f = &home[&key(80)];
        assert_eq!(f.counts.open, 5);
        assert!(
            f.slots.len() <= 2 * (5 + FREE_KEPT),
            "{} slots",
            f.slots.len()
        );
        for (id, s) in t.of_ids(f.ids()) {
            assert_eq!(f.slots[s.slot as usize], Some(id));
        }
        for id in [0, 8, 16, 24, 32] {
            t.remove_at(id, 2, &mut home);
        }
        assert!(home[&key(80)].is_empty());
        assert!(
            home[&key(80)].slots.is_empty(),
            "an empty flow keeps no slots"
        );
    }

    /// The counts and lists kept as sockets change agree with a recount of
    /// the table after every step of a long random mix of what the
    /// aggregator does: inserts, replacements (some to another flow),
    /// state changes, links of both ends, removals, rejections when full.
    #[test]
    fn flow_counts_kept_as_sockets_change_match_a_recount() {
        let mut t = SocketTable::new(48);
        let mut home: HashMap<FlowKey, FlowSockets> = HashMap::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let states = [
            tcp_state::SYN_SENT,
            tcp_state::ESTABLISHED,
            tcp_state::CLOSE_WAIT,
            tcp_state::FIN_WAIT1,
            tcp_state::LISTEN,
        ];
        let client = |n: u64| SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000 + n as u16));
        for step in 0..20_000u64 {
            let id = next(64);
            let port = 80 + next(4) as u16;
            let state = states[next(states.len() as u64) as usize];
            match next(6) {
                0 | 1 => {
                    let mut s = sock(port, state, step);
                    if next(2) == 0 {
                        s.flow.direction = Direction::Inbound;
                    }
                    t.insert(id, s, &mut home);
                }
                2 => {
                    t.upsert(id, sock(port, state, step), &mut home, |e| {
                        e.state = state;
                        e.flow.port = port;
                    });
                }
                3 => {
                    t.set_state(id, state, step, &mut home);
                }
                4 => {
                    t.set_client_end(id, client(next(8)), &mut home);
                }
                _ => {
                    t.remove_at(id, step, &mut home);
                }
            }
            // An empty entry may stay (the aggregator's flow stays too).
            let mut recount: HashMap<FlowKey, (FlowCounts, Vec<u64>)> = HashMap::default();
            for (id, s) in t.iter() {
                let e = recount.entry(s.flow).or_default();
                e.0.count(s, true);
                e.1.push(*id);
            }
            home.retain(|_, f| !f.is_empty());
            assert_eq!(recount.len(), home.len(), "step {step}: flows");
            for (flow, (counts, mut ids)) in recount {
                assert_eq!(home[&flow].counts, counts, "step {step}: {flow:?}");
                let mut listed: Vec<u64> = t.of_ids(home[&flow].ids()).map(|(id, _)| id).collect();
                let slots = &home[&flow].slots;
                for (id, s) in t.of_ids(home[&flow].ids()) {
                    assert_eq!(
                        slots[s.slot as usize],
                        Some(id),
                        "step {step}: slot of {id}"
                    );
                }
                ids.sort_unstable();
                listed.sort_unstable();
                assert_eq!(listed, ids, "step {step}: sockets of {flow:?}");
            }
        }
        assert!(t.rejected > 0, "the mix filled the table");
    }
}
