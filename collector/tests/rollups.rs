//! QueryTop from the ClickHouse store's per-minute rollups, on a real
//! clickhouse-server: the answer equals the raw one over the same range
//! (filters, rankings, ranges with ragged minute edges), a window pushed
//! twice or rolled up twice is counted once, and a window stored but not
//! rolled up (its rollup insert failed, or its whole insert was cut short
//! and it was sent again) is still counted. Prints rows read and query times of both.

mod common;

use std::time::Instant;

use common::*;
use sockeye_collector::{
    query::{self, TopQuery, MINUTE_MS},
    Store, StoreKind,
};
use sockeye_proto::v1 as pb;

const WINDOWS_PER_AGENT: u64 = 200;
/// Between two windows of one agent.
const EVERY_MS: i64 = 30_000;
const MAX: u64 = 1_000_000;

/// A window whose numbers all move with `seq`: several workloads (pods of
/// two namespaces and the host), destinations (one spelled IPv4-mapped),
/// failures, latencies, open gauges, drop counters.
fn agent_window(node: &str, agent: &str, seq: u64, end: i64) -> pb::Window {
    let s = seq;
    let api = pod("prod", "api-5f9c-x1", "app", node);
    let batch = pod("jobs", "batch-77", "run", node);
    let host = pb::Workload {
        label: "host".into(),
        runtime: "host".into(),
        node: node.into(),
        ..Default::default()
    };
    let lat = |base: u64| -> Vec<u64> {
        (0..s % 4 + 1)
            .map(|i| base + i * 37_000 + s * 1_000)
            .collect()
    };
    let mut flows = vec![
        flow(
            &api,
            ep("10.0.1.12", 6379),
            &lat(200_000),
            &[("refused", s % 3)],
            s % 7,
        ),
        flow(&api, ep("10.0.1.13", 5432), &lat(900_000), &[], s % 5 + 1),
        flow(
            &batch,
            ep("10.0.1.12", 6379),
            &lat(3_000_000),
            &[("timed_out", s % 2)],
            s % 3,
        ),
        flow(&host, ep("10.0.9.9", 9100), &lat(40_000), &[], 1),
    ];
    flows[1].drops = Some(drops(&[("user_flows_evicted", s % 4)]));
    flows[3].drops = None;
    if s.is_multiple_of(5) {
        flows.push(flow(
            &batch,
            ep("::ffff:10.0.1.14", 443),
            &lat(50_000_000),
            &[("unreachable", 1)],
            0,
        ));
    }
    let mut w = window(node, agent, seq, end, flows, vec![]);
    w.dropped_windows_before = u64::from(s.is_multiple_of(17));
    w
}

async fn push_all(client: &mut Client, node: &str, agent: &str, windows: &[pb::Window]) {
    let mut p = Pusher::open(client, node, agent).await;
    for chunk in windows.chunks(25) {
        for w in chunk {
            p.send(w.clone()).await;
        }
        p.ack_through(chunk.last().unwrap().seq).await;
    }
}

fn rename_table(server: &clickhouse::ClickHouseServer, db: &str, from: &str, to: &str) {
    server.sql(&format!("RENAME TABLE {db}.{from} TO {db}.{to}"));
}

/// Pushes `windows` with the rollups' input table renamed away: each is
/// stored, and its rollup insert fails.
async fn push_unrolled(
    server: &clickhouse::ClickHouseServer,
    db: &str,
    client: &mut Client,
    (node, agent): (&str, &str),
    windows: &[pb::Window],
) {
    rename_table(server, db, "tcp_minute_in", "tcp_minute_in_away");
    push_all(client, node, agent, windows).await;
    rename_table(server, db, "tcp_minute_in_away", "tcp_minute_in");
}

fn request(from: i64, to: i64, filter: Option<pb::Filter>, by: &str) -> pb::QueryTopRequest {
    pb::QueryTopRequest {
        filter,
        from_unix_ms: from,
        to_unix_ms: to,
        by: by.into(),
        limit: 1000,
    }
}

