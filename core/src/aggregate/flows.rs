//! Per-flow statistics: one flow is (cgroup, direction, remote address, port).

use std::net::IpAddr;

use super::{cause::FailureCause, histogram::Histogram, outage::Outages};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This container connected out.
    Outbound,
    /// This container accepted the connection.
    Inbound,
}

/// Aggregation key. For outbound flows `port` is the remote (service) port;
/// for inbound flows it is the local listening port, because the client's
/// ephemeral port would make every connection its own flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub cgroup_id: u64,
    pub direction: Direction,
    pub remote: IpAddr,
    pub port: u16,
}

impl FlowKey {
    /// The one place that decides which port names a flow: the remote
    /// (service) port going out, the local (listening) port coming in.
    pub fn new(
        cgroup_id: u64,
        direction: Direction,
        remote: IpAddr,
        local_port: u16,
        remote_port: u16,
    ) -> Self {
        let port = match direction {
            Direction::Outbound => remote_port,
            Direction::Inbound => local_port,
        };
        Self {
            cgroup_id,
            direction,
            remote,
            port,
        }
    }
}

/// A session closed this soon after it opened, with at most
/// [`FEW_BYTES`] sent by the side that closed it, is a refusal when it
/// repeats: a server at its connection limit (redis `maxclients`,
/// PostgreSQL "too many clients") or refusing credentials accepts, says
/// no in a line, and closes. Healthy short connections carry a request
/// and its answer and are closed by the client, or exchange more.
pub const SHORT_SESSION_NS: u64 = 500_000_000;
/// What a refusal sends, from the protocols' messages: redis's "-ERR max
/// number of clients reached" 37 bytes, PostgreSQL's "too many clients"
/// ErrorResponse about 100, a failed SCRAM login about 240 (the SASL
/// exchange, then the error). A healthy PostgreSQL session sends more
/// before its first answer (AuthenticationOk, a ParameterStatus for each
/// of 13 settings, BackendKeyData, ReadyForQuery: about 410 bytes), so
/// one the backend happens to close first (it exits on the client's
/// Terminate before the client's FIN arrives, which a loaded node makes
/// common: a third of the sessions, seen here) is no refusal.
pub const FEW_BYTES: u64 = 320;
/// Unanswered connections remembered per flow.
pub const UNANSWERED_KEPT: usize = 32;

/// Counters reset at every output window ("per interval").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    pub opened: u64,
    pub closed: u64,
    pub connects_ok: u64,
    pub connects_failed: u64,
}

/// The fields every event touches come first, in declaration order
/// (`repr(C)`): on full tables a flow's entry is a cache miss per event, and
/// spread over its 8 cache lines it was more than one.
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct FlowStats {
    /// Monotonic ns of the last event, for idle expiry and eviction.
    pub last_activity_ns: u64,
    /// Changed since the metrics last took its counts.
    pub changed: bool,
    /// The last process seen using this flow.
    pub last_tgid: u32,
    pub last_comm: [u8; 16],
    /// Outbound: connects that completed. Inbound: connections accepted.
    pub connects_ok: u64,
    pub opened: u64,
    pub closed: u64,
    pub window: Window,
    /// Its sockets in the socket table, kept by the table.
    pub sockets: super::sockets::FlowSockets,
    /// Bytes of sockets that have closed (the kernel reports them at close).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Short sessions (see [`SHORT_SESSION_NS`]) this side closed first,
    /// having sent few bytes: a server refusing its clients, inbound.
    pub short_closed_here: u64,
    /// Short sessions the peer closed first, having sent few bytes: a
    /// server refusing this client, outbound.
    pub short_closed_by_peer: u64,
    /// At a server (inbound): short sessions its client closed first after
    /// a terse answer from here (1 to [`FEW_BYTES`]). A refusal whose client
    /// won the race to close (on loopback or between pods of one node the
    /// client reads the error and closes before the server's own close
    /// lands, for a quarter to most of the refusals), or a terse server's
    /// way of working: which, only the flow's history tells.
    pub short_answered_closed_by_peer: u64,
    pub syn_retransmits: u64,
    /// Failed connects by cause, indexed like [`FailureCause::ALL`].
    pub failed: [u64; FailureCause::ALL.len()],
    /// The cgroup at the other end, when the last connection linked to
    /// one on this node (0 if none was).
    pub peer_cgroup: u64,
    /// Connect latency (outbound only: SYN sent to SYN-ACK received).
    pub latency: Histogram,
    /// Runs of failed connects ended by a success (outbound): how long a
    /// destination was not accepting, from this client's side.
    pub outage: Outages,
    /// Accepted connections the peer closed before this side had sent a
    /// byte: a client that gave up waiting (a probe timing out). (when,
    /// how long it had waited), newest last, at most [`UNANSWERED_KEPT`].
    pub unanswered: std::collections::VecDeque<(u64, u64)>,
    /// The cumulative counts the metrics have already taken (None: none
    /// yet). Kept with the flow so that a flow evicted and created again
    /// starts from nothing, and the metrics add only what changed.
    pub exported: Option<Box<Exported>>,
}

/// A flow's cumulative counts as the metrics last took them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exported {
    pub connects_ok: u64,
    pub failed: [u64; FailureCause::ALL.len()],
    pub syn_retransmits: u64,
    pub latency: Histogram,
}

impl FlowStats {
    /// A connection completed (outbound) or was accepted (inbound).
    pub fn record_open(&mut self) {
        self.connects_ok += 1;
        self.window.connects_ok += 1;
        self.opened += 1;
        self.window.opened += 1;
    }

    pub fn record_failure(&mut self, cause: FailureCause) {
        let idx = FailureCause::ALL
            .iter()
            .position(|c| *c == cause)
            .unwrap_or(FailureCause::ALL.len() - 1);
        self.failed[idx] += 1;
        self.window.connects_failed += 1;
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// The counts as they are now, for [`Self::exported`].
    pub fn counts(&self) -> Exported {
        Exported {
            connects_ok: self.connects_ok,
            failed: self.failed,
            syn_retransmits: self.syn_retransmits,
            latency: self.latency.clone(),
        }
    }

    pub fn touch(&mut self, now_ns: u64, tgid: u32, comm: [u8; 16]) {
        // Every change to the counts comes through here.
        self.changed = true;
        self.last_activity_ns = self.last_activity_ns.max(now_ns);
        if tgid != 0 {
            self.last_tgid = tgid;
            self.last_comm = comm;
        }
    }
}
