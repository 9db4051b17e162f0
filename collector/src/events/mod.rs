//! Kubernetes Events for findings: each finding that opens or resolves at
//! the collector is written as an `events.k8s.io/v1` Event on its pod, so
//! `kubectl describe pod` and `kubectl get events` show it where an SRE
//! already looks.
//!
//! Only the collector writes them (agents never do), once per change: the
//! writer follows the windows as they are stored ([`track`]), turns each
//! change into an Event ([`write`]), and repeats into a series update,
//! under a rate limit ([`series`]). A write that fails is counted and
//! logged, not retried: Events are best-effort in Kubernetes too, and the
//! finding stays in ListFindings and `/ui` whatever happens to its Event.
//!
//! The collector's ServiceAccount needs `create` and `patch` on
//! `events.k8s.io` `events` in the namespaces of the pods it reports on
//! (`deploy/kustomize/base/collector-rbac.yaml`).

pub mod series;
pub mod track;
pub mod write;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sockeye_proto::v1 as pb;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{
    collector::{unix_ms_now, Shared},
    findings::{self, FindingsQuery},
    stats::Counters,
};
use series::{Series, TokenBucket, Write};
use track::{Tracker, Transition};
use write::{Patched, Planned, Writer};

/// One API call may take this long before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one log line per kind of trouble this often; the rest is counted.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Settings of the Event writer.
#[derive(Clone)]
pub struct EventsConfig {
    /// The client of the cluster to write to (the one TokenReview uses).
    pub client: kube::Client,
    /// Writes (creates and series updates) a minute, on average; as many
    /// at once.
    pub per_minute: u32,
    /// `reportingInstance`: which collector replica wrote the Event.
    pub instance: String,
}

impl std::fmt::Debug for EventsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsConfig")
            .field("per_minute", &self.per_minute)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

struct State {
    shared: Arc<Shared>,
    writer: Writer,
    instance: String,
    tracker: Tracker,
    series: Series,
    bucket: TokenBucket,
    /// Makes Event names unique within one nanosecond.
    seq: u128,
    last_log: Option<Instant>,
}

/// Follows stored windows until shutdown, writing an Event for each
/// change. `rx` must be subscribed before the store is read for the
/// findings already open, so no window falls between the two.
pub(crate) async fn run(
    shared: Arc<Shared>,
    cfg: EventsConfig,
    mut rx: broadcast::Receiver<Arc<pb::Window>>,
) {
    let mut st = State {
        writer: Writer::new(cfg.client),
        instance: cfg.instance,
        tracker: Tracker::default(),
        series: Series::default(),
        bucket: TokenBucket::new(cfg.per_minute, Instant::now()),
        seq: 0,
        last_log: None,
        shared,
    };
    st.seed().await;
    log::info!(
        "events: writing Kubernetes Events for findings (at most {} a minute, as {:?}); {} open findings already written",
        cfg.per_minute,
        st.instance,
        st.tracker.open()
    );
    loop {
        let w = tokio::select! {
            _ = st.shared.shutdown.cancelled() => return,
            w = rx.recv() => w,
        };
        match w {
            Ok(w) => {
                let untracked = st.tracker.untracked;
                let changes = st.tracker.window(&w);
                let c = &st.shared.counters;
                Counters::add(&c.events_untracked, st.tracker.untracked - untracked);
                for t in changes {
                    st.record(t).await;
                }
            }
            Err(RecvError::Lagged(n)) => {
                // The findings those windows carried are still carried by
                // the node's next window, so opens are seen late, not lost;
                // a resolution is inferred from the finding's absence.
                Counters::add(&st.shared.counters.events_windows_missed, n);
                st.warn(&format!("events: the writer fell behind and skipped {n} windows; their changes are taken from later windows"));
            }
            Err(RecvError::Closed) => return,
        }
    }
}

impl State {
    /// Findings already open in the store were written before this
    /// collector started (or by a replica): not written again.
    async fn seed(&mut self) {
        let shared = &self.shared;
        let q = match FindingsQuery::parse(&pb::ClusterFindingsRequest::default(), unix_ms_now()) {
            Ok(q) => q,
            Err(e) => return log::error!("events: cannot read open findings: {e}"),
        };
        let max = shared.config.caller_limits.max_query_windows;
        match findings::list(shared.store.as_ref(), &q, max, &shared.silences()).await {
            Ok((reply, _)) => {
                for f in reply.findings.into_iter().flat_map(|m| m.findings) {
                    self.tracker.seed(f);
                }
            }
            Err(e) => log::warn!(
                "events: cannot read the findings open at start-up ({e}); Events may be written again for them"
            ),
        }
    }

    async fn record(&mut self, t: Transition) {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.seq = self.seq.wrapping_add(1);
        let pod = t.finding.subject.as_ref().map_or("", |w| w.pod.as_str());
        let name = write::event_name(pod, now_ns.wrapping_add(self.seq));
        let c = self.shared.counters.clone();
        let Some(Planned { key, mut event }) = write::plan(&t, &self.instance, name) else {
            Counters::add(&c.events_skipped_no_pod, 1);
            return;
        };
        let now = Instant::now();
        if !self.bucket.take(now) {
            Counters::add(&c.events_rate_limited, 1);
            self.warn(&format!(
                "events: rate limit reached (--events-per-minute); not written: {} on {}/{}",
                key.reason, key.namespace, key.pod
            ));
            return;
        }
        let new_name = event.metadata.name.clone().unwrap_or_default();
        let write = self.series.observe(&key, now, new_name);
        if let Write::Patch { name, count } = write {
            let patched = tokio::time::timeout(
                CALL_TIMEOUT,
                self.writer
                    .patch_series(&key.namespace, &name, count, t.at_unix_ms),
            )
            .await;
            match patched {
                Ok(Ok(Patched::Yes)) => return Counters::add(&c.events_updated, 1),
                Ok(Ok(Patched::Gone)) => {
                    // Expired or deleted: this occurrence starts a new one.
                    self.series.forget(&key);
                    let name = event.metadata.name.clone().unwrap_or_default();
                    self.series.observe(&key, now, name);
                }
                Ok(Err(e)) => return self.failed(&key, &e.to_string()),
                Err(_) => return self.failed(&key, "the API server did not answer in time"),
            }
        }
        event.series = None;
        match tokio::time::timeout(CALL_TIMEOUT, self.writer.create(&event)).await {
            Ok(Ok(())) => Counters::add(&c.events_written, 1),
            Ok(Err(e)) => self.failed(&key, &e.to_string()),
            Err(_) => self.failed(&key, "the API server did not answer in time"),
        }
    }

    fn failed(&mut self, key: &series::SeriesKey, why: &str) {
        self.series.forget(key);
        Counters::add(&self.shared.counters.events_failed, 1);
        self.warn(&format!(
            "events: cannot write {} on pod {}/{}: {why} (the collector's ServiceAccount needs create and patch on events.k8s.io events there)",
            key.reason, key.namespace, key.pod
        ));
    }

    fn warn(&mut self, what: &str) {
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY)
        {
            self.last_log = Some(now);
            log::warn!("{what} (more in the next 30 s are only counted)");
        }
    }
}
