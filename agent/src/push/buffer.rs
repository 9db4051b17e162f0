//! The windows the collector has not acknowledged yet, kept encoded so the
//! bound is in bytes of memory, not in windows of any size: when a new
//! window does not fit (in bytes or in count), the oldest go, and the next
//! window kept says how many went before it (`dropped_windows_before`), so
//! the collector counts them too. A window larger than the whole buffer
//! cannot be kept at all: it is dropped and reported the same way. Windows
//! the collector refuses (acked as refused) are reported the same way.

use std::{collections::VecDeque, sync::Arc};

use prost::Message;
use sockeye_proto::v1 as pb;

/// One window as it will be sent.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub seq: u64,
    /// Drops it reports (already inside `bytes`).
    pub dropped_before: u64,
    pub bytes: Arc<[u8]>,
}

/// What keeping one new window cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// Windows dropped to make room, or the new one when it alone was too
    /// large.
    pub dropped: u64,
    pub dropped_bytes: u64,
    /// The new window itself was larger than the buffer.
    pub too_large: bool,
}

#[derive(Debug)]
pub struct Pending {
    windows: VecDeque<Encoded>,
    max_windows: usize,
    max_bytes: usize,
    bytes: usize,
    /// Dropped or refused and not yet reported in a window that was kept.
    unreported_drops: u64,
}

impl Pending {
    pub fn new(max_windows: usize, max_bytes: usize) -> Self {
        Self {
            windows: VecDeque::new(),
            max_windows: max_windows.max(1),
            max_bytes: max_bytes.max(1),
            bytes: 0,
            unreported_drops: 0,
        }
    }

    fn drop_oldest(&mut self) -> Option<u64> {
        let old = self.windows.pop_front()?;
        self.bytes -= old.bytes.len();
        // A dropped window that carried a report passes it on.
        self.unreported_drops += 1 + old.dropped_before;
        Some(old.bytes.len() as u64)
    }

    /// Keeps a new window, stamped with every drop not yet reported,
    /// dropping the oldest until it fits.
    pub fn push(&mut self, mut w: pb::Window) -> Kept {
        let own = w.dropped_windows_before;
        // The largest the stamp can make it: room is made for that.
        w.dropped_windows_before = u64::MAX;
        let upper = w.encoded_len();
        if upper > self.max_bytes {
            self.unreported_drops += own + 1;
            return Kept {
                dropped: 1,
                dropped_bytes: upper as u64,
                too_large: true,
            };
        }
        let mut kept = Kept::default();
        while self.windows.len() >= self.max_windows || self.bytes + upper > self.max_bytes {
            match self.drop_oldest() {
                Some(b) => {
                    kept.dropped += 1;
                    kept.dropped_bytes += b;
                }
                None => break,
            }
        }
        w.dropped_windows_before = own + std::mem::take(&mut self.unreported_drops);
        let bytes: Arc<[u8]> = w.encode_to_vec().into();
        self.bytes += bytes.len();
        self.windows.push_back(Encoded {
            seq: w.seq,
            dropped_before: w.dropped_windows_before,
            bytes,
        });
        kept
    }

    /// Forgets every window up to `seq` (the collector has stored them, or
    /// refused `refused` of them: the window `seq` itself, which is then
    /// reported as dropped in the next window kept). Returns how many were
    /// forgotten.
    pub fn ack(&mut self, seq: u64, refused: u64) -> u64 {
        if refused > 0 {
            let carried = self
                .windows
                .iter()
                .find(|w| w.seq == seq)
                .map_or(0, |w| w.dropped_before);
            self.unreported_drops += refused + carried;
        }
        let before = self.windows.len();
        while self.windows.front().is_some_and(|w| w.seq <= seq) {
            if let Some(w) = self.windows.pop_front() {
                self.bytes -= w.bytes.len();
            }
        }
        (before - self.windows.len()) as u64
    }

    /// The oldest window with a seq above `seq`.
    pub fn first_after(&self, seq: u64) -> Option<&Encoded> {
        self.windows.iter().find(|w| w.seq > seq)
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn unreported_drops(&self) -> u64 {
        self.unreported_drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(seq: u64, payload: usize) -> pb::Window {
        pb::Window {
            seq,
            node: "x".repeat(payload),
            ..Default::default()
        }
    }

    fn seqs(p: &Pending) -> Vec<(u64, u64)> {
        p.windows
            .iter()
            .map(|w| (w.seq, w.dropped_before))
            .collect()
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_reports_it_once() {
        let mut p = Pending::new(2, 1 << 20);
        assert_eq!(p.push(w(1, 1)).dropped, 0);
        assert_eq!(p.push(w(2, 1)).dropped, 0);
        assert_eq!(p.push(w(3, 1)).dropped, 1);
        assert_eq!(seqs(&p), vec![(2, 0), (3, 1)]);
        // Window 3 carried the report; when it is dropped too, the report
        // moves on with its own drop.
        p.push(w(4, 1));
        p.push(w(5, 1));
        assert_eq!(
            seqs(&p),
            vec![(4, 1), (5, 2)],
            "1 + 1 for windows 1, 2 and 3"
        );
        assert_eq!(p.ack(4, 0), 1);
        assert_eq!(p.len(), 1);
        // The encoding carries the report too: that is what the collector reads.
        let e = p.first_after(0).unwrap();
        assert_eq!(
            pb::Window::decode(&*e.bytes)
                .unwrap()
                .dropped_windows_before,
            2
        );
    }

    #[test]
    fn the_bound_is_in_bytes() {
        let one = w(1, 1000).encoded_len();
        // Room for three, with the margin kept for the drop report.
        let mut p = Pending::new(1000, 3 * one + 20);
        for seq in 1..=3 {
            assert_eq!(p.push(w(seq, 1000)).dropped, 0);
        }
        let k = p.push(w(4, 1000));
        assert_eq!(k.dropped, 1);
        assert_eq!(k.dropped_bytes, one as u64);
        assert!(p.bytes() <= 3 * one + 20);
        assert_eq!(seqs(&p), vec![(2, 0), (3, 0), (4, 1)]);
    }

    #[test]
    fn a_window_larger_than_the_buffer_is_dropped_and_reported_by_the_next() {
        let mut p = Pending::new(10, 500);
        p.push(w(1, 10));
        let k = p.push(w(2, 1000));
        assert!(k.too_large);
        assert_eq!((k.dropped, p.len()), (1, 1));
        p.push(w(3, 10));
        assert_eq!(seqs(&p), vec![(1, 0), (3, 1)]);
    }

    #[test]
    fn a_refused_window_is_reported_with_what_it_carried() {
        let mut p = Pending::new(2, 1 << 20);
        p.push(w(1, 1));
        p.push(w(2, 1));
        p.push(w(3, 1)); // drops 1: window 3 reports 1
                         // The collector refuses window 3 (say, its clock is off).
        assert_eq!(p.ack(3, 1), 2);
        assert!(p.is_empty());
        assert_eq!(p.unreported_drops(), 2, "window 3 itself and window 1");
        p.push(w(4, 1));
        assert_eq!(seqs(&p), vec![(4, 2)]);
    }
}
