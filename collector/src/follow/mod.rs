//! Live streams across replicas: when the store is shared (ClickHouse),
//! each replica polls the store's insert feed every `--follow-every` and
//! hands the windows other replicas stored to its own watchers, so a
//! WatchWindows reader sees every agent whichever replica it reached.
//!
//! Polling, not a bus: the store already orders and keeps every insert,
//! so there is nothing more to run, and a replica that was away catches up
//! from where it was. The cost is the interval as added latency, and one
//! small primary-key read of the feed per replica per interval.
//!
//! Each window reaches a replica's watchers once: the hub remembers what it
//! delivered ([`seen`]), whether this replica stored the window itself or
//! followed it. Where a read starts is [`cursor`]'s decision.

pub mod cursor;
pub mod seen;

use std::{sync::Arc, time::Duration};

use sockeye_proto::v1 as pb;

use crate::{
    collector::Shared,
    stats::Counters,
    store::{Feed, Inserted, StoreError},
};
use cursor::{Cursor, Lookback};

/// Keys read from the feed at once.
const PAGE: usize = 2048;
/// Windows asked for in one statement (their keys are spelled out in it,
/// and ClickHouse parses at most 256 KiB of a query).
const FETCH: usize = 256;
/// How often a deep read (see [`Lookback`]) runs.
const DEEP_EVERY: Duration = Duration::from_secs(5);
/// After a failed read the next waits this much longer each time, up to
/// [`MAX_BACKOFF`].
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At most one log line of failed reads this often; the rest are counted.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// The lookback for reads every `every`: near covers ordinary insert delay
/// and clock skew; deep covers an insert as slow as the store lets one be.
pub fn lookback(every: Duration) -> Lookback {
    let deep_every = (DEEP_EVERY.as_millis() / every.as_millis().max(1)).max(1);
    Lookback {
        near_ms: 5_000,
        deep_ms: (crate::store::clickhouse::STATEMENT_TIMEOUT + Duration::from_secs(5)).as_millis()
            as i64,
        deep_every: u64::try_from(deep_every).unwrap_or(u64::MAX),
    }
}

/// Follows the store's feed until shutdown; returns at once if the store
/// has none (only this process writes it).
pub(crate) async fn run(shared: Arc<Shared>, every: Duration) {
    if shared.store.feed().is_none() {
        return;
    }
    log::info!(
        "follow: live streams also carry windows other replicas store, read from the store every {}",
        humantime::format_duration(every)
    );
    let mut cursor = Cursor::new(shared.opened_unix_ms, lookback(every));
    let mut delay = every;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut last_log: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let Some(feed) = shared.store.feed() else {
            return;
        };
        Counters::add(&shared.counters.follow_polls, 1);
        match read(&shared, feed, &mut cursor).await {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    log::info!(
                        "follow: reading the store's feed again after {}; windows stored meanwhile are delivered now",
                        humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()))
                    );
                }
                delay = every;
            }
            Err(StoreError::Closed) => return,
            Err(e) => {
                Counters::add(&shared.counters.follow_poll_errors, 1);
                let now = tokio::time::Instant::now();
                failing_since.get_or_insert(now);
                delay = (delay * 2).min(MAX_BACKOFF.max(every));
                if last_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                    last_log = Some(now);
                    log::error!(
                        "follow: cannot read the store's feed: {e}; live streams carry only windows this replica stores until it can (retrying in {})",
                        humantime::format_duration(delay)
                    );
                }
            }
        }
    }
}

/// One read of the feed from the cursor, every page of it: delivers the
/// windows not delivered yet, in insert order.
async fn read(shared: &Shared, feed: &dyn Feed, cursor: &mut Cursor) -> Result<(), StoreError> {
    let since = cursor.since();
    let mut after: Option<Inserted> = None;
    loop {
        let page = feed.inserted(since, after.as_ref(), PAGE).await?;
        let new: Vec<Inserted> = page
            .iter()
            .filter(|k| !shared.hub.delivered(&k.agent_id, k.seq))
            .cloned()
            .collect();
        for keys in new.chunks(FETCH) {
            let (windows, corrupt) = feed.windows(keys).await?;
            Counters::add(&shared.counters.store_corrupt_records, corrupt);
            for (w, stamp) in in_feed_order(keys, windows) {
                if shared.hub.publish_followed(Arc::new(w), stamp) {
                    Counters::add(&shared.counters.follow_windows, 1);
                }
            }
        }
        // A key whose window was not found yet (the view's row can become
        // visible before the table's) stays undelivered and is asked for
        // again by the next read.
        if let Some(last) = page.last() {
            cursor.saw(last.inserted_unix_ms);
        }
        if page.len() < PAGE {
            break;
        }
        after = page.last().cloned();
    }
    cursor.read_done();
    shared.hub.forget_before(cursor.oldest_readable());
    Ok(())
}

/// `windows` (any order) with their stamps, in the order of `keys`.
fn in_feed_order(keys: &[Inserted], windows: Vec<pb::Window>) -> Vec<(pb::Window, i64)> {
    let mut out: Vec<(usize, pb::Window, i64)> = windows
        .into_iter()
        .filter_map(|w| {
            let (i, k) = keys
                .iter()
                .enumerate()
                .find(|(_, k)| k.agent_id == w.agent_id && k.seq == w.seq)?;
            Some((i, w, k.inserted_unix_ms))
        })
        .collect();
    out.sort_by_key(|x| x.0);
    out.into_iter().map(|(_, w, s)| (w, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(agent: &str, seq: u64, at: i64) -> Inserted {
        Inserted {
            inserted_unix_ms: at,
            end_day: 0,
            agent_id: agent.into(),
            seq,
        }
    }

    fn w(agent: &str, seq: u64) -> pb::Window {
        pb::Window {
            agent_id: agent.into(),
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn windows_go_out_in_feed_order_and_strangers_are_dropped() {
        let keys = [key("b", 1, 10), key("a", 7, 11), key("a", 8, 12)];
        let out = in_feed_order(&keys, vec![w("a", 8), w("x", 1), w("b", 1), w("a", 7)]);
        let got: Vec<_> = out
            .iter()
            .map(|(w, s)| (w.agent_id.as_str(), w.seq, *s))
            .collect();
        assert_eq!(got, [("b", 1, 10), ("a", 7, 11), ("a", 8, 12)]);
    }

    #[test]
    fn the_deep_read_comes_about_every_five_seconds() {
        assert_eq!(lookback(Duration::from_millis(250)).deep_every, 20);
        assert_eq!(lookback(Duration::from_secs(10)).deep_every, 1);
        assert!(lookback(Duration::from_millis(250)).deep_ms > 30_000);
    }
}
