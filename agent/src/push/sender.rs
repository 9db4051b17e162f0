//! Keeps windows until the collector acknowledges them ([`Pending`]), and
//! streams them to it on one Push stream at a time.
//!
//! - Connecting, opening the stream and each wait for an ack have
//!   deadlines: a collector whose address swallows packets, or that
//!   accepts and never answers, costs a timeout, not a hung sender.
//! - Between sessions it waits with [`Backoff`] (jittered, capped, reset
//!   after a session the collector acknowledged), taking windows in all the
//!   while.
//! - Messages are fed to the stream as HTTP/2 takes them; a window larger
//!   than one gRPC message goes in chunks.
//! - The bearer token (`--collector-token-file`) is read for each session:
//!   the kubelet replaces projected tokens before they expire.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use prost::Message;
use sockeye_proto::{
    connect::{connect_with, with_bearer, Bearer, ClientTls, ConnectOptions},
    v1::{self as pb, collector_service_client::CollectorServiceClient, push_request::Msg},
};
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use super::{
    backoff::Backoff,
    buffer::{Encoded, Pending},
};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Connecting plus opening the stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Windows sent and none acknowledged for this long: the stream is dead
/// even if the connection looks alive.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Messages waiting for HTTP/2 to take them.
const STREAM_QUEUE: usize = 8;
/// Room for the PushRequest and WindowChunk fields around a chunk's data.
const CHUNK_OVERHEAD: usize = 1024;
/// The smallest chunk the sender goes down to when the collector says its
/// messages are too large.
const MIN_CHUNK: usize = 32 * 1024;

/// Counters of the pusher, for the agent's stats, metrics and drops.
#[derive(Debug, Default)]
pub struct PushStats {
    /// Windows sent, resends included.
    pub sent: AtomicU64,
    /// Windows sent in chunks, because one message could not hold them.
    pub sent_in_chunks: AtomicU64,
    pub acked: AtomicU64,
    /// Windows dropped by the agent: the buffer was full (the collector was
    /// away), or the window alone was larger than the buffer. One the
    /// buffer let go of after sending it counts when the collector's answer
    /// on the next stream says it was not stored.
    pub dropped: AtomicU64,
    pub dropped_bytes: AtomicU64,
    /// Windows the collector acknowledged as refused (times far off, over
    /// its size limit): not stored.
    pub refused: AtomicU64,
    pub reconnects: AtomicU64,
    /// Windows waiting for an acknowledgement, and their encoded bytes.
    pub buffered: AtomicU64,
    pub buffered_bytes: AtomicU64,
    pub buffer_limit_bytes: AtomicU64,
    /// Streams the collector itself ended with `Unavailable`: its store
    /// failed, or it is shutting down.
    pub collector_unavailable: AtomicU64,
    /// Streams the collector itself ended with another error status: it
    /// refused what was sent (a bad Hello or window, a message too large,
    /// credentials it does not accept).
    pub collector_refused: AtomicU64,
}

impl PushStats {
    /// Counts an error status by what it says about the collector. Statuses
    /// tonic made from a transport error carry that error as their source;
    /// the ones the collector sent do not, and only those are counted.
    fn count_status(&self, status: &tonic::Status) {
        if std::error::Error::source(status).is_some() {
            return;
        }
        let counter = match status.code() {
            Code::Ok => return,
            Code::Unavailable => &self.collector_unavailable,
            _ => &self.collector_refused,
        };
        add(counter, 1);
    }
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// `http://`, `https://` or `unix://` address of the collector.
    pub target: String,
    pub tls: Option<ClientTls>,
    /// File holding the bearer token to present (read for each session).
    pub token_file: Option<PathBuf>,
    pub hello: pb::Hello,
    /// Windows kept while unacknowledged, at most, and their bytes.
    pub buffer: usize,
    pub buffer_bytes: usize,
    /// Largest gRPC message to send (the collector's `--max-message-bytes`).
    pub max_message_bytes: usize,
}

fn set(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::Relaxed);
}

fn add(a: &AtomicU64, v: u64) {
    a.fetch_add(v, Ordering::Relaxed);
}

