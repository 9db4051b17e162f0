//! Renders a [`MetricsState`] as OpenMetrics text (which Prometheus
//! scrapes natively) through prometheus-client's encoder, which takes
//! care of the format: `_total` suffixes, `# UNIT` lines, escaping of
//! label values, cumulative buckets and the closing `# EOF`.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{buckets::Buckets, dns::RCODE_NAMES, labels::WorkloadLabels, process::Process};
use super::{labels::DnsKey, MetricsState};
use crate::snapshot::PushHealth;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn render(state: Arc<MetricsState>, process: Process) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families { state, process }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Families {
    state: Arc<MetricsState>,
    process: Process,
}

pub(super) type Done = std::result::Result<(), std::fmt::Error>;

impl Collector for Families {
    fn encode(&self, mut enc: DescriptorEncoder) -> Done {
        super::tcp_families::encode(&mut enc, &self.state.tcp)?;
        self.dns(&mut enc)?;
        super::findings_families::encode(&mut enc, &self.state)?;
        self.agent(&mut enc)
    }
}

pub(super) fn workload(w: &WorkloadLabels) -> [(&'static str, &str); 3] {
    [
        ("namespace", &w.namespace),
        ("workload", &w.workload),
        ("container", &w.container),
    ]
}

fn dns_labels(k: &DnsKey) -> [(&'static str, &str); 4] {
    let [ns, wl, c] = workload(&k.workload);
    [ns, wl, c, ("server", &k.server)]
}

/// Starts a family; samples follow through the returned encoder.
pub(super) fn family<'s>(
    enc: &'s mut DescriptorEncoder,
    name: &'s str,
    help: &str,
    unit: Option<&'s Unit>,
    kind: MetricType,
) -> std::result::Result<MetricEncoder<'s>, std::fmt::Error> {
    enc.encode_descriptor(name, help, unit, kind)
}

pub(super) fn counter(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: u64) -> Done {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

pub(super) fn gauge(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: u64) -> Done {
    m.encode_family(labels)?.encode_gauge(&v)
}

pub(super) fn histogram(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, b: &Buckets) -> Done {
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
        b.sum_seconds(),
        b.count,
        &b.prometheus(),
        None,
    )
}

