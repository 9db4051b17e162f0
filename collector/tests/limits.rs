//! Bad input and time: oversized and malformed messages get a status and
//! leave the server running; retention deletes old windows, on demand and
//! on its timer.

mod common;

use std::time::Duration;

use common::*;
use prost::bytes::{Buf, BufMut};
use sockeye_proto::v1 as pb;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    Code, Status,
};

/// Sends arbitrary bytes as a gRPC message, to test what the server does
/// with bytes that are not the protobuf it expects.
#[derive(Default, Clone)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

/// A length-delimited field whose length runs past the end of the message.
const TRUNCATED: &[u8] = &[0x0a, 0xff, 0xff, 0x03, 0x01];

#[tokio::test]
async fn oversized_messages_get_out_of_range_and_the_server_lives_on() {
    let tc = TestCollector::start_with(|c| c.max_message_bytes = 64 * 1024).await;
    let mut client = tc.client().await;
    let t0 = now_ms();
    let w = pod("prod", "payments-1", "php", "node-a");
    let flows = (0..200)
        .map(|i| flow(&w, ep(&format!("10.77.0.{i}"), 6379), &[200_000], &[], 1))
        .collect();
    let huge = window("node-a", "agent-1", 2, t0 + 10_000, flows, vec![]);
    let size = prost::Message::encoded_len(&huge);
    assert!(size > 64 * 1024, "{size}");

    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    p.send(busy_window("node-a", "agent-1", 1, t0)).await;
    assert_eq!(p.next_ack().await.acked_seq, 1);
    p.send(huge).await;
    let err = p.error().await;
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("65536"), "names the limit: {err:?}");

    // A unary request over the limit.
    let err = query(
        &mut client,
        pb::QueryTopRequest {
            filter: Some(pb::Filter {
                container: "x".repeat(100_000),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // The collector is fine: the first window is stored, a new stream works.
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    assert_eq!(p.next_ack().await.acked_seq, 1);
    p.send(busy_window("node-a", "agent-1", 3, t0 + 20_000))
        .await;
    assert_eq!(p.next_ack().await.acked_seq, 3);
    assert_eq!(stored_windows(&mut client).await, 2);
    assert_eq!(tc.collector.stats().push_rejected, 1);
    drop(p);
    tc.stop().await;
}

#[tokio::test]
async fn malformed_messages_get_a_status_and_the_server_lives_on() {
    let tc = TestCollector::start().await;
    let channel = tcp_channel(tc.addr).await;
    let mut grpc = tonic::client::Grpc::new(channel.clone());

    within("ready", grpc.ready()).await.unwrap();
    let err = within(
        "QueryTop with garbage",
        grpc.unary(
            tonic::Request::new(TRUNCATED.to_vec()),
            PathAndQuery::from_static("/sockeye.v1.CollectorService/QueryTop"),
            RawCodec,
        ),
    )
    .await
    .unwrap_err();
    // gRPC maps undecodable messages to INTERNAL, with prost's reason.
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("failed to decode"), "{err:?}");

    within("ready", grpc.ready()).await.unwrap();
    let stream = tokio_stream::iter(vec![TRUNCATED.to_vec()]);
    let resp = within(
        "Push with garbage",
        grpc.streaming(
            tonic::Request::new(stream),
            PathAndQuery::from_static("/sockeye.v1.CollectorService/Push"),
            RawCodec,
        ),
    )
    .await;
    let err = match resp {
        Err(status) => status,
        Ok(r) => within("the push status", r.into_inner().message())
            .await
            .expect_err("garbage is not acked"),
    };
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("failed to decode"), "{err:?}");

    // An unknown method is UNIMPLEMENTED, not a crash.
    within("ready", grpc.ready()).await.unwrap();
    let err = within(
        "unknown method",
        grpc.unary(
            tonic::Request::new(vec![]),
            PathAndQuery::from_static("/sockeye.v1.CollectorService/DropTables"),
            RawCodec,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");

    let mut client = tc.client().await;
    assert_eq!(stored_windows(&mut client).await, 0);
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    p.send(busy_window("node-a", "agent-1", 1, now_ms())).await;
    assert_eq!(p.next_ack().await.acked_seq, 1);
    drop(p);
    tc.stop().await;
}

#[tokio::test]
async fn retention_deletes_windows_that_ended_before_the_horizon() {
    let tc = TestCollector::start_with(|c| c.retention = Duration::from_secs(3600)).await;
    let mut client = tc.client().await;
    let now = now_ms();
    let min = 60_000;
    let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
    for (seq, age) in [(1, 50 * min), (2, 30 * min), (3, 5 * min)] {
        a.send(busy_window("node-a", "agent-a", seq, now - age))
            .await;
    }
    a.ack_through(3).await;
    let mut b = Pusher::open(&mut client, "node-b", "agent-b").await;
    b.send(busy_window("node-b", "agent-b", 1, now - 45 * min))
        .await;
    b.ack_through(1).await;
    // Already past the horizon when it arrives: acked, counted, not stored.
    b.send(busy_window("node-b", "agent-b", 2, now - 90 * min))
        .await;
    assert_eq!(b.next_ack().await.acked_seq, 2);
    assert_eq!(tc.collector.stats().windows_expired_on_arrival, 1);
    assert_eq!(stored_windows(&mut client).await, 4);

    // 20 minutes later the horizon is 40 minutes ago.
    let deleted = tc.collector.prune_expired(now + 20 * min).await.unwrap();
    assert_eq!(deleted, 2, "the windows 50 and 45 minutes old");
    assert_eq!(stored_windows(&mut client).await, 2);
    let snap = within(
        "snapshot",
        client.get_cluster_snapshot(pb::GetClusterSnapshotRequest::default()),
    )
    .await
    .unwrap()
    .into_inner();
    let nodes: Vec<&str> = snap.nodes.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(
        nodes,
        ["node-a"],
        "node-b's only window is gone, and so is its entry"
    );

    let deleted = tc
        .collector
        .prune_expired(now + 2 * 60 * min)
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(stored_windows(&mut client).await, 0);
    assert_eq!(tc.collector.stats().windows_deleted_by_retention, 4);
    drop((a, b));
    tc.stop().await;
}

#[tokio::test]
async fn retention_runs_on_its_own() {
    // Window 1 ended 1 s ago and expires 4 s from now: time enough to see
    // both stored on a busy machine, and soon enough for `within`.
    let tc = TestCollector::start_with(|c| {
        c.retention = Duration::from_secs(5);
        c.retention_interval = Some(Duration::from_millis(100));
    })
    .await;
    let mut client = tc.client().await;
    let now = now_ms();
    let mut p = Pusher::open(&mut client, "node-a", "agent-a").await;
    p.send(busy_window("node-a", "agent-a", 1, now - 1_000))
        .await;
    p.send(busy_window("node-a", "agent-a", 2, now + 60_000))
        .await;
    p.ack_through(2).await;
    assert_eq!(stored_windows(&mut client).await, 2);
    within("retention to delete the older window", async {
        while stored_windows(&mut client.clone()).await != 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(tc.collector.stats().windows_deleted_by_retention, 1);
    drop(p);
    tc.stop().await;
}
