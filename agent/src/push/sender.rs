//! Keeps windows until the collector acknowledges them, and streams them to
//! it: reconnects with backoff, resends what was not acknowledged, and when
//! its bounded buffer is full drops the oldest window and says so in the
//! next one it sends (`dropped_windows_before`).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sockeye_proto::{
    connect::{connect, ClientTls},
    v1::{self as pb, collector_service_client::CollectorServiceClient, push_request::Msg},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Counters of the pusher, for the agent's stats.
#[derive(Debug, Default)]
pub struct PushStats {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Windows dropped because the buffer was full (the collector was away).
    pub dropped: AtomicU64,
    pub reconnects: AtomicU64,
    /// Windows waiting for an acknowledgement.
    pub buffered: AtomicU64,
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
            tonic::Code::Ok => return,
            tonic::Code::Unavailable => &self.collector_unavailable,
            _ => &self.collector_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// `http://`, `https://` or `unix://` address of the collector.
    pub target: String,
    pub tls: Option<ClientTls>,
    pub hello: pb::Hello,
    /// Windows kept while unacknowledged.
    pub buffer: usize,
}

/// The bounded buffer of unacknowledged windows.
#[derive(Debug, Default)]
pub struct Pending {
    windows: VecDeque<pb::Window>,
    max: usize,
    /// Dropped and not yet reported in a window that was sent.
    unreported_drops: u64,
}

impl Pending {
    pub fn new(max: usize) -> Self {
        Self {
            windows: VecDeque::new(),
            max: max.max(1),
            unreported_drops: 0,
        }
    }

    /// Adds a new window, dropping the oldest when full. Returns how many
    /// were dropped, and stamps the window with every drop not yet reported.
    pub fn push(&mut self, mut w: pb::Window) -> u64 {
        let mut dropped = 0;
        while self.windows.len() >= self.max {
            if let Some(old) = self.windows.pop_front() {
                // A dropped window that carried a report passes it on.
                self.unreported_drops += 1 + old.dropped_windows_before;
                dropped += 1;
            }
        }
        w.dropped_windows_before += std::mem::take(&mut self.unreported_drops);
        self.windows.push_back(w);
        dropped
    }

    /// Forgets every window up to `seq` (the collector has stored them).
    pub fn ack(&mut self, seq: u64) -> u64 {
        let before = self.windows.len();
        self.windows.retain(|w| w.seq > seq);
        (before - self.windows.len()) as u64
    }

    pub fn iter(&self) -> impl Iterator<Item = &pb::Window> {
        self.windows.iter()
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// Runs until `windows` closes (the agent stops).
pub async fn run(
    cfg: SenderConfig,
    mut windows: mpsc::Receiver<pb::Window>,
    stats: Arc<PushStats>,
) {
    let mut pending = Pending::new(cfg.buffer);
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    loop {
        match session(&cfg, &mut windows, &mut pending, &stats).await {
            Ended::AgentStopped => return,
            Ended::Lost(why) => {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                // One warning per outage, not one per retry.
                if !warned {
                    log::warn!(
                        "collector {}: {why}; retrying with backoff, keeping up to {} windows",
                        cfg.target,
                        cfg.buffer
                    );
                    warned = true;
                }
            }
            Ended::Acked => {
                backoff = BACKOFF_MIN;
                if warned {
                    log::info!("collector {}: connected again", cfg.target);
                    warned = false;
                }
                continue;
            }
        }
        // Wait out the backoff, still taking windows in.
        let sleep = tokio::time::sleep(backoff);
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
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum Ended {
    AgentStopped,
    /// The stream failed after at least one acknowledgement: retry at once.
    Acked,
    Lost(String),
}

fn keep(pending: &mut Pending, w: pb::Window, stats: &PushStats) {
    let dropped = pending.push(w);
    if dropped > 0 {
        stats.dropped.fetch_add(dropped, Ordering::Relaxed);
    }
    stats
        .buffered
        .store(pending.len() as u64, Ordering::Relaxed);
}

/// One connection: Hello, everything pending, then new windows as they
/// come; returns when the stream ends.
async fn session(
    cfg: &SenderConfig,
    windows: &mut mpsc::Receiver<pb::Window>,
    pending: &mut Pending,
    stats: &PushStats,
) -> Ended {
    let channel = match connect(&cfg.target, cfg.tls.as_ref()).await {
        Ok(c) => c,
        Err(e) => return Ended::Lost(chain(&e)),
    };
    let (tx, rx) = mpsc::channel(cfg.buffer.max(1) + 1);
    let send = |tx: &mpsc::Sender<pb::PushRequest>, msg| {
        // The channel holds the whole buffer plus the Hello: never full.
        let _ = tx.try_send(pb::PushRequest { msg: Some(msg) });
    };
    send(&tx, Msg::Hello(cfg.hello.clone()));
    let mut last_sent = 0;
    for w in pending.iter() {
        send(&tx, Msg::Window(w.clone()));
        last_sent = w.seq;
        stats.sent.fetch_add(1, Ordering::Relaxed);
    }
    let mut acks = match CollectorServiceClient::new(channel)
        .push(ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => {
            stats.count_status(&status);
            return Ended::Lost(format!("{}: {}", status.code(), status.message()));
        }
    };
    let mut acked_any = false;
    loop {
        tokio::select! {
            w = windows.recv() => {
                let Some(w) = w else { return Ended::AgentStopped };
                keep(pending, w, stats);
                // Send what is pending and not sent on this connection (the
                // newest; or all of them if older ones were dropped).
                let since = last_sent;
                for w in pending.iter().filter(|w| w.seq > since) {
                    if tx.try_send(pb::PushRequest { msg: Some(Msg::Window(w.clone())) }).is_err() {
                        return Ended::Lost("the stream to the collector is stuck".into());
                    }
                    last_sent = w.seq;
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            ack = acks.message() => match ack {
                Ok(Some(a)) => {
                    let n = pending.ack(a.acked_seq);
                    stats.acked.fetch_add(n, Ordering::Relaxed);
                    stats.buffered.store(pending.len() as u64, Ordering::Relaxed);
                    acked_any = true;
                }
                Ok(None) => return ended(acked_any, "the collector closed the stream".into()),
                Err(s) => {
                    stats.count_status(&s);
                    return ended(acked_any, format!("{}: {}", s.code(), s.message()));
                }
            },
        }
    }
}

fn ended(acked_any: bool, why: String) -> Ended {
    if acked_any {
        log::info!("collector stream ended ({why}); reconnecting");
        Ended::Acked
    } else {
        Ended::Lost(why)
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

    fn w(seq: u64) -> pb::Window {
        pb::Window {
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn full_buffer_drops_the_oldest_and_reports_it_once() {
        let mut p = Pending::new(2);
        assert_eq!(p.push(w(1)), 0);
        assert_eq!(p.push(w(2)), 0);
        assert_eq!(p.push(w(3)), 1);
        let seqs: Vec<(u64, u64)> = p
            .iter()
            .map(|w| (w.seq, w.dropped_windows_before))
            .collect();
        assert_eq!(seqs, vec![(2, 0), (3, 1)]);
        // Window 3 carried the report; when it is dropped too, the report
        // moves on with its own drop.
        p.push(w(4));
        p.push(w(5));
        let seqs: Vec<(u64, u64)> = p
            .iter()
            .map(|w| (w.seq, w.dropped_windows_before))
            .collect();
        assert_eq!(seqs, vec![(4, 1), (5, 2)], "1 + 1 for windows 1, 2 and 3");
        assert_eq!(p.ack(4), 1);
        assert_eq!(p.len(), 1);
    }
}
