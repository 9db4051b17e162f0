//! Findings for the API: `ListFindings` replies, and the updates that
//! `WatchFindings` streams as findings open, change and resolve.
//!
//! The loop publishes every evaluation's changes into one bounded broadcast
//! queue shared by all watchers (like the traces'): memory does not grow
//! with slow clients. A watcher more than [`QUEUE`] updates behind loses the
//! oldest, and the next update it gets says how many it missed. Watchers
//! subscribe inside the loop, at the moment their first list is taken, so
//! no change falls between the list and the updates.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use sockeye_proto::v1 as pb;
use tokio::sync::broadcast;

use super::{
    convert_findings::{self, UnixClock},
    filter::ApiFilter,
};
use crate::findings::Finding;

/// Updates queued for all watchers together. Findings change at most once
/// per evaluation (every second) each, so this is minutes of a busy node.
pub const QUEUE: usize = 1024;

/// One change: the finding (for filtering) and its message, converted once.
#[derive(Debug)]
pub struct Update {
    pub finding: Finding,
    pub message: pb::Finding,
}

pub struct FindingUpdates {
    tx: broadcast::Sender<Arc<Update>>,
    node: String,
    clock: UnixClock,
    /// Updates that watchers missed because they read too slowly, all
    /// watchers together.
    missed: Arc<AtomicU64>,
}

impl FindingUpdates {
    pub fn new(node: String) -> Self {
        Self {
            tx: broadcast::channel(QUEUE).0,
            node,
            clock: UnixClock::now(),
            missed: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn message(&self, f: &Finding) -> pb::Finding {
        convert_findings::finding(f, &self.node, self.clock)
    }

    /// The clock every finding message of this agent uses.
    pub fn clock(&self) -> UnixClock {
        self.clock
    }

    /// Updates watchers missed since the agent started.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// Sends this evaluation's changes to the watchers (converted only when
    /// someone watches).
    pub fn publish(&self, changes: &[Finding]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        for f in changes {
            let update = Update {
                message: self.message(f),
                finding: f.clone(),
            };
            // No receiver left is not an error: nobody watches any more.
            let _ = self.tx.send(Arc::new(update));
        }
    }

    /// A watcher of the changes from now on.
    pub fn watch(&self, filter: ApiFilter) -> Watch {
        Watch {
            rx: self.tx.subscribe(),
            filter,
            missed: 0,
            missed_total: self.missed.clone(),
        }
    }
}

/// One watcher's position in the update queue.
pub struct Watch {
    rx: broadcast::Receiver<Arc<Update>>,
    filter: ApiFilter,
    /// Missed since the last update sent to this watcher.
    missed: u64,
    missed_total: Arc<AtomicU64>,
}

impl Watch {
    /// The next update this watcher wants; None when the agent stops.
    pub async fn next(&mut self) -> Option<pb::FindingUpdate> {
        loop {
            match self.rx.recv().await {
                Ok(u) if self.filter.finding(&u.finding) => {
                    return Some(pb::FindingUpdate {
                        finding: Some(u.message.clone()),
                        missed_before: std::mem::take(&mut self.missed),
                    });
                }
                Ok(_) => {}
                // Counted before filtering: the queue does not know which
                // of the lost updates this watcher would have wanted.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.missed += n;
                    self.missed_total.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The findings of `all` that pass `filter`, as messages.
pub fn messages<'a>(
    updates: &FindingUpdates,
    all: impl IntoIterator<Item = &'a Finding>,
    filter: &ApiFilter,
) -> Vec<pb::Finding> {
    all.into_iter()
        .filter(|f| filter.finding(f))
        .map(|f| updates.message(f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::convert_findings::tests::{close_wait, pod_workload};

    fn filter(container: &str) -> ApiFilter {
        let f = pb::Filter {
            container: container.into(),
            ..Default::default()
        };
        ApiFilter::parse(Some(&f), "n1").unwrap()
    }

    #[tokio::test]
    async fn watchers_get_their_changes_and_are_told_what_they_missed() {
        let updates = FindingUpdates::new("n1".into());
        let payments = close_wait(pod_workload(42, "shop", "payments-1", "app"));
        let checkout = close_wait(pod_workload(43, "shop", "checkout-1", "app"));
        // Nobody watches: nothing is queued.
        updates.publish(std::slice::from_ref(&payments));
        let mut all = updates.watch(filter(""));
        let mut mine = updates.watch(filter("payments"));
        updates.publish(&[checkout.clone(), payments.clone()]);
        let u = all.next().await.unwrap();
        assert_eq!(u.finding.unwrap().id, checkout.id);
        let u = mine.next().await.unwrap();
        assert_eq!(
            u.finding.as_ref().unwrap().id,
            payments.id,
            "checkout filtered out"
        );
        assert_eq!(u.missed_before, 0);
        assert_eq!(u.finding.unwrap().node, "n1");

        // A stuck watcher: the oldest go, the next update says how many.
        let mut resolved = payments.clone();
        resolved.resolved_ns = Some(resolved.updated_ns);
        for _ in 0..QUEUE + 10 {
            updates.publish(std::slice::from_ref(&checkout));
        }
        updates.publish(std::slice::from_ref(&resolved));
        let u = mine.next().await.unwrap();
        // It had read up to the first payments update: one checkout
        // update still queued for it was among the lost.
        assert_eq!(u.missed_before, 11);
        assert!(u.finding.unwrap().resolved_unix_ms > 0);
        assert_eq!(updates.missed(), 11);
        // `all` had one more unread (payments) before the flood.
        let u = all.next().await.unwrap();
        assert_eq!(u.missed_before, 12);
        assert_eq!(u.finding.unwrap().id, checkout.id);
        assert_eq!(updates.missed(), 23);
    }
}
