//! The windows the collector has not acknowledged yet, kept encoded so the
//! bound is in bytes of memory, not in windows of any size: when a new
//! window does not fit (in bytes or in count), the oldest go, and the next
//! window kept says how many went before it (`dropped_windows_before`), so
//! the collector counts them too. A window larger than the whole buffer
//! cannot be kept at all: it is dropped and reported the same way. Windows
//! the collector refuses (acked as refused) are reported the same way.
//!
//! A window already sent and not yet acknowledged may be stored or not:
//! when the buffer lets go of it, it is kept "in doubt" (its seq and the
//! drops it reported, not its bytes) until an ack settles it. An ack at or
//! above its seq says it was stored (and its report arrived with it); the
//! answer to the Hello of a later stream, below its seq, says it was lost.
//! Counting it dropped at once over-counted: after a long outage the agent
//! drains a full buffer while new windows push the oldest out, and those
//! are the ones on the wire.

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
    /// The stream it was last sent on, if any.
    sent_on: Option<u64>,
}

/// A window let go of after it was sent, before any ack said whether it
/// was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InDoubt {
    seq: u64,
    dropped_before: u64,
    sent_on: u64,
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
    /// Oldest first; at most `max_windows`.
    in_doubt: VecDeque<InDoubt>,
    /// The current Push stream, counted from 1 ([`Pending::new_stream`]).
    stream: u64,
}

impl Pending {
    pub fn new(max_windows: usize, max_bytes: usize) -> Self {
        Self {
            windows: VecDeque::new(),
            max_windows: max_windows.max(1),
            max_bytes: max_bytes.max(1),
            bytes: 0,
            unreported_drops: 0,
            in_doubt: VecDeque::new(),
            stream: 0,
        }
    }

