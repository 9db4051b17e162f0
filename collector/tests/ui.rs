//! The web view (/ui) of the real `sockeye-collector` binary, in headless
//! Chromium: refused without a reader's token (page and data), then,
//! signed in with one through the stand-in TokenReview API, it shows a
//! pushed finding with its kind, evidence numbers, timeline and the
//! workload's flows, and updates live when more windows arrive.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
};

use common::{browser::Browser, kubeapi::KubeApi, *};
use sockeye_collector::READY_LOG;
use sockeye_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READER: &str = "system:serviceaccount:sockeye:sockeye-reader";
const READER_TOKEN: &str = "reader-token-1";
const AGENT_TOKEN: &str = "agent-token-1";

/// The collector process; killed when dropped.
struct Proc {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &std::path::Path, args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockeye-collector"))
        .args(["--listen", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        // This test's agent pushes without a token.
        .args(["--anonymous-tcp", "push", "--min-free-mib", "0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sockeye-collector");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("collector: {line}");
            if let Some(rest) = line.split(READY_LOG).nth(1) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let listening = rx
        .recv_timeout(WAIT)
        .expect("the collector says it is ready");
    let addr = |kind: &str| -> SocketAddr {
        listening
            .split(", ")
            .find_map(|l| l.strip_prefix(kind))
            .unwrap_or_else(|| panic!("no {kind}listener in {listening:?}"))
            .parse()
            .expect("an address")
    };
    Proc {
        grpc: addr("tcp "),
        http: addr("http "),
        child,
    }
}

/// One HTTP/1.1 GET or POST; the status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = within("HTTP connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut out = Vec::new();
    within("HTTP answer", s.read_to_end(&mut out))
        .await
        .expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text[9..12].parse().expect("a status code");
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

fn leak(t: i64, open: u64) -> pb::Finding {
    let p = pod("prod", "payments-1", "php", "node-a");
    let mut f = finding(
        "leak-1",
        "node-a",
        "connection_leak",
        &p,
        Some(ep("10.77.0.3", 6379)),
        "critical",
        t,
    );
    f.since_unix_ms = t - 30_000;
    f.summary = "prod/payments-1/php is leaking connections to 10.77.0.3:6379".into();
    f.evidence = vec![
        pb::Evidence {
            key: "open_sockets".into(),
            fact: format!("{open} sockets open"),
            value: open as f64,
            unit: "sockets".into(),
            at_unix_ms: t,
            about: String::new(),
        },
        pb::Evidence {
            key: "growth_per_min".into(),
            fact: "opened faster than closed".into(),
            value: 84.5,
            unit: "sockets/min".into(),
            at_unix_ms: t,
            about: String::new(),
        },
    ];
    f.next_step = "check that php-fpm returns its redis connections".into();
    f
}

/// A window of the leaking pod: its redis flow with `open` sockets, and
/// the finding once it holds.
fn leak_window(seq: u64, end: i64, open: u64, finding: Option<pb::Finding>) -> pb::Window {
    let p = pod("prod", "payments-1", "php", "node-a");
    let mut w = window(
        "node-a",
        "agent-a",
        seq,
        end,
        vec![flow(
            &p,
            ep("10.77.0.3", 6379),
            &[200_000; 7],
            &[("refused", 2)],
            open,
        )],
        vec![],
    );
    if let Some(a) = w.aggregates.as_mut() {
        a.findings = finding.into_iter().collect();
        // redis on the same node; it restarts (a new pid) in window 3.
        a.listeners = vec![pb::Listener {
            workload: Some(pod("prod", "redis-0", "redis", "node-a")),
            local: Some(ep("10.77.0.3", 6379)),
            pid: if seq >= 3 { 2002 } else { 1001 },
            comm: "redis-server".into(),
        }];
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_finding_with_its_numbers_updates_live_and_refuses_strangers() {
    let api = KubeApi::start().await;
    api.add_token(READER_TOKEN, READER);
    api.add_token(AGENT_TOKEN, "system:serviceaccount:sockeye:sockeye-agent");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = api.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    let proc = spawn(
        &dir.path().join("data"),
        &["--kubeconfig", kubeconfig, "--reader", READER],
    );
    let mut client = tcp_client(proc.grpc).await;
    let mut agent = Pusher::open(&mut client, "node-a", "agent-a").await;
    let t = now_ms() - 120_000;
    for (i, open) in [20u64, 60, 110, 160].into_iter().enumerate() {
        let end = t + 10_000 * i as i64;
        let f = (open >= 110).then(|| leak(end, open));
        agent.send(leak_window(i as u64 + 1, end, open, f)).await;
    }
    agent.ack_through(4).await;

    // Without a reader's token: the page is a sign-in form, the data 401.
    let (code, body) = http(proc.http, "GET", "/ui", &[]).await;
    assert_eq!(code, 401);
    assert!(body.contains("A reader's token is needed") && !body.contains("connection_leak"));
    let (code, _) = http(proc.http, "GET", "/ui/api/findings", &[]).await;
    assert_eq!(code, 401);
    let (code, _) = http(
        proc.http,
        "GET",
        "/ui/api/findings",
        &[("Authorization", "Bearer not-a-token")],
    )
    .await;
    assert_eq!(code, 401);
    let agent_auth = format!("Bearer {AGENT_TOKEN}");
    let (code, _) = http(
        proc.http,
        "GET",
        "/ui/api/findings",
        &[("Authorization", &agent_auth)],
    )
    .await;
    assert_eq!(code, 403, "an agent is not a reader");
    let reader_auth = format!("Bearer {READER_TOKEN}");
    let (code, body) = http(
        proc.http,
        "GET",
        "/ui/api/findings",
        &[("Authorization", &reader_auth)],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["findings"][0]["kind"], "connection_leak");
    assert_eq!(v["findings"][0]["evidence"][0]["value"], 160.0);
    let points = v["findings"][0]["timeline"]["points"]
        .as_array()
        .expect("a timeline")
        .clone();
    let opens: Vec<u64> = points.iter().map(|p| p["open"].as_u64().unwrap()).collect();
    assert_eq!(opens, [20, 60, 110, 160], "the signal around the start");
    let restarts: Vec<bool> = points
        .iter()
        .map(|p| p["restart"].as_bool().unwrap())
        .collect();
    assert_eq!(
        restarts,
        [false, false, true, false],
        "redis got a new pid in window 3"
    );

    let http_base = format!("http://{}", proc.http);
    let mut b = tokio::task::block_in_place(Browser::start);
    let refused = tokio::task::block_in_place(|| {
        b.navigate(&format!("{http_base}/ui"));
        b.text_until("the sign-in form", |t| {
            t.contains("A reader's token is needed")
        })
    });
    assert!(!refused.contains("connection_leak"), "{refused}");

    // Signed in the way the README tells an SRE to.
    let shown = tokio::task::block_in_place(|| {
        b.navigate(&format!("{http_base}/ui/login#token={READER_TOKEN}"));
        // "updated" once a whole refresh (findings, then flows) is drawn.
        b.text_until("the finding with its numbers", |t| {
            t.contains("updated ") && t.contains("connection_leak") && t.contains("160 sockets")
        })
    });
    for expected in [
        "prod/payments-1/php is leaking connections to 10.77.0.3:6379",
        "connection_leak critical · medium confidence",
        "open_sockets",
        "84.5 sockets/min",
        "Next: check that php-fpm returns its redis connections",
        "Flows of prod/payments-1/php",
    ] {
        assert!(
            shown.contains(expected),
            "{expected:?} missing from:\n{shown}"
        );
    }
    let lines = tokio::task::block_in_place(|| {
        b.eval("document.querySelectorAll('svg.timeline polyline[data-series=open]').length")
    });
    assert_eq!(lines, 1, "the timeline draws the open sockets");
    let marks = tokio::task::block_in_place(|| {
        b.eval("document.querySelectorAll('svg.timeline line.restart').length")
    });
    assert_eq!(marks, 1, "and marks the restart");
    let flows_row = tokio::task::block_in_place(|| {
        b.eval("document.querySelector('#flows tbody tr').innerText")
    });
    let flows_row = flows_row.as_str().unwrap_or_default().to_string();
    assert!(
        flows_row.contains("10.77.0.3:6379") && flows_row.contains("160"),
        "{flows_row}"
    );
    assert!(
        !shown.contains("Select a finding"),
        "the hint to select a finding stays under the flows it asked for:\n{shown}"
    );

    // More windows: the page follows without a reload.
    agent
        .send(leak_window(5, t + 40_000, 260, Some(leak(t + 40_000, 260))))
        .await;
    agent.ack_through(5).await;
    tokio::task::block_in_place(|| {
        b.text_until("the finding's new numbers", |t| t.contains("260 sockets"))
    });
    let png = tokio::task::block_in_place(|| b.screenshot());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-finding.png");
    std::fs::write(&path, &png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());

    let (_, metrics) = http(proc.http, "GET", "/metrics", &[]).await;
    let refused_line = metrics
        .lines()
        .find(|l| l.starts_with("sockeye_collector_ui_refused_total "))
        .expect("the refusals are counted");
    assert_ne!(refused_line, "sockeye_collector_ui_refused_total 0");
}

#[tokio::test]
async fn ui_anonymous_opens_it_without_a_token_and_only_then() {
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = spawn(&dir.path().join("a"), &["--auth", "none"]);
    let (code, _) = http(closed.http, "GET", "/ui/api/findings", &[]).await;
    assert_eq!(code, 401, "anonymous TCP callers may push here, not read");
    let open = spawn(&dir.path().join("b"), &["--auth", "none", "--ui-anonymous"]);
    let (code, body) = http(open.http, "GET", "/ui/api/findings", &[]).await;
    assert_eq!(code, 200, "{body}");
    let (code, page) = http(open.http, "GET", "/ui", &[]).await;
    assert!(
        code == 200 && page.contains("Open findings"),
        "{code} {page}"
    );
    // The gRPC queries stay closed: --ui-anonymous is about /ui only.
    let mut client = tcp_client(open.grpc).await;
    let err = list_findings(&mut client, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}
