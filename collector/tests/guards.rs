//! What the collector refuses, and how it says so: windows in chunks
//! (joined, or refused when over the size limit), windows from a clock far
//! ahead, and what one caller may hold (streams, queries, query cost,
//! connections). Every refusal is counted and leaves the collector serving.

mod common;

use common::*;
use prost::Message;
use sockeye_collector::{limits::CallerLimits, ConnLimits};
use sockeye_proto::v1 as pb;
use tonic::Code;

fn chunks(w: &pb::Window, piece: usize) -> Vec<pb::PushRequest> {
    let bytes = w.encode_to_vec();
    let parts: Vec<&[u8]> = bytes.chunks(piece).collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, d)| pb::PushRequest {
            msg: Some(pb::push_request::Msg::Chunk(pb::WindowChunk {
                seq: w.seq,
                index: i as u32,
                count: parts.len() as u32,
                total_bytes: bytes.len() as u64,
                data: d.to_vec(),
            })),
        })
        .collect()
}

#[tokio::test]
async fn a_window_in_chunks_is_joined_and_one_over_the_limit_refused_counted() {
    let tc = TestCollector::start_with(|c| {
        // Messages of 64 KiB; windows up to 256 KiB.
        c.max_message_bytes = 64 * 1024;
        c.max_window_bytes = 256 * 1024;
    })
    .await;
    let mut client = tc.client().await;
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    let t = now_ms();
    let mut big = busy_window("node-a", "agent-1", 1, t);
    // Labels long enough to need several messages.
    for f in &mut big.aggregates.as_mut().unwrap().tcp_flows {
        f.workload.as_mut().unwrap().cgroup_path = "x".repeat(40_000);
    }
    let size = big.encoded_len();
    assert!(size > 64 * 1024 && size < 256 * 1024, "{size}");
    for c in chunks(&big, 60 * 1024) {
        p.tx.send(c).await.unwrap();
    }
    let ack = p.ack_through(1).await;
    assert_eq!((ack.acked_seq, ack.refused_windows), (1, 0));
    let stats = tc.collector.stats();
    assert_eq!(
        (stats.windows_stored, stats.windows_joined_from_chunks),
        (1, 1)
    );

    // Over the window limit: every piece is read (and thrown away), then the
    // window is acked as refused, so the agent lets go of it and counts it.
    let mut huge = busy_window("node-a", "agent-1", 2, t + 1);
    for f in &mut huge.aggregates.as_mut().unwrap().tcp_flows {
        f.workload.as_mut().unwrap().cgroup_path = "y".repeat(200_000);
    }
    for c in chunks(&huge, 60 * 1024) {
        p.tx.send(c).await.unwrap();
    }
    let ack = p.ack_through(2).await;
    assert_eq!((ack.acked_seq, ack.refused_windows), (2, 1));
    assert!(
        ack.refused_reason
            .contains("over the collector's --max-window-mib"),
        "{ack:?}"
    );
    // The stream goes on.
    p.send(busy_window("node-a", "agent-1", 3, t + 2)).await;
    assert_eq!(p.ack_through(3).await.refused_windows, 0);
    let stats = tc.collector.stats();
    assert_eq!(
        (stats.windows_stored, stats.windows_refused_too_large),
        (2, 1)
    );

    // Pieces out of order end the stream with the reason.
    let mut q = Pusher::open(&mut client, "node-a", "agent-2").await;
    let mut pieces = chunks(&big, 60 * 1024);
    pieces.swap(0, 1);
    for c in pieces {
        let _ = q.tx.send(c).await;
    }
    let e = q.error().await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("without chunk 0"), "{e:?}");
}

#[tokio::test]
async fn a_window_from_a_clock_far_ahead_is_refused_and_counted_not_served_as_latest() {
    let tc = TestCollector::start().await;
    let mut client = tc.client().await;
    let mut p = Pusher::open(&mut client, "ip-10-0-1-12", "agent-1").await;
    let year = 365 * 24 * 3600 * 1000;
    p.send(busy_window("ip-10-0-1-12", "agent-1", 1, now_ms() + year))
        .await;
    let ack = p.ack_through(1).await;
    assert_eq!(ack.refused_windows, 1);
    assert!(ack.refused_reason.contains("--max-clock-skew"), "{ack:?}");
    assert_eq!(tc.collector.stats().windows_refused_future, 1);
    // A window of now is stored, and it is the node's latest.
    p.send(busy_window("ip-10-0-1-12", "agent-1", 2, now_ms()))
        .await;
    assert_eq!(p.ack_through(2).await.refused_windows, 0);
    let snap = client
        .get_cluster_snapshot(pb::GetClusterSnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snap.nodes.len(), 1);
    assert!(
        snap.nodes[0].taken_unix_ms <= now_ms(),
        "{:?}",
        snap.nodes[0]
    );
    assert_eq!(tc.collector.stats().windows_stored, 1);
}

