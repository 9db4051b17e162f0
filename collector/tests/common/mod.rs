//! Test harness: a real collector on loopback TCP and a unix socket in a
//! temporary directory, real gRPC clients, and windows that look like what
//! an agent sends (flows with the agent's histogram bins, DNS names, drop
//! counters).

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod clickhouse;

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hyper_util::rt::TokioIo;
use sockeye_collector::{Collector, CollectorConfig, StoreKind};
use sockeye_proto::v1::{self as pb, collector_service_client::CollectorServiceClient};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    transport::{Channel, Endpoint, Uri},
    Streaming,
};

pub mod browser;
pub mod kubeapi;

pub type Client = CollectorServiceClient<Channel>;

/// How long any single wait in a test may take before it fails.
/// Long enough for a process start or a store recovery on a loaded 2-core
/// machine; it only costs time when a test fails anyway.
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// An embedded collector serving on 127.0.0.1:<ephemeral> and on
/// `<tmp>/collector.sock`; the temp dir goes when the value is dropped.
pub struct TestCollector {
    pub collector: Collector,
    pub addr: SocketAddr,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    servers: Vec<JoinHandle<()>>,
}

/// The collector the tests talk to without credentials: anonymous callers
/// may do everything on TCP too (`auth.rs` tests the defaults).
pub fn config(dir: &Path) -> CollectorConfig {
    let mut c = CollectorConfig::new(dir.join("data"));
    c.shutdown_grace = Duration::from_secs(1);
    c.policy.anonymous_tcp = sockeye_collector::auth::Perms::ALL;
    // Tests fill no disks but run on busy machines' disks.
    c.min_free_bytes = 0;
    c
}

/// Which store a test's collector runs on: the query, findings and push
/// tests run once on each ([`on_both_stores!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redb,
    /// A database of its own on the test binary's shared ClickHouse server.
    ClickHouse,
}

impl Backend {
    /// Points `cfg` at this store.
    pub fn configure(self, cfg: &mut CollectorConfig) {
        if self == Backend::ClickHouse {
            cfg.store = StoreKind::ClickHouse(clickhouse::shared().fresh_db());
        }
    }
}

