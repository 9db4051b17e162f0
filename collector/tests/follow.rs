//! Live streams across replicas, on a real clickhouse-server: a watcher on
//! one collector replica sees every window an agent pushes to another,
//! exactly once, including an agent's late backlog, windows below a seq
//! already delivered, a row whose insert became visible long after it was
//! stamped, and a window whose insert was cut after its row landed.
//! Prints the latency following adds (ack on A to delivery on B).

mod common;

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use common::*;
use prost::Message;
use sockeye_collector::{Stats, StoreKind};
use sockeye_proto::v1 as pb;
use tokio::sync::mpsc;

/// A watcher's windows as they arrive, with when, read by a task of its
/// own so that arrival times are not those of the test's next read.
struct Watcher {
    rx: mpsc::UnboundedReceiver<(String, u64, Instant)>,
    /// How many times each (agent, seq) arrived.
    got: HashMap<(String, u64), u32>,
    at: HashMap<(String, u64), Instant>,
}

impl Watcher {
    async fn on(tc: &TestCollector) -> Self {
        let mut client = tc.client().await;
        let mut stream = within(
            "WatchWindows",
            client.watch_windows(pb::WatchWindowsRequest::default()),
        )
        .await
        .expect("WatchWindows accepted")
        .into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _client = client;
            while let Ok(Some(w)) = stream.message().await {
                if tx.send((w.agent_id, w.seq, Instant::now())).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            got: HashMap::new(),
            at: HashMap::new(),
        }
    }

    /// Reads until (agent, seq) arrived; returns when it did.
    async fn until(&mut self, agent: &str, seq: u64) -> Instant {
        let key = (agent.to_string(), seq);
        while !self.got.contains_key(&key) {
            let (a, s, t) = within(&format!("window {agent}/{seq}"), self.rx.recv())
                .await
                .expect("watch stream open");
            *self.got.entry((a.clone(), s)).or_default() += 1;
            self.at.entry((a, s)).or_insert(t);
        }
        self.at[&key]
    }

    /// Every window that arrived more than once.
    fn twice(&self) -> Vec<&(String, u64)> {
        let mut v: Vec<_> = self
            .got
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k)
            .collect();
        v.sort();
        v
    }
}

