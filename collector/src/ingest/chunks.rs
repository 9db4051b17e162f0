//! Joining a window sent in pieces ([`pb::WindowChunk`]): a window whose
//! encoding is larger than one gRPC message comes as consecutive chunks,
//! index 0 to count-1. The joiner checks that they belong together and
//! come in order, keeps at most `max_window_bytes`, and gives the decoded
//! window, or the verdict that it is too large (its pieces are then read
//! and thrown away, not kept), once the last piece is in.

use prost::Message;
use sockeye_proto::v1 as pb;

/// What a chunk completed.
#[derive(Debug, PartialEq)]
pub enum Joined {
    /// More pieces to come.
    Partial,
    Window(Box<pb::Window>),
    /// Every piece came, and the whole is over the limit: refuse it.
    TooLarge {
        seq: u64,
        total_bytes: u64,
    },
}

/// The protocol was broken: the stream must end.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("window seq {seq}: {what}")]
pub struct ChunkError {
    pub seq: u64,
    pub what: String,
}

#[derive(Debug)]
struct InProgress {
    seq: u64,
    count: u32,
    next: u32,
    total: u64,
    /// `None` when the window is too large and its pieces are discarded.
    data: Option<Vec<u8>>,
    received: u64,
}

/// The window being joined on one stream, if any.
#[derive(Debug, Default)]
pub struct Joiner {
    current: Option<InProgress>,
}

impl Joiner {
    /// Whether a window is half joined (then nothing but its next chunk may
    /// come).
    pub fn in_progress(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.seq)
    }

    pub fn add(&mut self, c: pb::WindowChunk, max_window_bytes: u64) -> Result<Joined, ChunkError> {
        let err = |what: String| ChunkError { seq: c.seq, what };
        let cur = match self.current.take() {
            None => {
                if c.index != 0 {
                    return Err(err(format!(
                        "chunk {} of {} arrived without chunk 0",
                        c.index, c.count
                    )));
                }
                if c.count == 0 || c.total_bytes == 0 {
                    return Err(err("a chunk with count 0 or total_bytes 0".into()));
                }
                let keep = c.total_bytes <= max_window_bytes;
                // The declared total is checked against the limit before
                // anything is allocated for it.
                InProgress {
                    seq: c.seq,
                    count: c.count,
                    next: 0,
                    total: c.total_bytes,
                    data: keep.then(|| Vec::with_capacity(c.total_bytes as usize)),
                    received: 0,
                }
            }
            Some(cur) => {
                if (c.seq, c.count, c.total_bytes) != (cur.seq, cur.count, cur.total)
                    || c.index != cur.next
                {
                    return Err(err(format!(
                        "chunk {} of {} (total {} bytes) does not follow chunk {} of {} of window seq {} ({} bytes)",
                        c.index,
                        c.count,
                        c.total_bytes,
                        cur.next.saturating_sub(1),
                        cur.count,
                        cur.seq,
                        cur.total
                    )));
                }
                cur
            }
        };
        let mut cur = cur;
        cur.received += c.data.len() as u64;
        if cur.received > cur.total {
            return Err(err(format!(
                "the chunks hold more than the {} bytes they announced",
                cur.total
            )));
        }
        if let Some(d) = &mut cur.data {
            d.extend_from_slice(&c.data);
        }
        cur.next += 1;
        if cur.next < cur.count {
            self.current = Some(cur);
            return Ok(Joined::Partial);
        }
        if cur.received != cur.total {
            return Err(err(format!(
                "the chunks hold {} bytes, {} were announced",
                cur.received, cur.total
            )));
        }
        let Some(data) = cur.data else {
            return Ok(Joined::TooLarge {
                seq: cur.seq,
                total_bytes: cur.total,
            });
        };
        let w = pb::Window::decode(data.as_slice())
            .map_err(|e| err(format!("the joined chunks are not a Window: {e}")))?;
        if w.seq != cur.seq {
            return Err(err(format!("the joined window says seq {}", w.seq)));
        }
        Ok(Joined::Window(Box::new(w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(w: &pb::Window, piece: usize) -> Vec<pb::WindowChunk> {
        let bytes = w.encode_to_vec();
        let parts: Vec<&[u8]> = bytes.chunks(piece).collect();
        parts
            .iter()
            .enumerate()
            .map(|(i, d)| pb::WindowChunk {
                seq: w.seq,
                index: i as u32,
                count: parts.len() as u32,
                total_bytes: bytes.len() as u64,
                data: d.to_vec(),
            })
            .collect()
    }

    fn window(seq: u64) -> pb::Window {
        pb::Window {
            node: "n1".into(),
            agent_id: "a".repeat(300),
            seq,
            end_unix_ms: 5,
            ..Default::default()
        }
    }

    #[test]
    fn pieces_in_order_make_the_window() {
        let w = window(7);
        let mut j = Joiner::default();
        let cs = chunks(&w, 64);
        assert!(cs.len() > 2);
        let n = cs.len();
        for (i, c) in cs.into_iter().enumerate() {
            let r = j.add(c, 1 << 20).unwrap();
            if i + 1 < n {
                assert_eq!(r, Joined::Partial);
                assert_eq!(j.in_progress(), Some(7));
            } else {
                assert_eq!(r, Joined::Window(Box::new(w.clone())));
            }
        }
        assert_eq!(j.in_progress(), None);
    }

    #[test]
    fn a_window_over_the_limit_is_refused_after_its_last_piece_without_keeping_it() {
        let w = window(3);
        let mut j = Joiner::default();
        let cs = chunks(&w, 100);
        let n = cs.len();
        let mut last = Joined::Partial;
        for c in cs {
            last = j.add(c, 50).unwrap();
        }
        assert!(n > 1);
        assert!(matches!(last, Joined::TooLarge { seq: 3, .. }));
    }

    #[test]
    fn out_of_order_foreign_and_lying_pieces_end_the_stream() {
        let w = window(3);
        let cs = chunks(&w, 100);
        let mut j = Joiner::default();
        assert!(j.add(cs[1].clone(), 1 << 20).is_err(), "no chunk 0");
        let mut j = Joiner::default();
        j.add(cs[0].clone(), 1 << 20).unwrap();
        let mut other = cs[1].clone();
        other.seq = 4;
        assert!(j
            .add(other, 1 << 20)
            .unwrap_err()
            .what
            .contains("does not follow"));
        let mut j = Joiner::default();
        let mut big = cs[0].clone();
        big.data = vec![0; big.total_bytes as usize + 1];
        assert!(j.add(big, 1 << 20).unwrap_err().what.contains("more than"));
        let mut j = Joiner::default();
        let garbage = pb::WindowChunk {
            seq: 9,
            index: 0,
            count: 1,
            total_bytes: 3,
            data: vec![0xff, 0xff, 0xff],
        };
        assert!(j
            .add(garbage, 1 << 20)
            .unwrap_err()
            .what
            .contains("not a Window"));
    }
}
