//! Unit tests of the metrics: events into a real aggregator, folds, and
//! the rendered text. Helpers here; `render` checks the text, `folds` the
//! bound and monotonic counters, `findings` the findings families.

mod findings;
mod folds;
mod render;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use sockeye_common::{event::EventKind, tcp_state};

use super::{
    families::render, labels::WorkloadLabels, process::Process, Capacities, Metrics, MetricsConfig,
    MetricsHandle,
};
use sockeye_core::testing::{closed, ev};

use crate::{
    aggregate::{Aggregator, Limits},
    attribution::{
        container::{Owner, Runtime},
        pod_meta::{MetaSource, PodMeta, WorkloadRef},
        Workload,
    },
    dns::aggregate::{DnsAggregates, DnsStats, RowKey},
    snapshot::Health,
};

const MS: u64 = 1_000_000;

fn pod(container: Option<&str>, owner: Option<&str>) -> Workload {
    Workload {
        cgroup_id: 42,
        cgroup_path: Some("/kubepods.slice/x".into()),
        owner: Some(Owner::Container {
            runtime: Runtime::Containerd,
            id: "0123456789abcdef".into(),
            pod_uid: Some("1111-2222".into()),
        }),
        pod: Some(PodMeta {
            namespace: "shop".into(),
            name: "checkout-7d9f8b6c5-x2x4q".into(),
            uid: Some("1111-2222".into()),
            container: container.map(Into::into),
            workload: owner.map(|name| WorkloadRef {
                kind: "Deployment".into(),
                name: name.into(),
            }),
            labels: BTreeMap::new(),
            source: MetaSource::KubeApi,
        }),
    }
}

/// cgroup 42 is the "app" container of a "checkout" Deployment's pod.
fn checkout(_: u64) -> WorkloadLabels {
    WorkloadLabels::of(&pod(Some("app"), Some("checkout")))
}

/// A completed connect of `cookie` to port `port` taking `latency_ns`,
/// closed at once when `close`.
fn connect(agg: &mut Aggregator, cookie: u64, port: u16, latency_ns: u64, close: bool) {
    let mut e = ev(EventKind::Established, cookie, 1000 * MS + cookie);
    e.raw.remote_port = port;
    e.raw.duration_ns = latency_ns;
    agg.handle(&e);
    if close {
        let mut c = closed(cookie, 1001 * MS + cookie, tcp_state::LAST_ACK);
        c.raw.remote_port = port;
        agg.handle(&c);
    }
}

fn refused(agg: &mut Aggregator, cookie: u64, port: u16) {
    let mut c = closed(cookie, 1000 * MS + cookie, tcp_state::SYN_SENT);
    c.raw.remote_port = port;
    c.raw.errno = 111;
    agg.handle(&c);
}

fn metrics(max_label_sets: usize) -> (Metrics, MetricsHandle) {
    Metrics::new(
        MetricsConfig { max_label_sets },
        Capacities {
            sockets: 100,
            flows: 16,
            dns_names: 10,
            dns_pending: 20,
        },
    )
}

fn fold(m: &mut Metrics, agg: &mut Aggregator, dns: &DnsAggregates, now_s: u64) {
    m.fold(agg, dns, Health::default(), &mut checkout, now_s);
}

fn text(handle: &MetricsHandle) -> String {
    render(
        handle.latest(),
        Process {
            resident_bytes: Some(4096),
            cpu_seconds: Some(0.5),
        },
    )
    .expect("renders")
}

/// The value of the sample line that starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

const APP: &str = r#"namespace="shop",workload="checkout",container="app""#;

/// The connections counted for port `port`, as rendered.
fn connections(handle: &MetricsHandle, port: u16) -> f64 {
    let series = format!(
        r#"sockeye_tcp_connections_total{{{APP},direction="outbound",destination="10.0.0.9:{port}"}}"#
    );
    value(&text(handle), &series).unwrap_or(0.0)
}
