//! The agent's health: every loss counter, kernel and user side, the
//! metadata sources, the pusher and the findings machinery.

use std::collections::BTreeMap;

use sockeye_common::counters::Counter;

use crate::{
    aggregate::{Aggregator, UserDrops},
    attribution::{Attributor, MetadataStats},
    dns::DnsHealth,
};

pub use sockeye_core::snapshot::*;

/// Every loss counter, kernel and user side, plus throughput.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    pub events_received: u64,
    pub kernel_events_emitted: u64,
    pub kernel_dns_packets_emitted: u64,
    /// Failed connect()/socket() calls (no port, no fd) the kernel sent,
    /// and those the agent received.
    pub kernel_resource_failures_emitted: u64,
    pub resource_failures_received: u64,
    pub lost: BTreeMap<&'static str, u64>,
    pub lost_total: u64,
    pub untracked_socket_events: u64,
    pub tracked_sockets: u64,
    pub flows: u64,
    pub cgroups_unresolved: u64,
    /// How long TCP events waited in the ring buffer before the agent read
    /// them (the latency batched wake-ups add).
    pub ring_lag: crate::ebpf::lag::LagSummary,
    /// Runtime record reads and the Kubernetes API watch.
    pub metadata: MetadataStats,
    pub dns: DnsHealth,
    /// Windows pushed to the collector, when pushing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushHealth>,
    /// The findings machinery, unless detection is off (`--no-findings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<FindingsHealth>,
}

/// Counts of the findings machinery.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FindingsHealth {
    pub evaluations: u64,
    pub open: u64,
    /// Since start, by kind.
    pub opened: BTreeMap<&'static str, u64>,
    pub resolved: BTreeMap<&'static str, u64>,
    /// Resolved findings no longer remembered (`resolved_kept`).
    pub resolved_forgotten: u64,
    /// Evidence the kernel could not be asked for (the finding is reported
    /// without it).
    pub probe_failures: u64,
    /// Updates that `WatchFindings` clients missed because they read too
    /// slowly (each was told in `missed_before`).
    pub watch_updates_missed: u64,
}

/// The pusher's counters (its losses are also in `lost`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushHealth {
    pub windows_sent: u64,
    /// Windows too large for one gRPC message, sent in chunks.
    pub windows_sent_in_chunks: u64,
    pub windows_acked: u64,
    pub windows_buffered: u64,
    /// Encoded bytes of the buffered windows, and the buffer's bound.
    pub bytes_buffered: u64,
    pub buffer_limit_bytes: u64,
    /// Bytes of the windows dropped (`lost.push_windows_dropped` counts them).
    pub bytes_dropped: u64,
    pub reconnects: u64,
    /// Streams the collector ended with `Unavailable` (store failed, or
    /// shutting down).
    pub collector_unavailable: u64,
    /// Streams the collector ended with another error status (it refused
    /// what was sent).
    pub collector_refused: u64,
}

impl Health {
    pub fn collect(
        agg: &Aggregator,
        dns: DnsHealth,
        kernel: &[(Counter, u64)],
        attributor: &Attributor,
    ) -> Self {
        let mut h = Health {
            events_received: agg.events_received,
            resource_failures_received: agg.resources.received,
            tracked_sockets: agg.sockets.len() as u64,
            flows: agg.flows.len() as u64,
            cgroups_unresolved: attributor.unresolved(),
            metadata: attributor.metadata_stats(),
            ..Default::default()
        };
        for &(c, v) in kernel {
            match c {
                Counter::EventsEmitted => h.kernel_events_emitted = v,
                Counter::UntrackedSocket => h.untracked_socket_events = v,
                Counter::DnsPacketsEmitted => h.kernel_dns_packets_emitted = v,
                Counter::ResourceFailuresEmitted => h.kernel_resource_failures_emitted = v,
                c => {
                    h.lost.insert(c.name(), v);
                }
            }
        }
        let UserDrops {
            decode_errors,
            socket_table_full,
            time_wait_buckets_full,
            flows_evicted,
            resource_decode_errors,
            resource_keys_evicted,
        } = agg.drops();
        h.lost.insert("user_decode_errors", decode_errors);
        h.lost.insert("user_socket_table_full", socket_table_full);
        h.lost.insert("user_flows_evicted", flows_evicted);
        h.lost
            .insert("user_time_wait_buckets_full", time_wait_buckets_full);
        h.lost
            .insert("user_resource_decode_errors", resource_decode_errors);
        h.lost
            .insert("user_resource_keys_evicted", resource_keys_evicted);
        // A listener's stop that cannot be placed: a restart of it would
        // go unexplained.
        h.lost.insert(
            "user_listener_closes_unmatched",
            agg.listeners.closes_unmatched,
        );
        // DNS we could not use. Not losses, and so only in `dns`: malformed
        // messages (`dns.parse_errors`), names folded into "other" (their
        // counts are kept), answers to queries sent before the agent started
        // and TCP streams that began before it (`unmatched_answers`,
        // `tcp.resyncs`), like `untracked_socket_events` for TCP.
        h.lost.insert("user_dns_decode_errors", dns.decode_errors);
        h.lost
            .insert("user_dns_pending_full", dns.tracker.pending_full);
        h.lost.insert("user_dns_walks_full", dns.tracker.walks_full);
        h.lost
            .insert("user_dns_tcp_beyond_capture", dns.tcp.beyond_capture);
        h.lost
            .insert("user_dns_tcp_streams_evicted", dns.tcp.evicted);
        h.dns = dns;
        h.lost_total = h.lost.values().sum();
        h
    }
}
