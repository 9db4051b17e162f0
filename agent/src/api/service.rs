//! `sockeye.v1.AgentService`: snapshots are built by the agent's own loop
//! (which owns the aggregates) on request; traces come from the shared
//! broadcast queue.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use futures_util::{stream, Stream};
use sockeye_proto::v1::{self as pb, agent_service_server::AgentService};
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::{filter::ApiFilter, traces::Trace};

/// Work the agent's loop does for the API.
pub enum ApiRequest {
    Snapshot {
        filter: ApiFilter,
        reply: oneshot::Sender<pb::Snapshot>,
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
        }
    }
}

type TraceStream = Pin<Box<dyn Stream<Item = Result<pb::TraceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        let filter = ApiFilter::parse(request.get_ref().filter.as_ref(), &self.node)?;
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(ApiRequest::Snapshot { filter, reply })
            .await
            .map_err(|_| Status::unavailable("the agent is shutting down"))?;
        answer
            .await
            .map(Response::new)
            .map_err(|_| Status::unavailable("the agent is shutting down"))
    }

    // TODO(findings): being built; replaced by the agent's findings.
    async fn list_findings(
        &self,
        _request: Request<pb::ListFindingsRequest>,
    ) -> Result<Response<pb::FindingsReply>, Status> {
        Err(Status::unimplemented("findings are not served yet"))
    }

    type WatchFindingsStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::FindingUpdate, Status>> + Send>,
    >;

    async fn watch_findings(
        &self,
        _request: Request<pb::ListFindingsRequest>,
    ) -> Result<Response<Self::WatchFindingsStream>, Status> {
        Err(Status::unimplemented("findings are not served yet"))
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