fn keep(pending: &mut Pending, w: pb::Window, stats: &PushStats) {
    let kept = pending.push(w);
    if kept.dropped > 0 {
        add(&stats.dropped, kept.dropped);
        add(&stats.dropped_bytes, kept.dropped_bytes);
    }
    if kept.too_large {
        log::warn!(
            "a window of {} bytes is larger than the whole push buffer (--push-buffer-mib); dropped and counted",
            kept.dropped_bytes
        );
    }
    gauges(pending, stats);
}

fn gauges(pending: &Pending, stats: &PushStats) {
    set(&stats.buffered, pending.len() as u64);
    set(&stats.buffered_bytes, pending.bytes() as u64);
}

enum Ended {
    AgentStopped,
    /// The stream ended after at least one acknowledgement.
    Acked(String),
    Lost {
        why: String,
        code: Option<Code>,
    },
}

/// Runs until `windows` closes (the agent stops).
pub async fn run(
    cfg: SenderConfig,
    mut windows: mpsc::Receiver<pb::Window>,
    stats: Arc<PushStats>,
) {
    let mut pending = Pending::new(cfg.buffer, cfg.buffer_bytes);
    set(&stats.buffer_limit_bytes, cfg.buffer_bytes as u64);
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut chunk = cfg
        .max_message_bytes
        .saturating_sub(CHUNK_OVERHEAD)
        .max(MIN_CHUNK);
    // The last failure logged: one line per outage, and one more when the
    // reason changes (unreachable, then refused, then disk full...).
    let mut logged: Option<Option<Code>> = None;
    loop {
        let ended = session(&cfg, &mut windows, &mut pending, &stats, chunk).await;
        match ended {
            Ended::AgentStopped => return,
            Ended::Acked(why) => {
                add(&stats.reconnects, 1);
                backoff.reset();
                log::info!(
                    "collector {}: stream ended ({why}); reconnecting",
                    cfg.target
                );
                logged = None;
            }
            Ended::Lost { why, code } => {
                add(&stats.reconnects, 1);
                if code == Some(Code::OutOfRange) && chunk > MIN_CHUNK {
                    chunk = (chunk / 2).max(MIN_CHUNK);
                    log::warn!(
                        "collector {}: a message was too large for it; sending chunks of at most {chunk} bytes from now on (set --push-max-message-bytes to its --max-message-bytes)",
                        cfg.target
                    );
                }
                if logged != Some(code) {
                    let level = match code {
                        Some(Code::PermissionDenied | Code::Unauthenticated) => log::Level::Error,
                        _ => log::Level::Warn,
                    };
                    log::log!(
                        level,
                        "collector {}: {why}; retrying with backoff, keeping up to {} windows / {} MiB",
                        cfg.target,
                        cfg.buffer,
                        cfg.buffer_bytes >> 20
                    );
                    logged = Some(code);
                }
            }
        }
        // Wait out the backoff, still taking windows in.
        let sleep = tokio::time::sleep(backoff.next(fastrand::f64()));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                w = windows.recv() => match w {
                    Some(w) => keep(&mut pending, w, &stats),
                    None => return,
                },
            }
        }
    }
}

/// A window being sent: its bytes (kept even if the buffer drops it
/// meanwhile, so its chunks are never cut short) and the next chunk.
struct Sending {
    seq: u64,
    bytes: Arc<[u8]>,
    next_chunk: u32,
    chunks: u32,
}

impl Sending {
    fn new(e: &Encoded, chunk: usize) -> Self {
        let chunks = if e.bytes.len() <= chunk {
            0
        } else {
            e.bytes.len().div_ceil(chunk) as u32
        };
        Self {
            seq: e.seq,
            bytes: e.bytes.clone(),
            next_chunk: 0,
            chunks,
        }
    }

    /// The next message of this window, and whether it was the last.
    fn next(&mut self, chunk: usize) -> Result<(Msg, bool), prost::DecodeError> {
        if self.chunks == 0 {
            return Ok((Msg::Window(pb::Window::decode(&*self.bytes)?), true));
        }
        let i = self.next_chunk as usize;
        let data = &self.bytes[i * chunk..((i + 1) * chunk).min(self.bytes.len())];
        self.next_chunk += 1;
        let msg = Msg::Chunk(pb::WindowChunk {
            seq: self.seq,
            index: i as u32,
            count: self.chunks,
            total_bytes: self.bytes.len() as u64,
            data: data.to_vec(),
        });
        Ok((msg, self.next_chunk == self.chunks))
    }
}

