//! What the probes ask: is the event loop still turning (liveness), and are
//! the kernel programs attached and events being read (readiness)?

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// A loop that has not drained the ring buffer for this long is stuck: the
/// drain timer fires every 20 ms.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

/// Written by the event loop, read by the HTTP handlers.
#[derive(Debug, Clone)]
pub struct HealthState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    /// Milliseconds after `started` of the last beat; u64::MAX before the first.
    last_beat_ms: AtomicU64,
    ready: AtomicBool,
    stale_after: Duration,
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: String,
}

impl HealthState {
    pub fn new(stale_after: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                last_beat_ms: AtomicU64::new(u64::MAX),
                ready: AtomicBool::new(false),
                stale_after,
            }),
        }
    }

    /// The event loop drained the ring buffer.
    pub fn beat(&self) {
        let ms = self.inner.started.elapsed().as_millis() as u64;
        self.inner.last_beat_ms.store(ms, Ordering::Relaxed);
    }

    /// The programs are attached and the loop runs (or, false, is stopping).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Relaxed);
    }

    pub fn liveness(&self) -> Verdict {
        self.liveness_at(self.inner.started.elapsed())
    }

    /// `now` is the time since start (tests pass their own).
    fn liveness_at(&self, now: Duration) -> Verdict {
        let stale = self.inner.stale_after;
        match self.inner.last_beat_ms.load(Ordering::Relaxed) {
            // Starting up (loading programs, scanning /proc): alive for a while.
            u64::MAX if now < stale => verdict(true, "starting".into()),
            u64::MAX => verdict(false, format!("event loop has not started after {now:?}")),
            ms => {
                let since = now.saturating_sub(Duration::from_millis(ms));
                if since < stale {
                    verdict(true, format!("event loop ran {}ms ago", since.as_millis()))
                } else {
                    verdict(
                        false,
                        format!("event loop stuck: last ran {since:?} ago (limit {stale:?})"),
                    )
                }
            }
        }
    }

    pub fn readiness(&self) -> Verdict {
        if !self.inner.ready.load(Ordering::Relaxed) {
            return verdict(false, "kernel programs not attached yet".into());
        }
        let live = self.liveness();
        if live.ok {
            verdict(true, "programs attached, reading events".into())
        } else {
            live
        }
    }
}

fn verdict(ok: bool, reason: String) -> Verdict {
    Verdict { ok, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_the_loop() {
        let h = HealthState::new(Duration::from_secs(30));
        assert!(h.liveness_at(Duration::from_secs(1)).ok, "starting");
        assert!(!h.liveness_at(Duration::from_secs(31)).ok, "never started");
        h.beat();
        assert!(h.liveness_at(Duration::from_secs(29)).ok);
        let stuck = h.liveness_at(Duration::from_secs(45));
        assert!(!stuck.ok && stuck.reason.contains("stuck"), "{stuck:?}");
    }

    #[test]
    fn ready_only_once_attached_and_live() {
        let h = HealthState::new(Duration::from_secs(30));
        assert!(!h.readiness().ok);
        h.set_ready(true);
        h.beat();
        assert!(h.readiness().ok);
        h.set_ready(false);
        assert!(!h.readiness().ok);
    }
}