/// Runs each test body once on redb and once on ClickHouse: `async fn
/// name(backend) { ... }` becomes tests `name::redb` and `name::clickhouse`.
#[macro_export]
macro_rules! on_both_stores {
    ($( $(#[doc = $doc:literal])* async fn $name:ident($b:ident) $body:block )*) => {
        $(
            $(#[doc = $doc])*
            mod $name {
                #[allow(unused_imports, reason = "each body uses a different part of the file")]
                use super::*;

                async fn body($b: Backend) $body

                #[tokio::test]
                async fn redb() {
                    body(Backend::Redb).await
                }

                #[tokio::test]
                async fn clickhouse() {
                    body(Backend::ClickHouse).await
                }
            }
        )*
    };
}

impl TestCollector {
    /// A collector on the given store.
    pub async fn start_on(backend: Backend) -> Self {
        Self::start_with_on(backend, |_| {}).await
    }

    pub async fn start_with_on(backend: Backend, tweak: impl FnOnce(&mut CollectorConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = config(dir.path());
        backend.configure(&mut cfg);
        tweak(&mut cfg);
        Self::start_in(dir, cfg).await
    }

    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = config(dir.path());
        Self::start_in(dir, cfg).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut CollectorConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        Self::start_in(dir, cfg).await
    }

    pub async fn start_in(dir: tempfile::TempDir, cfg: CollectorConfig) -> Self {
        let collector = Collector::open(cfg).await.expect("open collector");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let addr = listener.local_addr().expect("local addr");
        let socket = dir.path().join("collector.sock");
        let unix = sockeye_collector::bind_unix(&socket)
            .await
            .expect("bind unix");
        let mut servers = Vec::new();
        let c = collector.clone();
        servers.push(tokio::spawn(async move {
            c.serve_tcp(listener, None).await.expect("serve tcp");
        }));
        let c = collector.clone();
        servers.push(tokio::spawn(async move {
            c.serve_unix(unix).await.expect("serve unix");
        }));
        Self {
            collector,
            addr,
            socket,
            dir,
            servers,
        }
    }

    pub async fn client(&self) -> Client {
        tcp_client(self.addr).await
    }

    pub async fn unix_client(&self) -> Client {
        unix_client(&self.socket).await
    }

    /// Stops serving and closes the store; returns the directory so the
    /// same data can be opened again.
    pub async fn stop(self) -> (tempfile::TempDir, CollectorConfig) {
        let cfg = self.collector.config().clone();
        self.collector.close().await.expect("close collector");
        for s in self.servers {
            within("servers to stop", s).await.expect("server task");
        }
        (self.dir, cfg)
    }

    /// Stops, then opens a new collector on the same data directory.
    pub async fn restart(self) -> Self {
        let (dir, cfg) = self.stop().await;
        Self::start_in(dir, cfg).await
    }
}

pub async fn tcp_client(addr: SocketAddr) -> Client {
    within(
        "tcp connect",
        CollectorServiceClient::connect(format!("http://{addr}")),
    )
    .await
    .expect("connect over tcp")
}

pub async fn tcp_channel(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    within("tcp connect", endpoint.connect())
        .await
        .expect("connect over tcp")
}

pub async fn unix_channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    within(
        "unix connect",
        Endpoint::from_static("http://[::1]:1").connect_with_connector(tower::service_fn(
            move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            },
        )),
    )
    .await
    .expect("connect over unix socket")
}

pub async fn unix_client(path: &Path) -> Client {
    CollectorServiceClient::new(unix_channel(path).await)
}

/// The agent's side of a Push stream.
pub struct Pusher {
    pub tx: mpsc::Sender<pb::PushRequest>,
    pub acks: Streaming<pb::PushAck>,
}

impl Pusher {
    /// Opens Push and sends the Hello.
    pub async fn open(client: &mut Client, node: &str, agent_id: &str) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        tx.send(hello(node, agent_id)).await.expect("queue hello");
        let acks = within("Push to open", client.push(ReceiverStream::new(rx)))
            .await
            .expect("Push accepted")
            .into_inner();
        Self { tx, acks }
    }

    pub async fn send(&self, w: pb::Window) {
        self.tx
            .send(pb::PushRequest {
                msg: Some(pb::push_request::Msg::Window(w)),
            })
            .await
            .expect("queue window");
    }

    /// The next ack of a window. The answer to the Hello when nothing is
    /// stored for the agent (0) says nothing about windows and is skipped;
    /// [`Pusher::raw_ack`] reads it.
    pub async fn next_ack(&mut self) -> pb::PushAck {
        loop {
            let ack = self.raw_ack().await;
            if ack.acked_seq > 0 || ack.refused_windows > 0 {
                return ack;
            }
        }
    }

    pub async fn raw_ack(&mut self) -> pb::PushAck {
        within("an ack", self.acks.message())
            .await
            .expect("ack stream ok")
            .expect("ack stream open")
    }

    /// Reads acks until one covers `seq`; returns it.
    pub async fn ack_through(&mut self, seq: u64) -> pb::PushAck {
        loop {
            let ack = self.next_ack().await;
            if ack.acked_seq >= seq {
                return ack;
            }
        }
    }

    /// The status the stream ended with.
    pub async fn error(&mut self) -> tonic::Status {
        loop {
            match within("the stream to fail", self.acks.message()).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without an error status"),
                Err(status) => return status,
            }
        }
    }
}

pub fn hello(node: &str, agent_id: &str) -> pb::PushRequest {
    pb::PushRequest {
        msg: Some(pb::push_request::Msg::Hello(pb::Hello {
            node: node.into(),
            agent_id: agent_id.into(),
            version: "test".into(),
        })),
    }
}

/// The agent's histogram bins (log-linear, two significant digits, 10 µs to
/// 60 s, underflow and overflow bins), built from raw latencies.
pub fn histogram(latencies_ns: &[u64]) -> pb::Histogram {
    fn bounds(v: u64) -> (u64, u64) {
        if v < 10_000 {
            return (0, 10_000);
        }
        if v >= 60_000_000_000 {
            return (60_000_000_000, u64::MAX);
        }
        let step = 10u64.pow(v.ilog10() - 1);
        let lo = v / step * step;
        (lo, lo + step)
    }
    let mut bins: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for &v in latencies_ns {
        let (lo, hi) = bounds(v);
        bins.entry(lo).or_insert((hi, 0)).1 += 1;
    }
    pb::Histogram {
        bins: bins
            .into_iter()
            .map(|(lower_ns, (upper_ns, count))| pb::histogram::Bin {
                lower_ns,
                upper_ns,
                count,
            })
            .collect(),
        count: latencies_ns.len() as u64,
        sum_ns: latencies_ns.iter().sum(),
        min_ns: latencies_ns.iter().copied().min().unwrap_or(0),
        max_ns: latencies_ns.iter().copied().max().unwrap_or(0),
    }
}

