//! How long to wait before connecting to the collector again: doubling
//! from `min` to `max`, each wait drawn at random from its upper half
//! ("equal jitter": never shorter than half, so a retry is never
//! immediate), and back to `min` after a session the collector
//! acknowledged. A collector that restarts is met by agents spread over
//! the interval, not all at once.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next wait, for a uniform random `r` in `[0, 1)`; the one after
    /// it is twice as long, up to `max`.
    pub fn next(&mut self, r: f64) -> Duration {
        let half = self.current / 2;
        let wait = half + (self.current - half).mul_f64(r.clamp(0.0, 1.0));
        self.current = (self.current * 2).min(self.max);
        wait
    }

    /// After a session the collector acknowledged.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_in_their_upper_half() {
        let mut b = Backoff::new(MIN, MAX);
        assert_eq!(b.next(0.0), Duration::from_millis(250));
        assert_eq!(b.next(0.999_999).as_millis(), 999);
        assert_eq!(b.next(0.5), Duration::from_millis(1500));
        for _ in 0..20 {
            b.next(0.5);
        }
        let w = b.next(1.0);
        assert!(w <= MAX && w >= MAX / 2, "{w:?}");
        assert_eq!(b.next(0.0), MAX / 2);
    }

    #[test]
    fn a_successful_session_starts_over() {
        let mut b = Backoff::new(MIN, MAX);
        for _ in 0..10 {
            b.next(0.5);
        }
        b.reset();
        assert!(b.next(1.0) <= MIN);
    }

    #[test]
    fn a_thousand_agents_spread_over_the_window() {
        // What a collector restart sees: the first retries of many agents,
        // by their own random draws, fill [min/2, min] rather than one instant.
        let mut firsts: Vec<u128> = (0..1000)
            .map(|i| Backoff::new(MIN, MAX).next(i as f64 / 1000.0).as_millis())
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts[0], 250);
        assert!(firsts[999] >= 499);
        let distinct = {
            let mut d = firsts.clone();
            d.dedup();
            d.len()
        };
        assert!(distinct >= 240, "{distinct} distinct milliseconds");
    }
}
