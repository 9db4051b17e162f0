//! Push: windows in, acknowledgements out.
//!
//! Protocol (one long-lived stream per agent):
//! 1. The agent sends a `Hello` (node, agent_id). If windows of this agent
//!    are already stored, the collector answers at once with an ack of the
//!    highest stored seq, so after a reconnect the agent resends only what
//!    is newer.
//! 2. The agent sends windows in increasing seq order. Each one is stored
//!    unless `(agent_id, seq)` is already stored (a resend), then acked with
//!    the highest seq stored for the agent. Windows arrive in order on a
//!    stream, so a gap in seq means the agent dropped those windows, which
//!    it reports in `dropped_windows_before`.
//! 3. An invalid message ends the stream with `InvalidArgument` naming the
//!    problem and the seq; a store failure with `Unavailable` (reconnect and
//!    resend). Shutdown ends it with `Unavailable`.

use std::{sync::Arc, time::Duration};

use sockeye_proto::v1::{self as pb, push_request::Msg};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::{
    collector::Shared,
    stats::{Counters, GaugeGuard},
    store::PutOutcome,
};

/// A stream that never says Hello is closed after this long.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Acks waiting for the agent to read them. When full, the collector stops
/// reading windows (HTTP/2 flow control pushes back to the agent).
const ACK_QUEUE: usize = 32;
const MAX_AGENT_ID_LEN: usize = 256;
const MAX_NODE_LEN: usize = 253;

pub type AckStream = ReceiverStream<Result<pb::PushAck, Status>>;

/// Starts serving one Push stream on the collector's task tracker.
pub(crate) fn start(shared: Arc<Shared>, inbound: Streaming<pb::PushRequest>) -> AckStream {
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        let _gauge = GaugeGuard::new(shared.counters.clone(), |c| &c.push_streams);
        if let Err(status) = run(&shared, inbound, &tx).await {
            Counters::add(&shared.counters.push_rejected, 1);
            log::warn!(
                "push: stream ended with {:?}: {}",
                status.code(),
                status.message()
            );
            // The agent may already be gone; then there is nobody to tell.
            let _ = tx.send(Err(status)).await;
        }
    });
    ReceiverStream::new(rx)
}

fn shutting_down() -> Status {
    Status::unavailable(
        "the collector is shutting down; reconnect and resend unacknowledged windows",
    )
}

/// Who is on the other end, from its Hello.
struct Session {
    node: String,
    agent_id: String,
    /// Highest seq acked on this stream: acks never go backwards.
    acked: Option<u64>,
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

impl Session {
    fn from_hello(h: pb::Hello) -> Result<Self, Status> {
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
            h.version
        );
        Ok(Self {
            node: h.node,
            agent_id: h.agent_id,
            acked: None,
        })
    }

