//! Finds DNS messages in TCP segments. Over TCP each message is prefixed by
//! its 2-byte length, and a segment may hold the end of one message, the
//! start of the next, or several. Each direction of each connection keeps
//! the sequence number where its next message starts, learned from the SYN.
//! Only the first bytes of a segment are copied by the kernel, which is
//! enough for the header and question of a message that starts within them.

use std::{collections::HashMap, net::SocketAddr};

use sockeye_common::dns::tcp_flags;

use super::packet::Packet;

/// DNS header length: a message start is only useful if its header is in
/// the copied bytes.
const HEADER_LEN: usize = 12;

/// Why a message start was not found, for counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TcpStreamDrops {
    /// A segment arrived on a stream whose position was unknown (it began
    /// before the agent, or data was missed): it was read as if a message
    /// started there.
    pub resyncs: u64,
    /// A message started past the copied bytes of its segment (several
    /// messages in one large segment): it, and the stream position, are lost.
    pub beyond_capture: u64,
    /// Streams forgotten because the table was full.
    pub evicted: u64,
}

pub struct TcpStreams {
    /// (sender, receiver) -> sequence number of the next message start.
    next_message: HashMap<(SocketAddr, SocketAddr), u32>,
    max: usize,
    pub drops: TcpStreamDrops,
}

impl TcpStreams {
    pub fn new(max: usize) -> Self {
        Self {
            next_message: HashMap::new(),
            max,
            drops: TcpStreamDrops::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.next_message.len()
    }

    pub fn is_empty(&self) -> bool {
        self.next_message.is_empty()
    }

    /// Calls `found` with the bytes (as copied) of each DNS message that
    /// starts in this segment.
    pub fn segment<'a>(&mut self, p: &Packet<'a>, mut found: impl FnMut(&'a [u8])) {
        let key = (p.src, p.dst);
        if p.tcp_flags & tcp_flags::SYN != 0 {
            self.insert(key, p.tcp_seq.wrapping_add(1));
            return;
        }
        if p.payload_len > 0 {
            self.data(key, p, &mut found);
        }
        if p.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            self.next_message.remove(&key);
        }
    }

    fn data<'a>(
        &mut self,
        key: (SocketAddr, SocketAddr),
        p: &Packet<'a>,
        found: &mut impl FnMut(&'a [u8]),
    ) {
        let len = p.payload_len;
        let mut offset = match self.next_message.get(&key) {
            Some(&next) => {
                // Where the next message starts relative to this segment;
                // wrapping arithmetic handles sequence number wrap-around.
                let delta = next.wrapping_sub(p.tcp_seq) as i32;
                if delta < 0 {
                    // Data past a gap: the position is lost.
                    self.drops.resyncs += 1;
                    0
                } else if delta as u32 >= len {
                    // The message started before continues through this
                    // segment, or a retransmission: nothing starts here.
                    return;
                } else {
                    delta as usize
                }
            }
            None => {
                self.drops.resyncs += 1;
                0
            }
        };
        let captured = p.payload;
        let len = len as usize;
        while offset < len {
            if offset + 2 + HEADER_LEN > captured.len() {
                self.drops.beyond_capture += 1;
                self.next_message.remove(&key);
                return;
            }
            let msg_len = u16::from_be_bytes([captured[offset], captured[offset + 1]]) as usize;
            let end = (offset + 2 + msg_len).min(captured.len());
            found(&captured[offset + 2..end]);
            offset += 2 + msg_len;
        }
        self.insert(key, p.tcp_seq.wrapping_add(offset as u32));
    }

    fn insert(&mut self, key: (SocketAddr, SocketAddr), next: u32) {
        if self.next_message.len() >= self.max && !self.next_message.contains_key(&key) {
            // Any entry will do: a forgotten stream resyncs on its next segment.
            if let Some(victim) = self.next_message.keys().next().copied() {
                self.next_message.remove(&victim);
                self.drops.evicted += 1;
            }
        }
        self.next_message.insert(key, next);
    }
}