#[tokio::test]
async fn one_caller_cannot_hold_more_than_its_share() {
    let tc = TestCollector::start_with(|c| {
        c.caller_limits = CallerLimits {
            max_push_streams: 1,
            max_watch_streams: 1,
            max_queries: 4,
            query_windows_per_minute: 6,
            max_query_windows: 8,
        };
    })
    .await;
    let mut client = tc.client().await;
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    let t = now_ms();
    for seq in 1..=5 {
        p.send(busy_window("node-a", "agent-1", seq, t + seq as i64))
            .await;
    }
    p.ack_through(5).await;
    // A second Push stream of the same caller (anonymous, from 127.0.0.1).
    let e = client
        .push(tokio_stream::iter(vec![hello("node-b", "agent-2")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("Push streams open"), "{e:?}");
    // Watch: one, then refused.
    let _w = client
        .watch_windows(pb::WatchWindowsRequest::default())
        .await
        .unwrap();
    let e = client
        .watch_windows(pb::WatchWindowsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    // Query cost: 5 windows read of a budget of 6, then 5 more (let in while
    // one was left), then refused until the budget refills.
    assert_eq!(
        query(&mut client, pb::QueryTopRequest::default())
            .await
            .unwrap()
            .windows,
        5
    );
    assert_eq!(
        query(&mut client, pb::QueryTopRequest::default())
            .await
            .unwrap()
            .windows,
        5
    );
    let e = client
        .query_top(pb::QueryTopRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message()
            .contains("budget of 6 stored windows per minute"),
        "{e:?}"
    );
    let stats = tc.collector.stats();
    assert_eq!(stats.caller_limit_refused, 2);
    assert_eq!(stats.query_cost_refused, 1);
    // Another caller (the unix socket) is not affected.
    let mut other = tc.unix_client().await;
    assert_eq!(
        query(&mut other, pb::QueryTopRequest::default())
            .await
            .unwrap()
            .windows,
        5
    );
}

#[tokio::test]
async fn a_query_over_a_range_too_large_is_refused() {
    let tc = TestCollector::start_with(|c| {
        c.caller_limits.max_query_windows = 3;
    })
    .await;
    let mut client = tc.client().await;
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    let t = now_ms();
    for seq in 1..=4 {
        p.send(busy_window("node-a", "agent-1", seq, t + seq as i64))
            .await;
    }
    p.ack_through(4).await;
    let e = client
        .list_findings(pb::ClusterFindingsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("--max-query-windows"), "{e:?}");
    assert_eq!(tc.collector.stats().query_cost_refused, 1);
}

#[tokio::test]
async fn connections_past_the_per_address_limit_are_closed_and_counted() {
    let tc = TestCollector::start_with(|c| {
        c.conn_limits = ConnLimits {
            max_total: 100,
            max_per_ip: 2,
        };
    })
    .await;
    let mut a = tc.client().await;
    let mut b = tc.client().await;
    query(&mut a, pb::QueryTopRequest::default()).await.unwrap();
    query(&mut b, pb::QueryTopRequest::default()).await.unwrap();
    // The third is accepted and closed at once: its first call fails.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", tc.addr)).unwrap();
    let third = endpoint.connect().await;
    let failed = match third {
        Err(_) => true,
        Ok(ch) => sockeye_proto::v1::collector_service_client::CollectorServiceClient::new(ch)
            .query_top(pb::QueryTopRequest::default())
            .await
            .is_err(),
    };
    assert!(failed, "a third connection from 127.0.0.1 was served");
    assert!(tc.collector.stats().connections_refused >= 1);
    // The first two still work.
    query(&mut a, pb::QueryTopRequest::default()).await.unwrap();
    drop(b);
    // A closed connection frees its place.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = tc.client().await;
        if c.query_top(pb::QueryTopRequest::default()).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
