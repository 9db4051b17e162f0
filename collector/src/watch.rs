//! WatchWindows: the live fan-in of every stored window to any number of
//! clients, with memory bounded whatever the clients do.
//!
//! One `tokio::sync::broadcast` ring of `capacity` windows is shared by all
//! subscribers (windows are `Arc`s, stored once). A subscriber's stream pulls
//! from the ring only when gRPC can send, so a client that reads slowly or
//! not at all holds nothing but its position in the ring (plus HTTP/2's own
//! bounded send buffer). When the ring laps it, the windows it skipped are
//! counted: in [`crate::Stats::watch_missed_windows`], in a log line, and in
//! the next window it receives, as the drop counter
//! [`WATCH_MISSED_COUNTER`] in `aggregates.drops.counters` (windows missed
//! since the previous one it received; `drops.total` stays the agent's).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use sockeye_proto::v1 as pb;
use tokio::sync::broadcast;
use tokio_stream::{
    wrappers::{errors::BroadcastStreamRecvError, BroadcastStream},
    Stream,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

use crate::{
    filter::{has_no_rows, Filter},
    follow::seen::Seen,
    limits::Slot,
    stats::{Counters, GaugeGuard},
};

/// Drop counter added to a watched window: windows this stream missed
/// before it because the client read too slowly.
pub const WATCH_MISSED_COUNTER: &str = "collector_watch_missed_windows";

/// The fan-in point: windows this replica stores, and, when the store is
/// shared, the windows other replicas store, followed from the store
/// ([`crate::follow`]).
#[derive(Debug)]
pub struct Hub {
    /// Every window, once: what watchers read.
    tx: broadcast::Sender<Arc<pb::Window>>,
    /// Only windows this replica stored: the Event writer's, so that two
    /// replicas do not both write an Event for one finding.
    local: broadcast::Sender<Arc<pb::Window>>,
    /// What went out on `tx`, when windows can also come from the store;
    /// `None` when only this process writes the store.
    seen: Option<Mutex<Seen>>,
    max_subscribers: u64,
    counters: Arc<Counters>,
}

impl Hub {
    pub(crate) fn new(
        capacity: usize,
        max_subscribers: usize,
        counters: Arc<Counters>,
        followed: bool,
    ) -> Self {
        // broadcast panics on a zero capacity; the config is validated, but
        // never let a zero reach it.
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (local, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            local,
            seen: followed.then(|| Mutex::new(Seen::default())),
            max_subscribers: max_subscribers as u64,
            counters,
        }
    }

    fn seen(&self) -> Option<std::sync::MutexGuard<'_, Seen>> {
        // A panic elsewhere while holding it leaves a set that is still
        // whole: keep using it.
        self.seen
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends a window this replica just stored to every subscriber, unless
    /// it was already followed from the store. Never blocks.
    pub fn publish(&self, window: Arc<pb::Window>) {
        // Err only means nobody is listening: nothing to deliver.
        let _ = self.local.send(window.clone());
        if let Some(mut seen) = self.seen() {
            // The store stamped the row just before the insert, on this
            // clock: now is never earlier than that stamp.
            let key = (window.agent_id.clone(), window.seq);
            if !seen.first(key, crate::collector::unix_ms_now()) {
                return;
            }
        }
        let _ = self.tx.send(window);
    }

    /// Sends a window followed from the store (its row stamped
    /// `inserted_unix_ms`) unless it was delivered already; true if sent.
    pub(crate) fn publish_followed(&self, window: Arc<pb::Window>, inserted_unix_ms: i64) -> bool {
        if let Some(mut seen) = self.seen() {
            let key = (window.agent_id.clone(), window.seq);
            if !seen.first(key, inserted_unix_ms) {
                return false;
            }
        }
        let _ = self.tx.send(window);
        true
    }

    /// Whether the window `(agent_id, seq)` went out already.
    pub(crate) fn delivered(&self, agent_id: &str, seq: u64) -> bool {
        self.seen().is_some_and(|s| s.contains(agent_id, seq))
    }

    /// Forgets delivered windows stamped before `since` (the feed is not
    /// read before it again).
    pub(crate) fn forget_before(&self, since: i64) {
        if let Some(mut seen) = self.seen() {
            seen.forget_before(since);
        }
    }

    /// A plain receiver of the windows this replica stores, for the
    /// collector's own followers (the Event writer): not a client, so not
    /// counted against `max_watchers`.
    pub(crate) fn receiver(&self) -> broadcast::Receiver<Arc<pb::Window>> {
        self.local.subscribe()
    }

    pub(crate) fn subscribe(
        &self,
        filter: Filter,
        shutdown: CancellationToken,
    ) -> Result<WatchStream, Status> {
        let gauge = GaugeGuard::try_new(
            self.counters.clone(),
            |c| &c.watch_subscribers,
            self.max_subscribers,
        )
        .map_err(|open| {
            Counters::add(&self.counters.watch_refused, 1);
            Status::resource_exhausted(format!(
                "{open} WatchWindows streams are open, the maximum (--max-watchers); retry later"
            ))
        })?;
        Ok(WatchStream {
            inner: BroadcastStream::new(self.tx.subscribe()),
            filter,
            missed_pending: 0,
            missed_total: 0,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            counters: self.counters.clone(),
            _gauge: gauge,
            _slot: None,
        })
    }
}

/// One client's stream of windows.
pub struct WatchStream {
    inner: BroadcastStream<Arc<pb::Window>>,
    filter: Filter,
    /// Missed since the last window delivered.
    missed_pending: u64,
    missed_total: u64,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    counters: Arc<Counters>,
    _gauge: GaugeGuard,
    /// The caller's place among its streams, freed with the stream.
    _slot: Option<Slot>,
}

impl WatchStream {
    pub(crate) fn holding(mut self, slot: Slot) -> Self {
        self._slot = Some(slot);
        self
    }

    /// The window as this client sees it: filtered, or `None` if nothing in
    /// it is for this client.
    fn view(&mut self, w: &pb::Window) -> Option<pb::Window> {
        if !self.filter.matches_node(&w.node) {
            return None;
        }
        let agg = w.aggregates.as_ref().map(|a| self.filter.apply(a));
        if !self.filter.selects_all_rows() && agg.as_ref().is_none_or(has_no_rows) {
            return None;
        }
        let mut out = pb::Window {
            aggregates: agg,
            ..header(w)
        };
        if self.missed_pending > 0 {
            let drops = out
                .aggregates
                .get_or_insert_with(Default::default)
                .drops
                .get_or_insert_with(Default::default);
            drops
                .counters
                .insert(WATCH_MISSED_COUNTER.to_string(), self.missed_pending);
            self.missed_pending = 0;
        }
        Some(out)
    }
}

impl Stream for WatchStream {
    type Item = Result<pb::Window, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        loop {
            let next = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            };
            match next {
                None => return Poll::Ready(None),
                Some(Err(BroadcastStreamRecvError::Lagged(n))) => {
                    self.missed_pending = self.missed_pending.saturating_add(n);
                    self.missed_total = self.missed_total.saturating_add(n);
                    Counters::add(&self.counters.watch_missed_windows, n);
                    log::warn!(
                        "watch: a client reads too slowly and missed {n} windows ({} on this stream)",
                        self.missed_total
                    );
                }
                Some(Ok(w)) => {
                    if let Some(out) = self.view(&w) {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
            }
        }
    }
}

/// A window's header: everything but the aggregates.
fn header(w: &pb::Window) -> pb::Window {
    pb::Window {
        node: w.node.clone(),
        agent_id: w.agent_id.clone(),
        seq: w.seq,
        start_unix_ms: w.start_unix_ms,
        end_unix_ms: w.end_unix_ms,
        aggregates: None,
        dropped_windows_before: w.dropped_windows_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(seq: u64) -> Arc<pb::Window> {
        Arc::new(pb::Window {
            agent_id: "a".into(),
            seq,
            ..Default::default()
        })
    }

    fn drain(rx: &mut broadcast::Receiver<Arc<pb::Window>>) -> Vec<u64> {
        std::iter::from_fn(|| rx.try_recv().ok().map(|w| w.seq)).collect()
    }

    #[test]
    fn a_window_goes_out_once_whether_stored_here_or_followed_first() {
        let hub = Hub::new(16, 1, Arc::default(), true);
        let mut all = hub.tx.subscribe();
        let mut local = hub.receiver();
        // Stored here, then seen in the feed.
        hub.publish(w(1));
        assert!(hub.delivered("a", 1));
        assert!(!hub.publish_followed(w(1), 0));
        // Seen in the feed before this replica's insert returned.
        assert!(hub.publish_followed(w(2), 0));
        hub.publish(w(2));
        assert_eq!(drain(&mut all), [1, 2]);
        // The Event writer gets what this replica stored, all of it.
        assert_eq!(drain(&mut local), [1, 2]);
    }

    #[test]
    fn without_a_shared_store_nothing_is_remembered() {
        let hub = Hub::new(16, 1, Arc::default(), false);
        let mut all = hub.tx.subscribe();
        hub.publish(w(1));
        assert!(!hub.delivered("a", 1));
        assert_eq!(drain(&mut all), [1]);
    }
}