/// Every filter and ranking over `range`: the rollup path answers what the
/// raw path answers, and did read rollups.
async fn assert_same(store: &dyn Store, (from, to): (i64, i64), what: &str) {
    let filters = [
        None,
        Some(pb::Filter {
            namespace: "prod".into(),
            ..Default::default()
        }),
        Some(pb::Filter {
            destination: "10.0.1.12:6379".into(),
            ..Default::default()
        }),
        Some(pb::Filter {
            node: "node-b".into(),
            ..Default::default()
        }),
        Some(pb::Filter {
            destination: "10.0.1.14".into(),
            ..Default::default()
        }),
        Some(pb::Filter {
            pod: "batch".into(),
            destination: ":6379".into(),
            ..Default::default()
        }),
        Some(pb::Filter {
            container: "host".into(),
            ..Default::default()
        }),
    ];
    for f in filters {
        for by in ["failures", "latency", "open"] {
            let q = TopQuery::parse(&request(from, to, f.clone(), by)).unwrap();
            let (raw, _) = query::query_top_raw(store, &q, MAX).await.unwrap();
            let (rolled, counts) = query::query_top(store, &q, MAX).await.unwrap();
            assert!(counts.rollup_rows > 0, "{what}: rollups were not read");
            assert!(
                !raw.rows.is_empty() || f.is_some(),
                "{what}: nothing to compare"
            );
            assert_eq!(rolled, raw, "{what}, filter {f:?}, by {by}");
        }
    }
}

