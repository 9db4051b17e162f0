//! Turns the agent's cumulative aggregates into windows for the collector:
//! counts and histograms become what changed since the previous window,
//! gauges (open sockets, states, ages, listeners) stay as they are at the
//! window's end. Rows with nothing new and nothing open are left out.

use std::collections::HashMap;

use sockeye_collector::histogram::MergedHistogram;
use sockeye_proto::v1 as pb;

/// Identity of a row across windows.
type FlowKey = (u64, i32, String, u32);
type DnsKey = (u64, String, String, String, u32);

#[derive(Default)]
pub struct WindowBuilder {
    node: String,
    agent_id: String,
    seq: u64,
    last_end_ms: i64,
    flows: HashMap<FlowKey, pb::TcpFlow>,
    names: HashMap<DnsKey, pb::DnsCounts>,
    totals: HashMap<DnsKey, pb::DnsCounts>,
}

impl WindowBuilder {
    pub fn new(node: String, agent_id: String, start_ms: i64) -> Self {
        Self {
            node,
            agent_id,
            last_end_ms: start_ms,
            ..Self::default()
        }
    }

    /// The next window, ending at `end_ms`, from cumulative `agg`.
    pub fn build(&mut self, agg: pb::Aggregates, end_ms: i64) -> pb::Window {
        self.seq += 1;
        let mut flows = HashMap::new();
        let tcp_flows = agg
            .tcp_flows
            .into_iter()
            .filter_map(|f| {
                let key = flow_key(&f);
                let delta = flow_delta(&f, self.flows.get(&key));
                flows.insert(key, f);
                delta
            })
            .collect();
        self.flows = flows;
        let mut names = HashMap::new();
        let dns_names = agg
            .dns_names
            .into_iter()
            .filter_map(|mut n| {
                let key = dns_key(n.workload.as_ref(), &n.name, &n.qtype, n.server.as_ref());
                let cur = n.counts.take().unwrap_or_default();
                let delta = counts_delta(&cur, self.names.get(&key));
                names.insert(key, cur);
                delta.map(|d| pb::DnsName {
                    counts: Some(d),
                    ..n
                })
            })
            .collect();
        self.names = names;
        let mut totals = HashMap::new();
        let dns_totals = agg
            .dns_totals
            .into_iter()
            .filter_map(|mut t| {
                let key = dns_key(t.workload.as_ref(), "", "", t.server.as_ref());
                let cur = t.counts.take().unwrap_or_default();
                let delta = counts_delta(&cur, self.totals.get(&key));
                totals.insert(key, cur);
                delta.map(|d| pb::DnsTotal {
                    counts: Some(d),
                    ..t
                })
            })
            .collect();
        self.totals = totals;
        let start = self.last_end_ms;
        self.last_end_ms = end_ms;
        pb::Window {
            node: self.node.clone(),
            agent_id: self.agent_id.clone(),
            seq: self.seq,
            start_unix_ms: start.min(end_ms),
            end_unix_ms: end_ms,
            aggregates: Some(pb::Aggregates {
                tcp_flows,
                listeners: agg.listeners,
                dns_names,
                dns_totals,
                findings: agg.findings,
                drops: agg.drops,
            }),
            dropped_windows_before: 0,
        }
    }
}

fn flow_key(f: &pb::TcpFlow) -> FlowKey {
    let remote = f.remote.clone().unwrap_or_default();
    (
        f.workload.as_ref().map_or(0, |w| w.cgroup_id),
        f.direction,
        remote.ip,
        remote.port,
    )
}

fn dns_key(
    w: Option<&pb::Workload>,
    name: &str,
    qtype: &str,
    server: Option<&pb::Endpoint>,
) -> DnsKey {
    let server = server.cloned().unwrap_or_default();
    (
        w.map_or(0, |w| w.cgroup_id),
        name.to_string(),
        qtype.to_string(),
        server.ip,
        server.port,
    )
}

/// `cur - prev` for a counter; a counter that went down belongs to a row
/// that was evicted and started again, so all of `cur` is new.
fn sub(cur: u64, prev: u64) -> u64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

