//! Push over real gRPC: acks, resends after a disconnect, durability and
//! dedup across a restart, the unix socket, and invalid streams.

mod common;

use common::*;
use sockeye_proto::v1 as pb;
use tonic::Code;

on_both_stores! {
    async fn acks_every_stored_window(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        // The Hello is answered before any window, even with nothing stored:
        // the agent settles what it evicted unacknowledged by this answer.
        let hello = p.raw_ack().await;
        assert_eq!((hello.acked_seq, hello.refused_windows), (0, 0));
        let t0 = now_ms();
        for seq in 1..=5 {
            p.send(busy_window(
                "node-a",
                "agent-1",
                seq,
                t0 + seq as i64 * 10_000,
            ))
            .await;
            let ack = p.next_ack().await;
            assert_eq!(ack.agent_id, "agent-1");
            assert_eq!(ack.acked_seq, seq, "each window is acked once stored");
        }
        assert_eq!(stored_windows(&mut client).await, 5);
        let s = tc.collector.stats();
        assert_eq!(s.windows_stored, 5);
        assert_eq!(s.windows_duplicate, 0);
        assert_eq!(s.push_streams, 1);
        drop(p);
        tc.stop().await;
    }

    async fn resent_windows_after_a_disconnect_are_not_stored_twice(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let t0 = now_ms();
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        for seq in 1..=6 {
            p.send(busy_window(
                "node-a",
                "agent-1",
                seq,
                t0 + seq as i64 * 10_000,
            ))
            .await;
        }
        p.ack_through(6).await;
        // The agent loses the connection before it saw the last acks, so it
        // resends 4..=6 with the new ones on a new stream.
        drop(p);
        let mut client = tc.client().await;
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        // On Hello the collector says what it already has.
        assert_eq!(p.next_ack().await.acked_seq, 6);
        for seq in 4..=9 {
            p.send(busy_window(
                "node-a",
                "agent-1",
                seq,
                t0 + seq as i64 * 10_000,
            ))
            .await;
        }
        let mut acks = Vec::new();
        for _ in 4..=9 {
            acks.push(p.next_ack().await.acked_seq);
        }
        // Acks never go backwards: a resent 4 is acked as "through 6".
        assert_eq!(acks, vec![6, 6, 6, 7, 8, 9]);
        assert_eq!(stored_windows(&mut client).await, 9);
        let s = tc.collector.stats();
        assert_eq!((s.windows_stored, s.windows_duplicate), (9, 3));
        // The merged counts are those of 9 windows, not 12.
        let top = query(&mut client, pb::QueryTopRequest::default())
            .await
            .unwrap();
        let redis = top
            .rows
            .iter()
            .find(|r| r.destination.as_ref().unwrap().port == 6379)
            .expect("redis row");
        assert_eq!(redis.connects_ok, 3 * 9);
        assert_eq!(redis.connects_failed, 9);
        drop(p);
        tc.stop().await;
    }

    async fn windows_survive_a_restart_and_dedup_holds_across_it(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let t0 = now_ms();
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        for seq in 1..=4 {
            p.send(busy_window(
                "node-a",
                "agent-1",
                seq,
                t0 + seq as i64 * 10_000,
            ))
            .await;
        }
        p.ack_through(4).await;
        drop(p);
        drop(client);

        let tc = tc.restart().await;
        let mut client = tc.client().await;
        assert_eq!(stored_windows(&mut client).await, 4, "windows are durable");
        assert_eq!(
            tc.collector.stats().windows_stored,
            0,
            "counters are per run"
        );
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        assert_eq!(
            p.next_ack().await.acked_seq,
            4,
            "the highest seq survives too"
        );
        for seq in 3..=5 {
            p.send(busy_window(
                "node-a",
                "agent-1",
                seq,
                t0 + seq as i64 * 10_000,
            ))
            .await;
        }
        p.ack_through(5).await;
        assert_eq!(stored_windows(&mut client).await, 5);
        let s = tc.collector.stats();
        assert_eq!((s.windows_stored, s.windows_duplicate), (1, 2));
        drop(p);
        tc.stop().await;
    }

    async fn push_and_query_over_the_unix_socket(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mode = std::fs::metadata(&tc.socket).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600,
            "the socket is private to its owner"
        );
        let mut client = tc.unix_client().await;
        let mut p = Pusher::open(&mut client, "node-u", "agent-u").await;
        p.send(busy_window("node-u", "agent-u", 1, now_ms())).await;
        assert_eq!(p.next_ack().await.acked_seq, 1);
        let snap = within(
            "snapshot",
            client.get_cluster_snapshot(pb::GetClusterSnapshotRequest::default()),
        )
        .await
        .unwrap()
        .into_inner();
        assert_eq!(snap.nodes.len(), 1);
        assert_eq!(snap.nodes[0].node, "node-u");
        drop(p);
        tc.stop().await;
    }

    async fn dropped_windows_reported_by_agents_are_counted_once(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let t0 = now_ms();
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        p.send(busy_window("node-a", "agent-1", 1, t0)).await;
        // The agent's buffer overflowed: 2..=4 were dropped, 5 says so.
        let mut w = busy_window("node-a", "agent-1", 5, t0 + 40_000);
        w.dropped_windows_before = 3;
        p.send(w.clone()).await;
        p.send(w).await; // and a resend of it
        p.ack_through(5).await;
        p.next_ack().await;
        let top = query(&mut client, pb::QueryTopRequest::default())
            .await
            .unwrap();
        assert_eq!((top.windows, top.dropped_windows), (2, 3));
        assert_eq!(tc.collector.stats().windows_agents_dropped, 3);
        drop(p);
        tc.stop().await;
    }

    async fn invalid_push_streams_get_invalid_argument(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let t0 = now_ms();

        // A window before any Hello.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(pb::PushRequest {
            msg: Some(pb::push_request::Msg::Window(busy_window("n", "a", 1, t0))),
        })
        .await
        .unwrap();
        let mut acks = client
            .push(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let err = within("status", acks.message()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message()
                .contains("first message on Push must be a Hello"),
            "{err:?}"
        );

        let cases: Vec<(pb::Window, &str)> = vec![
            (
                busy_window("node-a", "someone-else", 1, t0),
                "differs from the Hello",
            ),
            (
                busy_window("node-b", "agent-1", 1, t0),
                "node \"node-b\" differs",
            ),
            (
                pb::Window {
                    start_unix_ms: t0 + 1,
                    ..busy_window("node-a", "agent-1", 1, t0)
                },
                "is after end_unix_ms",
            ),
            (
                pb::Window {
                    start_unix_ms: -5,
                    ..busy_window("node-a", "agent-1", 1, t0)
                },
                "after 1970",
            ),
        ];
        for (w, why) in cases {
            let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
            p.send(w).await;
            let err = p.error().await;
            assert_eq!(err.code(), Code::InvalidArgument, "{why}: {err:?}");
            assert!(err.message().contains(why), "{why}: {err:?}");
            assert!(err.message().contains("seq 1"), "{err:?}");
        }

        // A Hello without an agent id.
        let mut p = Pusher::open(&mut client, "node-a", "").await;
        let err = p.error().await;
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("agent_id"), "{err:?}");

        // A second Hello, and an empty PushRequest.
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        p.tx.send(hello("node-a", "agent-2")).await.unwrap();
        assert!(p.error().await.message().contains("Hello was already sent"));
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        p.tx.send(pb::PushRequest { msg: None }).await.unwrap();
        assert!(p
            .error()
            .await
            .message()
            .contains("neither hello, window nor chunk"));

        // Nothing was stored, every rejection was counted, and the collector
        // still takes a good stream.
        assert_eq!(stored_windows(&mut client).await, 0);
        assert_eq!(tc.collector.stats().push_rejected, 8);
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        p.send(busy_window("node-a", "agent-1", 1, t0)).await;
        assert_eq!(p.next_ack().await.acked_seq, 1);
        drop(p);
        tc.stop().await;
    }

    async fn agents_are_told_to_reconnect_on_shutdown(backend) {
        let tc = TestCollector::start_on(backend).await;
        let mut client = tc.client().await;
        let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
        p.send(busy_window("node-a", "agent-1", 1, now_ms())).await;
        p.next_ack().await;
        let collector = tc.collector.clone();
        let stop = tokio::spawn(async move { tc.stop().await });
        let err = p.error().await;
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("shutting down"), "{err:?}");
        within("stop", stop).await.unwrap();
        assert_eq!(collector.stats().push_streams, 0);
    }
}
