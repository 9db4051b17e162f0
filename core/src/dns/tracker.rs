//! Matches answers to queries and derives what a single packet cannot say:
//! latency, timeouts, retries, search-domain fan-out ([`super::walk`]) and
//! truncation followed by a retry over TCP. Produces [`DnsEvent`]s for the
//! aggregator and the live trace stream.
//!
//! A query is told apart by its socket, server, id and question: resolvers
//! that send A and AAAA at once from one socket may give both the same id
//! (the server tells them apart by the question, and so do we).
//!
//! Every table here is bounded; a query that does not fit is counted, not
//! tracked.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    sync::Arc,
};

use super::{
    message::Message,
    packet::Packet,
    packet::Transport,
    walk::{Asker, Walks},
};

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
    /// Search-list walks not followed because `max_pending` were under way:
    /// their wasted queries are not counted.
    pub walks_full: u64,
    /// Queries arriving at, or answers leaving, a local socket: a DNS
    /// server's view, which is not aggregated (its clients are traced on
    /// their own side).
    pub server_side: u64,
}

/// One query in flight: its socket, server, id and question. The name is
/// kept as a hash (no allocation per packet); a match is confirmed against
/// the query's own name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PendingKey {
    transport: Transport,
    client: SocketAddr,
    server: SocketAddr,
    id: u16,
    qtype: u16,
    name_hash: u64,
}

/// "The same client asking the same thing": for retries and truncation.
/// The client is its process when the kernel named it: two processes of a
/// pod asking one name at once are two lookups, not a retry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AskKey {
    cgroup_id: u64,
    asker: Asker,
    name: Arc<str>,
    qtype: u16,
}

struct Ask {
    ts_ns: u64,
    answered: bool,
}

pub struct Tracker {
    config: TrackerConfig,
    pending: HashMap<PendingKey, Arc<QueryInfo>>,
    /// Timed-out queries, kept for one more timeout to recognise late answers.
    timed_out: HashMap<PendingKey, (Arc<QueryInfo>, u64)>,
    asks: HashMap<AskKey, Ask>,
    /// Truncated UDP answers waiting for the TCP retry.
    truncated: HashMap<AskKey, u64>,
    walks: Walks,
    hasher: RandomState,
    drops: TrackerDrops,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            pending: HashMap::new(),
            timed_out: HashMap::new(),
            asks: HashMap::new(),
            truncated: HashMap::new(),
            walks: Walks::new(config.max_pending, config.timeout_ns),
            hasher: RandomState::new(),
            drops: TrackerDrops::default(),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn drops(&self) -> TrackerDrops {
        TrackerDrops {
            walks_full: self.walks.full,
            ..self.drops
        }
    }

    fn key(
        &self,
        transport: Transport,
        client: SocketAddr,
        server: SocketAddr,
        m: &Message,
    ) -> PendingKey {
        PendingKey {
            transport,
            client,
            server,
            id: m.id,
            qtype: m.qtype,
            name_hash: self.hasher.hash_one(m.name.as_str()),
        }
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
        let key = self.key(p.transport, p.src, p.dst, m);
        if let Some(first) = self.pending.get(&key).filter(|q| same_question(q, m)) {
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
        let key = self.key(p.transport, p.dst, p.src, m);
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
            // Another name with the same hash: not our answer.
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
        self.walks.answer(&query, m.rcode, p.ts_ns, out);
        out.push(DnsEvent::Answer {
            latency_ns,
            query,
            rcode: m.rcode,
            answers: m.answers,
            truncated: m.truncated,
        });
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
        self.walks.sweep(now_ns, out);
    }
}

fn ask_key(q: &QueryInfo) -> AskKey {
    AskKey {
        cgroup_id: q.cgroup_id,
        asker: Asker::of(q),
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
