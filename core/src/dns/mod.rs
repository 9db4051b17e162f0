//! DNS per container: packets from the kernel's cgroup_skb programs,
//! messages found in them (UDP datagrams, or TCP streams), queries matched
//! to answers, and the aggregates shown to people.

pub mod aggregate;
pub mod message;
pub mod packet;
pub mod tcp_stream;
pub mod tracker;
pub mod view;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use aggregate::DnsAggregates;
use packet::Transport;
use tcp_stream::{TcpStreamDrops, TcpStreams};
use tracker::{DnsEvent, Tracker, TrackerConfig, TrackerDrops};

/// How often timeouts are looked for: a timeout is reported at most this
/// long after it expires.
const SWEEP_EVERY_NS: u64 = 250_000_000;

#[derive(Debug, Clone, Copy)]
pub struct DnsConfig {
    /// A query with no answer after this long is a timeout.
    pub timeout: Duration,
    /// Queries awaiting an answer at once.
    pub max_pending: usize,
    /// (container, name, type, server) rows; the rest is counted as "other".
    pub max_names: usize,
    /// TCP connections to DNS servers followed at once.
    pub max_tcp_streams: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_pending: 16_384,
            max_names: 2_048,
            max_tcp_streams: 4_096,
        }
    }
}

/// Counts of what was received and what could not be used.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DnsHealth {
    pub packets: u64,
    pub messages: u64,
    /// Records from the kernel that did not decode (a kernel/agent mismatch).
    pub decode_errors: u64,
    /// Malformed DNS messages, by reason.
    pub parse_errors: BTreeMap<&'static str, u64>,
    pub tracker: TrackerDrops,
    pub tcp: TcpStreamDrops,
    pub names_folded: u64,
    pub names_over_limit: u64,
    pub pending_queries: u64,
}

pub struct DnsTracer {
    tracker: Tracker,
    streams: TcpStreams,
    pub aggregates: DnsAggregates,
    /// Scratch buffer for the events of one packet or sweep.
    events: Vec<DnsEvent>,
    health: DnsHealth,
    last_sweep_ns: u64,
    seen_cgroups: HashSet<u64>,
    /// Cgroups seen for the first time, to name before they disappear.
    pub new_cgroups: Vec<u64>,
    /// Events kept for live traces while someone watches.
    traces: Option<Vec<DnsEvent>>,
}

impl DnsTracer {
    pub fn new(config: DnsConfig) -> Self {
        Self {
            tracker: Tracker::new(TrackerConfig {
                timeout_ns: config.timeout.as_nanos().min(u64::MAX as u128) as u64,
                max_pending: config.max_pending,
            }),
            streams: TcpStreams::new(config.max_tcp_streams),
            aggregates: DnsAggregates::new(config.max_names),
            events: Vec::new(),
            health: DnsHealth::default(),
            last_sweep_ns: 0,
            seen_cgroups: HashSet::new(),
            new_cgroups: Vec::new(),
            traces: None,
        }
    }

    /// Handles one record from the DNS ring buffer.
    pub fn handle_record(&mut self, bytes: &[u8]) {
        self.health.packets += 1;
        let raw = match packet::decode(bytes) {
            Ok(raw) => raw,
            Err(_) => {
                self.health.decode_errors += 1;
                return;
            }
        };
        let p = match packet::view(&raw) {
            Ok(p) => p,
            Err(_) => {
                self.health.decode_errors += 1;
                return;
            }
        };
        if self.seen_cgroups.insert(p.cgroup_id) {
            self.new_cgroups.push(p.cgroup_id);
        }
        match p.transport {
            Transport::Udp => self.message(&p, p.payload),
            Transport::Tcp => {
                let mut found = Vec::new();
                self.streams.segment(&p, |m| found.push(m));
                for m in found {
                    self.message(&p, m);
                }
            }
        }
    }

    fn message(&mut self, p: &packet::Packet<'_>, bytes: &[u8]) {
        self.health.messages += 1;
        match message::parse(bytes) {
            Ok(m) => {
                self.tracker.message(p, &m, &mut self.events);
                self.flush_events();
            }
            Err(e) => {
                log::debug!("malformed DNS message from {} to {}: {e}", p.src, p.dst);
                *self.health.parse_errors.entry(e.reason()).or_default() += 1;
            }
        }
    }

    fn flush_events(&mut self) {
        for e in self.events.drain(..) {
            self.aggregates.record(&e);
            if let Some(t) = self.traces.as_mut() {
                t.push(e);
            }
        }
    }

    /// Keep events for live traces (or stop keeping them).
    pub fn set_tracing(&mut self, on: bool) {
        match (on, self.traces.is_some()) {
            (true, false) => self.traces = Some(Vec::new()),
            (false, true) => self.traces = None,
            _ => {}
        }
    }

    /// The events kept since the last call.
    pub fn take_traces(&mut self) -> Vec<DnsEvent> {
        self.traces.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Looks for timeouts, at most every [`SWEEP_EVERY_NS`].
    pub fn tick(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep_ns) < SWEEP_EVERY_NS {
            return;
        }
        self.last_sweep_ns = now_ns;
        self.tracker.sweep(now_ns, &mut self.events);
        self.flush_events();
    }

    /// Once per output interval, after the snapshot.
    pub fn end_window(&mut self) {
        self.aggregates.prune();
        self.aggregates.reset_window();
        // Only a memory of "already named"; forgetting it costs a lookup.
        if self.seen_cgroups.len() > 65_536 {
            self.seen_cgroups.clear();
        }
    }

    pub fn health(&self) -> DnsHealth {
        DnsHealth {
            tracker: self.tracker.drops,
            tcp: self.streams.drops,
            names_folded: self.aggregates.names_folded,
            names_over_limit: self.aggregates.names_over_limit,
            pending_queries: self.tracker.pending() as u64,
            ..self.health.clone()
        }
    }
}

/// Builds DNS messages for tests.
#[cfg(test)]
pub(crate) mod testing {
    /// A query (or, with `response`, an answer) for `name` of type `qtype`.
    pub fn message(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            b.push(label.len() as u8);
            b.extend_from_slice(label.as_bytes());
        }
        b.push(0);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b
    }

    /// Turns a query into an answer with `rcode` and `answers` records
    /// claimed in the header (the records themselves are not needed).
    pub fn answer(mut query: Vec<u8>, rcode: u8, answers: u16, truncated: bool) -> Vec<u8> {
        query[2] = 0x81 | if truncated { 0x02 } else { 0 };
        query[3] = 0x80 | rcode;
        query[6..8].copy_from_slice(&answers.to_be_bytes());
        query
    }
}
