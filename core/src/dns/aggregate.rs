//! DNS aggregates per (container, name, type, server), with a bounded
//! number of names: when the table is full, new names are counted in the
//! container's "other" row for that server, and idle rows with the fewest
//! queries are folded into it to make room for names that are active now.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use serde::Serialize;

use super::{packet::Transport, tracker::DnsEvent};
use crate::aggregate::histogram::Histogram;

/// Name of the row that collects names past the bound.
pub const OTHER_NAME: &str = "<other>";
/// Record type of the "other" row (0 is reserved in DNS).
pub const OTHER_QTYPE: u16 = 0;

/// RCODEs with their own count; the rest go to "OTHER".
pub const RCODES: [(u16, &str); 6] = [
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
];
const RCODE_OTHER: usize = RCODES.len();

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    pub cgroup_id: u64,
    pub name: Arc<str>,
    pub qtype: u16,
    pub server: SocketAddr,
}

/// Counts for the current output interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DnsWindow {
    pub queries: u64,
    pub answers: u64,
    pub timeouts: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsStats {
    pub queries: u64,
    /// Queries over TCP.
    pub tcp_queries: u64,
    pub retries: u64,
    /// Answers by RCODE, indexed like [`RCODES`], then "other".
    pub rcodes: [u64; RCODES.len() + 1],
    /// NOERROR answers with no answer records (NODATA).
    pub empty_answers: u64,
    pub timeouts: u64,
    /// Answers that arrived after the query was counted as a timeout.
    pub late_answers: u64,
    pub truncated: u64,
    /// TCP queries that followed a truncated UDP answer.
    pub tcp_after_truncation: u64,
    /// Lookups that walked the search list before this name answered (or
    /// before the client gave up), and the queries that walk wasted.
    pub fanout_lookups: u64,
    pub fanout_wasted: u64,
    /// Answer latency (answers only; timeouts are counted, not timed).
    pub latency: Histogram,
    pub window: DnsWindow,
    pub last_ns: u64,
    pub last_tgid: u32,
    pub last_comm: [u8; 16],
}

impl DnsStats {
    pub fn answers(&self) -> u64 {
        self.rcodes.iter().sum()
    }

    /// Answers that were not NOERROR.
    pub fn errors(&self) -> u64 {
        self.answers() - self.rcodes[0]
    }

    pub fn merge(&mut self, o: &DnsStats) {
        self.queries += o.queries;
        self.tcp_queries += o.tcp_queries;
        self.retries += o.retries;
        for (a, b) in self.rcodes.iter_mut().zip(o.rcodes) {
            *a += b;
        }
        self.empty_answers += o.empty_answers;
        self.timeouts += o.timeouts;
        self.late_answers += o.late_answers;
        self.truncated += o.truncated;
        self.tcp_after_truncation += o.tcp_after_truncation;
        self.fanout_lookups += o.fanout_lookups;
        self.fanout_wasted += o.fanout_wasted;
        self.latency.merge(&o.latency);
        self.window.queries += o.window.queries;
        self.window.answers += o.window.answers;
        self.window.timeouts += o.window.timeouts;
        if o.last_ns >= self.last_ns {
            self.last_ns = o.last_ns;
            if o.last_tgid != 0 {
                self.last_tgid = o.last_tgid;
                self.last_comm = o.last_comm;
            }
        }
    }

    fn apply(&mut self, event: &DnsEvent) {
        match event {
            DnsEvent::Query {
                query,
                retry,
                after_truncation,
            } => {
                self.queries += 1;
                self.window.queries += 1;
                self.retries += u64::from(*retry);
                self.tcp_queries += u64::from(query.transport == Transport::Tcp);
                self.tcp_after_truncation += u64::from(*after_truncation);
                self.last_ns = query.ts_ns;
                if query.tgid != 0 {
                    self.last_tgid = query.tgid;
                    self.last_comm = query.comm;
                }
            }
            DnsEvent::Answer {
                latency_ns,
                rcode,
                answers,
                truncated,
                ..
            } => {
                let idx = RCODES
                    .iter()
                    .position(|(c, _)| c == rcode)
                    .unwrap_or(RCODE_OTHER);
                self.rcodes[idx] += 1;
                self.empty_answers += u64::from(*rcode == 0 && *answers == 0);
                self.truncated += u64::from(*truncated);
                self.latency.record(*latency_ns);
                self.window.answers += 1;
            }
            DnsEvent::Timeout { .. } => {
                self.timeouts += 1;
                self.window.timeouts += 1;
            }
            DnsEvent::LateAnswer { .. } => self.late_answers += 1,
            DnsEvent::FanOut { wasted, .. } => {
                self.fanout_lookups += 1;
                self.fanout_wasted += u64::from(*wasted);
            }
        }
    }
}

pub struct DnsAggregates {
    pub rows: HashMap<RowKey, DnsStats>,
    /// Rows for named (not "other") keys; "other" rows are bounded by
    /// containers x servers, which the TCP flow bound already limits.
    named: usize,
    max_names: usize,
    /// Name rows folded into "other" to stay within the bound.
    pub names_folded: u64,
    /// Events for new names that went straight to "other" (table full).
    pub names_over_limit: u64,
}

impl DnsAggregates {
    pub fn new(max_names: usize) -> Self {
        Self {
            rows: HashMap::new(),
            named: 0,
            max_names,
            names_folded: 0,
            names_over_limit: 0,
        }
    }

    pub fn record(&mut self, event: &DnsEvent) {
        let q = match event {
            DnsEvent::Query { query, .. }
            | DnsEvent::Answer { query, .. }
            | DnsEvent::Timeout { query }
            | DnsEvent::LateAnswer { query, .. }
            | DnsEvent::FanOut { query, .. } => query,
        };
        let key = RowKey {
            cgroup_id: q.cgroup_id,
            name: q.name.clone(),
            qtype: q.qtype,
            server: q.server,
        };
        let key = if self.rows.contains_key(&key) {
            key
        } else if self.named < self.max_names {
            self.named += 1;
            key
        } else {
            self.names_over_limit += 1;
            other_key(&key)
        };
        self.rows.entry(key).or_default().apply(event);
    }

    /// Keeps room for new names: when the table is more than 3/4 full,
    /// folds the least-queried rows idle this interval into "other" until
    /// it is half full. Totals are unchanged by folding.
    pub fn prune(&mut self) {
        if self.named <= self.max_names / 4 * 3 {
            return;
        }
        let mut idle: Vec<(u64, RowKey)> = self
            .rows
            .iter()
            .filter(|(k, s)| !is_other(k) && s.window.queries == 0)
            .map(|(k, s)| (s.queries, k.clone()))
            .collect();
        idle.sort();
        let excess = self.named.saturating_sub(self.max_names / 2);
        for (_, key) in idle.into_iter().take(excess) {
            if let Some(stats) = self.rows.remove(&key) {
                self.rows.entry(other_key(&key)).or_default().merge(&stats);
                self.named -= 1;
                self.names_folded += 1;
            }
        }
    }

    /// Rows for names (not "other"), bounded by `max_names`.
    pub fn named(&self) -> usize {
        self.named
    }

    pub fn reset_window(&mut self) {
        for s in self.rows.values_mut() {
            s.window = DnsWindow::default();
        }
    }
}

pub fn is_other(key: &RowKey) -> bool {
    key.qtype == OTHER_QTYPE && &*key.name == OTHER_NAME
}

fn other_key(key: &RowKey) -> RowKey {
    RowKey {
        cgroup_id: key.cgroup_id,
        name: Arc::from(OTHER_NAME),
        qtype: OTHER_QTYPE,
        server: key.server,
    }
}
