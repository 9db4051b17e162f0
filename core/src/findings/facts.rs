//! Facts about the sockets open right now, per flow, from one pass over
//! the socket table: what the detectors need beyond the flow counters.

use ahash::HashMap;

use sockeye_common::tcp_state;

use crate::aggregate::{flows::FlowKey, sockets::SocketTable};

/// Processes remembered per flow (the rest are counted as "others").
const OWNERS: usize = 4;

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
    pub owners: Vec<(u32, u64)>,
    /// Sockets opened by processes past the first few, or unknown (0).
    pub other_owners: u64,
}

/// Ages that decide what counts.
pub struct Ages {
    pub older_than_ns: u64,
    pub close_wait_ns: u64,
}

pub fn collect(sockets: &SocketTable, now_ns: u64, ages: &Ages) -> HashMap<FlowKey, FlowSockets> {
    let mut out: HashMap<FlowKey, FlowSockets> = HashMap::default();
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
        let room = f.owners.len() < OWNERS;
        match f.owners.iter_mut().find(|(pid, _)| *pid == s.tgid) {
            Some((_, n)) => *n += 1,
            None if s.tgid != 0 && room => f.owners.push((s.tgid, 1)),
            None => f.other_owners += 1,
        }
    }
    for f in out.values_mut() {
        f.owners.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    out
}
