//! Who may push and who may read, decided by the collector's real
//! TokenReview client (kube-rs over TLS, through a kubeconfig) against a
//! stand-in API server on loopback: an agent's pod token pushes only as its
//! node, readers only read, anonymous callers get nothing on TCP and
//! everything on the unix socket, and every refusal is counted. No root
//! needed.

use std::{path::Path, sync::Arc, time::Duration};

use sockeye_collector::{
    auth::{KubeTokenReview, Perms, Policy, Reviewer, Subject},
    Collector, CollectorConfig,
};
use sockeye_proto::{
    connect::{with_bearer, Bearer},
    v1::{self as pb, collector_service_client::CollectorServiceClient, push_request::Msg},
};
use sockeye_tests::apiserver::{ApiServer, TokenOwner};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Code};

const AUD: &str = "sockeye-collector";
const AGENT_SA: &str = "system:serviceaccount:sockeye:sockeye-agent";
const READER_SA: &str = "system:serviceaccount:ops:sockeye-reader";
const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Setup {
    collector: Collector,
    api: ApiServer,
    tcp: String,
    unix: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    sockeye_collector::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start(&dir.path().join("api")).await;
    api.add_token(
        "agent-a",
        TokenOwner::pod("sockeye", "sockeye-agent", "node-a", AUD),
    );
    api.add_token(
        "agent-b",
        TokenOwner::pod("sockeye", "sockeye-agent", "node-b", AUD),
    );
    api.add_token(
        "reader",
        TokenOwner::service_account("ops", "sockeye-reader", AUD),
    );
    // The reader's ordinary pod token, meant for the API server.
    api.add_token(
        "reader-for-apiserver",
        TokenOwner::service_account("ops", "sockeye-reader", "https://kubernetes.default.svc"),
    );
    let reviewer = KubeTokenReview::connect(Some(&api.kubeconfig()), AUD)
        .await
        .expect("a TokenReview client for the stand-in");
    let mut cfg = CollectorConfig::new(dir.path().join("data"));
    cfg.min_free_bytes = 0;
    cfg.shutdown_grace = Duration::from_secs(1);
    cfg.token_reviewer = Some(Reviewer(Arc::new(reviewer)));
    cfg.policy = Policy {
        pushers: vec![AGENT_SA.into()],
        readers: vec![Subject::User(READER_SA.into())],
        anonymous_tcp: Perms::NONE,
        anonymous_unix: Perms::ALL,
    };
    let collector = Collector::open(cfg).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = format!("http://{}", listener.local_addr().unwrap());
    let c = collector.clone();
    tokio::spawn(async move { c.serve_tcp(listener, None).await });
    let unix = dir.path().join("collector.sock");
    let ul = sockeye_collector::bind_unix(&unix).await.unwrap();
    let c = collector.clone();
    tokio::spawn(async move { c.serve_unix(ul).await });
    Setup {
        collector,
        api,
        tcp,
        unix,
        _dir: dir,
    }
}

type Client = CollectorServiceClient<sockeye_proto::connect::AuthChannel>;

async fn client(target: &str, token: Option<&str>) -> Client {
    let channel: Channel = sockeye_proto::connect::connect(target, None).await.unwrap();
    let bearer = match token {
        Some(t) => Bearer::from_token(t, "test").unwrap(),
        None => Bearer::none(),
    };
    CollectorServiceClient::new(with_bearer(channel, bearer))
}

fn window(node: &str, agent: &str, seq: u64, end_ms: i64) -> pb::Window {
    pb::Window {
        node: node.into(),
        agent_id: agent.into(),
        seq,
        start_unix_ms: end_ms - 10_000,
        end_unix_ms: end_ms,
        aggregates: Some(pb::Aggregates::default()),
        dropped_windows_before: 0,
    }
}

/// Pushes `windows` as `node`; the first ack of a window (of the Hello when
/// none is sent) or the status the stream ended with.
async fn push(
    c: &mut Client,
    node: &str,
    windows: Vec<pb::Window>,
) -> Result<pb::PushAck, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(pb::PushRequest {
        msg: Some(Msg::Hello(pb::Hello {
            node: node.into(),
            agent_id: format!("{node}-agent"),
            version: "test".into(),
        })),
    })
    .await
    .unwrap();
    let windows_sent = windows.len();
    for w in windows {
        tx.send(pb::PushRequest {
            msg: Some(Msg::Window(w)),
        })
        .await
        .unwrap();
    }
    let mut acks = tokio::time::timeout(WAIT, c.push(ReceiverStream::new(rx)))
        .await
        .expect("Push answers")?
        .into_inner();
    loop {
        let ack = tokio::time::timeout(WAIT, acks.message())
            .await
            .expect("an ack or an error")?
            .ok_or_else(|| tonic::Status::unknown("stream ended"))?;
        // The answer to the Hello (nothing stored yet) covers no window.
        if ack.acked_seq > 0 || windows_sent == 0 {
            return Ok(ack);
        }
    }
}

