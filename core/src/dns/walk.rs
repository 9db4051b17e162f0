//! Search-list walks. A resolver asked for a name with fewer dots than
//! `ndots` tries "name.suffix" for each search domain before (or after)
//! the name itself, and gets NXDOMAIN until one exists. glibc asks A and
//! AAAA of each candidate at once, so a lookup is two walks, one per type.
//!
//! A walk is the answers one process (or, when the kernel gave no process,
//! one address) got for one type and one first label: NXDOMAINs extend it,
//! other errors (SERVFAIL, REFUSED) move it on to their name, a NOERROR
//! answer ends it. Its wasted queries are its NXDOMAIN answers for names
//! other than the one it ended on: every NXDOMAIN before a NOERROR, and
//! all but the last name's when the walk ends without one (the client
//! then needed that name asked, and it does not exist). Concurrent lookups
//! of one name by one process share a walk; the waste is still exact, the
//! number of lookups may come out lower.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use super::tracker::{DnsEvent, QueryInfo};

const NOERROR: u16 = 0;
const NXDOMAIN: u16 = 3;
/// Names remembered per walk with their NXDOMAIN counts (glibc allows six
/// search domains; with the name itself and a few concurrent lookups of
/// longer names this is plenty). NXDOMAINs for names past it count as
/// wasted even when the walk ends on that name.
const NAMES_PER_WALK: usize = 16;

/// Who asks: the process when the kernel named it, else the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Asker {
    Process(u32),
    Address(IpAddr),
}

impl Asker {
    pub fn of(q: &QueryInfo) -> Self {
        if q.tgid != 0 {
            Asker::Process(q.tgid)
        } else {
            Asker::Address(q.client.ip())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WalkKey {
    cgroup_id: u64,
    asker: Asker,
    qtype: u16,
    first_label: Arc<str>,
}

struct Walk {
    nxdomains: u32,
    /// NXDOMAIN answers per name, at most [`NAMES_PER_WALK`] names.
    by_name: Vec<(Arc<str>, u32)>,
    last_ns: u64,
    last_query: Arc<QueryInfo>,
}

impl Walk {
    fn new(query: &Arc<QueryInfo>, now_ns: u64) -> Self {
        Self {
            nxdomains: 0,
            by_name: Vec::new(),
            last_ns: now_ns,
            last_query: query.clone(),
        }
    }

    fn nxdomain(&mut self, query: &Arc<QueryInfo>) {
        self.nxdomains += 1;
        if let Some((_, c)) = self.by_name.iter_mut().find(|(n, _)| *n == query.name) {
            *c += 1;
        } else if self.by_name.len() < NAMES_PER_WALK {
            self.by_name.push((query.name.clone(), 1));
        }
    }

    /// The NXDOMAINs for names other than `name`.
    fn wasted_before(&self, name: &str) -> u32 {
        let own = self
            .by_name
            .iter()
            .find(|(n, _)| &**n == name)
            .map_or(0, |(_, c)| *c);
        self.nxdomains - own
    }

    /// A walk that ended without a NOERROR: reported if it wasted any.
    fn unanswered(self) -> Option<DnsEvent> {
        let wasted = self.wasted_before(&self.last_query.name);
        (wasted > 0).then_some(DnsEvent::FanOut {
            query: self.last_query,
            wasted,
            answered: false,
        })
    }
}

pub struct Walks {
    walks: HashMap<WalkKey, Walk>,
    max: usize,
    /// A walk with no answer for this long has ended.
    window_ns: u64,
    /// Walks not followed because `max` were under way (their waste is
    /// not counted).
    pub full: u64,
}

impl Walks {
    pub fn new(max: usize, window_ns: u64) -> Self {
        Self {
            walks: HashMap::new(),
            max,
            window_ns,
            full: 0,
        }
    }

    /// Follows one answer to `query`.
    pub fn answer(
        &mut self,
        query: &Arc<QueryInfo>,
        rcode: u16,
        now_ns: u64,
        out: &mut Vec<DnsEvent>,
    ) {
        // Most answers are NOERROR with no walk under way: skip building the
        // key (an allocation) for them.
        if rcode != NXDOMAIN && self.walks.is_empty() {
            return;
        }
        let key = WalkKey {
            cgroup_id: query.cgroup_id,
            asker: Asker::of(query),
            qtype: query.qtype,
            first_label: Arc::from(query.name.split('.').next().unwrap_or_default()),
        };
        // A walk past its window has ended, even if no sweep said so yet:
        // the same counts whenever the packets are read.
        if self
            .walks
            .get(&key)
            .is_some_and(|w| now_ns.saturating_sub(w.last_ns) >= self.window_ns)
        {
            if let Some(e) = self.walks.remove(&key).and_then(Walk::unanswered) {
                out.push(e);
            }
        }
        match rcode {
            NXDOMAIN => {
                if !self.walks.contains_key(&key) && self.walks.len() >= self.max {
                    self.full += 1;
                    return;
                }
                let w = self
                    .walks
                    .entry(key)
                    .or_insert_with(|| Walk::new(query, now_ns));
                w.nxdomain(query);
                w.last_ns = now_ns;
                w.last_query = query.clone();
            }
            NOERROR => {
                let wasted = self
                    .walks
                    .remove(&key)
                    .map_or(0, |w| w.wasted_before(&query.name));
                if wasted > 0 {
                    out.push(DnsEvent::FanOut {
                        query: query.clone(),
                        wasted,
                        answered: true,
                    });
                }
            }
            // SERVFAIL, REFUSED, ...: glibc goes on to the next candidate.
            _ => {
                if let Some(w) = self.walks.get_mut(&key) {
                    w.last_ns = now_ns;
                    w.last_query = query.clone();
                }
            }
        }
    }

    /// Ends the walks with no answer within the window.
    pub fn sweep(&mut self, now_ns: u64, out: &mut Vec<DnsEvent>) {
        let ended: Vec<WalkKey> = self
            .walks
            .iter()
            .filter(|(_, w)| now_ns.saturating_sub(w.last_ns) >= self.window_ns)
            .map(|(k, _)| k.clone())
            .collect();
        for key in ended {
            if let Some(e) = self.walks.remove(&key).and_then(Walk::unanswered) {
                out.push(e);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.walks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.walks.is_empty()
    }
}