pub fn pod(namespace: &str, pod: &str, container: &str, node: &str) -> pb::Workload {
    pb::Workload {
        cgroup_id: 4242,
        cgroup_path: format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/cri-containerd-{pod}{container}.scope"),
        runtime: "containerd".into(),
        container_id: format!("{pod}{container}"),
        pod_uid: format!("uid-{pod}"),
        namespace: namespace.into(),
        pod: pod.into(),
        container: container.into(),
        owner_kind: "Deployment".into(),
        owner_name: pod.split('-').next().unwrap_or(pod).into(),
        label: format!("{namespace}/{pod}/{container}"),
        node: node.into(),
    }
}

pub fn ep(ip: &str, port: u32) -> pb::Endpoint {
    pb::Endpoint {
        ip: ip.into(),
        port,
    }
}

pub fn drops(pairs: &[(&str, u64)]) -> pb::Drops {
    pb::Drops {
        counters: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        total: pairs.iter().map(|(_, v)| v).sum(),
    }
}

/// An outbound flow: `ok` connects with the given latencies, failures by
/// cause, `open` sockets now.
pub fn flow(
    workload: &pb::Workload,
    remote: pb::Endpoint,
    latencies_ns: &[u64],
    failed: &[(&str, u64)],
    open: u64,
) -> pb::TcpFlow {
    let h = histogram(latencies_ns);
    let mut states = HashMap::new();
    if open > 0 {
        states.insert("ESTABLISHED".to_string(), open);
    }
    pb::TcpFlow {
        workload: Some(workload.clone()),
        direction: pb::Direction::Outbound as i32,
        remote: Some(remote),
        connects_ok: latencies_ns.len() as u64,
        connects_failed: failed.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        connect_percentiles: Some(pb::Percentiles {
            count: h.count,
            p50_ns: 0,
            p90_ns: 0,
            p99_ns: 0,
            max_ns: h.max_ns,
        }),
        connect_latency: Some(h),
        syn_retransmits: failed
            .iter()
            .filter(|(k, _)| *k == "timed_out")
            .map(|(_, v)| v * 6)
            .sum(),
        open,
        states,
        oldest_open_s: if open > 0 { 42.0 } else { 0.0 },
        open_older_than_1m: 0,
        open_older_than_10m: 0,
        open_older_than_1h: 0,
        opened: latencies_ns.len() as u64,
        closed: (latencies_ns.len() as u64).saturating_sub(open),
        bytes_sent: 1200 * latencies_ns.len() as u64,
        bytes_received: 5300 * latencies_ns.len() as u64,
        last_pid: 4411,
        last_comm: "php-fpm".into(),
        drops: Some(drops(&[("kernel_ringbuf_full", 0)])),
    }
}

pub fn dns_name(
    workload: &pb::Workload,
    name: &str,
    server: pb::Endpoint,
    queries: u64,
    timeouts: u64,
) -> pb::DnsName {
    let latencies: Vec<u64> = (0..queries - timeouts)
        .map(|i| 300_000 + i * 10_000)
        .collect();
    let h = histogram(&latencies);
    pb::DnsName {
        workload: Some(workload.clone()),
        name: name.into(),
        qtype: "A".into(),
        server: Some(server),
        counts: Some(pb::DnsCounts {
            queries,
            tcp_queries: 0,
            retries: timeouts,
            answers: queries - timeouts,
            rcodes: [("NOERROR".to_string(), queries - timeouts)]
                .into_iter()
                .collect(),
            empty_answers: 0,
            timeouts,
            late_answers: 0,
            truncated: 0,
            tcp_after_truncation: 0,
            fanout_lookups: 1,
            fanout_wasted: 3,
            latency: Some(h),
            percentiles: None,
        }),
        last_pid: 4411,
        last_comm: "php-fpm".into(),
        drops: Some(drops(&[("kernel_dns_ringbuf_full", 0)])),
    }
}