async fn windows_seen(c: &mut Client) -> Result<u64, tonic::Status> {
    c.query_top(pb::QueryTopRequest::default())
        .await
        .map(|r| r.into_inner().windows)
}

#[tokio::test]
async fn an_agent_pushes_only_as_its_node_and_readers_only_read() {
    let s = setup().await;
    let t = now_ms();

    // The agent of node-a pushes as node-a.
    let mut agent_a = client(&s.tcp, Some("agent-a")).await;
    let ack = push(
        &mut agent_a,
        "node-a",
        vec![window("node-a", "node-a-agent", 1, t)],
    )
    .await
    .expect("node-a's own window");
    assert_eq!(ack.acked_seq, 1);

    // The same token, claiming another node (the forged push): refused
    // before anything is stored, with the reason.
    let e = push(
        &mut agent_a,
        "ip-10-0-1-12",
        vec![window(
            "ip-10-0-1-12",
            "ip-10-0-1-12-agent",
            1,
            t + 365 * 86_400_000,
        )],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("was issued on node \"node-a\""),
        "{e:?}"
    );
    assert_eq!(s.collector.stats().auth_pushes_refused, 1);
    assert_eq!(s.collector.stats().windows_stored, 1);

    // Anonymous queries are refused on TCP, and counted.
    let mut anon = client(&s.tcp, None).await;
    let e = windows_seen(&mut anon).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        e.message().contains("anonymous queries are refused"),
        "{e:?}"
    );
    let e = anon
        .watch_windows(pb::WatchWindowsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = push(&mut anon, "node-a", vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // The reader reads (and sees node-a only); it cannot push.
    let mut reader = client(&s.tcp, Some("reader")).await;
    assert_eq!(windows_seen(&mut reader).await.unwrap(), 1);
    let snap = reader
        .get_cluster_snapshot(pb::GetClusterSnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    let nodes: Vec<&str> = snap.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(nodes, vec!["node-a"]);
    let e = push(&mut reader, "node-a", vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // An agent cannot read.
    let e = windows_seen(&mut agent_a).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("not one of its --reader"), "{e:?}");

    // Tokens that are not the collector's: unknown, or issued for the API
    // server (audience), are refused and counted.
    for (token, says) in [
        ("forged", "the token was not accepted"),
        ("reader-for-apiserver", "audiences are invalid"),
    ] {
        let mut c = client(&s.tcp, Some(token)).await;
        let e = windows_seen(&mut c).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{token}");
        assert!(e.message().contains(says), "{token}: {e:?}");
    }
    let stats = s.collector.stats();
    assert_eq!(stats.auth_tokens_rejected, 2);
    assert_eq!(
        stats.auth_reads_refused, 3,
        "anonymous twice, the agent once"
    );
    assert_eq!(
        stats.auth_pushes_refused, 3,
        "forged node, anonymous, reader"
    );

    // grpcurl -H 'authorization: Bearer ...': a plain header, no Sockeye code.
    let channel = sockeye_proto::connect::connect(&s.tcp, None).await.unwrap();
    let mut plain = CollectorServiceClient::new(channel);
    let mut req = tonic::Request::new(pb::QueryTopRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer reader".parse().unwrap());
    assert_eq!(plain.query_top(req).await.unwrap().into_inner().windows, 1);

    // The unix socket: access by file mode, anonymous callers may do all.
    let mut local = client(&format!("unix://{}", s.unix.display()), None).await;
    assert_eq!(windows_seen(&mut local).await.unwrap(), 1);

    // A token is reviewed once, then remembered for a while.
    let before = s.api.reviews();
    for _ in 0..5 {
        windows_seen(&mut reader).await.unwrap();
    }
    assert_eq!(s.api.reviews(), before, "cached");
}

#[tokio::test]
async fn a_token_review_api_that_is_down_means_retry_later_not_refused() {
    let s = setup().await;
    s.api.set_up(false);
    let mut b = client(&s.tcp, Some("agent-b")).await;
    let e = push(
        &mut b,
        "node-b",
        vec![window("node-b", "node-b-agent", 1, now_ms())],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("cannot check tokens right now"),
        "{e:?}"
    );
    assert!(s.collector.stats().auth_review_errors >= 1);
    // Back up: the same token works, nothing to restart.
    s.api.set_up(true);
    let ack = push(
        &mut b,
        "node-b",
        vec![window("node-b", "node-b-agent", 1, now_ms())],
    )
    .await
    .expect("pushes once the API answers");
    assert_eq!(ack.acked_seq, 1);
}

#[test]
fn a_kubeconfig_that_cannot_be_used_is_a_clear_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = match rt.block_on(KubeTokenReview::connect(
        Some(Path::new("/nonexistent/kubeconfig")),
        AUD,
    )) {
        Ok(_) => panic!("a missing kubeconfig was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with("cannot use the kubeconfig /nonexistent/kubeconfig"),
        "{e}"
    );
}