/// Windows for the collector (when the agent pushes); the windows dropped
/// and refused are in `sockeye_dropped_events_total{counter="push_windows_dropped"}`
/// and `{counter="push_windows_refused"}`.
fn push(enc: &mut DescriptorEncoder, p: &PushHealth) -> Done {
    for (name, help, v) in [
        (
            "sockeye_push_windows_sent",
            "Windows sent to the collector, resends included.",
            p.windows_sent,
        ),
        (
            "sockeye_push_windows_sent_in_chunks",
            "Windows larger than one gRPC message, sent in chunks.",
            p.windows_sent_in_chunks,
        ),
        (
            "sockeye_push_windows_acked",
            "Windows the collector acknowledged.",
            p.windows_acked,
        ),
        (
            "sockeye_push_reconnects",
            "Sessions with the collector that ended (each followed by a jittered backoff).",
            p.reconnects,
        ),
        (
            "sockeye_push_dropped_bytes",
            "Encoded bytes of the windows dropped from the push buffer.",
            p.bytes_dropped,
        ),
    ] {
        family(enc, name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    let mut m = family(
        enc,
        "sockeye_push_collector_errors",
        "Push streams the collector itself ended with an error status: unavailable (its store failed, or it is shutting down), refused (any other status: it refused what was sent).",
        None,
        MetricType::Counter,
    )?;
    counter(&mut m, &[("error", "unavailable")], p.collector_unavailable)?;
    counter(&mut m, &[("error", "refused")], p.collector_refused)?;
    for (name, help, v) in [
        (
            "sockeye_push_windows_buffered",
            "Windows kept until the collector acknowledges them.",
            p.windows_buffered,
        ),
        (
            "sockeye_push_buffered_bytes",
            "Encoded bytes of the windows kept until the collector acknowledges them.",
            p.bytes_buffered,
        ),
        (
            "sockeye_push_buffer_limit_bytes",
            "The push buffer's bound (--push-buffer-mib); past it the oldest windows are dropped and counted.",
            p.buffer_limit_bytes,
        ),
    ] {
        family(enc, name, help, None, MetricType::Gauge)?.encode_gauge(&v)?;
    }
    Ok(())
}

pub(super) const SECONDS: Unit = Unit::Seconds;
const BYTES: Unit = Unit::Bytes;

impl Families {
    fn dns(&self, enc: &mut DescriptorEncoder) -> Done {
        let series = &self.state.dns;
        let mut m = family(
            enc,
            "sockeye_dns_request_duration",
            "DNS queries answered: the query leaving the client to the answer reaching it.",
            Some(&SECONDS),
            MetricType::Histogram,
        )?;
        for (k, s) in series {
            histogram(&mut m, &dns_labels(k), &s.duration)?;
        }
        let mut m = family(
            enc,
            "sockeye_dns_queries",
            "DNS queries sent, retries included.",
            None,
            MetricType::Counter,
        )?;
        for (k, s) in series {
            counter(&mut m, &dns_labels(k), s.queries)?;
        }
        let mut m = family(
            enc,
            "sockeye_dns_responses",
            "DNS answers by RCODE (OTHER: any RCODE above REFUSED).",
            None,
            MetricType::Counter,
        )?;
        for (k, s) in series {
            let [ns, wl, c, srv] = dns_labels(k);
            for (rcode, &n) in RCODE_NAMES.iter().zip(&s.responses) {
                counter(&mut m, &[ns, wl, c, srv, ("rcode", rcode)], n)?;
            }
        }
        let mut m = family(
            enc,
            "sockeye_dns_timeouts",
            "DNS queries with no answer within --dns-timeout.",
            None,
            MetricType::Counter,
        )?;
        for (k, s) in series {
            counter(&mut m, &dns_labels(k), s.timeouts)?;
        }
        Ok(())
    }

    fn agent(&self, enc: &mut DescriptorEncoder) -> Done {
        let state = &self.state;
        let mut m = family(
            enc,
            "sockeye_build",
            "The agent's version.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        if let Some(h) = &state.health {
            let mut m = family(
                enc,
                "sockeye_events_received",
                "Records read from the kernel's ring buffers: socket events (tcp), DNS packets (dns), connects and socket() calls that ran out of ports or fds (resources).",
                None,
                MetricType::Counter,
            )?;
            counter(&mut m, &[("ring", "tcp")], h.events_received)?;
            counter(&mut m, &[("ring", "dns")], h.dns.packets)?;
            counter(
                &mut m,
                &[("ring", "resources")],
                h.resource_failures_received,
            )?;
            let mut m = family(
                enc,
                "sockeye_kernel_events_emitted",
                "Records the kernel programs wrote to the ring buffers.",
                None,
                MetricType::Counter,
            )?;
            counter(&mut m, &[("ring", "tcp")], h.kernel_events_emitted)?;
            counter(&mut m, &[("ring", "dns")], h.kernel_dns_packets_emitted)?;
            counter(
                &mut m,
                &[("ring", "resources")],
                h.kernel_resource_failures_emitted,
            )?;
            let mut m = family(
                enc,
                "sockeye_dropped_events",
                "Everything lost, by counter (the names of the JSON stats' lost map; kernel_ringbuf_full, kernel_dns_ringbuf_full and kernel_resource_ringbuf_full are ring buffer losses).",
                None,
                MetricType::Counter,
            )?;
            for (name, &n) in &h.lost {
                counter(&mut m, &[("counter", *name)], n)?;
            }
            counter(
                &mut m,
                &[("counter", "user_metrics_flows_lost")],
                state.flows_lost,
            )?;
            let mut m = family(
                enc,
                "sockeye_untracked_socket_events",
                "State changes of sockets opened before the agent (followed through /proc instead); not a loss.",
                None,
                MetricType::Counter,
            )?;
            m.encode_counter::<NoLabelSet, _, u64>(&h.untracked_socket_events, None)?;
            let mut m = family(
                enc,
                "sockeye_dns_malformed_messages",
                "DNS messages that could not be parsed, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (reason, &n) in &h.dns.parse_errors {
                counter(&mut m, &[("reason", *reason)], n)?;
            }
            if let Some(p) = &h.push {
                push(enc, p)?;
            }
        }
        let mut m = family(
            enc,
            "sockeye_table_entries",
            "Entries in each bounded table of the agent.",
            None,
            MetricType::Gauge,
        )?;
        for f in &state.fills {
            gauge(&mut m, &[("table", f.table)], f.entries)?;
        }
        let mut m = family(
            enc,
            "sockeye_table_capacity",
            "Entries each bounded table holds at most (see its flag).",
            None,
            MetricType::Gauge,
        )?;
        for f in &state.fills {
            gauge(&mut m, &[("table", f.table)], f.capacity)?;
        }
        let mut m = family(
            enc,
            "sockeye_metrics_overflow",
            "Additions counted under the \"other\" label set because the group's label sets were at --metrics-max-label-sets.",
            None,
            MetricType::Counter,
        )?;
        for &(group, n) in &state.overflowed {
            counter(&mut m, &[("group", group)], n)?;
        }
        if let Some(b) = self.process.resident_bytes {
            let mut m = family(
                enc,
                "sockeye_process_resident_memory",
                "Resident memory of the agent process.",
                Some(&BYTES),
                MetricType::Gauge,
            )?;
            m.encode_gauge(&b)?;
        }
        if let Some(s) = self.process.cpu_seconds {
            let mut m = family(
                enc,
                "sockeye_process_cpu",
                "CPU time of the agent process (user and system).",
                Some(&SECONDS),
                MetricType::Counter,
            )?;
            m.encode_counter::<NoLabelSet, _, u64>(&s, None)?;
        }
        Ok(())
    }
}
