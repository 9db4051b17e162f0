//! What one caller may hold at once: Push streams, WatchWindows streams,
//! queries in flight, and how many stored windows its queries may read per
//! minute. One caller (a node's agent, a reader's token, an anonymous
//! address) cannot starve the others. Decisions only: the time is passed
//! in, and a [`Slot`] gives its place back when dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

/// Per-caller limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerLimits {
    /// Push streams of one caller at once: one agent needs one, and a
    /// second while a restarted agent's old stream times out.
    pub max_push_streams: usize,
    /// WatchWindows streams of one caller at once.
    pub max_watch_streams: usize,
    /// Unary queries of one caller in flight at once.
    pub max_queries: usize,
    /// Windows one caller's queries may read per minute (a token bucket:
    /// a query may start while any budget is left, and what it read is
    /// taken after).
    pub query_windows_per_minute: u64,
    /// Windows one query may read; a range holding more is refused.
    pub max_query_windows: u64,
}

impl Default for CallerLimits {
    fn default() -> Self {
        Self {
            max_push_streams: 2,
            max_watch_streams: 4,
            max_queries: 4,
            // 100 nodes x 24 h of 10 s windows is 864k windows: a day-long
            // query of a mid-sized cluster fits, a loop of them does not.
            query_windows_per_minute: 2_000_000,
            max_query_windows: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Push,
    Watch,
    Query,
}

impl Kind {
    fn max(self, l: &CallerLimits) -> usize {
        match self {
            Kind::Push => l.max_push_streams,
            Kind::Watch => l.max_watch_streams,
            Kind::Query => l.max_queries,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Push => "Push streams",
            Kind::Watch => "WatchWindows streams",
            Kind::Query => "queries in flight",
        }
    }
}

/// Why a caller was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{caller} already has {max} {what} open, the most one caller may have")]
    Busy {
        caller: String,
        what: &'static str,
        max: usize,
    },
    #[error("{caller}'s queries read their budget of {per_minute} stored windows per minute; retry in {retry_s} s, or ask for a shorter range")]
    Budget {
        caller: String,
        per_minute: u64,
        retry_s: u64,
    },
}

#[derive(Debug)]
struct State {
    open: [usize; 3],
    /// Windows left to read; negative after a query that read more than
    /// was left (it was let in while some budget remained).
    budget: f64,
    refilled: Instant,
}

impl State {
    fn idle(&self) -> bool {
        self.open.iter().all(|n| *n == 0)
    }
}

fn slot_index(k: Kind) -> usize {
    match k {
        Kind::Push => 0,
        Kind::Watch => 1,
        Kind::Query => 2,
    }
}

/// Callers tracked at once before idle ones are forgotten (their budget
/// starts full again when they come back).
const MAX_TRACKED: usize = 16_384;

#[derive(Debug)]
pub(crate) struct PerCaller {
    limits: CallerLimits,
    callers: Mutex<HashMap<String, State>>,
}

/// One place held by a caller; freed on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    owner: Arc<PerCaller>,
    caller: String,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut callers = self.owner.lock();
        if let Some(s) = callers.get_mut(&self.caller) {
            let n = &mut s.open[slot_index(self.kind)];
            *n = n.saturating_sub(1);
        }
    }
}

impl PerCaller {
    pub fn new(limits: CallerLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            callers: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill(&self, s: &mut State, now: Instant) {
        let per_minute = self.limits.query_windows_per_minute as f64;
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.budget = (s.budget + elapsed * per_minute / 60.0).min(per_minute);
        s.refilled = now;
    }

    /// A place of `kind` for `caller`, or why not. A query also needs some
    /// budget left.
    pub fn acquire(
        self: &Arc<Self>,
        caller: &str,
        kind: Kind,
        now: Instant,
    ) -> Result<Slot, Refused> {
        let mut callers = self.lock();
        if callers.len() >= MAX_TRACKED && !callers.contains_key(caller) {
            callers.retain(|_, s| !s.idle());
        }
        let per_minute = self.limits.query_windows_per_minute;
        let s = callers.entry(caller.to_string()).or_insert_with(|| State {
            open: [0; 3],
            budget: per_minute as f64,
            refilled: now,
        });
        let max = kind.max(&self.limits);
        if s.open[slot_index(kind)] >= max {
            return Err(Refused::Busy {
                caller: caller.to_string(),
                what: kind.name(),
                max,
            });
        }
        if kind == Kind::Query {
            self.refill(s, now);
            if s.budget <= 0.0 {
                let rate = per_minute as f64 / 60.0;
                let retry_s = if rate > 0.0 {
                    ((1.0 - s.budget) / rate).ceil() as u64
                } else {
                    60
                };
                return Err(Refused::Budget {
                    caller: caller.to_string(),
                    per_minute,
                    retry_s: retry_s.max(1),
                });
            }
        }
        s.open[slot_index(kind)] += 1;
        Ok(Slot {
            owner: self.clone(),
            caller: caller.to_string(),
            kind,
        })
    }

    /// Takes what a query of `caller` read from its budget.
    pub fn charge(&self, caller: &str, windows_read: u64, now: Instant) {
        let mut callers = self.lock();
        if let Some(s) = callers.get_mut(caller) {
            self.refill(s, now);
            let floor = -(self.limits.query_windows_per_minute as f64);
            s.budget = (s.budget - windows_read as f64).max(floor);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> CallerLimits {
        CallerLimits {
            max_push_streams: 1,
            max_watch_streams: 2,
            max_queries: 2,
            query_windows_per_minute: 600,
            max_query_windows: 1000,
        }
    }

    #[test]
    fn places_are_per_caller_and_come_back_when_dropped() {
        let p = PerCaller::new(limits());
        let t = Instant::now();
        let a = p.acquire("node-a", Kind::Push, t).unwrap();
        assert!(matches!(
            p.acquire("node-a", Kind::Push, t),
            Err(Refused::Busy { max: 1, .. })
        ));
        // Another caller, or another kind, is not affected.
        let _b = p.acquire("node-b", Kind::Push, t).unwrap();
        let _w = p.acquire("node-a", Kind::Watch, t).unwrap();
        drop(a);
        let _a = p.acquire("node-a", Kind::Push, t).unwrap();
    }

    #[test]
    fn the_query_budget_runs_out_and_refills_with_time() {
        let p = PerCaller::new(limits());
        let t = Instant::now();
        let q = p.acquire("reader", Kind::Query, t).unwrap();
        p.charge("reader", 900, t);
        drop(q);
        // 600 - 900 = -300: refused until 301 windows' worth of time passed
        // (10 windows a second).
        let e = p.acquire("reader", Kind::Query, t).unwrap_err();
        assert_eq!(
            e,
            Refused::Budget {
                caller: "reader".into(),
                per_minute: 600,
                retry_s: 31
            }
        );
        assert!(p.acquire("other", Kind::Query, t).is_ok());
        assert!(p
            .acquire("reader", Kind::Query, t + Duration::from_secs(31))
            .is_ok());
    }
}
