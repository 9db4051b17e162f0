//! `sockeye.v1.AgentService`: snapshots and findings are taken by the
//! agent's own loop (which owns the aggregates) on request; traces and
//! finding updates come from shared broadcast queues.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use futures_util::{stream, Stream, StreamExt};
use sockeye_proto::v1::{self as pb, agent_service_server::AgentService};
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::{filter::ApiFilter, findings, traces::Trace};

/// Work the agent's loop does for the API.
pub enum ApiRequest {
    Snapshot {
        filter: ApiFilter,
        reply: oneshot::Sender<pb::Snapshot>,
    },
    Findings {
        filter: ApiFilter,
        include_resolved: bool,
        reply: oneshot::Sender<pb::FindingsReply>,
    },
    /// The findings now and a watcher of their changes from then on, taken
    /// together so that no change falls in between.
    WatchFindings {
        filter: ApiFilter,
        include_resolved: bool,
        reply: oneshot::Sender<(Vec<pb::Finding>, findings::Watch)>,
    },
}

/// Trace kinds a watcher can ask for.
const KINDS: [&str; 2] = ["tcp", "dns"];

#[derive(Clone)]
pub struct AgentApi {
    requests: mpsc::Sender<ApiRequest>,
    traces: broadcast::Sender<Arc<Trace>>,
    node: String,
    /// Traces that watchers missed because they read too slowly, all
    /// watchers together.
    pub missed: Arc<AtomicU64>,
    /// False with `--no-findings`: the findings calls say so rather than
    /// answer an empty list that reads as "nothing wrong".
    pub findings_enabled: bool,
}

impl AgentApi {
    pub fn new(
        requests: mpsc::Sender<ApiRequest>,
        traces: broadcast::Sender<Arc<Trace>>,
        node: String,
    ) -> Self {
        Self {
            requests,
            traces,
            node,
            missed: Arc::new(AtomicU64::new(0)),
            findings_enabled: true,
        }
    }
}

type TraceStream = Pin<Box<dyn Stream<Item = Result<pb::TraceEvent, Status>> + Send>>;
type FindingStream = Pin<Box<dyn Stream<Item = Result<pb::FindingUpdate, Status>> + Send>>;

fn stopping() -> Status {
    Status::unavailable("the agent is shutting down")
}

impl AgentApi {
    /// Hands a request to the agent's loop.
    async fn ask(&self, request: ApiRequest) -> Result<(), Status> {
        self.requests.send(request).await.map_err(|_| stopping())
    }

    fn findings_on(&self) -> Result<(), Status> {
        if self.findings_enabled {
            Ok(())
        } else {
            Err(Status::failed_precondition(
                "finding detection is off on this agent (--no-findings)",
            ))
        }
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        let filter = ApiFilter::parse(request.get_ref().filter.as_ref(), &self.node)?;
        let (reply, answer) = oneshot::channel();
        self.ask(ApiRequest::Snapshot { filter, reply }).await?;
        answer.await.map(Response::new).map_err(|_| stopping())
    }

    async fn list_findings(
        &self,
        request: Request<pb::ListFindingsRequest>,
    ) -> Result<Response<pb::FindingsReply>, Status> {
        let req = request.into_inner();
        let filter = ApiFilter::parse(req.filter.as_ref(), &self.node)?;
        self.findings_on()?;
        let (reply, answer) = oneshot::channel();
        self.ask(ApiRequest::Findings {
            filter,
            include_resolved: req.include_resolved,
            reply,
        })
        .await?;
        answer.await.map(Response::new).map_err(|_| stopping())
    }

    type WatchFindingsStream = FindingStream;

    async fn watch_findings(
        &self,
        request: Request<pb::ListFindingsRequest>,
    ) -> Result<Response<FindingStream>, Status> {
        let req = request.into_inner();
        let filter = ApiFilter::parse(req.filter.as_ref(), &self.node)?;
        self.findings_on()?;
        let (reply, answer) = oneshot::channel();
        self.ask(ApiRequest::WatchFindings {
            filter,
            include_resolved: req.include_resolved,
            reply,
        })
        .await?;
        let (now, watch) = answer.await.map_err(|_| stopping())?;
        let first = stream::iter(now.into_iter().map(|f| {
            Ok(pb::FindingUpdate {
                finding: Some(f),
                missed_before: 0,
            })
        }));
        let changes = stream::unfold(watch, |mut w| async move {
            let update = w.next().await?;
            Some((Ok(update), w))
        });
        Ok(Response::new(Box::pin(first.chain(changes))))
    }

    type WatchTracesStream = TraceStream;

    async fn watch_traces(
        &self,
        request: Request<pb::WatchTracesRequest>,
    ) -> Result<Response<TraceStream>, Status> {
        let req = request.into_inner();
        let filter = ApiFilter::parse(req.filter.as_ref(), &self.node)?;
        if let Some(bad) = req.kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
            return Err(Status::invalid_argument(format!(
                "unknown trace kind {bad:?}; known: {}",
                KINDS.join(", ")
            )));
        }
        let kinds = req.kinds;
        let state = Watch {
            rx: self.traces.subscribe(),
            filter,
            kinds,
            missed: 0,
            missed_total: self.missed.clone(),
        };
        let stream = stream::unfold(state, |mut w| async move {
            let event = w.next().await?;
            Some((Ok(event), w))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One watcher's position in the trace queue.
struct Watch {
    rx: broadcast::Receiver<Arc<Trace>>,
    filter: ApiFilter,
    kinds: Vec<String>,
    /// Missed since the last trace sent to this watcher.
    missed: u64,
    missed_total: Arc<AtomicU64>,
}

impl Watch {
    /// The next trace this watcher wants; None when the agent stops.
    async fn next(&mut self) -> Option<pb::TraceEvent> {
        loop {
            match self.rx.recv().await {
                Ok(t) => {
                    let wanted = (self.kinds.is_empty() || self.kinds.iter().any(|k| k == t.kind))
                        && self.filter.workload(&t.workload)
                        && self.filter.destination(t.remote, t.name.as_deref());
                    if wanted {
                        let mut event = t.event.clone();
                        event.missed_before = std::mem::take(&mut self.missed);
                        return Some(event);
                    }
                }
                // Counted before filtering: the queue does not know which
                // of the lost traces this watcher would have wanted.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.missed += n;
                    self.missed_total.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