    /// Lets go of the oldest window: its bytes, and whether it is dropped
    /// now (`false`: it was sent, and is in doubt).
    fn drop_oldest(&mut self) -> Option<(u64, bool)> {
        let old = self.windows.pop_front()?;
        self.bytes -= old.bytes.len();
        let bytes = old.bytes.len() as u64;
        let Some(sent_on) = old.sent_on else {
            // A dropped window that carried a report passes it on.
            self.unreported_drops += 1 + old.dropped_before;
            return Some((bytes, true));
        };
        self.in_doubt.push_back(InDoubt {
            seq: old.seq,
            dropped_before: old.dropped_before,
            sent_on,
        });
        if self.in_doubt.len() > self.max_windows {
            // More in doubt than the buffer holds windows: no ack came for
            // a whole buffer's worth. The oldest is counted lost rather
            // than kept without bound; it may yet be stored (over-counted,
            // never under).
            if let Some(d) = self.in_doubt.pop_front() {
                self.unreported_drops += 1 + d.dropped_before;
                return Some((bytes, true));
            }
        }
        Some((bytes, false))
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
                Some((b, dropped)) => {
                    kept.dropped += u64::from(dropped);
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
            sent_on: None,
        });
        kept
    }

    /// A new Push stream opens: what was sent before is settled by the
    /// answer to its Hello ([`Pending::settle_earlier_streams`]).
    pub fn new_stream(&mut self) {
        self.stream += 1;
    }

    /// The oldest window with a seq above `seq`, which the caller is about
    /// to send on the current stream (from here on it is in doubt if let
    /// go of before an ack).
    pub fn send_after(&mut self, seq: u64) -> Option<Encoded> {
        let stream = self.stream;
        let w = self.windows.iter_mut().find(|w| w.seq > seq)?;
        w.sent_on = Some(stream);
        Some(w.clone())
    }

    /// The collector's answer to the Hello of the current stream (its first
    /// ack): nothing above `seq` that was sent on an earlier stream was
    /// stored, since that stream is over. Returns the windows in doubt this
    /// settles as lost, which the next window kept reports; the ack itself
    /// is then taken as any other ([`Pending::ack`]).
    pub fn settle_earlier_streams(&mut self, seq: u64) -> u64 {
        let stream = self.stream;
        let mut lost = 0;
        self.in_doubt.retain(|d| {
            let gone = d.seq > seq && d.sent_on < stream;
            if gone {
                lost += 1;
                self.unreported_drops += 1 + d.dropped_before;
            }
            !gone
        });
        lost
    }

    /// Forgets every window up to `seq` (the collector has stored them, or
    /// refused `refused` of them: the window `seq` itself, which is then
    /// reported as dropped in the next window kept). Returns how many it
    /// let go of, in doubt ones included.
    pub fn ack(&mut self, seq: u64, refused: u64) -> u64 {
        let mut settled = 0;
        // What the window `seq` reported, wherever it is held.
        let mut carried = None;
        while self.in_doubt.front().is_some_and(|d| d.seq <= seq) {
            if let Some(d) = self.in_doubt.pop_front() {
                settled += 1;
                if d.seq == seq {
                    carried = Some(d.dropped_before);
                }
            }
        }
        if refused > 0 {
            let carried = carried.or_else(|| {
                let w = self.windows.iter().find(|w| w.seq == seq);
                w.map(|w| w.dropped_before)
            });
            self.unreported_drops += refused + carried.unwrap_or(0);
        }
        let before = self.windows.len();
        while self.windows.front().is_some_and(|w| w.seq <= seq) {
            if let Some(w) = self.windows.pop_front() {
                self.bytes -= w.bytes.len();
            }
        }
        settled + (before - self.windows.len()) as u64
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

    /// Windows let go of after they were sent, not yet settled by an ack.
    pub fn in_doubt(&self) -> usize {
        self.in_doubt.len()
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
        let e = p.send_after(0).unwrap();
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

    #[test]
    fn a_sent_window_let_go_of_is_dropped_only_if_the_collector_lacks_it() {
        let mut p = Pending::new(2, 1 << 20);
        p.push(w(1, 1));
        p.push(w(2, 1));
        p.new_stream();
        assert_eq!(p.send_after(0).map(|e| e.seq), Some(1));
        assert_eq!(p.send_after(1).map(|e| e.seq), Some(2));
        // Both on the wire, no ack yet: the buffer lets go of 1, then 2.
        assert_eq!(p.push(w(3, 1)).dropped, 0, "1 is in doubt, not dropped");
        assert_eq!(p.push(w(4, 1)).dropped, 0);
        assert_eq!(p.in_doubt(), 2);
        // The collector stored 1 and acks it: settled, never reported.
        assert_eq!(p.ack(1, 0), 1);
        assert_eq!(p.in_doubt(), 1);
        // The stream breaks before 2 is stored. The next stream's Hello is
        // answered with 1: window 2 was lost, and the next window says so.
        p.new_stream();
        assert_eq!(p.settle_earlier_streams(1), 1);
        assert_eq!(p.ack(1, 0), 0);
        assert_eq!(p.in_doubt(), 0);
        // Window 3, never sent, is dropped at once to make room for 5.
        assert_eq!(p.push(w(5, 1)).dropped, 1);
        assert_eq!(
            seqs(&p),
            vec![(4, 0), (5, 2)],
            "windows 2 and 3, each reported once"
        );
    }

    #[test]
    fn a_window_in_doubt_sent_on_this_stream_waits_for_its_ack() {
        let mut p = Pending::new(1, 1 << 20);
        p.push(w(1, 1));
        p.new_stream();
        p.send_after(0);
        p.push(w(2, 1));
        // The answer to this stream's own Hello predates window 1: it
        // settles only what earlier streams sent.
        assert_eq!(p.settle_earlier_streams(0), 0);
        assert_eq!(p.in_doubt(), 1);
        // Refused, window 1 is lost after all, with what it reported.
        assert_eq!(p.ack(1, 1), 1);
        assert_eq!(p.unreported_drops(), 1);
    }

    #[test]
    fn windows_in_doubt_are_bounded_by_the_buffer() {
        let mut p = Pending::new(2, 1 << 20);
        p.new_stream();
        let mut dropped = 0;
        for seq in 1..=10 {
            dropped += p.push(w(seq, 1)).dropped;
            p.send_after(seq - 1);
        }
        assert_eq!(p.in_doubt(), 2);
        assert_eq!(dropped + p.in_doubt() as u64 + p.len() as u64, 10);
    }
}