/// Connects and opens the Push stream, Hello queued first.
async fn open(
    cfg: &SenderConfig,
    stats: &PushStats,
) -> Result<(mpsc::Sender<pb::PushRequest>, Streaming<pb::PushAck>), (String, Option<Code>)> {
    let bearer = match &cfg.token_file {
        Some(p) => Bearer::from_file(p).map_err(|e| (chain(&e), None))?,
        None => Bearer::none(),
    };
    let opts = ConnectOptions {
        connect_timeout: Some(OPEN_TIMEOUT),
        keepalive: Some(KEEPALIVE),
    };
    let channel = connect_with(&cfg.target, cfg.tls.as_ref(), &opts)
        .await
        .map_err(|e| (chain(&e), None))?;
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let hello = pb::PushRequest {
        msg: Some(Msg::Hello(cfg.hello.clone())),
    };
    // The queue is empty: the Hello always fits.
    let _ = tx.try_send(hello);
    let mut client = CollectorServiceClient::new(with_bearer(channel, bearer))
        .max_encoding_message_size(cfg.max_message_bytes.max(MIN_CHUNK + CHUNK_OVERHEAD));
    let acks = client
        .push(ReceiverStream::new(rx))
        .await
        .map_err(|s| {
            stats.count_status(&s);
            (format!("{:?}: {}", s.code(), s.message()), Some(s.code()))
        })?
        .into_inner();
    Ok((tx, acks))
}

/// One session: open the stream, then feed it what is pending and what
/// comes, until it ends.
async fn session(
    cfg: &SenderConfig,
    windows: &mut mpsc::Receiver<pb::Window>,
    pending: &mut Pending,
    stats: &PushStats,
    chunk: usize,
) -> Ended {
    let opening = tokio::time::timeout(OPEN_TIMEOUT, open(cfg, stats));
    tokio::pin!(opening);
    let (tx, mut acks) = loop {
        tokio::select! {
            r = &mut opening => match r {
                Ok(Ok(s)) => break s,
                Ok(Err((why, code))) => return Ended::Lost { why, code },
                Err(_) => return Ended::Lost {
                    why: format!("no answer within {} s (the connection or the stream hangs)", OPEN_TIMEOUT.as_secs()),
                    code: None,
                },
            },
            w = windows.recv() => match w {
                Some(w) => keep(pending, w, stats),
                None => return Ended::AgentStopped,
            },
        }
    };
    pending.new_stream();
    let mut last_sent = 0u64;
    let mut sending: Option<Sending> = None;
    // The first ack answers the Hello.
    let mut answered = false;
    let mut acked_any = false;
    // Since when an ack is awaited (something unacknowledged was sent).
    let mut waiting_since: Option<Instant> = None;
    loop {
        if sending.is_none() {
            sending = pending
                .send_after(last_sent)
                .map(|e| Sending::new(&e, chunk));
        }
        let ack_deadline = waiting_since.map(|t| t + ACK_TIMEOUT);
        tokio::select! {
            permit = tx.reserve(), if sending.is_some() => {
                let Ok(permit) = permit else {
                    return ended(acked_any, "the stream to the collector closed".into(), None);
                };
                let Some(s) = sending.as_mut() else { continue };
                let (msg, last) = match s.next(chunk) {
                    Ok(m) => m,
                    Err(e) => {
                        // Only the agent's own encoding is decoded here.
                        log::error!("push: window seq {} does not decode: {e}; skipped", s.seq);
                        last_sent = s.seq;
                        sending = None;
                        continue;
                    }
                };
                permit.send(pb::PushRequest { msg: Some(msg) });
                if last {
                    add(&stats.sent, 1);
                    if s.chunks > 0 {
                        add(&stats.sent_in_chunks, 1);
                    }
                    last_sent = s.seq;
                    sending = None;
                    waiting_since.get_or_insert_with(Instant::now);
                }
            }
            w = windows.recv() => {
                let Some(w) = w else { return Ended::AgentStopped };
                keep(pending, w, stats);
            }
            ack = acks.message() => match ack {
                Ok(Some(a)) => {
                    if !std::mem::replace(&mut answered, true) {
                        let lost = pending.settle_earlier_streams(a.acked_seq);
                        add(&stats.dropped, lost);
                    }
                    let n = pending.ack(a.acked_seq, a.refused_windows);
                    add(&stats.acked, n.saturating_sub(a.refused_windows));
                    if a.refused_windows > 0 {
                        add(&stats.refused, a.refused_windows);
                        log::warn!(
                            "collector {} refused {} window(s), counted as lost: {}",
                            cfg.target,
                            a.refused_windows,
                            sockeye_proto::text::escape(&a.refused_reason)
                        );
                    }
                    gauges(pending, stats);
                    // Progress is a window let go of, not the ack of what
                    // was stored before (the answer to the Hello).
                    acked_any |= n > 0;
                    waiting_since = (a.acked_seq < last_sent).then(Instant::now);
                }
                Ok(None) => return ended(acked_any, "the collector closed the stream".into(), None),
                Err(s) => {
                    stats.count_status(&s);
                    if let Some(seq) = invalid_window(&s) {
                        // The collector will never take this window: keep
                        // it and the stream would fail on it forever.
                        pending.ack(seq, 1);
                        add(&stats.refused, 1);
                        gauges(pending, stats);
                        log::error!(
                            "collector {} refused window seq {seq} as invalid, counted as lost: {}",
                            cfg.target,
                            sockeye_proto::text::escape(s.message())
                        );
                    }
                    return ended(acked_any, format!("{:?}: {}", s.code(), s.message()), Some(s.code()));
                }
            },
            _ = sleep_until(ack_deadline) => {
                return Ended::Lost {
                    why: format!("no acknowledgement within {} s of sending", ACK_TIMEOUT.as_secs()),
                    code: None,
                };
            }
        }
    }
}

