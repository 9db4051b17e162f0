//! Facts about one flow's open sockets that only a pass over them can
//! tell: ages, owners, peers. Their counts by state are kept by the socket
//! table as sockets change (`aggregate::sockets::FlowCounts`), with the ids
//! of each flow's sockets that keep this pass to the flow's own; these are
//! gathered only for the flows a detector looks closer at.

use smallvec::SmallVec;

use sockeye_common::tcp_state;

use crate::aggregate::sockets::SocketTable;

/// Processes remembered per flow (the rest are counted as "others").
const OWNERS: usize = 4;
/// Peer workloads remembered per flow.
const PEERS: usize = 8;
/// A connection whose client closed its socket this long ago, and whose
/// server side is still established, never saw the close: a dead peer.
/// (A normal close reaches the server within a round trip.)
pub const PEER_GONE_NS: u64 = 3_000_000_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SocketFacts {
    pub oldest_connecting_since_ns: Option<u64>,
    pub oldest_open_since_ns: Option<u64>,
    /// Open longer than the age asked for.
    pub older_than: u64,
    /// In CLOSE_WAIT for at least the wait asked for.
    pub close_wait_waited: u64,
    pub oldest_close_wait_since_ns: Option<u64>,
    /// (pid, sockets) of the processes that opened them, most first.
    pub owners: SmallVec<[(u32, u64); OWNERS]>,
    /// Sockets opened by processes past the first few, or unknown (0).
    pub other_owners: u64,
    /// Linked sockets established still while their peer's socket closed
    /// more than [`PEER_GONE_NS`] ago: the peer left without a FIN.
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
#[derive(Debug, Clone, Copy)]
pub struct Ages {
    pub older_than_ns: u64,
    pub close_wait_ns: u64,
}

/// One pass over a flow's sockets (`ids`: its
/// [`FlowSockets::ids`](crate::aggregate::sockets::FlowSockets::ids)).
pub fn of_flow(
    sockets: &SocketTable,
    ids: impl Iterator<Item = u64>,
    now_ns: u64,
    ages: &Ages,
) -> SocketFacts {
    let mut f = SocketFacts::default();
    let min = |a: Option<u64>, b: u64| Some(a.map_or(b, |a| a.min(b)));
    for (_, s) in sockets.of_ids(ids) {
        if s.state == tcp_state::LISTEN {
            continue;
        }
        f.oldest_open_since_ns = min(f.oldest_open_since_ns, s.opened_ns);
        f.older_than += u64::from(now_ns.saturating_sub(s.opened_ns) >= ages.older_than_ns);
        match s.state {
            tcp_state::SYN_SENT => {
                f.oldest_connecting_since_ns = min(f.oldest_connecting_since_ns, s.state_since_ns);
            }
            tcp_state::CLOSE_WAIT
                if now_ns.saturating_sub(s.state_since_ns) >= ages.close_wait_ns =>
            {
                f.close_wait_waited += 1;
                f.oldest_close_wait_since_ns = min(f.oldest_close_wait_since_ns, s.state_since_ns);
            }
            _ => {}
        }
        if s.peer.is_some() {
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
    f.owners.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    f.peers.sort_by(|a, b| {
        b.sockets
            .cmp(&a.sockets)
            .then(a.cgroup_id.cmp(&b.cgroup_id))
    });
    f
}