    /// Fills what the agent may leave out and refuses what contradicts the
    /// Hello or cannot be a window.
    fn check(&self, w: &mut pb::Window) -> Result<(), Status> {
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

    fn ack(&mut self, seq: u64) -> pb::PushAck {
        let acked = self.acked.map_or(seq, |a| a.max(seq));
        self.acked = Some(acked);
        pb::PushAck {
            agent_id: self.agent_id.clone(),
            acked_seq: acked,
        }
    }
}

/// A Push stream's inbound side failed: the agent went away (not worth an
/// error status) or sent something tonic could not accept (oversized or
/// undecodable message), which the agent must hear about.
fn inbound_error(status: Status) -> Result<(), Status> {
    match status.code() {
        Code::OutOfRange | Code::ResourceExhausted | Code::Internal | Code::InvalidArgument => {
            Err(status)
        }
        _ => {
            log::info!("push: stream closed by the peer: {}", status.message());
            Ok(())
        }
    }
}

async fn run(
    shared: &Shared,
    mut inbound: Streaming<pb::PushRequest>,
    tx: &mpsc::Sender<Result<pb::PushAck, Status>>,
) -> Result<(), Status> {
    let first = tokio::select! {
        _ = shared.shutdown.cancelled() => return Err(shutting_down()),
        r = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => r.map_err(|_| {
            Status::deadline_exceeded(format!("no Hello within {} s of opening Push", HELLO_TIMEOUT.as_secs()))
        })?,
    };
    let hello = match first {
        Err(status) => return inbound_error(status),
        Ok(None) => return Ok(()),
        Ok(Some(pb::PushRequest {
            msg: Some(Msg::Hello(h)),
        })) => h,
        Ok(Some(_)) => {
            return Err(Status::invalid_argument(
                "the first message on Push must be a Hello (node, agent_id)",
            ))
        }
    };
    let mut session = Session::from_hello(hello)?;
    let stored = shared
        .store
        .highest_seq(&session.agent_id)
        .await
        .map_err(|e| Status::unavailable(format!("store: {e}")))?;
    if let Some(highest) = stored {
        if tx.send(Ok(session.ack(highest))).await.is_err() {
            return Ok(());
        }
    }
    loop {
        let msg = tokio::select! {
            _ = shared.shutdown.cancelled() => return Err(shutting_down()),
            m = inbound.message() => m,
        };
        let req = match msg {
            Ok(Some(req)) => req,
            Ok(None) => {
                log::info!(
                    "push: agent {} on node {} disconnected",
                    session.agent_id,
                    session.node
                );
                return Ok(());
            }
            Err(status) => return inbound_error(status),
        };
        let ack = match req.msg {
            Some(Msg::Window(w)) => ingest_window(shared, &mut session, w).await?,
            Some(Msg::Hello(_)) => {
                return Err(Status::invalid_argument(
                    "Hello was already sent on this stream; open a new Push stream for another agent_id",
                ))
            }
            None => {
                return Err(Status::invalid_argument(
                    "PushRequest has neither hello nor window",
                ))
            }
        };
        if tx.send(Ok(ack)).await.is_err() {
            // The agent stopped listening; what it sent is stored.
            return Ok(());
        }
    }
}

async fn ingest_window(
    shared: &Shared,
    session: &mut Session,
    mut w: pb::Window,
) -> Result<pb::PushAck, Status> {
    session.check(&mut w)?;
    let c = &shared.counters;
    let horizon = crate::collector::unix_ms_now().saturating_sub(shared.retention_ms());
    if w.end_unix_ms < horizon {
        // Retention would delete it at once: acknowledge so the agent frees
        // its buffer, but count it instead of storing it.
        Counters::add(&c.windows_expired_on_arrival, 1);
        log::warn!(
            "push: window seq {} of agent {} ended at {} ms, before the retention horizon; not stored",
            w.seq,
            session.agent_id,
            w.end_unix_ms
        );
        return Ok(session.ack(w.seq));
    }
    let put = shared.store.put(&w).await.map_err(|e| {
        Status::unavailable(format!(
            "cannot store window seq {}: {e}; reconnect and resend",
            w.seq
        ))
    })?;
    match put.outcome {
        PutOutcome::Stored => {
            Counters::add(&c.windows_stored, 1);
            if w.dropped_windows_before > 0 {
                Counters::add(&c.windows_agents_dropped, w.dropped_windows_before);
                log::warn!(
                    "push: agent {} on node {} dropped {} windows before seq {} (its buffer was full)",
                    session.agent_id,
                    session.node,
                    w.dropped_windows_before,
                    w.seq
                );
            }
            let without_id = w
                .aggregates
                .as_ref()
                .map_or(0, |a| a.findings.iter().filter(|f| f.id.is_empty()).count());
            if without_id > 0 {
                Counters::add(&c.findings_without_id, without_id as u64);
                log::warn!(
                    "push: window seq {} of agent {} has {without_id} findings without an id; ListFindings leaves them out",
                    w.seq,
                    session.agent_id
                );
            }
            shared.hub.publish(Arc::new(w));
        }
        PutOutcome::Duplicate => {
            Counters::add(&c.windows_duplicate, 1);
            log::debug!(
                "push: window seq {} of agent {} already stored",
                w.seq,
                session.agent_id
            );
        }
    }
    Ok(session.ack(put.highest_seq))
}