/// A window of `node`/`agent` ending at `end_ms`, 10 s long.
pub fn window(
    node: &str,
    agent: &str,
    seq: u64,
    end_ms: i64,
    flows: Vec<pb::TcpFlow>,
    dns: Vec<pb::DnsName>,
) -> pb::Window {
    pb::Window {
        node: node.into(),
        agent_id: agent.into(),
        seq,
        start_unix_ms: end_ms - 10_000,
        end_unix_ms: end_ms,
        aggregates: Some(pb::Aggregates {
            tcp_flows: flows,
            listeners: vec![],
            dns_names: dns,
            dns_totals: vec![],
            findings: vec![],
            drops: Some(drops(&[
                ("kernel_ringbuf_full", 3),
                ("user_flows_evicted", 1),
            ])),
        }),
        dropped_windows_before: 0,
    }
}

/// A typical window: one pod talking to redis and postgres, resolving a name.
pub fn busy_window(node: &str, agent: &str, seq: u64, end_ms: i64) -> pb::Window {
    let w = pod("prod", "payments-7d9f8b-x2x", "php", node);
    window(
        node,
        agent,
        seq,
        end_ms,
        vec![
            flow(
                &w,
                ep("10.77.0.3", 6379),
                &[180_000, 210_000, 410_000],
                &[("refused", 1)],
                12,
            ),
            flow(&w, ep("10.77.0.9", 5432), &[900_000; 5], &[], 4),
        ],
        vec![dns_name(
            &w,
            "redis.prod.svc.cluster.local",
            ep("10.96.0.10", 53),
            6,
            1,
        )],
    )
}

pub async fn query(
    client: &mut Client,
    req: pb::QueryTopRequest,
) -> Result<pb::QueryTopResponse, tonic::Status> {
    within("QueryTop", client.query_top(req))
        .await
        .map(|r| r.into_inner())
}

/// Windows stored over all time.
pub async fn stored_windows(client: &mut Client) -> u64 {
    query(client, pb::QueryTopRequest::default())
        .await
        .expect("QueryTop")
        .windows
}

/// A finding as an agent reports it in a window: `id` on `node`, about
/// `subject` and `destination`, last changed at `updated_ms`.
pub fn finding(
    id: &str,
    node: &str,
    kind: &str,
    subject: &pb::Workload,
    destination: Option<pb::Endpoint>,
    severity: &str,
    updated_ms: i64,
) -> pb::Finding {
    let dest = destination
        .as_ref()
        .map_or("-".to_string(), |d| format!("{}:{}", d.ip, d.port));
    pb::Finding {
        id: id.into(),
        kind: kind.into(),
        subject: Some(subject.clone()),
        destination,
        since_unix_ms: updated_ms - 60_000,
        resolved_unix_ms: 0,
        severity: severity.into(),
        confidence: "medium".into(),
        summary: format!("{} has {kind} to {dest}", subject.label),
        evidence: vec![pb::Evidence {
            fact: format!("{severity} at {updated_ms}"),
            value: updated_ms as f64,
            unit: "ms".into(),
            at_unix_ms: updated_ms,
            key: String::new(),
            about: String::new(),
        }],
        next_step: "look".into(),
        node: node.into(),
        corroborating_signals: 2,
        dns_name: String::new(),
        affected: vec![],
        updated_unix_ms: updated_ms,
        signals: vec![],
    }
}

/// A window carrying `findings` and nothing else.
pub fn findings_window(
    node: &str,
    agent: &str,
    seq: u64,
    end_ms: i64,
    findings: Vec<pb::Finding>,
) -> pb::Window {
    let mut w = window(node, agent, seq, end_ms, vec![], vec![]);
    if let Some(a) = w.aggregates.as_mut() {
        a.findings = findings;
    }
    w
}

pub async fn list_findings(
    client: &mut Client,
    req: pb::ClusterFindingsRequest,
) -> Result<pb::ClusterFindingsReply, tonic::Status> {
    within("ListFindings", client.list_findings(req))
        .await
        .map(|r| r.into_inner())
}
