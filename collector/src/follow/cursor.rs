//! Where the next read of the insert feed starts.
//!
//! The high-water mark is the insert time (`inserted_unix_ms`), not a
//! per-agent `(agent_id, seq)`: a per-agent seq mark skips a window that
//! arrives below it (an agent's backlog resent through another replica
//! while a newer window already went through this one, or two replicas
//! inserting one agent's windows out of order), and an end-time mark skips
//! every late window by definition, while a late or backlog window is
//! always inserted now. Insert time has two faults of its own, both
//! covered by reading again behind the mark: a row becomes visible some
//! time after it was stamped (the insert takes time), and replicas stamp
//! with their own clocks. Rows read twice are dropped by [`super::seen`].

/// How far behind the newest stamp each read starts, and every how many
/// reads it reaches further back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookback {
    /// Every read: covers an insert's usual delay and clock skew between
    /// replicas.
    pub near_ms: i64,
    /// Every `deep_every` reads: covers the slowest insert the store
    /// allows (its statement timeout) plus skew. A row that becomes
    /// visible later than this behind the newest stamp is missed.
    pub deep_ms: i64,
    pub deep_every: u64,
}

#[derive(Debug)]
pub struct Cursor {
    lookback: Lookback,
    /// Nothing stamped before this is read: the replica's start. Windows
    /// inserted before it are history, not news.
    start: i64,
    newest: i64,
    reads: u64,
}

impl Cursor {
    pub fn new(start_unix_ms: i64, lookback: Lookback) -> Self {
        Self {
            lookback,
            start: start_unix_ms,
            newest: start_unix_ms,
            reads: 0,
        }
    }

    /// Where the next read starts.
    pub fn since(&self) -> i64 {
        let back = if self.reads.is_multiple_of(self.lookback.deep_every.max(1)) {
            self.lookback.deep_ms
        } else {
            self.lookback.near_ms
        };
        self.newest.saturating_sub(back).max(self.start)
    }

    /// A row stamped `inserted_unix_ms` was read.
    pub fn saw(&mut self, inserted_unix_ms: i64) {
        self.newest = self.newest.max(inserted_unix_ms);
    }

    /// A read ended (every page of it).
    pub fn read_done(&mut self) {
        self.reads = self.reads.wrapping_add(1);
    }

    /// No read starts before this any more: keys stamped earlier can be
    /// forgotten.
    pub fn oldest_readable(&self) -> i64 {
        self.newest
            .saturating_sub(self.lookback.deep_ms.max(self.lookback.near_ms))
            .max(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Lookback = Lookback {
        near_ms: 5,
        deep_ms: 50,
        deep_every: 3,
    };

    #[test]
    fn reads_start_at_the_start_then_behind_the_newest_row() {
        let mut c = Cursor::new(1000, L);
        assert_eq!(c.since(), 1000);
        c.read_done();
        assert_eq!(c.since(), 1000, "nothing read yet");
        c.saw(1200);
        c.saw(1100);
        assert_eq!(c.since(), 1195, "near");
        c.read_done();
        assert_eq!(c.since(), 1195);
        c.read_done();
        assert_eq!(c.since(), 1150, "every third read is deep");
        assert_eq!(c.oldest_readable(), 1150);
    }

    #[test]
    fn a_late_row_still_behind_the_deep_mark_is_read_again() {
        let mut c = Cursor::new(0, L);
        c.saw(10_000);
        // A row stamped 9_960 that became visible only now is read by the
        // next deep read, and its key is kept until then.
        assert!(c.oldest_readable() <= 9_960);
        for _ in 0..3 {
            c.read_done();
            if c.since() <= 9_960 {
                return;
            }
        }
        panic!("no deep read within deep_every reads");
    }
}
