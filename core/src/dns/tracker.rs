//! Matches answers to queries and derives what a single packet cannot say:
//! latency, timeouts, retries, search-domain fan-out and truncation
//! followed by a retry over TCP. Produces [`DnsEvent`]s for the aggregator
//! (and, later, for a live trace stream).
//!
//! Every table here is bounded; a query that does not fit is counted, not
//! tracked.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use super::{message::Message, packet::Packet, packet::Transport};

/// RCODEs the derived signals depend on.
const NOERROR: u16 = 0;
const NXDOMAIN: u16 = 3;

#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    /// A query with no answer after this long is a timeout.
    pub timeout_ns: u64,
    /// Queries awaiting an answer at once; also the bound of the other tables.
    pub max_pending: usize,
}

/// A query as sent, shared by the events that refer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryInfo {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub comm: [u8; 16],
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub id: u16,
    pub name: Arc<str>,
    pub qtype: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsEvent {
    /// A query was sent. `retry`: the same client asked the same name and
    /// type before and got no answer yet (or it timed out).
    /// `after_truncation`: a TCP query following a truncated UDP answer.
    Query {
        query: Arc<QueryInfo>,
        retry: bool,
        after_truncation: bool,
    },
    Answer {
        query: Arc<QueryInfo>,
        latency_ns: u64,
        rcode: u16,
        answers: u16,
        truncated: bool,
    },
    /// No answer within the timeout.
    Timeout { query: Arc<QueryInfo> },
    /// An answer to a query already counted as a timeout.
    LateAnswer {
        query: Arc<QueryInfo>,
        latency_ns: u64,
    },
    /// A lookup that went through NXDOMAIN answers for search-suffixed
    /// names before `query` got an answer (`answered`), or before the client
    /// gave up (`!answered`; `query` is then the last name tried).
    /// `wasted`: the queries that could not have helped.
    FanOut {
        query: Arc<QueryInfo>,
        wasted: u32,
        answered: bool,
    },
}

/// What could not be tracked or matched, for the health counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TrackerDrops {
    /// Answers that match no query we saw (sent before the agent started,
    /// or by a query that did not fit the table).
    pub unmatched_answers: u64,
    /// Queries not tracked because `max_pending` queries were outstanding.
    pub pending_full: u64,
    /// Queries arriving at, or answers leaving, a local socket: a DNS
    /// server's view, which is not aggregated (its clients are traced on
    /// their own side).
    pub server_side: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PendingKey {
    transport: Transport,
    client: SocketAddr,
    server: SocketAddr,
    id: u16,
}

/// "The same client asking the same thing": for retries and truncation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AskKey {
    cgroup_id: u64,
    client: IpAddr,
    name: Arc<str>,
    qtype: u16,
}

/// A search-list walk: same client, same type, same first label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChainKey {
    cgroup_id: u64,
    client: IpAddr,
    qtype: u16,
    first_label: Arc<str>,
}

struct Ask {
    ts_ns: u64,
    answered: bool,
}

struct Chain {
    nxdomains: u32,
    last_ns: u64,
    last_query: Arc<QueryInfo>,
}

pub struct Tracker {
    config: TrackerConfig,
    pending: HashMap<PendingKey, Arc<QueryInfo>>,
    /// Timed-out queries, kept for one more timeout to recognise late answers.
    timed_out: HashMap<PendingKey, (Arc<QueryInfo>, u64)>,
    asks: HashMap<AskKey, Ask>,
    /// Truncated UDP answers waiting for the TCP retry.
    truncated: HashMap<AskKey, u64>,
    chains: HashMap<ChainKey, Chain>,
    pub drops: TrackerDrops,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            pending: HashMap::new(),
            timed_out: HashMap::new(),
            asks: HashMap::new(),
            truncated: HashMap::new(),
            chains: HashMap::new(),
            drops: TrackerDrops::default(),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Handles one parsed message.
    pub fn message(&mut self, p: &Packet<'_>, m: &Message, out: &mut Vec<DnsEvent>) {
        match (m.response, p.egress) {
            (false, true) => self.query(p, m, out),
            (true, false) => self.answer(p, m, out),
            _ => self.drops.server_side += 1,
        }
    }

