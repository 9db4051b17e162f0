//! TIME_WAIT counts per flow, in one-second buckets that expire after the
//! kernel's fixed 60 s. A busy client or server can hold hundreds of
//! thousands of TIME_WAIT connections; tracking them one by one would
//! crowd out the sockets that are really open. Buckets cost one entry per
//! (second, flow) at most.

use std::collections::VecDeque;

use ahash::HashMap;

use super::flows::FlowKey;

/// Linux's fixed TIME_WAIT length (TCP_TIMEWAIT_LEN).
pub const TIME_WAIT_NS: u64 = 60_000_000_000;
const SECOND_NS: u64 = 1_000_000_000;

#[derive(Debug)]
pub struct TimeWait {
    /// (second the sockets entered TIME_WAIT, flow, how many), oldest first.
    buckets: VecDeque<(u64, FlowKey, u32)>,
    per_flow: HashMap<FlowKey, u64>,
    max_buckets: usize,
    /// Entries not recorded because `max_buckets` was reached.
    pub dropped: u64,
}

impl TimeWait {
    pub fn new(max_buckets: usize) -> Self {
        Self {
            buckets: VecDeque::new(),
            per_flow: HashMap::default(),
            max_buckets,
            dropped: 0,
        }
    }

    /// A socket of `flow` entered TIME_WAIT at `ts_ns`.
    pub fn add(&mut self, flow: FlowKey, ts_ns: u64) {
        let second = ts_ns / SECOND_NS;
        // Events arrive nearly in time order, so the matching bucket, if
        // any, is one of the last few.
        let recent = self.buckets.iter_mut().rev().take(8);
        if let Some(b) = recent.into_iter().find(|b| b.0 == second && b.1 == flow) {
            b.2 += 1;
        } else if self.buckets.len() < self.max_buckets {
            self.buckets.push_back((second, flow, 1));
        } else {
            self.dropped += 1;
            return;
        }
        *self.per_flow.entry(flow).or_default() += 1;
    }

    /// Forgets sockets whose TIME_WAIT is over at `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(&(second, flow, n)) = self.buckets.front() {
            if (second + 1) * SECOND_NS + TIME_WAIT_NS > now_ns {
                break;
            }
            self.buckets.pop_front();
            if let Some(count) = self.per_flow.get_mut(&flow) {
                *count = count.saturating_sub(u64::from(n));
                if *count == 0 {
                    self.per_flow.remove(&flow);
                }
            }
        }
    }

    pub fn count(&self, flow: &FlowKey) -> u64 {
        self.per_flow.get(flow).copied().unwrap_or(0)
    }

    pub fn flows(&self) -> impl Iterator<Item = (&FlowKey, &u64)> {
        self.per_flow.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::aggregate::flows::Direction;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            cgroup_id: 1,
            direction: Direction::Outbound,
            remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
        }
    }

    #[test]
    fn counts_expire_after_sixty_seconds() {
        let mut tw = TimeWait::new(100);
        for i in 0..1000 {
            tw.add(key(80), 5 * SECOND_NS + i);
        }
        tw.add(key(81), 30 * SECOND_NS);
        assert_eq!((tw.count(&key(80)), tw.count(&key(81))), (1000, 1));
        assert_eq!(tw.buckets.len(), 2, "one bucket per (second, flow)");
        tw.expire(65 * SECOND_NS);
        assert_eq!(tw.count(&key(80)), 1000, "not yet: entered during second 5");
        tw.expire(66 * SECOND_NS);
        assert_eq!((tw.count(&key(80)), tw.count(&key(81))), (0, 1));
        tw.expire(91 * SECOND_NS);
        assert_eq!(tw.count(&key(81)), 0);
        assert_eq!(tw.flows().count(), 0);
    }

    #[test]
    fn bucket_limit_is_counted() {
        let mut tw = TimeWait::new(2);
        tw.add(key(1), 0);
        tw.add(key(2), 0);
        tw.add(key(3), 0);
        tw.add(key(1), 0);
        assert_eq!(tw.dropped, 1);
        assert_eq!(tw.count(&key(1)), 2);
    }
}
