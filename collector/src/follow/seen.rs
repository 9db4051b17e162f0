//! Which windows a replica's live streams already got, so each is delivered
//! once whichever way it arrived: stored by this replica, or followed from
//! the store after another replica (or this one) inserted it.

use std::collections::{BTreeSet, HashMap};

/// A window's identity: `(agent_id, seq)`.
pub type Key = (String, u64);

/// Keys are remembered until the feed is no longer read before their
/// stamp; this caps them if that point stops moving (the feed cannot be
/// read while writes still work). Evicting the oldest then risks a
/// duplicate, never a loss.
pub const MAX_KEYS: usize = 1 << 20;

/// Keys with the stamp of their newest sighting, in insert-time
/// coordinates: the feed row's `inserted_unix_ms`, or for a window this
/// replica stored, its clock just after the insert (never before the row's
/// own stamp, which the same clock took just before).
#[derive(Debug, Default)]
pub struct Seen {
    stamp_of: HashMap<Key, i64>,
    by_stamp: BTreeSet<(i64, Key)>,
}

impl Seen {
    /// Records `key` as seen at `stamp`; true if it had not been seen.
    pub fn first(&mut self, key: Key, stamp: i64) -> bool {
        if let Some(old) = self.stamp_of.get_mut(&key) {
            // A second row of one window (two replicas raced): remember it
            // as long as the later row can still be read.
            if stamp > *old {
                self.by_stamp.remove(&(*old, key.clone()));
                *old = stamp;
                self.by_stamp.insert((stamp, key));
            }
            return false;
        }
        if self.stamp_of.len() >= MAX_KEYS {
            if let Some((_, k)) = self.by_stamp.pop_first() {
                self.stamp_of.remove(&k);
            }
        }
        self.stamp_of.insert(key.clone(), stamp);
        self.by_stamp.insert((stamp, key));
        true
    }

    pub fn contains(&self, agent_id: &str, seq: u64) -> bool {
        self.stamp_of.contains_key(&(agent_id.to_string(), seq))
    }

    /// Forgets keys stamped before `since`: the feed is never read before
    /// `since` again, so no row of theirs can come back.
    pub fn forget_before(&mut self, since: i64) {
        let keep = self.by_stamp.split_off(&(since, (String::new(), 0)));
        for (_, k) in std::mem::replace(&mut self.by_stamp, keep) {
            self.stamp_of.remove(&k);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.stamp_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(a: &str, s: u64) -> Key {
        (a.to_string(), s)
    }

    #[test]
    fn a_key_is_first_once_whichever_way_it_comes() {
        let mut s = Seen::default();
        assert!(s.first(k("a", 1), 100));
        assert!(!s.first(k("a", 1), 90));
        assert!(s.first(k("a", 2), 95));
        assert!(s.contains("a", 1) && !s.contains("a", 3));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn keys_are_forgotten_only_once_the_feed_is_past_them() {
        let mut s = Seen::default();
        s.first(k("a", 1), 100);
        s.first(k("a", 2), 200);
        // The racing copy of 1 was stamped later: 1 stays as long as it.
        s.first(k("a", 1), 250);
        s.forget_before(200);
        assert!(s.contains("a", 1) && s.contains("a", 2));
        s.forget_before(201);
        assert!(s.contains("a", 1) && !s.contains("a", 2));
        s.forget_before(251);
        assert_eq!(s.len(), 0);
    }
}