/// The (minute, node) pairs within five minutes of `minute` that the
/// rollups cannot answer (read raw instead).
async fn dirty_near(store: &dyn Store, minute: i64) -> Vec<(i64, String)> {
    store
        .rollups()
        .unwrap()
        .tcp_minutes(minute - 5..=minute + 5)
        .await
        .unwrap()
        .dirty
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_answer_as_raw_windows_do_and_count_every_window_once() {
    let server = clickhouse::shared();
    let url = server.fresh_db();
    let db = url.database.clone();
    let store_kind = StoreKind::ClickHouse(url);
    let a = TestCollector::start_with(|c| c.store = store_kind.clone()).await;
    let b = TestCollector::start_with(|c| c.store = store_kind.clone()).await;
    let mut ca = a.client().await;
    let mut cb = b.client().await;

    // Four hours ago, 13 s into a minute: windows end off the minute edges.
    let t0 = (now_ms() - 4 * 3_600_000).div_euclid(MINUTE_MS) * MINUTE_MS + 13_000;
    let series = |node: &str, agent: &str, offset: i64| -> Vec<pb::Window> {
        (1..=WINDOWS_PER_AGENT)
            .map(|s| agent_window(node, agent, s, t0 + offset + s as i64 * EVERY_MS))
            .collect()
    };
    // Two agents on node-a (a restart: its seqs start again), one on node-b.
    let a1 = series("node-a", "agent-a1", 0);
    let a2 = series("node-a", "agent-a2", 10_000);
    let b1 = series("node-b", "agent-b", 5_000);
    push_all(&mut ca, "node-a", "agent-a1", &a1).await;
    push_all(&mut cb, "node-a", "agent-a2", &a2).await;
    push_all(&mut ca, "node-b", "agent-b", &b1).await;
    let store = a.collector.store();
    let span = (t0, t0 + (WINDOWS_PER_AGENT as i64 + 1) * EVERY_MS);

    // The whole series, a range that straddles minute edges at both ends,
    // and an unbounded one.
    assert_same(store.as_ref(), (span.0 - 4_999, span.1 + 3), "whole range").await;
    assert_same(
        store.as_ref(),
        (t0 + 20 * MINUTE_MS + 29_999, t0 + 95 * MINUTE_MS + 1),
        "straddling minutes",
    )
    .await;
    assert_same(store.as_ref(), (0, 0), "unbounded").await;

    // Figures: the whole range, unfiltered, by failures.
    let q = TopQuery::parse(&request(span.0, span.1, None, "failures")).unwrap();
    let t = Instant::now();
    let (raw, raw_counts) = query::query_top_raw(store.as_ref(), &q, MAX).await.unwrap();
    let raw_time = t.elapsed();
    let t = Instant::now();
    let (rolled, counts) = query::query_top(store.as_ref(), &q, MAX).await.unwrap();
    let rolled_time = t.elapsed();
    assert_eq!(rolled, raw);
    assert_eq!(raw.windows, 3 * WINDOWS_PER_AGENT);
    println!(
        "rollups: {} windows; raw read {} windows in {raw_time:?}; rollups read {} rollup rows + {} edge windows in {rolled_time:?}",
        raw.windows, raw_counts.read, counts.rollup_rows, counts.read
    );
    assert!(counts.read < raw_counts.read / 10, "{counts:?}");

    // node-b's connects, counted from what was pushed.
    let node_b = Some(pb::Filter {
        node: "node-b".into(),
        ..Default::default()
    });
    let expected_ok: u64 = b1
        .iter()
        .flat_map(|w| &w.aggregates.as_ref().unwrap().tcp_flows)
        .map(|f| f.connects_ok)
        .sum();
    let ok_of = |r: &pb::QueryTopResponse| r.rows.iter().map(|r| r.connects_ok).sum::<u64>();
    let q_b = TopQuery::parse(&request(span.0, span.1, node_b.clone(), "failures")).unwrap();
    assert_eq!(
        ok_of(&query::query_top(store.as_ref(), &q_b, MAX).await.unwrap().0),
        expected_ok
    );

    // A window pushed again to the other replica (an agent retry after a
    // move): stored once, rolled up once.
    // A new window after them, outside the range: its ack says the five
    // before it were handled.
    let mut again = b1[40..45].to_vec();
    again.push(agent_window(
        "node-b",
        "agent-b",
        WINDOWS_PER_AGENT + 1,
        span.1 + 60_000,
    ));
    push_all(&mut cb, "node-b", "agent-b", &again).await;
    assert_eq!(b.collector.stats().windows_duplicate, 5);
    let (rolled, _) = query::query_top(store.as_ref(), &q_b, MAX).await.unwrap();
    assert_eq!(ok_of(&rolled), expected_ok);
    let clean = store
        .rollups()
        .unwrap()
        .tcp_minutes(0..=now_ms() / MINUTE_MS)
        .await
        .unwrap();
    assert_eq!(clean.dirty, vec![], "no minute needs raw windows");

    // Two replicas racing on one window both store and roll it up: the raw
    // table holds it twice until it merges, the rollups have two inserts
    // for one (agent, seq). Made here for one minute of node-b by copying
    // its rows, as both inserts would have written them.
    let w = &b1[100];
    let minute = w.end_unix_ms.div_euclid(MINUTE_MS);
    server.sql(&format!(
        "INSERT INTO {db}.windows SELECT * FROM {db}.windows WHERE agent_id = 'agent-b' AND seq = {}",
        w.seq
    ));
    server.sql(&format!(
        "INSERT INTO {db}.tcp_minute SELECT * FROM {db}.tcp_minute WHERE minute = {minute} AND node = 'node-b'"
    ));
    assert_eq!(
        dirty_near(store.as_ref(), minute).await,
        vec![(minute, "node-b".to_string())]
    );
    let (rolled, counts) = query::query_top(store.as_ref(), &q_b, MAX).await.unwrap();
    assert_eq!(ok_of(&rolled), expected_ok, "the race counted once");
    assert!(counts.read >= 1, "its minute was read raw: {counts:?}");

    // A window stored but never rolled up (its rollup insert failed: the
    // rollups' input table renamed away), on node-a.
    let mut lone = a1[60].clone();
    lone.seq += 100_000;
    push_unrolled(server, &db, &mut ca, ("node-a", "agent-a1"), &[lone]).await;
    assert_eq!(a.collector.stats().store_rollup_failures, 1);
    assert_same(
        store.as_ref(),
        (span.0 - 4_999, span.1 + 3),
        "after the race and the missing rollup",
    )
    .await;
    let q_all = TopQuery::parse(&request(span.0, span.1, None, "failures")).unwrap();
    assert_eq!(
        query::query_top(store.as_ref(), &q_all, MAX)
            .await
            .unwrap()
            .0
            .windows,
        3 * WINDOWS_PER_AGENT + 1
    );

    // The API answers from the same path.
    let over_grpc = query(&mut cb, request(span.0, span.1, None, "latency"))
        .await
        .unwrap();
    let q_lat = TopQuery::parse(&request(span.0, span.1, None, "latency")).unwrap();
    assert_eq!(
        over_grpc,
        query::query_top_raw(store.as_ref(), &q_lat, MAX)
            .await
            .unwrap()
            .0
    );
    a.stop().await;
    b.stop().await;
}

/// A ClickHouse killed while answering an insert can keep the window's raw
/// part and lose what the views write from the same insert; the put fails,
/// and the agent's next Hello is told the window is stored, so it is never
/// sent again (a CI run: QueryTop said 59 windows, the raw table 60, while
/// the rollups' bookkeeping came from a view). Made here by a view that
/// throws after the raw part is written. The minute must be read raw. So
/// must the minute of a window recorded as being stored and never stored
/// (a put cut between its bookkeeping and its raw insert: the feed view's
/// table renamed away, which fails the insert before any part is written),
/// and that of a window whose rollup insert failed (its input table
/// renamed away), which is counted in `store_rollup_failures`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_the_rollups_miss_are_read_raw_a_cut_insert_and_a_failed_rollup() {
    let server = clickhouse::shared();
    let url = server.fresh_db();
    let db = url.database.clone();
    let tc = TestCollector::start_with(|c| c.store = StoreKind::ClickHouse(url)).await;
    let mut client = tc.client().await;
    // All in one day (`day` never differs between rows), and well inside
    // the collector's 24 h retention: three hours back, or just before the
    // midnight the span would cross. (An hour into the day of two hours
    // back, as it was, is more than 24 h back from 00:00 to 02:15 UTC: the
    // first windows expired on arrival and the counts came out short.)
    const DAY_MS: i64 = 86_400_000;
    let span_ms = 151 * EVERY_MS;
    let mut t0 = (now_ms() - 3 * 3_600_000).div_euclid(MINUTE_MS) * MINUTE_MS + 13_000;
    // A minute's margin: the last query reaches a little past the span.
    let end_day = (t0 + span_ms + MINUTE_MS).div_euclid(DAY_MS);
    if end_day != t0.div_euclid(DAY_MS) {
        t0 = end_day * DAY_MS - span_ms - 2 * MINUTE_MS + 13_000;
    }
    let ws: Vec<pb::Window> = (1..=150)
        .map(|s| agent_window("node-a", "agent-a", s, t0 + s as i64 * EVERY_MS))
        .collect();
    push_all(&mut client, "node-a", "agent-a", &ws[..49]).await;
    push_unrolled(server, &db, &mut client, ("node-a", "agent-a"), &ws[49..50]).await;
    assert_eq!(tc.collector.stats().store_rollup_failures, 1);
    push_all(&mut client, "node-a", "agent-a", &ws[50..99]).await;

    // The cut insert of seq 100: its raw part written, its answer an error.
    server.cut_inserts_of(&db, 100);
    let mut p = Pusher::open(&mut client, "node-a", "agent-a").await;
    p.send(ws[99].clone()).await;
    assert_eq!(p.error().await.code(), tonic::Code::Unavailable);
    server.uncut_inserts(&db);
    let mut p = Pusher::open(&mut client, "node-a", "agent-a").await;
    assert_eq!(
        p.raw_ack().await.acked_seq,
        100,
        "the cut insert kept the raw row, and the Hello says so"
    );
    // As the agent does: what the Hello acked is not sent again.
    drop(p);
    push_all(&mut client, "node-a", "agent-a", &ws[100..]).await;
    let s = tc.collector.stats();
    assert_eq!((s.windows_duplicate, s.store_rollup_failures), (0, 1));

    // A put that fails after its bookkeeping and before the raw part is
    // written (its feed row, written just before, has no table): another
    // agent on node-a whose window is never stored.
    rename_table(server, &db, "windows_feed", "windows_feed_away");
    let gone = agent_window("node-a", "agent-gone", 1, ws[120].end_unix_ms + 1);
    let mut p = Pusher::open(&mut client, "node-a", "agent-gone").await;
    p.send(gone.clone()).await;
    assert_eq!(p.error().await.code(), tonic::Code::Unavailable);
    rename_table(server, &db, "windows_feed_away", "windows_feed");

    let store = tc.collector.store();
    let span = (t0, t0 + span_ms);
    let q = TopQuery::parse(&request(span.0, span.1, None, "failures")).unwrap();
    let (rolled, _) = query::query_top(store.as_ref(), &q, MAX).await.unwrap();
    assert_eq!(
        (rolled.windows, store.window_count().await.unwrap()),
        (150, 150)
    );
    for w in [&ws[49], &ws[99], &gone] {
        let minute = w.end_unix_ms.div_euclid(MINUTE_MS);
        assert_eq!(
            dirty_near(store.as_ref(), minute).await,
            vec![(minute, "node-a".to_string())]
        );
    }
    assert_same(
        store.as_ref(),
        (span.0 - 4_999, span.1 + 3),
        "after the failed rollup, the cut insert and the window never stored",
    )
    .await;
    tc.stop().await;
}

