//! The ClickHouse store with a real clickhouse-server: killed and restarted
//! while an agent pushes (nothing acked is lost, nothing stored twice, and
//! health says what happened), two collector replicas on one database with
//! an agent moving between them, and retention dropping day partitions.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use common::{clickhouse::ClickHouseServer, *};
use sockeye_collector::StoreKind;
use sockeye_proto::v1::{self as pb, push_request::Msg};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// One Push stream's worth of an agent: sends windows from `acked + 1` on,
/// one at a time, each kept until acked. Returns when `n` is acked or the
/// stream fails (the caller reconnects, as the agent does).
async fn push_until_error(
    addr: SocketAddr,
    agent: &str,
    n: u64,
    t0: i64,
    acked: &AtomicU64,
) -> Result<(), String> {
    let mut client = sockeye_proto::v1::collector_service_client::CollectorServiceClient::connect(
        format!("http://{addr}"),
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello("node-a", agent)).await.expect("queue hello");
    let mut acks = client
        .push(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("push: {e}"))?
        .into_inner();
    while acked.load(SeqCst) < n {
        let seq = acked.load(SeqCst) + 1;
        let w = busy_window("node-a", agent, seq, t0 + seq as i64 * 1000);
        // A send fails when the collector already ended the stream: its
        // status then waits in `acks`.
        let _ = tx
            .send(pb::PushRequest {
                msg: Some(Msg::Window(w)),
            })
            .await;
        loop {
            match within("an ack or an error", acks.message()).await {
                Ok(Some(a)) => {
                    assert_eq!(a.refused_windows, 0, "{}", a.refused_reason);
                    acked.fetch_max(a.acked_seq, SeqCst);
                    if a.acked_seq >= seq {
                        break;
                    }
                }
                Ok(None) => return Err("stream ended".into()),
                Err(status) => return Err(format!("{:?}: {}", status.code(), status.message())),
            }
        }
    }
    Ok(())
}

/// An agent pushing `n` windows, reconnecting after every failure, until
/// all are acked; returns how many streams failed on the way.
async fn agent(addr: SocketAddr, agent: String, n: u64, t0: i64, acked: Arc<AtomicU64>) -> u64 {
    let mut failures = 0;
    while let Err(e) = push_until_error(addr, &agent, n, t0, &acked).await {
        failures += 1;
        assert!(
            e.contains("Unavailable") || e.contains("connect"),
            "a store outage must look retryable to the agent: {e}"
        );
        // The agent's reconnect backoff (not a wait for readiness).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    failures
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n").map_or("", |x| x.1).to_string(),
    )
}

