//! Listening sockets now, and a bounded history of listeners starting and
//! stopping (a dependency restarting on this node shows up as its listener
//! disappearing and coming back).

use std::{collections::VecDeque, net::IpAddr};

use ahash::HashMap;

use crate::event::Event;

/// Ids of listeners found by the start-up scan have this bit set (see
/// `preexisting`): they are keyed by inode, not by socket cookie.
pub const PREEXISTING: u64 = 1 << 63;
/// How many listener changes are remembered.
const HISTORY: usize = 256;
/// Stopped listeners' cookies remembered, to drop a second report of one
/// close (a burst of closes fits; reports of one close are microseconds
/// apart).
const STOPPED_KEPT: usize = 64;
/// Addresses remembered per network namespace, and namespaces.
const ADDRS_PER_NETNS: usize = 8;
const MAX_NETNS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listener {
    pub cgroup_id: u64,
    pub addr: IpAddr,
    pub port: u16,
    pub tgid: u32,
    pub comm: String,
    /// Monotonic ns when it started listening (agent start for pre-existing ones).
    pub since_ns: u64,
    /// Network namespace cookie; 0 when unknown (pre-existing listeners).
    /// A restarted server listens again in the same namespace, often from
    /// a new process or container.
    pub netns_cookie: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Started,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListenerChange {
    /// 1, 2, 3, ... in the order the changes happened (for "print new ones").
    pub seq: u64,
    pub change: Change,
    pub at_ns: u64,
    pub listener: Listener,
}

#[derive(Debug, Default)]
pub struct Listeners {
    pub active: HashMap<u64, Listener>,
    pub history: VecDeque<ListenerChange>,
    seq: u64,
    /// Local addresses seen on accepted connections, per network namespace:
    /// which namespace a destination address belongs to, so that a client's
    /// refused connects can be matched to the listener that went away.
    addrs: HashMap<u64, Vec<IpAddr>>,
    /// Addresses not remembered because the bounds above were reached (the
    /// match then falls back to the port alone).
    pub addrs_not_kept: u64,
    /// Kernel socket cookie -> id of a pre-existing listener: the kernel
    /// reports such a listener's close by cookie, without its address.
    preexisting_cookies: HashMap<u64, u64>,
    /// Closes of listeners known neither by cookie nor by address (one
    /// that predates the agent and whose cookie the scan could not learn):
    /// their stop is not in the history.
    pub closes_unmatched: u64,
    /// Cookies of the latest listeners reported stopped.
    stopped_cookies: VecDeque<u64>,
}

impl Listeners {
    pub fn started(&mut self, ev: &Event) {
        let l = Listener {
            cgroup_id: ev.raw.cgroup_id,
            addr: ev.local,
            port: ev.raw.local_port,
            tgid: ev.raw.tgid,
            comm: ev.comm(),
            since_ns: ev.raw.ts_ns,
            netns_cookie: ev.raw.netns_cookie,
        };
        if !ev.local.is_unspecified() {
            self.saw_local_addr(ev.raw.netns_cookie, ev.local);
        }
        self.push(Change::Started, ev.raw.ts_ns, l.clone());
        self.active.insert(ev.raw.cookie, l);
    }

    pub fn stopped(&mut self, ev: &Event) {
        // The close of a listener older than the agent can be reported
        // twice: by the release hook and, when the kernel runs its state
        // callback, by sock_ops (same socket cookie, microseconds apart).
        if self.stopped_cookies.contains(&ev.raw.cookie) {
            return;
        }
        let by_cookie = self
            .preexisting_cookies
            .remove(&ev.raw.cookie)
            .unwrap_or(ev.raw.cookie);
        let known = self
            .active
            .remove(&by_cookie)
            .or_else(|| self.take_preexisting(ev));
        // Reported by the release hook, which knows no address or port:
        // without a match there is nothing to say which listener stopped.
        if known.is_none() && ev.raw.local_port == 0 {
            self.closes_unmatched += 1;
            return;
        }
        let l = known.unwrap_or(Listener {
            cgroup_id: ev.raw.cgroup_id,
            addr: ev.local,
            port: ev.raw.local_port,
            tgid: ev.raw.tgid,
            comm: ev.comm(),
            since_ns: 0,
            netns_cookie: ev.raw.netns_cookie,
        });
        self.push(Change::Stopped, ev.raw.ts_ns, l);
        if self.stopped_cookies.len() == STOPPED_KEPT {
            self.stopped_cookies.pop_front();
        }
        self.stopped_cookies.push_back(ev.raw.cookie);
    }

    /// Notes that an accepted connection arrived on `addr` in `netns`.
    pub fn saw_local_addr(&mut self, netns: u64, addr: IpAddr) {
        if netns == 0 {
            return;
        }
        let full = self.addrs.len() >= MAX_NETNS;
        match self.addrs.get_mut(&netns) {
            Some(v) if v.contains(&addr) => {}
            Some(v) if v.len() < ADDRS_PER_NETNS => v.push(addr),
            None if !full => {
                self.addrs.insert(netns, vec![addr]);
            }
            _ => self.addrs_not_kept += 1,
        }
    }

    /// The first address seen in `netns`, if any.
    pub fn netns_addr(&self, netns: u64) -> Option<IpAddr> {
        self.addrs.get(&netns).and_then(|v| v.first().copied())
    }

    /// Whether `addr` is known to be an address of `netns`.
    pub fn netns_has(&self, netns: u64, addr: IpAddr) -> bool {
        self.addrs.get(&netns).is_some_and(|v| v.contains(&addr))
    }

    /// The start-up scan's entry for the listener `ev` closes: the kernel
    /// knows that socket by its cookie, the scan by its inode, so it is
    /// matched by address, port and (when both know it) namespace. Taken
    /// out, so the /proc refresh does not report the same stop again.
    fn take_preexisting(&mut self, ev: &Event) -> Option<Listener> {
        let netns = ev.raw.netns_cookie;
        let matches: Vec<u64> = self
            .active
            .iter()
            .filter(|(id, l)| {
                **id & PREEXISTING != 0
                    && l.port == ev.raw.local_port
                    && l.addr == ev.local
                    && (netns == 0 || l.netns_cookie == 0 || l.netns_cookie == netns)
            })
            .map(|(id, _)| *id)
            .collect();
        // Without a namespace to tell them apart, two listeners on the same
        // address and port (two pods' 0.0.0.0:6379) are not guessed between.
        match matches.as_slice() {
            [id] => self.active.remove(id),
            _ => None,
        }
    }

    /// A listener found by the start-up scan, with its socket cookie when
    /// the kernel could be asked for it.
    pub fn add_preexisting(&mut self, id: u64, kernel_cookie: Option<u64>, listener: Listener) {
        if let Some(c) = kernel_cookie {
            self.preexisting_cookies.insert(c, id);
        }
        self.active.insert(id, listener);
    }

    /// Removes a pre-existing listener that the /proc refresh no longer sees.
    pub fn remove_preexisting(&mut self, id: u64, now_ns: u64) {
        self.preexisting_cookies.retain(|_, v| *v != id);
        if let Some(l) = self.active.remove(&id) {
            self.push(Change::Stopped, now_ns, l);
        }
    }

    fn push(&mut self, change: Change, at_ns: u64, listener: Listener) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.seq += 1;
        self.history.push_back(ListenerChange {
            seq: self.seq,
            change,
            at_ns,
            listener,
        });
    }
}