/// The embedded store has no rollups: QueryTop reads raw windows.
#[tokio::test]
async fn redb_keeps_the_raw_path() {
    let tc = TestCollector::start().await;
    assert!(tc.collector.store().rollups().is_none());
    tc.stop().await;
}

/// Figures at a larger scale (run with `--ignored --nocapture`): 10 nodes
/// with a window every 10 s for 3 hours, put through the store directly,
/// then a 3-hour QueryTop by failures from raw windows and from rollups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, about a minute"]
async fn rollups_figures() {
    let store = std::sync::Arc::new(
        sockeye_collector::store::ClickHouseStore::open(&clickhouse::shared().fresh_db())
            .await
            .unwrap(),
    );
    const NODES: u64 = 10;
    const PER_NODE: u64 = 3 * 360;
    let t0 = (now_ms() - 5 * 3_600_000).div_euclid(MINUTE_MS) * MINUTE_MS + 7_000;
    let windows: Vec<pb::Window> = (0..NODES)
        .flat_map(|n| {
            (1..=PER_NODE).map(move |s| {
                let node = format!("node-{n}");
                agent_window(&node, &format!("agent-{n}"), s, t0 + s as i64 * 10_000)
            })
        })
        .collect();
    let t = Instant::now();
    // Eight puts in flight, as eight agents pushing at once.
    for chunk in windows.chunks(8) {
        let mut puts = tokio::task::JoinSet::new();
        for w in chunk {
            let (store, w) = (store.clone(), w.clone());
            puts.spawn(async move { store.put(&w).await.unwrap() });
        }
        while let Some(r) = puts.join_next().await {
            r.unwrap();
        }
    }
    println!("put {} windows in {:?}", windows.len(), t.elapsed());
    let q = TopQuery::parse(&request(
        t0,
        t0 + (PER_NODE as i64 + 1) * 10_000,
        None,
        "failures",
    ))
    .unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        let (raw, raw_counts) = query::query_top_raw(store.as_ref(), &q, MAX).await.unwrap();
        let raw_time = t.elapsed();
        let t = Instant::now();
        let (rolled, counts) = query::query_top(store.as_ref(), &q, MAX).await.unwrap();
        let rolled_time = t.elapsed();
        assert_eq!(rolled, raw);
        println!(
            "3 h, {} nodes: raw read {} windows in {raw_time:?}; rollups read {} rollup rows + {} edge windows in {rolled_time:?}",
            NODES, raw_counts.read, counts.rollup_rows, counts.read
        );
    }
}
