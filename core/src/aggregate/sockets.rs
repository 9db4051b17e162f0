//! The table of sockets open right now, bounded, with per-flow summaries of
//! their states and ages.

use ahash::{HashMap, HashSet};

use sockeye_common::tcp_state;

use super::flows::FlowKey;

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
}

impl SocketTable {
    pub fn new(max: usize) -> Self {
        Self {
            sockets: HashMap::default(),
            max,
            rejected: 0,
        }
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

    pub fn remove(&mut self, id: u64) -> Option<TrackedSocket> {
        self.sockets.remove(&id)
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
        TrackedSocket {
            flow: key(port),
            state,
            opened_ns,
            state_since_ns: opened_ns,
            tgid: 0,
            origin: Origin::Kernel,
        }
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