    fn query(&mut self, p: &Packet<'_>, m: &Message, out: &mut Vec<DnsEvent>) {
        let key = PendingKey {
            transport: p.transport,
            client: p.src,
            server: p.dst,
            id: m.id,
        };
        if let Some(first) = self.pending.get(&key) {
            // The same query resent on the same socket: a retry, timed
            // from the first send, which is what the client waits for.
            out.push(DnsEvent::Query {
                query: first.clone(),
                retry: true,
                after_truncation: false,
            });
            return;
        }
        let query = Arc::new(QueryInfo {
            ts_ns: p.ts_ns,
            cgroup_id: p.cgroup_id,
            tgid: p.tgid,
            comm: p.comm,
            transport: p.transport,
            client: p.src,
            server: p.dst,
            id: m.id,
            name: Arc::from(m.name.as_str()),
            qtype: m.qtype,
        });
        let ask = ask_key(&query);
        let window = 2 * self.config.timeout_ns;
        let retry = self
            .asks
            .get(&ask)
            .is_some_and(|a| !a.answered && p.ts_ns.saturating_sub(a.ts_ns) < window);
        let after_truncation = p.transport == Transport::Tcp
            && self
                .truncated
                .remove(&ask)
                .is_some_and(|ts| p.ts_ns.saturating_sub(ts) < self.config.timeout_ns);
        if bounded_insert(
            &mut self.asks,
            self.config.max_pending,
            ask,
            Ask {
                ts_ns: p.ts_ns,
                answered: false,
            },
        ) && bounded_insert(
            &mut self.pending,
            self.config.max_pending,
            key,
            query.clone(),
        ) {
            out.push(DnsEvent::Query {
                query,
                retry,
                after_truncation,
            });
        } else {
            self.drops.pending_full += 1;
        }
    }

    fn answer(&mut self, p: &Packet<'_>, m: &Message, out: &mut Vec<DnsEvent>) {
        let key = PendingKey {
            transport: p.transport,
            client: p.dst,
            server: p.src,
            id: m.id,
        };
        let Some(query) = self.pending.remove(&key) else {
            match self.timed_out.remove(&key) {
                Some((query, _)) if same_question(&query, m) => out.push(DnsEvent::LateAnswer {
                    latency_ns: p.ts_ns.saturating_sub(query.ts_ns),
                    query,
                }),
                _ => self.drops.unmatched_answers += 1,
            }
            return;
        };
        if !same_question(&query, m) {
            // Same id and addresses but another question: not our answer.
            self.pending.insert(key, query);
            self.drops.unmatched_answers += 1;
            return;
        }
        let latency_ns = p.ts_ns.saturating_sub(query.ts_ns);
        if latency_ns >= self.config.timeout_ns {
            // Past the timeout, even if no sweep ran in between (the agent
            // was busy): the same verdict whenever the packets are read.
            out.push(DnsEvent::Timeout {
                query: query.clone(),
            });
            out.push(DnsEvent::LateAnswer { query, latency_ns });
            return;
        }
        let ask = ask_key(&query);
        if let Some(a) = self.asks.get_mut(&ask) {
            a.answered = true;
        }
        if m.truncated && query.transport == Transport::Udp {
            bounded_insert(&mut self.truncated, self.config.max_pending, ask, p.ts_ns);
        }
        self.follow_search_list(&query, m.rcode, p.ts_ns, out);
        out.push(DnsEvent::Answer {
            latency_ns,
            query,
            rcode: m.rcode,
            answers: m.answers,
            truncated: m.truncated,
        });
    }

