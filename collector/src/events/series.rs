//! Deduplication and rate limiting of Event writes, as client-go's event
//! recorder (`k8s.io/client-go/tools/events`) does them: an Event that
//! repeats one written before (same pod, reason, action and controller)
//! within [`SERIES_WINDOW`] updates that Event's `series` (count and
//! `lastObservedTime`) instead of adding another, so `kubectl describe pod`
//! shows one line "(x3 over 10m)"; and a token bucket bounds how fast the
//! collector writes at all.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// A repeat this soon after the series' last occurrence joins it. Under
/// the API server's default Event lifetime (`--event-ttl`, 1 h), so the
/// Event to update usually still exists; when it does not, a new one is
/// written.
pub const SERIES_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Series remembered at most; the ones seen longest ago go first.
const MAX_SERIES: usize = 10_000;

/// What makes two Events the same series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub reason: String,
    pub action: String,
}

/// What to send the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A new Event named `name`.
    Create { name: String },
    /// The Event `name` occurred `count` times now.
    Patch { name: String, count: i32 },
}

#[derive(Debug)]
struct Entry {
    name: String,
    count: i32,
    last: Instant,
}

/// The series written, by key.
#[derive(Debug, Default)]
pub struct Series {
    by_key: HashMap<SeriesKey, Entry>,
}

impl Series {
    /// Records one occurrence of `key` at `now`; `new_name` names the Event
    /// if a new one is to be written.
    pub fn observe(&mut self, key: &SeriesKey, now: Instant, new_name: String) -> Write {
        if let Some(e) = self.by_key.get_mut(key) {
            if now.saturating_duration_since(e.last) <= SERIES_WINDOW {
                e.count = e.count.saturating_add(1);
                e.last = now;
                return Write::Patch {
                    name: e.name.clone(),
                    count: e.count,
                };
            }
        }
        if self.by_key.len() >= MAX_SERIES && !self.by_key.contains_key(key) {
            self.evict(now);
        }
        self.by_key.insert(
            key.clone(),
            Entry {
                name: new_name.clone(),
                count: 1,
                last: now,
            },
        );
        Write::Create { name: new_name }
    }

    /// The write of `key` failed or its Event is gone: the next occurrence
    /// starts a new Event.
    pub fn forget(&mut self, key: &SeriesKey) {
        self.by_key.remove(key);
    }

    fn evict(&mut self, now: Instant) {
        self.by_key
            .retain(|_, e| now.saturating_duration_since(e.last) <= SERIES_WINDOW);
        if self.by_key.len() >= MAX_SERIES {
            if let Some(oldest) = self
                .by_key
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| k.clone())
            {
                self.by_key.remove(&oldest);
            }
        }
    }
}

/// At most `per_minute` writes a minute on average, `per_minute` at once.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(per_minute: u32, now: Instant) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            capacity,
            tokens: capacity,
            per_sec: capacity / 60.0,
            at: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> SeriesKey {
        SeriesKey {
            namespace: "prod".into(),
            pod: "web-1".into(),
            pod_uid: "u".into(),
            reason: reason.into(),
            action: "Opened".into(),
        }
    }

    #[test]
    fn repeats_update_the_series_until_it_is_old() {
        let mut s = Series::default();
        let t = Instant::now();
        let a = key("SockeyeConnectionLeak");
        assert_eq!(
            s.observe(&a, t, "e1".into()),
            Write::Create { name: "e1".into() }
        );
        assert_eq!(
            s.observe(&a, t + Duration::from_secs(60), "e2".into()),
            Write::Patch {
                name: "e1".into(),
                count: 2
            }
        );
        assert_eq!(
            s.observe(&key("SockeyeCloseWait"), t, "e3".into()),
            Write::Create { name: "e3".into() }
        );
        let late = t + Duration::from_secs(60) + SERIES_WINDOW + Duration::from_secs(1);
        assert_eq!(
            s.observe(&a, late, "e4".into()),
            Write::Create { name: "e4".into() }
        );
        s.forget(&a);
        assert_eq!(
            s.observe(&a, late, "e5".into()),
            Write::Create { name: "e5".into() }
        );
    }

    #[test]
    fn the_bucket_allows_a_burst_then_its_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::new(6, t);
        assert_eq!((0..10).filter(|_| b.take(t)).count(), 6);
        assert!(!b.take(t + Duration::from_secs(9)));
        assert!(b.take(t + Duration::from_secs(10)), "one per 10 s");
        assert!(!b.take(t + Duration::from_secs(10)));
    }
}
