//! One Push stream's state and rules: who the Hello says is on the other
//! end, what a window must look like, when its times are too far off to
//! store, and the acks (which never go backwards).

use sockeye_proto::v1 as pb;
use tonic::Status;

const MAX_AGENT_ID_LEN: usize = 256;
const MAX_NODE_LEN: usize = 253;

/// Who is on the other end, from its Hello.
pub(super) struct Session {
    pub node: String,
    pub agent_id: String,
    /// Highest seq acked on this stream: acks never go backwards.
    acked: Option<u64>,
}

/// Text a terminal or a log could act on is refused in identities.
fn printable(s: &str) -> bool {
    !s.chars().any(sockeye_proto::text::is_unsafe)
}

/// Why a well-formed window is not stored (it is acknowledged as refused,
/// so the agent lets go of it; resending would not help).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeRefusal {
    /// It ended before the retention horizon: retention would delete it.
    Expired,
    /// It ends further in the future than the allowed clock skew: a clock
    /// that is wrong, or a forgery meant to stay "latest".
    Future,
}

/// Whether a window ending at `end_ms` may be stored at `now_ms`.
pub(super) fn time_refusal(
    end_ms: i64,
    now_ms: i64,
    retention_ms: i64,
    max_skew_ms: i64,
) -> Option<TimeRefusal> {
    if end_ms < now_ms.saturating_sub(retention_ms) {
        Some(TimeRefusal::Expired)
    } else if end_ms > now_ms.saturating_add(max_skew_ms) {
        Some(TimeRefusal::Future)
    } else {
        None
    }
}

impl Session {
    pub fn from_hello(h: pb::Hello) -> Result<Self, Status> {
        if h.agent_id.is_empty() || h.agent_id.len() > MAX_AGENT_ID_LEN || !printable(&h.agent_id) {
            return Err(Status::invalid_argument(format!(
                "Hello.agent_id must be 1 to {MAX_AGENT_ID_LEN} printable bytes (got {} bytes)",
                h.agent_id.len()
            )));
        }
        if h.node.is_empty() || h.node.len() > MAX_NODE_LEN || !printable(&h.node) {
            return Err(Status::invalid_argument(format!(
                "Hello.node must be 1 to {MAX_NODE_LEN} printable bytes (got {} bytes)",
                h.node.len()
            )));
        }
        log::info!(
            "push: agent {} on node {} connected (version {:?})",
            h.agent_id,
            h.node,
            sockeye_proto::text::escape(&h.version)
        );
        Ok(Self {
            node: h.node,
            agent_id: h.agent_id,
            acked: None,
        })
    }

    /// Fills what the agent may leave out and refuses what contradicts the
    /// Hello or cannot be a window.
    pub fn check(&self, w: &mut pb::Window) -> Result<(), Status> {
        let bad = |what: String| {
            Err(Status::invalid_argument(format!(
                "window seq {}: {what}",
                w.seq
            )))
        };
        if w.agent_id.is_empty() {
            w.agent_id = self.agent_id.clone();
        } else if w.agent_id != self.agent_id {
            return bad(format!(
                "agent_id {:?} differs from the Hello's {:?}; one stream carries one agent",
                w.agent_id, self.agent_id
            ));
        }
        if w.node.is_empty() {
            w.node = self.node.clone();
        } else if w.node != self.node {
            return bad(format!(
                "node {:?} differs from the Hello's {:?}",
                w.node, self.node
            ));
        }
        if w.end_unix_ms <= 0 || w.start_unix_ms < 0 {
            return bad(format!(
                "start_unix_ms {} / end_unix_ms {} must be Unix milliseconds after 1970",
                w.start_unix_ms, w.end_unix_ms
            ));
        }
        if w.start_unix_ms > w.end_unix_ms {
            return bad(format!(
                "start_unix_ms {} is after end_unix_ms {}",
                w.start_unix_ms, w.end_unix_ms
            ));
        }
        Ok(())
    }

    /// The ack after storing (or finding stored) everything up to `seq`.
    pub fn ack(&mut self, seq: u64) -> pb::PushAck {
        let acked = self.acked.map_or(seq, |a| a.max(seq));
        self.acked = Some(acked);
        pb::PushAck {
            agent_id: self.agent_id.clone(),
            acked_seq: acked,
            refused_windows: 0,
            refused_reason: String::new(),
        }
    }

    /// The ack of window `seq`, which was refused for `reason`.
    pub fn refuse(&mut self, seq: u64, reason: String) -> pb::PushAck {
        pb::PushAck {
            refused_windows: 1,
            refused_reason: reason,
            ..self.ack(seq)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn windows_far_in_the_past_or_the_future_are_refused() {
        let now = 1_000 * H;
        assert_eq!(time_refusal(now, now, 24 * H, 300_000), None);
        assert_eq!(time_refusal(now - 23 * H, now, 24 * H, 300_000), None);
        assert_eq!(
            time_refusal(now - 25 * H, now, 24 * H, 300_000),
            Some(TimeRefusal::Expired)
        );
        assert_eq!(time_refusal(now + 299_000, now, 24 * H, 300_000), None);
        assert_eq!(
            time_refusal(now + 365 * 24 * H, now, 24 * H, 300_000),
            Some(TimeRefusal::Future)
        );
    }

    #[test]
    fn identities_with_terminal_controls_are_refused() {
        let hello = |node: &str| pb::Hello {
            node: node.into(),
            agent_id: "a1".into(),
            version: String::new(),
        };
        assert!(Session::from_hello(hello("node-a")).is_ok());
        assert!(Session::from_hello(hello("node\x1b[2J")).is_err());
        assert!(Session::from_hello(hello("node\u{202e}a")).is_err());
    }

    #[test]
    fn acks_never_go_backwards_and_refusals_say_why() {
        let mut s = Session::from_hello(pb::Hello {
            node: "n".into(),
            agent_id: "a".into(),
            version: String::new(),
        })
        .unwrap();
        assert_eq!(s.ack(5).acked_seq, 5);
        assert_eq!(s.ack(3).acked_seq, 5);
        let r = s.refuse(6, "in the future".into());
        assert_eq!((r.acked_seq, r.refused_windows), (6, 1));
    }
}