/// Polls `/readyz` until its status is `want` (the collector pings the
/// store every second).
async fn ready_becomes(http: SocketAddr, want: u16) -> String {
    within("readyz to change", async {
        loop {
            let (status, body) = http_get(http, "/readyz").await;
            if status == want {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_restart_under_load_loses_nothing_acked_and_health_says_so() {
    let mut server = ClickHouseServer::start();
    let url = server.fresh_db();
    let tc = TestCollector::start_with(|c| c.store = StoreKind::ClickHouse(url.clone())).await;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let c = tc.collector.clone();
    tokio::spawn(async move { c.serve_http(http).await.expect("serve http") });
    assert_eq!(http_get(http_addr, "/readyz").await.0, 200);

    const N: u64 = 60;
    let acked = Arc::new(AtomicU64::new(0));
    let t0 = now_ms() - 120_000;
    let load = tokio::spawn(agent(tc.addr, "agent-1".into(), N, t0, acked.clone()));
    within("20 windows acked", async {
        while acked.load(SeqCst) < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    tokio::task::block_in_place(|| server.kill());
    let acked_at_kill = acked.load(SeqCst);
    let why = ready_becomes(http_addr, 503).await;
    // Killed between requests, the next one cannot connect; killed while
    // answering one, its answer is cut short. Either is the store gone.
    assert!(
        why.contains("store unavailable")
            && (why.contains("cannot reach ClickHouse")
                || why.contains("reading ClickHouse's answer")),
        "{why}"
    );
    let (_, metrics) = http_get(http_addr, "/metrics").await;
    assert!(
        metrics.contains("\nsockeye_collector_store_unavailable 1\n"),
        "{metrics}"
    );
    assert_eq!(tc.collector.stats().store_outages, 1);
    // Nothing is acked while the store is down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        acked.load(SeqCst) <= acked_at_kill + 1,
        "acks went on without a store"
    );

    tokio::task::block_in_place(|| server.spawn());
    ready_becomes(http_addr, 200).await;
    let failures = within("the agent to finish", load).await.unwrap();
    assert!(failures >= 1, "the outage must have been seen by the agent");
    assert_eq!(acked.load(SeqCst), N);

    // Every acked window is there, once.
    let mut client = tc.client().await;
    let s = tc.collector.stats();
    let answered = (
        stored_windows(&mut client).await,
        tc.collector.store().window_count().await.unwrap(),
    );
    assert_eq!(
        answered,
        (N, N),
        "QueryTop's windows and the store's count; stored {}, duplicate {}",
        s.windows_stored,
        s.windows_duplicate
    );
    assert_eq!(s.store_unavailable, 0);
    let (_, metrics) = http_get(http_addr, "/metrics").await;
    assert!(metrics.contains("\nsockeye_collector_store_unavailable 0\n"));
    tc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_answer_for_each_other_and_an_agent_moves_between_them() {
    let url = clickhouse::shared().fresh_db();
    let store = StoreKind::ClickHouse(url);
    let a = TestCollector::start_with(|c| c.store = store.clone()).await;
    let b = TestCollector::start_with(|c| c.store = store.clone()).await;
    let t0 = now_ms() - 60_000;
    let mut ca = a.client().await;
    let mut cb = b.client().await;

    let mut p = Pusher::open(&mut ca, "node-a", "agent-1").await;
    for seq in 1..=5 {
        p.send(busy_window(
            "node-a",
            "agent-1",
            seq,
            t0 + seq as i64 * 1000,
        ))
        .await;
    }
    p.ack_through(5).await;
    // Pushed to A, answered by B.
    assert_eq!(stored_windows(&mut cb).await, 5);
    let snap = within(
        "snapshot",
        cb.get_cluster_snapshot(pb::GetClusterSnapshotRequest::default()),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(snap.nodes.len(), 1, "{snap:?}");
    drop(p);

    // The agent reconnects to B without having seen the acks of 4 and 5.
    let mut p = Pusher::open(&mut cb, "node-a", "agent-1").await;
    assert_eq!(p.next_ack().await.acked_seq, 5, "B knows what A stored");
    for seq in 4..=8 {
        p.send(busy_window(
            "node-a",
            "agent-1",
            seq,
            t0 + seq as i64 * 1000,
        ))
        .await;
    }
    p.ack_through(8).await;
    assert_eq!(b.collector.stats().windows_duplicate, 2);
    assert_eq!(stored_windows(&mut ca).await, 8);
    drop(p);

    // Both replicas get the same window at once (an agent retrying on the
    // other replica before the first answered): stored once as far as any
    // reader can tell.
    let w = busy_window("node-a", "agent-1", 9, t0 + 9000);
    let mut pa = Pusher::open(&mut ca, "node-a", "agent-1").await;
    let mut pb_ = Pusher::open(&mut cb, "node-a", "agent-1").await;
    pa.next_ack().await;
    pb_.next_ack().await;
    tokio::join!(pa.send(w.clone()), pb_.send(w));
    let (x, y) = tokio::join!(pa.ack_through(9), pb_.ack_through(9));
    assert_eq!((x.acked_seq, y.acked_seq), (9, 9));
    assert_eq!(stored_windows(&mut ca).await, 9);
    assert_eq!(stored_windows(&mut cb).await, 9);
    let top = query(&mut cb, pb::QueryTopRequest::default())
        .await
        .unwrap();
    let redis = top
        .rows
        .iter()
        .find(|r| r.destination.as_ref().unwrap().port == 6379)
        .expect("redis row");
    assert_eq!(redis.connects_ok, 3 * 9, "counted once per window");
    drop((pa, pb_));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn retention_drops_old_days_and_hides_the_rest_of_the_cutoff_day() {
    let server = clickhouse::shared();
    let url = server.fresh_db();
    let db = url.database.clone();
    let tc = TestCollector::start_with(|c| {
        c.store = StoreKind::ClickHouse(url.clone());
        c.retention = Duration::from_secs(10 * 86_400);
        // Retention only when the test says so.
        c.retention_interval = Some(Duration::from_secs(3600));
    })
    .await;
    let mut client = tc.client().await;
    const DAY: i64 = 86_400_000;
    let now = now_ms();
    // One window a day: each on a day (a partition) of its own.
    let ends = [now - 3 * DAY, now - 2 * DAY, now - DAY, now - 60_000];
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    for (i, end) in ends.iter().enumerate() {
        p.send(busy_window("node-a", "agent-1", i as u64 + 1, *end))
            .await;
    }
    p.ack_through(4).await;
    let partitions = || {
        server
            .sql(&format!("SELECT count(DISTINCT partition_id) FROM system.parts WHERE database = '{db}' AND table = 'windows' AND active"))
            .trim()
            .parse::<u64>()
            .expect("a count")
    };
    assert_eq!(partitions(), 4);

    // As if 8.5 days later: the cutoff is 1.5 days ago, so the windows of
    // three and two days ago go.
    let later = now + 8 * DAY + DAY / 2;
    let cutoff = now - DAY - DAY / 2;
    let deleted = tc.collector.prune_expired(later).await.unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(stored_windows(&mut client).await, 2);
    // Days that ended before the cutoff are dropped as partitions; the day
    // holding the cutoff stays until it has ended, its expired window
    // unread. Whether the window of two days ago shares the cutoff's day
    // depends on the time of day now.
    let day = |ms: i64| ms.div_euclid(DAY);
    let kept = if day(cutoff) == day(now - 2 * DAY) {
        3
    } else {
        2
    };
    assert_eq!(partitions(), kept);
    assert_eq!(tc.collector.store().window_count().await.unwrap(), 2);
    // Pruning again deletes nothing more.
    assert_eq!(tc.collector.prune_expired(later).await.unwrap(), 0);
    drop(p);

    // A replica started afterwards reads the same floor.
    let (dir, cfg) = tc.stop().await;
    let again = TestCollector::start_in(dir, cfg).await;
    let mut client = again.client().await;
    assert_eq!(stored_windows(&mut client).await, 2);
    again.stop().await;
}
