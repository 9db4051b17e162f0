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
//!    A window larger than one gRPC message comes in pieces
//!    ([`chunks`]), joined before anything else happens to it.
//! 3. A window that is well formed but cannot be kept (its end is past the
//!    retention horizon or further in the future than the allowed clock
//!    skew, or it is larger than the largest window accepted) is acked as
//!    refused: the agent lets go of it and counts it, and so does the
//!    collector.
//! 4. An invalid message ends the stream with `InvalidArgument` naming the
//!    problem and the seq; a Hello naming a node the caller may not push as
//!    with `PermissionDenied`; a store failure or a full disk with
//!    `Unavailable` (keep the windows, reconnect and resend). Shutdown ends
//!    it with `Unavailable`.

mod chunks;
mod session;

use std::{sync::Arc, time::Duration};

use sockeye_proto::v1::{self as pb, push_request::Msg};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::{
    auth::Caller,
    collector::{unix_ms_now, Shared},
    limits::Slot,
    stats::{Counters, GaugeGuard},
    store::PutOutcome,
};
use chunks::{Joined, Joiner};
use session::{time_refusal, Session, TimeRefusal};

/// A stream that never says Hello is closed after this long.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Acks waiting for the agent to read them. When full, the collector stops
/// reading windows (HTTP/2 flow control pushes back to the agent).
const ACK_QUEUE: usize = 32;

pub type AckStream = ReceiverStream<Result<pb::PushAck, Status>>;

/// Starts serving one Push stream of `caller` on the collector's task
/// tracker; `slot` is its place among the caller's streams.
pub(crate) fn start(
    shared: Arc<Shared>,
    caller: Caller,
    slot: Slot,
    inbound: Streaming<pb::PushRequest>,
) -> AckStream {
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        let _slot = slot;
        let _gauge = GaugeGuard::new(shared.counters.clone(), |c| &c.push_streams);
        if let Err(status) = run(&shared, &caller, inbound, &tx).await {
            Counters::add(&shared.counters.push_rejected, 1);
            log::warn!(
                "push: stream of {caller} ended with {:?}: {}",
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
    caller: &Caller,
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
    // Before anything of the Hello is believed: the caller may push only
    // as its own node.
    shared.auth.push_as(caller, &hello.node)?;
    let mut session = Session::from_hello(hello)?;
    // A full disk refuses at once, before the agent sends its backlog.
    shared.disk.admit(shared.store.as_ref()).await?;
    let stored = shared
        .store
        .highest_seq(&session.agent_id)
        .await
        .map_err(|e| {
            shared.store_health.failed(&e);
            Status::unavailable(format!("store: {e}; keep the windows and retry"))
        })?;
    // Answered even when nothing is stored (0): the agent settles what it
    // sent on an earlier stream and evicted unacknowledged by this answer.
    if tx.send(Ok(session.ack(stored.unwrap_or(0)))).await.is_err() {
        return Ok(());
    }
    let mut joiner = Joiner::default();
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
        if let (Some(seq), false) = (joiner.in_progress(), matches!(req.msg, Some(Msg::Chunk(_)))) {
            return Err(Status::invalid_argument(format!(
                "window seq {seq}: its chunks were interrupted by another message"
            )));
        }
        let ack = match req.msg {
            Some(Msg::Window(w)) => ingest_window(shared, &mut session, w).await?,
            Some(Msg::Chunk(c)) => {
                let max = shared.config.max_window_bytes;
                match joiner
                    .add(c, max)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?
                {
                    Joined::Partial => continue,
                    Joined::Window(w) => {
                        Counters::add(&shared.counters.windows_joined_from_chunks, 1);
                        ingest_window(shared, &mut session, *w).await?
                    }
                    Joined::TooLarge { seq, total_bytes } => {
                        Counters::add(&shared.counters.windows_refused_too_large, 1);
                        let why = format!(
                            "window seq {seq} is {total_bytes} bytes, over the collector's --max-window-mib ({max} bytes)"
                        );
                        log::warn!("push: agent {} on node {}: {why}; not stored", session.agent_id, session.node);
                        session.refuse(seq, why)
                    }
                }
            }
            Some(Msg::Hello(_)) => {
                return Err(Status::invalid_argument(
                    "Hello was already sent on this stream; open a new Push stream for another agent_id",
                ))
            }
            None => {
                return Err(Status::invalid_argument(
                    "PushRequest has neither hello, window nor chunk",
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
    let max_skew_ms = i64::try_from(shared.config.max_clock_skew.as_millis()).unwrap_or(i64::MAX);
    match time_refusal(
        w.end_unix_ms,
        unix_ms_now(),
        shared.retention_ms(),
        max_skew_ms,
    ) {
        None => {}
        Some(TimeRefusal::Expired) => {
            // Retention would delete it at once: the agent frees its buffer,
            // and both sides count it instead of storing it.
            Counters::add(&c.windows_expired_on_arrival, 1);
            let why = format!(
                "window seq {} ended at {} ms, before the retention horizon",
                w.seq, w.end_unix_ms
            );
            log::warn!("push: agent {}: {why}; not stored", session.agent_id);
            return Ok(session.refuse(w.seq, why));
        }
        Some(TimeRefusal::Future) => {
            Counters::add(&c.windows_refused_future, 1);
            let why = format!(
                "window seq {} ends at {} ms, more than {} ahead of the collector's clock (--max-clock-skew); check the node's clock",
                w.seq,
                w.end_unix_ms,
                humantime::format_duration(shared.config.max_clock_skew)
            );
            log::warn!(
                "push: agent {} on node {}: {why}; not stored",
                session.agent_id,
                session.node
            );
            return Ok(session.refuse(w.seq, why));
        }
    }
    shared.disk.admit(shared.store.as_ref()).await?;
    let put = shared.store.put(&w).await.map_err(|e| {
        shared.disk.write_failed(&e);
        shared.store_health.failed(&e);
        Status::unavailable(format!(
            "cannot store window seq {}: {e}; keep it, reconnect and resend",
            w.seq
        ))
    })?;
    shared.store_health.ok();
    match put.outcome {
        PutOutcome::Stored => {
            Counters::add(&c.windows_stored, 1);
            Counters::add(&c.store_rollup_failures, u64::from(put.rollup_failed));
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