/// The seq of the window an `InvalidArgument` status names (the collector
/// says `window seq N: ...`).
fn invalid_window(s: &tonic::Status) -> Option<u64> {
    if s.code() != Code::InvalidArgument {
        return None;
    }
    s.message()
        .strip_prefix("window seq ")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A session that let go of windows ends `Acked` (backoff starts over),
/// unless its status says the next one will fail the same way.
fn ended(acked_any: bool, why: String, code: Option<Code>) -> Ended {
    let refused = matches!(
        code,
        Some(
            Code::PermissionDenied
                | Code::Unauthenticated
                | Code::OutOfRange
                | Code::InvalidArgument
        )
    );
    if acked_any && !refused {
        Ended::Acked(why)
    } else {
        Ended::Lost { why, code }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_window_is_named_by_the_status() {
        let s = tonic::Status::invalid_argument(
            "window seq 42: start_unix_ms 5 is after end_unix_ms 4",
        );
        assert_eq!(invalid_window(&s), Some(42));
        assert_eq!(
            invalid_window(&tonic::Status::invalid_argument("Hello.node must be ...")),
            None
        );
        assert_eq!(
            invalid_window(&tonic::Status::unavailable("window seq 1: x")),
            None
        );
    }

    #[test]
    fn a_window_too_large_for_one_message_goes_in_chunks_that_join_back() {
        let w = pb::Window {
            seq: 9,
            node: "n".repeat(300_000),
            ..Default::default()
        };
        let mut p = Pending::new(1, 1 << 20);
        p.push(w.clone());
        let e = p.send_after(0).unwrap();
        let mut s = Sending::new(&e, 100_000);
        assert_eq!(s.chunks, 4);
        let mut joined = Vec::new();
        let mut n = 0;
        loop {
            let (msg, last) = s.next(100_000).unwrap();
            let Msg::Chunk(c) = msg else {
                panic!("a chunk")
            };
            assert_eq!((c.seq, c.index, c.count), (9, n, 4));
            joined.extend_from_slice(&c.data);
            n += 1;
            if last {
                break;
            }
        }
        assert_eq!(pb::Window::decode(joined.as_slice()).unwrap(), w);
        // One that fits goes whole.
        let mut small = Sending::new(&e, 1 << 20);
        assert!(matches!(small.next(1 << 20).unwrap(), (Msg::Window(x), true) if x == w));
    }
}