    /// A resolver walking its search list asks "name.suffix" for each
    /// suffix and gets NXDOMAIN until one exists (or the bare name does).
    /// NXDOMAINs extend the walk; the first NOERROR ends it.
    fn follow_search_list(
        &mut self,
        query: &Arc<QueryInfo>,
        rcode: u16,
        now_ns: u64,
        out: &mut Vec<DnsEvent>,
    ) {
        // Most answers are NOERROR with no walk under way: skip building the
        // key (an allocation) for them.
        if rcode != NXDOMAIN && (rcode != NOERROR || self.chains.is_empty()) {
            return;
        }
        let key = ChainKey {
            cgroup_id: query.cgroup_id,
            client: query.client.ip(),
            qtype: query.qtype,
            first_label: Arc::from(query.name.split('.').next().unwrap_or_default()),
        };
        let window = self.config.timeout_ns;
        match rcode {
            NXDOMAIN => {
                let chain = self.chains.get_mut(&key);
                match chain {
                    Some(c) if now_ns.saturating_sub(c.last_ns) < window => {
                        c.nxdomains += 1;
                        c.last_ns = now_ns;
                        c.last_query = query.clone();
                    }
                    _ => {
                        bounded_insert(
                            &mut self.chains,
                            self.config.max_pending,
                            key,
                            Chain {
                                nxdomains: 1,
                                last_ns: now_ns,
                                last_query: query.clone(),
                            },
                        );
                    }
                }
            }
            NOERROR => {
                if let Some(c) = self.chains.remove(&key) {
                    if now_ns.saturating_sub(c.last_ns) < window {
                        out.push(DnsEvent::FanOut {
                            query: query.clone(),
                            wasted: c.nxdomains,
                            answered: true,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Declares timeouts and forgets expired state. Cost is linear in the
    /// (bounded) tables, so it runs a few times a second, not per packet.
    pub fn sweep(&mut self, now_ns: u64, out: &mut Vec<DnsEvent>) {
        let timeout = self.config.timeout_ns;
        let expired: Vec<PendingKey> = self
            .pending
            .iter()
            .filter(|(_, q)| now_ns.saturating_sub(q.ts_ns) >= timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(query) = self.pending.remove(&key) {
                out.push(DnsEvent::Timeout {
                    query: query.clone(),
                });
                bounded_insert(
                    &mut self.timed_out,
                    self.config.max_pending,
                    key,
                    (query, now_ns),
                );
            }
        }
        self.timed_out
            .retain(|_, (_, at)| now_ns.saturating_sub(*at) < timeout);
        self.asks
            .retain(|_, a| now_ns.saturating_sub(a.ts_ns) < 2 * timeout);
        self.truncated
            .retain(|_, ts| now_ns.saturating_sub(*ts) < timeout);
        let mut ended = Vec::new();
        self.chains.retain(|_, c| {
            let live = now_ns.saturating_sub(c.last_ns) < timeout;
            // A walk that ended in NXDOMAIN: the last query was the one the
            // client needed asked; the others were wasted.
            if !live && c.nxdomains >= 2 {
                ended.push(DnsEvent::FanOut {
                    query: c.last_query.clone(),
                    wasted: c.nxdomains - 1,
                    answered: false,
                });
            }
            live
        });
        out.extend(ended);
    }
}

fn ask_key(q: &QueryInfo) -> AskKey {
    AskKey {
        cgroup_id: q.cgroup_id,
        client: q.client.ip(),
        name: q.name.clone(),
        qtype: q.qtype,
    }
}

fn same_question(q: &QueryInfo, m: &Message) -> bool {
    *q.name == *m.name && q.qtype == m.qtype
}

/// Inserts unless the table is full (an existing key is always updated).
/// Returns whether the value was stored.
fn bounded_insert<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    key: K,
    value: V,
) -> bool {
    if map.len() >= max && !map.contains_key(&key) {
        return false;
    }
    map.insert(key, value);
    true
}
