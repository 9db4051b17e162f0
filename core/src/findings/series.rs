//! Short histories of cumulative counts, one per key (a flow, a DNS
//! client and server), sampled every few seconds: growth and rates over a
//! window are differences between the newest value and a past sample.

use std::{collections::VecDeque, hash::Hash};

use ahash::HashMap;

/// One sample per key at most this often (evaluations run every second;
/// keeping every one would multiply the memory for no better answer).
pub const SAMPLE_EVERY_NS: u64 = 5_000_000_000;

pub trait Timed {
    fn t_ns(&self) -> u64;
}

#[derive(Debug)]
pub struct Series<K, S> {
    map: HashMap<K, History<S>>,
    max_keys: usize,
    /// Samples older than this are dropped.
    keep_ns: u64,
    /// New keys not sampled because `max_keys` were already.
    pub skipped: u64,
    /// The current round (see [`Series::end_round`]).
    round: u64,
}

#[derive(Debug)]
struct History<S> {
    samples: VecDeque<S>,
    /// The last round that offered this key a sample.
    round: u64,
}

impl<K: Hash + Eq + Copy, S: Timed + Copy> Series<K, S> {
    pub fn new(max_keys: usize, keep_ns: u64) -> Self {
        Self {
            map: HashMap::default(),
            max_keys,
            keep_ns,
            skipped: 0,
            round: 0,
        }
    }

    /// Adds `sample` unless the key's newest is recent; trims old ones.
    pub fn record(&mut self, key: K, sample: S) {
        self.offer(key, sample, true);
    }

    /// Records `sample` for a key that has a history, and starts one only
    /// if `start` (one lookup for both). Either way the key is kept by
    /// this round's [`Series::end_round`] if it has a history.
    pub fn offer(&mut self, key: K, sample: S, start: bool) {
        let now = sample.t_ns();
        let full = self.map.len() >= self.max_keys;
        let round = self.round;
        let h = match self.map.get_mut(&key) {
            Some(h) => h,
            None if !start => return,
            None if full => {
                self.skipped += 1;
                return;
            }
            None => self.map.entry(key).or_insert(History {
                samples: VecDeque::new(),
                round,
            }),
        };
        h.round = round;
        let samples = &mut h.samples;
        if samples
            .back()
            .is_some_and(|b| now.saturating_sub(b.t_ns()) < SAMPLE_EVERY_NS)
        {
            return;
        }
        samples.push_back(sample);
        while samples
            .front()
            .is_some_and(|f| now.saturating_sub(f.t_ns()) > self.keep_ns)
        {
            samples.pop_front();
        }
    }

    /// The key's samples, oldest first (empty if none).
    pub fn samples(&self, key: &K) -> impl DoubleEndedIterator<Item = &S> + Clone {
        self.map.get(key).into_iter().flat_map(|h| &h.samples)
    }

    /// Forgets keys offered no sample since the last call (their flow or
    /// row is gone). Called once per evaluation, after every live key was
    /// offered one: no set of live keys is built.
    pub fn end_round(&mut self) {
        let round = self.round;
        self.map.retain(|_, h| h.round == round);
        self.round += 1;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct S(u64);
    impl Timed for S {
        fn t_ns(&self) -> u64 {
            self.0
        }
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn samples_are_spaced_trimmed_and_bounded() {
        let mut s: Series<u32, S> = Series::new(1, 20 * SEC);
        for t in 0..=30 {
            s.record(1, S(t * SEC));
        }
        let kept: Vec<u64> = s.samples(&1).map(|x| x.0 / SEC).collect();
        assert_eq!(kept, vec![10, 15, 20, 25, 30]);
        s.record(2, S(0));
        assert_eq!((s.len(), s.skipped), (1, 1));
        s.end_round();
        assert_eq!(s.len(), 1, "1 was offered in this round");
        s.end_round();
        assert!(s.is_empty());
    }

    #[test]
    fn a_round_keeps_the_keys_offered_in_it() {
        let mut s: Series<u32, S> = Series::new(10, 20 * SEC);
        s.offer(1, S(0), true);
        s.offer(2, S(0), true);
        s.offer(3, S(0), false);
        s.end_round();
        assert_eq!(s.len(), 2, "3 was not started");
        s.offer(1, S(10 * SEC), false);
        s.end_round();
        let kept: Vec<u64> = s.samples(&1).map(|x| x.0 / SEC).collect();
        assert_eq!((s.len(), kept), (1, vec![0, 10]), "2 was not offered");
    }
}