async fn stats_until(tc: &TestCollector, what: &str, ok: impl Fn(&Stats) -> bool) -> Stats {
    within(what, async {
        loop {
            let s = tc.collector.stats();
            if ok(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Proves that nothing more is on its way: waits until `tc` has read the
/// feed `reads` more times (so a deep read, which reaches back past every
/// window of the test, has run), then pushes a last window through `via`
/// and reads every watcher up to it.
async fn settle(
    tc: &TestCollector,
    reads: u64,
    via: &TestCollector,
    watchers: &mut [&mut Watcher],
) {
    let polls = tc.collector.stats().follow_polls;
    stats_until(tc, "more reads of the feed", |s| {
        s.follow_polls >= polls + reads
    })
    .await;
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let seq = SEQ.fetch_add(1, Relaxed);
    let mut client = via.client().await;
    let mut p = Pusher::open(&mut client, "node-z", "sentinel").await;
    p.send(busy_window("node-z", "sentinel", seq, now_ms()))
        .await;
    p.ack_through(seq).await;
    for w in watchers.iter_mut() {
        w.until("sentinel", seq).await;
    }
}

fn replicas_config(
    url: &sockeye_collector::store::ClickHouseUrl,
) -> impl Fn(&mut sockeye_collector::CollectorConfig) + '_ {
    move |c| c.store = StoreKind::ClickHouse(url.clone())
}

/// Reads in 5 s of deep reads at the default interval: 20 reads plus one.
const DEEP: u64 = 21;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_b_sees_every_window_pushed_to_a_once_and_soon() {
    let url = clickhouse::shared().fresh_db();
    let a = TestCollector::start_with(replicas_config(&url)).await;
    let b = TestCollector::start_with(replicas_config(&url)).await;
    let mut on_a = Watcher::on(&a).await;
    let mut on_b = Watcher::on(&b).await;

    const N: u64 = 30;
    let t0 = now_ms() - N as i64 * 1000;
    let mut client = a.client().await;
    let mut p = Pusher::open(&mut client, "node-a", "agent-1").await;
    let mut added = Vec::new();
    for seq in 1..=N {
        // Pacing, not a wait for anything: each push lands at another
        // point of B's read interval (pushing right after each delivery
        // would always land just after a read, the worst case).
        tokio::time::sleep(Duration::from_millis(seq * 97 % 250)).await;
        p.send(busy_window(
            "node-a",
            "agent-1",
            seq,
            t0 + seq as i64 * 1000,
        ))
        .await;
        p.ack_through(seq).await;
        let acked = Instant::now();
        let delivered = on_b.until("agent-1", seq).await;
        // B may deliver before A's ack reaches the agent: zero, then.
        added.push(delivered.saturating_duration_since(acked));
        on_a.until("agent-1", seq).await;
    }
    settle(&b, DEEP, &a, &mut [&mut on_a, &mut on_b]).await;
    settle(&a, DEEP, &a, &mut [&mut on_a, &mut on_b]).await;
    for (name, w) in [("A", &on_a), ("B", &on_b)] {
        assert_eq!(
            w.twice(),
            Vec::<&(String, u64)>::new(),
            "delivered twice on {name}"
        );
        for seq in 1..=N {
            assert_eq!(
                w.got.get(&("agent-1".to_string(), seq)),
                Some(&1),
                "{name} seq {seq}"
            );
        }
    }
    let sb = b.collector.stats();
    assert_eq!(
        sb.follow_windows,
        N + 2,
        "B followed every window A stored: {sb}"
    );
    assert_eq!(sb.follow_poll_errors, 0);
    assert_eq!(sb.windows_stored, 0);

    added.sort();
    let p50 = added[added.len() / 2];
    let max = added[added.len() - 1];
    println!(
        "follow: added latency (push ack on A -> delivery on B) over {N} windows, --follow-every {:?}: p50 {p50:?}, max {max:?}",
        sockeye_collector::DEFAULT_FOLLOW_EVERY
    );
    assert!(
        max < Duration::from_secs(3),
        "following took {max:?} at most; expected about the interval"
    );
    drop(p);
    a.stop().await;
    b.stop().await;
}

/// A SQL string literal of any bytes.
fn sql_bytes(b: &[u8]) -> String {
    let mut s = String::from("'");
    for x in b {
        s += &format!("\\x{x:02X}");
    }
    s + "'"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_out_of_order_and_late_visible_windows_are_delivered_once() {
    let server = clickhouse::shared();
    let url = server.fresh_db();
    let opened = now_ms();
    let a = TestCollector::start_with(replicas_config(&url)).await;
    let b = TestCollector::start_with(replicas_config(&url)).await;
    let mut on_a = Watcher::on(&a).await;
    let mut on_b = Watcher::on(&b).await;
    let now = now_ms();
    let agent = "agent-late";
    let win = |seq: u64, end: i64| busy_window("node-b", agent, seq, end);

    // The agent's current windows, through A.
    let mut ca = a.client().await;
    let mut p = Pusher::open(&mut ca, "node-b", agent).await;
    for seq in 10..=12 {
        p.send(win(seq, now - (13 - seq as i64) * 1000)).await;
    }
    p.ack_through(12).await;
    on_b.until(agent, 12).await;

    // Then its backlog from an outage twenty minutes ago: older ends and
    // lower seqs than what B already delivered.
    for seq in 1..=9 {
        p.send(win(seq, now - 20 * 60_000 + seq as i64 * 1000))
            .await;
    }
    p.ack_through(12).await;
    for seq in 1..=9 {
        on_b.until(agent, seq).await;
    }
    drop(p);

    // It moves to B, resending one A stored (a duplicate: not news) and
    // going on there; A's watcher follows B.
    let mut cb = b.client().await;
    let mut p = Pusher::open(&mut cb, "node-b", agent).await;
    p.send(win(12, now - 1000)).await;
    for seq in 13..=15 {
        p.send(win(seq, now + (seq as i64 - 13) * 1000)).await;
    }
    p.ack_through(15).await;
    for seq in 13..=15 {
        on_a.until(agent, seq).await;
        on_b.until(agent, seq).await;
    }
    assert_eq!(b.collector.stats().windows_duplicate, 1);

    // A row stamped 6 s before the newest (further back than every read
    // reaches; only the deep read does) that became visible only now: an
    // insert that took that long. Its stamp must still be after the
    // replicas started (what was stamped before is history to them), so
    // that much time must have passed: the sleep is the age of the stamp,
    // not a wait for anything to happen.
    const BEHIND: i64 = 6_000;
    let old_enough = opened + BEHIND + 1_000 - now_ms();
    if old_enough > 0 {
        tokio::time::sleep(Duration::from_millis(old_enough as u64)).await;
    }
    // Live traffic, so the newest stamp is now.
    p.send(win(16, now + 1000)).await;
    p.ack_through(16).await;
    on_a.until(agent, 16).await;
    on_b.until(agent, 16).await;
    let newest: i64 = server
        .sql(&format!(
            "SELECT max(inserted_unix_ms) FROM {}.windows_feed",
            url.database
        ))
        .trim()
        .parse()
        .expect("a time");
    assert!(
        newest - BEHIND > opened,
        "the late row must be stamped after the replicas started"
    );
    let late = win(17, now + 3000);
    let day = (late.end_unix_ms / 86_400_000) as u16;
    let stamp = newest - BEHIND;
    for sql in [
        format!(
            "INSERT INTO {}.windows_feed (inserted_day, inserted_unix_ms, day, agent_id, seq) VALUES ({}, {stamp}, {day}, '{agent}', 17)",
            url.database,
            stamp / 86_400_000,
        ),
        format!(
            "INSERT INTO {}.windows (day, end_unix_ms, agent_id, seq, node, inserted_unix_ms, body) VALUES ({day}, {}, '{agent}', 17, 'node-b', {stamp}, {})",
            url.database,
            late.end_unix_ms,
            sql_bytes(&late.encode_to_vec())
        ),
    ] {
        server.sql(&sql);
    }
    on_a.until(agent, 17).await;
    on_b.until(agent, 17).await;

    settle(&b, DEEP, &b, &mut [&mut on_a, &mut on_b]).await;
    settle(&a, DEEP, &b, &mut [&mut on_a, &mut on_b]).await;
    for (name, w) in [("A", &on_a), ("B", &on_b)] {
        assert_eq!(
            w.twice(),
            Vec::<&(String, u64)>::new(),
            "delivered twice on {name}"
        );
        for seq in 1..=17 {
            assert_eq!(
                w.got.get(&(agent.to_string(), seq)),
                Some(&1),
                "{name} seq {seq}"
            );
        }
    }
    assert_eq!(a.collector.stats().follow_poll_errors, 0);
    drop(p);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_whose_insert_was_cut_after_its_row_landed_is_delivered() {
    let server = clickhouse::shared();
    let url = server.fresh_db();
    let db = url.database.clone();
    let a = TestCollector::start_with(replicas_config(&url)).await;
    let b = TestCollector::start_with(replicas_config(&url)).await;
    let mut on_a = Watcher::on(&a).await;
    let mut on_b = Watcher::on(&b).await;
    let (node, agent) = ("node-c", "agent-cut");
    let now = now_ms();
    let mut client = a.client().await;
    let mut p = Pusher::open(&mut client, node, agent).await;
    p.send(busy_window(node, agent, 1, now - 2000)).await;
    p.ack_through(1).await;
    on_b.until(agent, 1).await;

    // The cut insert of seq 2: its raw part written, its answer an error.
    server.cut_inserts_of(&db, 2);
    p.send(busy_window(node, agent, 2, now - 1000)).await;
    assert_eq!(p.error().await.code(), tonic::Code::Unavailable);
    server.uncut_inserts(&db);
    let mut p = Pusher::open(&mut client, node, agent).await;
    assert_eq!(
        p.raw_ack().await.acked_seq,
        2,
        "the cut insert kept the raw row, and the Hello says so"
    );
    // As the agent does: what the Hello acked is not sent again.
    p.send(busy_window(node, agent, 3, now)).await;
    p.ack_through(3).await;
    for w in [&mut on_a, &mut on_b] {
        w.until(agent, 2).await;
        w.until(agent, 3).await;
    }
    settle(&b, DEEP, &a, &mut [&mut on_a, &mut on_b]).await;
    for (name, w) in [("A", &on_a), ("B", &on_b)] {
        for seq in 1..=3 {
            assert_eq!(
                w.got.get(&(agent.to_string(), seq)),
                Some(&1),
                "{name} seq {seq}"
            );
        }
    }
    drop(p);
    a.stop().await;
    b.stop().await;
}
