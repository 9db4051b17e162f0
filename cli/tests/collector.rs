//! The CLI against a real collector in-process (no root needed): windows
//! pushed over gRPC like an agent pushes them, then `sockeye --collector`
//! top, conns, dns, watch, diagnose and -w, bad filters, the wrong service,
//! and mutual TLS with certificates made for the test.

use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use sockeye_cli::{execute, exit, format, run, Cli, CliError, Outcome};
use sockeye_collector::{Collector, CollectorConfig, TlsConfig};
use sockeye_proto::v1::{self as pb, collector_service_client::CollectorServiceClient};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;

// Long enough for a process start on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);
const MS: u64 = 1_000_000;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

struct TestCollector {
    collector: Collector,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(tls: Option<TlsConfig>) -> TestCollector {
    sockeye_collector::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let collector = Collector::open(CollectorConfig::new(dir.path().join("data")))
        .await
        .expect("open collector");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let c = collector.clone();
    tokio::spawn(async move { c.serve_tcp(listener, tls).await.expect("serve") });
    TestCollector {
        collector,
        addr,
        _dir: dir,
    }
}

/// An agent's Push stream: Hello, then windows; waits for each ack.
async fn push(addr: SocketAddr, node: &str, windows: Vec<pb::Window>) {
    let mut client = within(
        "connect",
        CollectorServiceClient::connect(format!("http://{addr}")),
    )
    .await
    .expect("connect");
    let (tx, rx) = mpsc::channel(16);
    let hello = pb::Hello {
        node: node.into(),
        agent_id: format!("agent-{node}"),
        version: "test".into(),
    };
    tx.send(pb::PushRequest {
        msg: Some(pb::push_request::Msg::Hello(hello)),
    })
    .await
    .expect("hello");
    let mut acks = within("Push", client.push(ReceiverStream::new(rx)))
        .await
        .expect("push accepted")
        .into_inner();
    let last = windows.last().map_or(0, |w| w.seq);
    for w in windows {
        tx.send(pb::PushRequest {
            msg: Some(pb::push_request::Msg::Window(w)),
        })
        .await
        .expect("window");
    }
    loop {
        let ack = within("ack", acks.message())
            .await
            .expect("ack ok")
            .expect("ack stream open");
        if ack.acked_seq >= last {
            return;
        }
    }
}

/// One latency histogram bin holding `n` samples of exactly `ns`: every
/// percentile is then `ns`, whatever the interpolation.
fn same_latency(n: u64, ns: u64) -> pb::Histogram {
    pb::Histogram {
        bins: vec![pb::histogram::Bin {
            lower_ns: ns / 100_000 * 100_000,
            upper_ns: ns / 100_000 * 100_000 + 100_000,
            count: n,
        }],
        count: n,
        sum_ns: n * ns,
        min_ns: ns,
        max_ns: ns,
    }
}

fn pod(node: &str) -> pb::Workload {
    pb::Workload {
        cgroup_id: 7,
        namespace: "shop".into(),
        pod: "checkout-7d9f8b6c5-x2x4q".into(),
        container: "app".into(),
        pod_uid: "uid-checkout".into(),
        label: "shop/checkout-7d9f8b6c5-x2x4q/app".into(),
        node: node.into(),
        ..Default::default()
    }
}

fn flow(w: pb::Workload, ip: &str, port: u32, ok: u64, refused: u64, open: u64) -> pb::TcpFlow {
    pb::TcpFlow {
        workload: Some(w),
        direction: pb::Direction::Outbound as i32,
        remote: Some(pb::Endpoint {
            ip: ip.into(),
            port,
        }),
        connects_ok: ok,
        connects_failed: [("refused".to_string(), refused)].into(),
        connect_latency: (ok > 0).then(|| same_latency(ok, 2 * MS)),
        // Agents send both: the collector merges the histograms for top,
        // and serves the window's own percentiles in snapshots.
        connect_percentiles: (ok > 0).then_some(pb::Percentiles {
            count: ok,
            p50_ns: 2 * MS,
            p90_ns: 2 * MS,
            p99_ns: 2 * MS,
            max_ns: 2 * MS,
        }),
        open,
        states: [("ESTABLISHED".to_string(), open)].into(),
        oldest_open_s: 30.0,
        ..Default::default()
    }
}

fn window(node: &str, seq: u64, end_ms: i64, flows: Vec<pb::TcpFlow>) -> pb::Window {
    pb::Window {
        node: node.into(),
        agent_id: format!("agent-{node}"),
        seq,
        start_unix_ms: end_ms - 10_000,
        end_unix_ms: end_ms,
        aggregates: Some(pb::Aggregates {
            tcp_flows: flows,
            dns_names: vec![pb::DnsName {
                workload: Some(pod(node)),
                name: "api.stripe.com".into(),
                qtype: "A".into(),
                server: Some(pb::Endpoint {
                    ip: "10.96.0.10".into(),
                    port: 53,
                }),
                counts: Some(pb::DnsCounts {
                    queries: 4,
                    answers: 3,
                    rcodes: [("NOERROR".to_string(), 3)].into(),
                    timeouts: 1,
                    percentiles: Some(pb::Percentiles {
                        count: 3,
                        p50_ns: MS,
                        p90_ns: MS,
                        p99_ns: MS,
                        max_ns: MS,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            drops: Some(pb::Drops::default()),
            ..Default::default()
        }),
        dropped_windows_before: 0,
    }
}

/// Two windows from node-a, one from node-b: checkout talks to redis
/// (failing a little) on both nodes, and to postgres on node-a.
async fn seed(addr: SocketAddr) {
    let now = sockeye_cli::now_unix_ms();
    let redis =
        |node: &str, ok, refused, open| flow(pod(node), "10.96.0.12", 6379, ok, refused, open);
    push(
        addr,
        "node-a",
        vec![
            window("node-a", 1, now - 60_000, vec![redis("node-a", 10, 2, 4)]),
            window(
                "node-a",
                2,
                now - 5_000,
                vec![
                    redis("node-a", 5, 1, 3),
                    flow(pod("node-a"), "10.96.0.9", 5432, 7, 0, 1),
                ],
            ),
        ],
    )
    .await;
    push(
        addr,
        "node-b",
        vec![window(
            "node-b",
            1,
            now - 40_000,
            vec![redis("node-b", 20, 0, 2)],
        )],
    )
    .await;
}

/// Runs the CLI in-process: its output, or its error.
async fn sockeye(args: &[&str]) -> Result<String, CliError> {
    let mut argv = vec!["sockeye"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let mut out = Vec::new();
    within("the CLI", run(cli, &mut out)).await?;
    Ok(String::from_utf8(out).expect("UTF-8 output"))
}

#[tokio::test]
async fn top_conns_and_dns_over_the_cluster() {
    let c = start(None).await;
    seed(c.addr).await;
    let target = format!("{}", c.addr);
    let top = sockeye(&["--collector", &target, "top"])
        .await
        .expect("top");
    assert_eq!(
        top,
        "\
WORKLOAD                           DESTINATION      OK  FAIL  FAIL%    P50    P90    P99  OPEN  NODES
shop/checkout-7d9f8b6c5-x2x4q/app  10.96.0.12:6379  35     3   7.9%  2.0ms  2.0ms  2.0ms     5  node-a,node-b
shop/checkout-7d9f8b6c5-x2x4q/app  10.96.0.9:5432    7     0     0%  2.0ms  2.0ms  2.0ms     1  node-a
3 windows over the last 15m, none dropped
"
    );
    // Ranked by open sockets, limited, as JSON lines.
    let json = sockeye(&[
        "--collector",
        &target,
        "top",
        "--by",
        "open",
        "--limit",
        "1",
        "-o",
        "json",
    ])
    .await
    .expect("top json");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{json}");
    assert_eq!(lines[0]["type"], "top");
    assert_eq!(
        lines[0]["open"], 5,
        "latest gauge of each node, summed: {json}"
    );
    assert_eq!(lines[1]["type"], "range");
    assert_eq!(lines[1]["windows"], 3);
    // A window older than --since is left out.
    let recent = sockeye(&["--collector", &target, "top", "--since", "30s"])
        .await
        .expect("top");
    assert!(recent.contains("1 window over the last 30s"), "{recent}");
    assert!(recent.contains("10.96.0.12:6379   5     1"), "{recent}");

    // The latest window of each node, with how old it is.
    let conns = sockeye(&["--collector", &target, "conns", "-n", "shop"])
        .await
        .expect("conns");
    let (table, note) = conns.rsplit_once("note: ").expect("a note");
    assert_eq!(
        table,
        "\
NODE    WORKLOAD                           DIR  REMOTE           OK  FAIL  REF/TMO/UNR/ABT    P50    P90    P99    MAX  OPEN  STATES  OLDEST
node-a  shop/checkout-7d9f8b6c5-x2x4q/app  out  10.96.0.9:5432    7     0          0/0/0/0  2.0ms  2.0ms  2.0ms  2.0ms     1  EST:1      30s
node-a  shop/checkout-7d9f8b6c5-x2x4q/app  out  10.96.0.12:6379   5     1          1/0/0/0  2.0ms  2.0ms  2.0ms  2.0ms     3  EST:3      30s
node-b  shop/checkout-7d9f8b6c5-x2x4q/app  out  10.96.0.12:6379  20     0          0/0/0/0  2.0ms  2.0ms  2.0ms  2.0ms     2  EST:2      30s
"
    );
    assert!(
        note.starts_with("counts are each node's latest window, not totals (node-a ")
            && note.contains("s ago, node-b "),
        "{conns}"
    );

    let dns = sockeye(&[
        "--collector",
        &target,
        "dns",
        "--node",
        "node-b",
        "-d",
        "api.stripe.com",
    ])
    .await
    .expect("dns");
    assert!(
        dns.starts_with(
            "NODE    WORKLOAD                           NAME            TYPE  SERVER         Q  RETRY  OK  NXDOM  FAIL  TMO    P50    P90    P99    MAX\n\
             node-b  shop/checkout-7d9f8b6c5-x2x4q/app  api.stripe.com  A     10.96.0.10:53  4      0   3      0     0    1  1.0ms  1.0ms  1.0ms  1.0ms\n"
        ),
        "{dns}"
    );

    // Nothing for another namespace, said plainly.
    let none = sockeye(&["--collector", &target, "conns", "-n", "billing"])
        .await
        .expect("conns");
    assert_eq!(none, "No connections found for namespace=billing.\n");
    c.collector.close().await.expect("close");
}

#[tokio::test]
async fn refresh_with_w_asks_again_each_frame() {
    let c = start(None).await;
    seed(c.addr).await;
    let target = format!("http://{}", c.addr);
    let out = sockeye(&["--collector", &target, "top", "-w", "0.2", "--count", "2"])
        .await
        .expect("top -w");
    let titles = out
        .lines()
        .filter(|l| l.starts_with(&format!("Every 200ms: sockeye top  {target}  ")))
        .count();
    assert_eq!(titles, 2, "{out}");
    assert_eq!(out.matches("10.96.0.12:6379").count(), 2, "{out}");
    c.collector.close().await.expect("close");
}

/// A `Write` the test reads while the CLI is still writing.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn watch_prints_windows_as_agents_push_them() {
    let c = start(None).await;
    let target = format!("http://{}", c.addr);
    let cli = Cli::try_parse_from(["sockeye", "--collector", &target, "watch", "--count", "2"])
        .expect("flags");
    let out = Shared::default();
    let mut writer = out.clone();
    let end = sockeye_cli::now_unix_ms();
    let pusher = async {
        // The header is written once the collector has subscribed us.
        within("the header", async {
            while !out.text().starts_with("TIME(UTC)") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        push(
            c.addr,
            "node-a",
            vec![window(
                "node-a",
                1,
                end,
                vec![flow(pod("node-a"), "10.96.0.12", 6379, 10, 2, 4)],
            )],
        )
        .await;
        push(c.addr, "node-b", vec![window("node-b", 1, end + 1, vec![])]).await;
    };
    let (result, ()) = tokio::join!(within("watch", run(cli, &mut writer)), pusher);
    result.expect("watch");
    let t = |ms| format::time_of_day_ms(ms);
    assert_eq!(
        out.text(),
        format!(
            "\
TIME(UTC)     NODE                 SEQ   SPAN  FLOWS  CONNECTS  FAILED   OPEN   DNS-Q  NXDOM   FAIL    TMO
{}  node-a                #1    10s      1        12       2      4       0      0      0      0
{}  node-b                #1    10s      0         0       0      0       0      0      0      0
",
            t(end),
            t(end + 1)
        )
    );
    c.collector.close().await.expect("close");
}

#[tokio::test]
async fn bad_requests_and_the_wrong_service_say_so() {
    let c = start(None).await;
    let target = format!("http://{}", c.addr);
    let e = sockeye(&["--collector", &target, "top", "-n", "Shop"])
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "filter.namespace \"Shop\" is not a Kubernetes name: only lowercase letters, digits and '-' are allowed"
    );
    assert_eq!(e.exit_code(), exit::FAILED);
    let e = sockeye(&["--collector", &target, "top", "-d", "api.stripe.com"])
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("QueryTop ranks TCP destinations"),
        "{e}"
    );
    // An agent command sent to the collector.
    let e = sockeye(&["--agent", &target, "conns"]).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("the agent at {target} does not serve sockeye.v1.AgentService (is it a collector? use --collector)")
    );
    assert_eq!(e.exit_code(), exit::FAILED);
    // Refused before connecting.
    let e = sockeye(&["--collector", &target, "watch", "--kind", "tcp"])
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), exit::USAGE);
    c.collector.close().await.expect("close");
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("CA");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, &ca.issuer)
        .expect("leaf");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn mutual_tls_with_the_tls_flags() {
    let ca = ca("sockeye test CA");
    let (cert, key) = leaf(&ca, &["collector.test"]);
    let tls = TlsConfig::from_pem(
        cert.into_bytes(),
        key.into_bytes(),
        Some(ca.pem.clone().into_bytes()),
    )
    .expect("TLS config");
    let c = start(Some(tls)).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let (client_cert, client_key) = leaf(&ca, &["engineer"]);
    let (ca_pem, cert_pem, key_pem) = (
        file("ca.pem", &ca.pem),
        file("client.pem", &client_cert),
        file("client.key", &client_key),
    );
    let target = c.addr.to_string();
    let tls_args = [
        "--tls-ca",
        &ca_pem,
        "--tls-cert",
        &cert_pem,
        "--tls-key",
        &key_pem,
        "--tls-server-name",
        "collector.test",
    ];
    let mut args = vec!["--collector", &target];
    args.extend_from_slice(&tls_args);
    args.push("top");
    let top = sockeye(&args).await.expect("top over mTLS");
    assert!(
        top.ends_with("no windows over the last 15m: are agents pushing to this collector?\n"),
        "{top}"
    );

    // Without a client certificate the collector refuses the call.
    let args = [
        "--collector",
        &target,
        "--tls-ca",
        &ca_pem,
        "--tls-server-name",
        "collector.test",
        "top",
    ];
    let e = sockeye(&args).await.unwrap_err();
    assert_eq!(e.exit_code(), exit::FAILED, "{e}");
    assert!(
        e.to_string().ends_with(
            "CertificateRequired (TLS refused: the server may require a client certificate: --tls-cert and --tls-key)"
        ),
        "{e}"
    );
    // The server's name must match the certificate.
    let args = [
        "--collector",
        &target,
        "--tls-ca",
        &ca_pem,
        "--tls-cert",
        &cert_pem,
        "--tls-key",
        &key_pem,
        "top",
    ];
    let e = sockeye(&args).await.unwrap_err();
    assert_eq!(e.exit_code(), exit::UNREACHABLE, "{e}");
    assert!(
        e.to_string()
            .contains("(TLS failed: check --tls-ca and --tls-server-name"),
        "{e}"
    );
    c.collector.close().await.expect("close");
}

/// A finding as an agent puts it in a window.
fn finding(id: &str, node: &str, severity: &str, since: i64, resolved: i64) -> pb::Finding {
    pb::Finding {
        id: id.into(),
        kind: "connection_leak".into(),
        subject: Some(pod(node)),
        destination: Some(pb::Endpoint {
            ip: "10.96.0.12".into(),
            port: 6379,
        }),
        since_unix_ms: since,
        resolved_unix_ms: resolved,
        severity: severity.into(),
        confidence: "medium".into(),
        summary: "shop/checkout-7d9f8b6c5-x2x4q/app is leaking connections to 10.96.0.12:6379"
            .into(),
        evidence: vec![pb::Evidence {
            fact: format!("open sockets growing on {node}"),
            value: 1.0,
            unit: "sockets".into(),
            at_unix_ms: since,
            key: String::new(),
            about: String::new(),
        }],
        next_step: "check the Redis client's pool".into(),
        node: node.into(),
        corroborating_signals: 2,
        updated_unix_ms: resolved.max(since),
        ..Default::default()
    }
}

fn with_findings(mut w: pb::Window, findings: Vec<pb::Finding>) -> pb::Window {
    if let Some(a) = w.aggregates.as_mut() {
        a.findings = findings;
    }
    w
}

/// Runs the CLI in-process: its output and outcome, or its error.
async fn sockeye_outcome(args: &[&str]) -> Result<(String, Outcome), CliError> {
    let mut argv = vec!["sockeye"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let mut out = Vec::new();
    let outcome = within("the CLI", execute(cli, &mut out)).await?;
    Ok((String::from_utf8(out).expect("UTF-8 output"), outcome))
}

#[tokio::test]
async fn diagnose_merges_the_nodes_findings() {
    let c = start(None).await;
    let target = c.addr.to_string();
    let (before, outcome) = sockeye_outcome(&["--collector", &target, "diagnose"])
        .await
        .expect("diagnose");
    assert_eq!(
        before,
        "no findings on any node (open at the end of the last 15m; --all adds resolved ones)\n\
         note: no windows over the last 15m: are agents pushing to this collector?\n"
    );
    assert_eq!(
        (outcome, outcome.exit_code()),
        (Outcome::OpenFindings(0), 0)
    );

    let now = sockeye_cli::now_unix_ms();
    let since_a = now - 20 * 60_000;
    push(
        c.addr,
        "node-a",
        vec![with_findings(
            window("node-a", 1, now - 5_000, vec![]),
            vec![finding("leak-a", "node-a", "critical", since_a, 0)],
        )],
    )
    .await;
    let mut b = with_findings(
        window("node-b", 1, now - 4_000, vec![]),
        vec![
            finding("leak-b", "node-b", "warning", now - 10 * 60_000, 0),
            pb::Finding {
                kind: "close_wait".into(),
                summary: "node-b's close_wait, resolved".into(),
                ..finding(
                    "cw-b",
                    "node-b",
                    "warning",
                    now - 9 * 60_000,
                    now - 8 * 60_000,
                )
            },
        ],
    );
    b.dropped_windows_before = 2;
    push(c.addr, "node-b", vec![b]).await;

    let (text, outcome) = sockeye_outcome(&["--collector", &target, "diagnose", "-n", "shop"])
        .await
        .expect("diagnose");
    let tz = jiff::tz::TimeZone::system();
    let local = |ms| format::local_time(ms, now, &tz);
    assert_eq!(
        text,
        format!(
            "\
CRITICAL connection_leak on node-a, node-b, since {} (20m ago)
ROOT CAUSE: shop/checkout-7d9f8b6c5-x2x4q/app is leaking connections to 10.96.0.12:6379 (2 nodes)
EVIDENCE (node-a): open sockets growing on node-a
NEXT: check the Redis client's pool
CONFIDENCE: medium (2 corroborating signals)

warning: 2 windows over the last 15m; agents dropped 2 more (the collector was away too long): a finding may be missing
",
            local(since_a)
        )
    );
    assert_eq!(
        (outcome, outcome.exit_code()),
        (Outcome::OpenFindings(1), exit::FINDINGS)
    );

    // --all adds the resolved one, after the open one; JSON lines.
    let (json, _) = sockeye_outcome(&["--collector", &target, "diagnose", "--all", "-o", "json"])
        .await
        .expect("diagnose json");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let shape: Vec<(&str, &str, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap(),
                l["kind"].as_str().unwrap_or(""),
                l["open"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("finding", "connection_leak", true),
            ("finding", "close_wait", false),
            ("range", "", false)
        ],
        "{json}"
    );
    assert_eq!(lines[0]["nodes"], serde_json::json!(["node-a", "node-b"]));
    assert_eq!(lines[0]["findings"][1]["id"], "leak-b");
    assert_eq!(lines[2]["dropped_windows"], 2);

    // Filtered down to nothing: exit 0, and still the warning.
    let (none, outcome) =
        sockeye_outcome(&["--collector", &target, "diagnose", "--node", "node-c"])
            .await
            .expect("diagnose");
    assert_eq!(
        none,
        "no findings on node-c (open at the end of the last 15m; --all adds resolved ones; for node=node-c)\n\
         note: no windows over the last 15m: are agents pushing to this collector?\n"
    );
    assert_eq!(outcome.exit_code(), 0);
    // A range that ends before node-b's window.
    let (recent, _) = sockeye_outcome(&["--collector", &target, "diagnose", "--since", "1s"])
        .await
        .expect("diagnose");
    assert!(recent.starts_with("no findings on any node"), "{recent}");

    // The binary exits 4 when it showed open findings, 0 when none.
    for (args, code) in [(vec!["-n", "shop"], 4), (vec!["-n", "billing"], 0)] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sockeye"));
        cmd.args(["--collector", &target, "diagnose"]).args(&args);
        // Off the runtime's thread: the collector serves on it.
        let run = tokio::task::spawn_blocking(move || cmd.output().expect("run sockeye"));
        let done = within("the sockeye binary", run).await.expect("joined");
        assert_eq!(
            done.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&done.stdout)
        );
    }
    // -w asks again each frame; the outcome is the last frame's.
    let (frames, outcome) = sockeye_outcome(&[
        "--collector",
        &target,
        "diagnose",
        "-w",
        "0.2",
        "--count",
        "2",
        "--node",
        "node-b",
    ])
    .await
    .expect("diagnose -w");
    let title = format!("Every 200ms: sockeye diagnose  http://{target}  node=node-b  ");
    assert_eq!(frames.matches(&title).count(), 2, "{frames}");
    assert_eq!(
        frames.matches("WARNING connection_leak on node-b").count(),
        2,
        "{frames}"
    );
    assert_eq!(outcome, Outcome::OpenFindings(1));

    // The collector's own words for a bad filter; --since needs the collector.
    let e = sockeye(&["--collector", &target, "diagnose", "-d", "10.0.0.1:0"])
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("filter.destination \"10.0.0.1:0\""),
        "{e}"
    );
    assert_eq!(e.exit_code(), exit::FAILED);
    let e = sockeye(&["--agent", &target, "diagnose", "--since", "1h"])
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), exit::USAGE);
    c.collector.close().await.expect("close");
}
