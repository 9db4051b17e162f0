//! WatchWindows over real gRPC: the live fan-in, its filters, a client that
//! never reads (bounded buffer, every window delivered or counted as
//! missed), and the cap on open streams.

mod common;

use std::time::Duration;

use common::*;
use sockeye_collector::WATCH_MISSED_COUNTER;
use sockeye_proto::v1 as pb;
use tonic::{Code, Streaming};

async fn watch(client: &mut Client, filter: pb::Filter) -> Streaming<pb::Window> {
    within(
        "WatchWindows",
        client.watch_windows(pb::WatchWindowsRequest {
            filter: Some(filter),
        }),
    )
    .await
    .expect("WatchWindows accepted")
    .into_inner()
}

async fn next(stream: &mut Streaming<pb::Window>) -> pb::Window {
    within("a watched window", stream.message())
        .await
        .expect("watch stream ok")
        .expect("watch stream open")
}

/// A window of `flows` flows, about 700 bytes each encoded.
fn big_window(node: &str, agent: &str, seq: u64, end_ms: i64, flows: usize) -> pb::Window {
    let w = pod("prod", "payments-7d9f8b-x2x", "php", node);
    let flows = (0..flows)
        .map(|i| {
            flow(
                &w,
                ep(&format!("10.77.{}.{}", i / 250, i % 250), 6379),
                &[180_000, 210_000, 410_000, 1_200_000],
                &[("refused", 1)],
                3,
            )
        })
        .collect();
    window(node, agent, seq, end_ms, flows, vec![])
}

#[tokio::test]
async fn watchers_see_every_new_window_filtered_and_once() {
    let tc = TestCollector::start().await;
    let mut client = tc.client().await;
    let mut all = watch(&mut client, Default::default()).await;
    let mut staging = watch(
        &mut client,
        pb::Filter {
            namespace: "staging".into(),
            ..Default::default()
        },
    )
    .await;
    let t0 = now_ms();
    let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
    let mut b = Pusher::open(&mut client, "node-b", "agent-b").await;
    a.send(busy_window("node-a", "agent-a", 1, t0)).await;
    a.ack_through(1).await;
    let stg = pod("staging", "api-1", "app", "node-b");
    let mut wb = busy_window("node-b", "agent-b", 1, t0);
    wb.aggregates.as_mut().unwrap().tcp_flows.push(flow(
        &stg,
        ep("10.1.2.3", 443),
        &[1_000_000],
        &[],
        1,
    ));
    b.send(wb).await;
    b.ack_through(1).await;
    // A resend is not news.
    a.send(busy_window("node-a", "agent-a", 1, t0)).await;
    a.next_ack().await;
    a.send(busy_window("node-a", "agent-a", 2, t0 + 10_000))
        .await;
    a.ack_through(2).await;

    let got: Vec<(String, u64)> = vec![
        next(&mut all).await,
        next(&mut all).await,
        next(&mut all).await,
    ]
    .into_iter()
    .map(|w| (w.node, w.seq))
    .collect();
    assert_eq!(
        got,
        [
            ("node-a".into(), 1),
            ("node-b".into(), 1),
            ("node-a".into(), 2)
        ]
    );
    let s = next(&mut staging).await;
    assert_eq!((s.node.as_str(), s.seq), ("node-b", 1));
    let agg = s.aggregates.unwrap();
    assert_eq!(agg.tcp_flows.len(), 1, "only the staging rows");
    assert_eq!(
        agg.tcp_flows[0].workload.as_ref().unwrap().namespace,
        "staging"
    );
    assert!(agg.drops.is_some(), "the node's drop counters come along");
    // Nothing else matches staging: the stream stays quiet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), staging.message())
            .await
            .is_err()
    );
    assert_eq!(tc.collector.stats().watch_subscribers, 2);
    assert_eq!(tc.collector.stats().watch_missed_windows, 0);
    drop((a, b));
    tc.stop().await;
}

#[tokio::test]
async fn a_stuck_watcher_misses_windows_and_is_told_how_many() {
    const PUSHED: u64 = 150;
    const RING: usize = 8;
    let tc = TestCollector::start_with(|c| c.watch_buffer = RING).await;
    let mut client = tc.client().await;
    // Opened, then not read while 150 windows of ~95 kB (14 MB) go by:
    // far more than HTTP/2 buffers (a few MB) plus the ring.
    let mut stuck = watch(&mut client, Default::default()).await;
    let t0 = now_ms();
    let mut p = Pusher::open(&mut client, "node-a", "agent-a").await;
    let sample = big_window("node-a", "agent-a", 1, t0, 200);
    let size = prost::Message::encoded_len(&sample);
    assert!(size > 90_000, "window of {size} bytes");
    for seq in 1..=PUSHED {
        p.send(big_window("node-a", "agent-a", seq, t0 + seq as i64, 200))
            .await;
        p.ack_through(seq).await;
    }
    // Every window pushed is either delivered or counted in the next one
    // that is delivered; nothing disappears silently.
    let mut delivered = Vec::new();
    let mut reported_missed = 0;
    let mut gap_seen_at = None;
    while delivered.len() as u64 + reported_missed < PUSHED {
        let w = next(&mut stuck).await;
        let missed = w
            .aggregates
            .as_ref()
            .and_then(|a| a.drops.as_ref())
            .and_then(|d| d.counters.get(WATCH_MISSED_COUNTER).copied())
            .unwrap_or(0);
        if missed > 0 {
            let prev = delivered.last().copied().unwrap_or(0);
            assert_eq!(
                w.seq - prev - 1,
                missed,
                "the counter is exactly the gap before it"
            );
            gap_seen_at.get_or_insert(w.seq);
        }
        reported_missed += missed;
        delivered.push(w.seq);
    }
    assert!(
        gap_seen_at.is_some(),
        "the stuck client must have missed windows"
    );
    assert!(
        delivered.windows(2).all(|p| p[0] < p[1]),
        "in order, no repeats"
    );
    assert_eq!(
        *delivered.last().unwrap(),
        PUSHED,
        "the newest window arrives"
    );
    // The ring bounds what waits for the client: the windows after the gap
    // are at most the ring's worth.
    let after_gap = delivered
        .iter()
        .filter(|&&s| s >= gap_seen_at.unwrap())
        .count();
    assert!(after_gap <= RING + 1, "{after_gap} windows after the gap");
    let stats = tc.collector.stats();
    assert_eq!(stats.watch_missed_windows, reported_missed);
    assert_eq!(stats.windows_stored, PUSHED);
    drop(p);
    tc.stop().await;
}

#[tokio::test]
async fn watch_streams_are_capped() {
    let tc = TestCollector::start_with(|c| c.max_watchers = 2).await;
    let mut client = tc.client().await;
    let w1 = watch(&mut client, Default::default()).await;
    let _w2 = watch(&mut client, Default::default()).await;
    let err = within(
        "third watch",
        client.watch_windows(pb::WatchWindowsRequest::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("--max-watchers"), "{err:?}");
    assert_eq!(tc.collector.stats().watch_refused, 1);
    // A client that leaves frees its place.
    drop(w1);
    within("the watcher to be dropped", async {
        while tc.collector.stats().watch_subscribers != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _w3 = watch(&mut client, Default::default()).await;
    tc.stop().await;
}