fn map_delta(
    cur: &HashMap<String, u64>,
    prev: Option<&HashMap<String, u64>>,
) -> HashMap<String, u64> {
    cur.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                sub(*v, prev.and_then(|p| p.get(k)).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The bins added since `prev`. Min and max are those of the whole
/// histogram (the window's own are not known); the count and sum are exact.
pub fn histogram_delta(cur: &pb::Histogram, prev: Option<&pb::Histogram>) -> pb::Histogram {
    let Some(prev) = prev.filter(|p| p.count <= cur.count) else {
        return cur.clone();
    };
    let before: HashMap<u64, u64> = prev.bins.iter().map(|b| (b.lower_ns, b.count)).collect();
    pb::Histogram {
        bins: cur
            .bins
            .iter()
            .filter_map(|b| {
                let n = sub(b.count, before.get(&b.lower_ns).copied().unwrap_or(0));
                (n > 0).then_some(pb::histogram::Bin { count: n, ..*b })
            })
            .collect(),
        count: cur.count - prev.count,
        sum_ns: sub(cur.sum_ns, prev.sum_ns),
        min_ns: cur.min_ns,
        max_ns: cur.max_ns,
    }
}

fn flow_delta(cur: &pb::TcpFlow, prev: Option<&pb::TcpFlow>) -> Option<pb::TcpFlow> {
    // A row whose counters went down was evicted and started again: all
    // of it is new.
    let prev = prev.filter(|p| p.opened <= cur.opened && p.connects_ok <= cur.connects_ok);
    let d = |c: u64, p: fn(&pb::TcpFlow) -> u64| sub(c, prev.map_or(0, p));
    let delta = pb::TcpFlow {
        connects_ok: d(cur.connects_ok, |p| p.connects_ok),
        connects_failed: map_delta(&cur.connects_failed, prev.map(|p| &p.connects_failed)),
        connect_latency: cur
            .connect_latency
            .as_ref()
            .map(|h| histogram_delta(h, prev.and_then(|p| p.connect_latency.as_ref()))),
        connect_percentiles: None,
        syn_retransmits: d(cur.syn_retransmits, |p| p.syn_retransmits),
        opened: d(cur.opened, |p| p.opened),
        closed: d(cur.closed, |p| p.closed),
        bytes_sent: d(cur.bytes_sent, |p| p.bytes_sent),
        bytes_received: d(cur.bytes_received, |p| p.bytes_received),
        ..cur.clone()
    };
    let mut delta = delta;
    delta.connect_percentiles = delta.connect_latency.as_ref().and_then(percentiles);
    let changed = delta.connects_ok > 0
        || !delta.connects_failed.is_empty()
        || delta.opened > 0
        || delta.closed > 0
        || delta.syn_retransmits > 0;
    (changed || cur.open > 0).then_some(delta)
}

fn counts_delta(cur: &pb::DnsCounts, prev: Option<&pb::DnsCounts>) -> Option<pb::DnsCounts> {
    let prev = prev.filter(|p| p.queries <= cur.queries);
    let d = |c: u64, p: fn(&pb::DnsCounts) -> u64| sub(c, prev.map_or(0, p));
    let delta = pb::DnsCounts {
        queries: d(cur.queries, |p| p.queries),
        tcp_queries: d(cur.tcp_queries, |p| p.tcp_queries),
        retries: d(cur.retries, |p| p.retries),
        answers: d(cur.answers, |p| p.answers),
        rcodes: map_delta(&cur.rcodes, prev.map(|p| &p.rcodes)),
        empty_answers: d(cur.empty_answers, |p| p.empty_answers),
        timeouts: d(cur.timeouts, |p| p.timeouts),
        late_answers: d(cur.late_answers, |p| p.late_answers),
        truncated: d(cur.truncated, |p| p.truncated),
        tcp_after_truncation: d(cur.tcp_after_truncation, |p| p.tcp_after_truncation),
        fanout_lookups: d(cur.fanout_lookups, |p| p.fanout_lookups),
        fanout_wasted: d(cur.fanout_wasted, |p| p.fanout_wasted),
        latency: cur
            .latency
            .as_ref()
            .map(|h| histogram_delta(h, prev.and_then(|p| p.latency.as_ref()))),
        percentiles: None,
    };
    let mut delta = delta;
    delta.percentiles = delta.latency.as_ref().and_then(percentiles);
    let changed = delta.queries > 0
        || delta.answers > 0
        || delta.timeouts > 0
        || delta.late_answers > 0
        || delta.fanout_lookups > 0;
    changed.then_some(delta)
}

/// The window's own percentiles, from its histogram (the same merge the
/// collector does), so a client shown a single window gets them too.
fn percentiles(h: &pb::Histogram) -> Option<pb::Percentiles> {
    let mut m = MergedHistogram::default();
    m.add(h);
    m.percentiles()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(ok: u64, open: u64, lat: &[(u64, u64)]) -> pb::TcpFlow {
        pb::TcpFlow {
            workload: Some(pb::Workload {
                cgroup_id: 7,
                ..Default::default()
            }),
            direction: pb::Direction::Outbound as i32,
            remote: Some(pb::Endpoint {
                ip: "10.0.0.1".into(),
                port: 6379,
            }),
            connects_ok: ok,
            opened: ok,
            open,
            connect_latency: Some(pb::Histogram {
                bins: lat
                    .iter()
                    .map(|&(lower_ns, count)| pb::histogram::Bin {
                        lower_ns,
                        upper_ns: lower_ns + 1000,
                        count,
                    })
                    .collect(),
                count: lat.iter().map(|b| b.1).sum(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn agg(flows: Vec<pb::TcpFlow>) -> pb::Aggregates {
        pb::Aggregates {
            tcp_flows: flows,
            ..Default::default()
        }
    }

    #[test]
    fn counts_and_histograms_become_deltas_gauges_stay() {
        let mut b = WindowBuilder::new("n1".into(), "a1".into(), 0);
        let w1 = b.build(agg(vec![flow(3, 1, &[(10_000, 3)])]), 1000);
        assert_eq!(w1.seq, 1);
        assert_eq!(w1.aggregates.as_ref().unwrap().tcp_flows[0].connects_ok, 3);
        let w2 = b.build(agg(vec![flow(5, 2, &[(10_000, 4), (20_000, 1)])]), 2000);
        let f = &w2.aggregates.as_ref().unwrap().tcp_flows[0];
        assert_eq!((w2.seq, w2.start_unix_ms, w2.end_unix_ms), (2, 1000, 2000));
        assert_eq!((f.connects_ok, f.open), (2, 2));
        let h = f.connect_latency.as_ref().unwrap();
        assert_eq!(h.count, 2);
        let bins: Vec<(u64, u64)> = h.bins.iter().map(|b| (b.lower_ns, b.count)).collect();
        assert_eq!(bins, vec![(10_000, 1), (20_000, 1)]);
        assert_eq!(f.connect_percentiles.map(|p| p.count), Some(2));
    }

    #[test]
    fn quiet_closed_rows_are_left_out_and_restarted_rows_count_whole() {
        let mut b = WindowBuilder::new("n1".into(), "a1".into(), 0);
        b.build(agg(vec![flow(3, 0, &[(10_000, 3)])]), 1000);
        let w = b.build(agg(vec![flow(3, 0, &[(10_000, 3)])]), 2000);
        assert!(w.aggregates.unwrap().tcp_flows.is_empty(), "nothing new");
        // Evicted and seen again: its counters restart below the previous.
        let w = b.build(agg(vec![flow(1, 0, &[(10_000, 1)])]), 3000);
        assert_eq!(w.aggregates.unwrap().tcp_flows[0].connects_ok, 1);
    }
}

/// What a window costs in bytes at the agent's default bounds: the figures
/// behind the collector's `DEFAULT_MAX_WINDOW_BYTES` and the push buffer's
/// default (README "Push").
#[cfg(test)]
mod size {
    use prost::Message;

    use super::*;
    use crate::aggregate::Limits;

    fn workload(i: usize) -> pb::Workload {
        pb::Workload {
            cgroup_id: 1_000_000 + i as u64,
            cgroup_path: format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f3c9a1e_{i:08}.slice/cri-containerd-{:064x}.scope", i),
            runtime: "containerd".into(),
            container_id: format!("{:064x}", i),
            pod_uid: format!("0f3c9a1e-2b7d-4e61-9a0c-{i:012}"),
            namespace: "payments-production".into(),
            pod: format!("checkout-api-7d9f8b6c5-{i:05}"),
            container: "checkout-api".into(),
            owner_kind: "Deployment".into(),
            owner_name: "checkout-api".into(),
            label: format!("payments-production/checkout-api-7d9f8b6c5-{i:05}/checkout-api"),
            node: "ip-10-0-101-12.eu-west-1.compute.internal".into(),
        }
    }

    /// A flow whose latency histogram has `bins` bins (the agent's has at
    /// most 592), with every failure cause, state and drop counter set.
    fn flow(i: usize, bins: usize) -> pb::TcpFlow {
        let lat = pb::Histogram {
            bins: (0..bins)
                .map(|b| pb::histogram::Bin {
                    lower_ns: 1_000 * (b as u64 + 10).pow(2),
                    upper_ns: 1_000 * (b as u64 + 11).pow(2),
                    count: 1 + b as u64,
                })
                .collect(),
            count: 1_000_000,
            sum_ns: 1 << 40,
            min_ns: 10_000,
            max_ns: 1 << 33,
        };
        let map = |keys: &[&str]| keys.iter().map(|k| (k.to_string(), 1_000u64)).collect();
        pb::TcpFlow {
            workload: Some(workload(i)),
            direction: pb::Direction::Outbound as i32,
            remote: Some(pb::Endpoint {
                ip: format!("fd00:10:244:{:x}::{:x}", i >> 8, i & 0xff),
                port: 6379,
            }),
            connects_ok: 1_000_000 + i as u64,
            connects_failed: map(&["refused", "timed_out", "unreachable", "aborted", "reset"]),
            connect_latency: Some(lat),
            syn_retransmits: 10_000,
            open: 1_000,
            states: map(&[
                "ESTABLISHED",
                "CLOSE_WAIT",
                "SYN_SENT",
                "FIN_WAIT1",
                "TIME_WAIT",
            ]),
            oldest_open_s: 86_400.5,
            opened: 1_000_000 + i as u64,
            closed: 1_000_000,
            bytes_sent: 1 << 40,
            bytes_received: 1 << 40,
            last_pid: 4_000_000,
            last_comm: "checkout-worker".into(),
            drops: Some(pb::Drops {
                counters: map(&[
                    "kernel_ringbuf_full",
                    "kernel_socket_map_full",
                    "user_flows_evicted",
                ]),
                total: 3_000,
            }),
            ..Default::default()
        }
    }

    /// A window with the default bound of flows. Its size is the sum of its
    /// flows' (plus a few bytes), so 1/16 of them are built and the size
    /// scaled: the test then takes a second, not half a minute.
    fn window_bytes(bins: usize) -> usize {
        let part = Limits::default().max_flows / 16;
        let mut b = WindowBuilder::new("n".into(), "a".into(), 0);
        let agg = pb::Aggregates {
            tcp_flows: (0..part).map(|i| flow(i, bins)).collect(),
            ..Default::default()
        };
        b.build(agg, 10_000).encoded_len() * 16
    }

    #[test]
    fn a_window_at_the_default_bounds() {
        let typical = window_bytes(20);
        let worst = window_bytes(592);
        println!(
            "a window of {} flows: {:.1} MiB with 20 latency bins each, {:.1} MiB with all 592",
            Limits::default().max_flows,
            typical as f64 / (1 << 20) as f64,
            worst as f64 / (1 << 20) as f64
        );
        let default_max = sockeye_collector::DEFAULT_MAX_WINDOW_BYTES as usize;
        // 17.5 MiB measured: three such windows fit under the limit.
        assert!(typical * 3 < default_max, "{typical}");
        assert!(
            typical > sockeye_collector::DEFAULT_MAX_MESSAGE_BYTES,
            "chunks are needed: {typical}"
        );
        assert!(
            worst > default_max,
            "the absolute worst is refused and counted, not stored: {worst}"
        );
    }
}
