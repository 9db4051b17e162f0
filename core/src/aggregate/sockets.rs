//! The table of sockets open right now, bounded, with per-flow summaries of
//! their states and ages. When both ends of a connection are on this node,
//! the client's socket and the server's accepted one are linked: a
//! connection is then judged once, and a server holding connections whose
//! client is gone can be told apart from one whose client still uses them.

use std::net::SocketAddr;

use ahash::{HashMap, HashSet};

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
    /// When the linked peer's socket closed. A server socket still
    /// established long after its client's closed never saw the close:
    /// the client is gone without a FIN.
    pub peer_closed_ns: Option<u64>,
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
            peer_closed_ns: None,
        }
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
    pub fn set_client_end(&mut self, id: u64, client: SocketAddr) -> Option<u64> {
        let s = self.sockets.get_mut(&id)?;
        if s.client == Some(client) {
            return s.peer;
        }
        s.client = Some(client);
        let direction = s.flow.direction;
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
        if let Some(p) = self.sockets.get_mut(&peer) {
            p.peer = Some(id);
            p.peer_closed_ns = None;
        }
        if let Some(s) = self.sockets.get_mut(&id) {
            s.peer = Some(peer);
        }
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
    pub fn insert(&mut self, id: u64, socket: TrackedSocket) -> bool {
        self.upsert(id, socket, |existing| *existing = socket)
    }

    /// Inserts `socket`, or lets `update` change the existing entry; when
    /// full, a new socket is rejected and counted. One hash lookup.
    pub fn upsert(
        &mut self,
        id: u64,
        socket: TrackedSocket,
        update: impl FnOnce(&mut TrackedSocket),
    ) -> bool {
        use std::collections::hash_map::Entry;
        let full = self.sockets.len() >= self.max;
        match self.sockets.entry(id) {
            Entry::Occupied(mut e) => {
                update(e.get_mut());
                true
            }
            Entry::Vacant(_) if full => {
                self.rejected += 1;
                false
            }
            Entry::Vacant(e) => {
                e.insert(socket);
                true
            }
        }
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut TrackedSocket> {
        self.sockets.get_mut(&id)
    }

    /// Removes a socket that closed at `now_ns`; its linked peer learns
    /// when.
    pub fn remove_at(&mut self, id: u64, now_ns: u64) -> Option<TrackedSocket> {
        let s = self.sockets.remove(&id)?;
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

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &TrackedSocket)> {
        self.sockets.iter()
    }

    /// The flows that have a socket in the table (cheaper than
    /// [`Self::summarize`] when only that is needed).
    pub fn open_flows(&self) -> HashSet<FlowKey> {
        self.sockets.values().map(|s| s.flow).collect()
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
        let now = 2 * 3600 * 1_000_000_000;
        t.insert(1, sock(80, tcp_state::ESTABLISHED, now - 5 * MINUTE_NS));
        t.insert(2, sock(80, tcp_state::CLOSE_WAIT, now - 90 * MINUTE_NS));
        t.insert(3, sock(80, tcp_state::ESTABLISHED, now - 1));
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
        assert!(t.insert(1, sock(1, tcp_state::ESTABLISHED, 0)));
        assert!(!t.insert(2, sock(1, tcp_state::ESTABLISHED, 0)));
        assert!(
            t.insert(1, sock(1, tcp_state::CLOSE_WAIT, 0)),
            "replacing is fine"
        );
        assert_eq!(t.rejected, 1);
    }
}
