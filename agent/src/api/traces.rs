//! Live node traces: TCP lifecycle events and DNS queries and answers, as
//! they are read, for `WatchTraces`. Built only while someone watches.
//!
//! All watchers share one bounded broadcast queue: memory does not grow with
//! slow clients. A watcher that falls more than [`QUEUE`] traces behind
//! loses the oldest, and the next trace it gets says how many it missed.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use sockeye_common::{event::EventKind, tcp_state};
use sockeye_proto::v1 as pb;
use tokio::sync::broadcast;

use super::convert;
use crate::{
    aggregate::cause::FailureCause,
    attribution::{Attributor, Workload},
    clock,
    dns::{message::qtype_name, message::rcode_name, tracker::DnsEvent},
    event::{comm_string, Event},
};

/// Traces queued for all watchers together.
pub const QUEUE: usize = 8192;

/// One trace, with the workload it belongs to (for filtering).
#[derive(Debug, Clone)]
pub struct Trace {
    pub workload: Workload,
    /// The peer (TCP) or DNS server.
    pub remote: Option<SocketAddr>,
    /// The DNS name asked, for DNS traces.
    pub name: Option<String>,
    pub kind: &'static str,
    pub event: pb::TraceEvent,
}

pub struct TracePublisher {
    tx: broadcast::Sender<Arc<Trace>>,
    node: String,
    /// Workloads by cgroup, so a busy stream does not clone from the
    /// attributor per event; cleared every interval.
    workloads: HashMap<u64, Workload>,
    to_unix_ns: i64,
}

impl TracePublisher {
    pub fn new(node: String) -> Self {
        Self {
            tx: broadcast::channel(QUEUE).0,
            node,
            workloads: HashMap::new(),
            to_unix_ns: clock::monotonic_to_unix_offset_ns(),
        }
    }

    /// For the API service, which subscribes one receiver per watcher.
    pub fn sender(&self) -> broadcast::Sender<Arc<Trace>> {
        self.tx.clone()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether anyone watches; when not, the agent skips building traces.
    pub fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Called once per output interval.
    pub fn forget_workloads(&mut self) {
        self.workloads.clear();
    }

    fn workload(&mut self, attributor: &mut Attributor, cgroup_id: u64) -> Workload {
        self.workloads
            .entry(cgroup_id)
            .or_insert_with(|| attributor.workload(cgroup_id))
            .clone()
    }

    fn send(&self, trace: Trace) {
        // No receiver left is not an error: the next `watched()` says so.
        let _ = self.tx.send(Arc::new(trace));
    }

    fn unix_ns(&self, mono_ns: u64) -> i64 {
        (mono_ns as i64).saturating_add(self.to_unix_ns)
    }

    pub fn tcp(&mut self, attributor: &mut Attributor, ev: &Event) {
        let r = &ev.raw;
        let kind = match ev.kind {
            EventKind::ConnectStart => "connect_pending",
            EventKind::Established => "established",
            EventKind::Accepted => "accepted",
            EventKind::StateChange => "state_change",
            EventKind::Closed if r.old_state == tcp_state::SYN_SENT => "connect_failed",
            EventKind::Closed => "closed",
            EventKind::Listen => "listen",
        };
        let cause = if kind == "connect_failed" {
            FailureCause::classify(r.errno, r.flags).name().to_string()
        } else {
            String::new()
        };
        let workload = self.workload(attributor, r.cgroup_id);
        let remote = SocketAddr::new(ev.remote, r.remote_port);
        let event = pb::TraceEvent {
            ts_unix_ns: self.unix_ns(r.ts_ns),
            workload: Some(convert::workload(&workload, &self.node)),
            event: Some(pb::trace_event::Event::Tcp(pb::TcpEvent {
                kind: kind.into(),
                local: Some(convert::endpoint(ev.local, r.local_port)),
                remote: Some(convert::socket(remote)),
                old_state: tcp_state::name(r.old_state).into(),
                new_state: tcp_state::name(r.new_state).into(),
                duration_ns: r.duration_ns,
                cause,
                pid: r.tgid,
                comm: comm_string(&r.comm),
            })),
            missed_before: 0,
            node: self.node.clone(),
        };
        self.send(Trace {
            workload,
            remote: (ev.kind != EventKind::Listen).then_some(remote),
            name: None,
            kind: "tcp",
            event,
        });
    }

    pub fn dns(&mut self, attributor: &mut Attributor, e: &DnsEvent) {
        let (kind, query, rcode, answers, truncated, latency_ns, retry, ts) = match e {
            DnsEvent::Query { query, retry, .. } => {
                ("query", query, None, 0, false, 0, *retry, query.ts_ns)
            }
            DnsEvent::Answer {
                query,
                latency_ns,
                rcode,
                answers,
                truncated,
            } => (
                "answer",
                query,
                Some(*rcode),
                *answers,
                *truncated,
                *latency_ns,
                false,
                query.ts_ns + latency_ns,
            ),
            DnsEvent::Timeout { query } => {
                ("timeout", query, None, 0, false, 0, false, query.ts_ns)
            }
            DnsEvent::LateAnswer { query, latency_ns } => (
                "late_answer",
                query,
                None,
                0,
                false,
                *latency_ns,
                false,
                query.ts_ns + latency_ns,
            ),
            // Fan-out is a conclusion, not something that happened on the
            // wire: it shows in the aggregates.
            DnsEvent::FanOut { .. } => return,
        };
        let workload = self.workload(attributor, query.cgroup_id);
        let event = pb::TraceEvent {
            ts_unix_ns: self.unix_ns(ts),
            workload: Some(convert::workload(&workload, &self.node)),
            event: Some(pb::trace_event::Event::Dns(pb::DnsEvent {
                kind: kind.into(),
                name: query.name.to_string(),
                qtype: qtype_name(query.qtype),
                client: Some(convert::socket(query.client)),
                server: Some(convert::socket(query.server)),
                transport: query.transport.as_str().into(),
                id: u32::from(query.id),
                rcode: rcode.map(|r| rcode_name(r).to_string()).unwrap_or_default(),
                answers: u32::from(answers),
                truncated,
                latency_ns,
                retry,
                pid: query.tgid,
                comm: comm_string(&query.comm),
            })),
            missed_before: 0,
            node: self.node.clone(),
        };
        self.send(Trace {
            workload,
            remote: Some(query.server),
            name: Some(query.name.to_string()),
            kind: "dns",
            event,
        });
    }
}
