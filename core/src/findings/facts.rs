//! Facts about the sockets open right now, per flow, from one pass over
//! the socket table: what the detectors need beyond the flow counters.

use ahash::HashMap;
use smallvec::SmallVec;

use sockeye_common::tcp_state;

use crate::aggregate::{flows::FlowKey, sockets::SocketTable};

/// Processes remembered per flow (the rest are counted as "others").
const OWNERS: usize = 4;
/// Peer workloads remembered per flow.
const PEERS: usize = 8;
/// A connection whose client closed its socket this long ago, and whose
/// server side is still established, never saw the close: a dead peer.
/// (A normal close reaches the server within a round trip.)
pub const PEER_GONE_NS: u64 = 3_000_000_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowSockets {
    /// Not closed, not listening.
    pub open: u64,
    /// Connects in progress (SYN sent, no answer yet).
    pub connecting: u64,
    pub oldest_connecting_since_ns: Option<u64>,
    pub oldest_open_since_ns: Option<u64>,
    /// Open longer than the age asked for.
    pub older_than: u64,
    pub close_wait: u64,
    /// In CLOSE_WAIT for at least the wait asked for.
    pub close_wait_waited: u64,
    pub oldest_close_wait_since_ns: Option<u64>,
    /// (pid, sockets) of the processes that opened them, most first.
    pub owners: SmallVec<[(u32, u64); OWNERS]>,
    /// Sockets opened by processes past the first few, or unknown (0).
    pub other_owners: u64,
    pub established: u64,
    /// Sockets whose connection's other end is on this node too.
    pub linked: u64,
    /// Of them, established still while their peer's socket closed more
    /// than [`PEER_GONE_NS`] ago: the peer left without a FIN.
    pub peer_closed: u64,
    /// (peer cgroup, linked sockets, of them with the peer's socket closed,
    /// oldest open ns), most sockets first.
    pub peers: Vec<PeerSockets>,
    /// Linked sockets of peers past the first few.
    pub other_peers: u64,
}

/// A flow's sockets whose other end is one workload on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerSockets {
    pub cgroup_id: u64,
    pub sockets: u64,
    /// Established here, their peer's socket closed long ago.
    pub peer_closed: u64,
    pub oldest_opened_ns: u64,
}

/// Ages that decide what counts.
pub struct Ages {
    pub older_than_ns: u64,
    pub close_wait_ns: u64,
}

/// `flows` is how many flows there are: the map is sized once for them
/// (growing it as sockets came showed as rehashing in the profile of an
/// evaluation on full tables).
pub fn collect(
    sockets: &SocketTable,
    flows: usize,
    now_ns: u64,
    ages: &Ages,
) -> HashMap<FlowKey, FlowSockets> {
    let mut out: HashMap<FlowKey, FlowSockets> =
        HashMap::with_capacity_and_hasher(flows, Default::default());
    let min = |a: Option<u64>, b: u64| Some(a.map_or(b, |a| a.min(b)));
    for (_, s) in sockets.iter() {
        if s.state == tcp_state::LISTEN {
            continue;
        }
        let f = out.entry(s.flow).or_default();
        f.open += 1;
        f.oldest_open_since_ns = min(f.oldest_open_since_ns, s.opened_ns);
        f.older_than += u64::from(now_ns.saturating_sub(s.opened_ns) >= ages.older_than_ns);
        match s.state {
            tcp_state::SYN_SENT => {
                f.connecting += 1;
                f.oldest_connecting_since_ns = min(f.oldest_connecting_since_ns, s.state_since_ns);
            }
            tcp_state::CLOSE_WAIT => {
                f.close_wait += 1;
                if now_ns.saturating_sub(s.state_since_ns) >= ages.close_wait_ns {
                    f.close_wait_waited += 1;
                    f.oldest_close_wait_since_ns =
                        min(f.oldest_close_wait_since_ns, s.state_since_ns);
                }
            }
            _ => {}
        }
        if s.state == tcp_state::ESTABLISHED {
            f.established += 1;
        }
        if s.peer.is_some() {
            f.linked += 1;
            let gone = s.state == tcp_state::ESTABLISHED
                && s.peer_closed_ns
                    .is_some_and(|t| now_ns.saturating_sub(t) >= PEER_GONE_NS);
            f.peer_closed += u64::from(gone);
            let room = f.peers.len() < PEERS;
            match f.peers.iter_mut().find(|p| p.cgroup_id == s.peer_cgroup) {
                Some(p) => {
                    p.sockets += 1;
                    p.peer_closed += u64::from(gone);
                    p.oldest_opened_ns = p.oldest_opened_ns.min(s.opened_ns);
                }
                None if room => f.peers.push(PeerSockets {
                    cgroup_id: s.peer_cgroup,
                    sockets: 1,
                    peer_closed: u64::from(gone),
                    oldest_opened_ns: s.opened_ns,
                }),
                None => f.other_peers += 1,
            }
        }
        let room = f.owners.len() < OWNERS;
        match f.owners.iter_mut().find(|(pid, _)| *pid == s.tgid) {
            Some((_, n)) => *n += 1,
            None if s.tgid != 0 && room => f.owners.push((s.tgid, 1)),
            None => f.other_owners += 1,
        }
    }
    for f in out.values_mut() {
        f.owners.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        f.peers.sort_by(|a, b| {
            b.sockets
                .cmp(&a.sockets)
                .then(a.cgroup_id.cmp(&b.cgroup_id))
        });
    }
    out
}
