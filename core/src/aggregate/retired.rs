//! Flows removed from the table (evicted to make room, or idle) while they
//! held counts the metrics had not taken yet. They wait here until the
//! metrics take them, so a removal never makes a Prometheus counter miss
//! an increment.

use super::flows::{FlowKey, FlowStats};

#[derive(Debug, Default)]
pub struct Retired {
    /// Flows kept at most; 0 (the default) when no metrics are taken.
    cap: usize,
    flows: Vec<(FlowKey, FlowStats)>,
    /// Removed flows with counts not yet taken that did not fit.
    pub lost: u64,
}

impl Retired {
    /// Keeps up to `cap` removed flows between two takes (the metrics turn
    /// this on; without them nothing is kept).
    pub fn enable(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    /// A flow left the table: keep it if the metrics have not taken all
    /// its counts.
    pub(super) fn keep(&mut self, key: FlowKey, stats: FlowStats) {
        if self.cap == 0 || !stats.changed {
            return;
        }
        if self.flows.len() >= self.cap {
            self.lost += 1;
            return;
        }
        self.flows.push((key, stats));
    }

    pub fn take(&mut self) -> Vec<(FlowKey, FlowStats)> {
        std::mem::take(&mut self.flows)
    }
}
