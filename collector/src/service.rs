//! The CollectorService gRPC handlers: who is calling and whether they may
//! (`auth`, `limits`), request validation and the mapping of errors to
//! statuses; the work is in `ingest`, `query`, `findings` and `watch`.

use std::{sync::Arc, time::Instant};

use sockeye_proto::v1::{self as pb, collector_service_server::CollectorService};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    auth::Caller,
    collector::{unix_ms_now, Shared},
    filter::Filter,
    findings::{self, FindingsQuery},
    ingest::{self, AckStream},
    limits::{Kind, Refused, Slot},
    query::{self, QueryError, ScanCounts, ScanError, TopQuery},
    stats::Counters,
    store::StoreError,
    watch::WatchStream,
};

/// The service; cheap to clone.
#[derive(Clone)]
pub struct CollectorApi {
    shared: Arc<Shared>,
}

impl CollectorApi {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Who calls, if they may read.
    async fn reader<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.shared
            .auth
            .reader(request.metadata(), request.extensions())
            .await
    }

    /// A place of `kind` for `caller` among its streams or queries.
    fn slot(&self, caller: &Caller, kind: Kind) -> Result<Slot, Status> {
        self.shared
            .per_caller
            .acquire(&caller.key(), kind, Instant::now())
            .map_err(|r| {
                let c = &self.shared.counters;
                match r {
                    Refused::Busy { .. } => Counters::add(&c.caller_limit_refused, 1),
                    Refused::Budget { .. } => Counters::add(&c.query_cost_refused, 1),
                }
                log::debug!("refused: {r}");
                Status::resource_exhausted(sockeye_proto::text::escape(&r.to_string()).into_owned())
            })
    }

    /// Runs a query of `caller` within its limits and charges what it read.
    async fn query<T>(
        &self,
        caller: &Caller,
        run: impl std::future::Future<Output = Result<(T, ScanCounts), ScanError>>,
    ) -> Result<T, Status> {
        let _slot = self.slot(caller, Kind::Query)?;
        let result = run.await;
        let key = caller.key();
        let per_caller = &self.shared.per_caller;
        match result {
            Ok((reply, counts)) => {
                per_caller.charge(&key, counts.read, Instant::now());
                Counters::add(&self.shared.counters.store_corrupt_records, counts.corrupt);
                Ok(reply)
            }
            Err(ScanError::TooManyWindows { max }) => {
                per_caller.charge(&key, max, Instant::now());
                Counters::add(&self.shared.counters.query_cost_refused, 1);
                Err(Status::resource_exhausted(
                    ScanError::TooManyWindows { max }.to_string(),
                ))
            }
            Err(ScanError::Store(e)) => Err(store_status(e)),
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

impl From<QueryError> for Status {
    fn from(e: QueryError) -> Self {
        invalid(e)
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Closed => Status::unavailable("the collector is shutting down"),
        StoreError::Reopening => Status::unavailable(e.to_string()),
        e if e.is_unreachable() => {
            log::error!("query: {e}");
            Status::unavailable(format!("store: {e}; retry in a moment"))
        }
        e => {
            log::error!("query: {e}");
            Status::internal(format!("store: {e}"))
        }
    }
}

#[tonic::async_trait]
impl CollectorService for CollectorApi {
    type PushStream = AckStream;

    async fn push(
        &self,
        request: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Status::unavailable("the collector is shutting down"));
        }
        let caller = self
            .shared
            .auth
            .pusher(request.metadata(), request.extensions())
            .await?;
        let slot = self.slot(&caller, Kind::Push)?;
        Ok(Response::new(ingest::start(
            self.shared.clone(),
            caller,
            slot,
            request.into_inner(),
        )))
    }

    async fn list_findings(
        &self,
        request: Request<pb::ClusterFindingsRequest>,
    ) -> Result<Response<pb::ClusterFindingsReply>, Status> {
        let caller = self.reader(&request).await?;
        let q = FindingsQuery::parse(request.get_ref(), unix_ms_now()).map_err(invalid)?;
        let max = self.shared.config.caller_limits.max_query_windows;
        let silences = self.shared.silences();
        let reply = self
            .query(
                &caller,
                findings::list(self.shared.store.as_ref(), &q, max, &silences),
            )
            .await?;
        Ok(Response::new(reply))
    }

    async fn query_top(
        &self,
        request: Request<pb::QueryTopRequest>,
    ) -> Result<Response<pb::QueryTopResponse>, Status> {
        let caller = self.reader(&request).await?;
        let q = TopQuery::parse(request.get_ref())?;
        let max = self.shared.config.caller_limits.max_query_windows;
        let reply = self
            .query(
                &caller,
                query::query_top(self.shared.store.as_ref(), &q, max),
            )
            .await?;
        Ok(Response::new(reply))
    }

    async fn get_cluster_snapshot(
        &self,
        request: Request<pb::GetClusterSnapshotRequest>,
    ) -> Result<Response<pb::ClusterSnapshot>, Status> {
        let caller = self.reader(&request).await?;
        let filter = Filter::parse(request.get_ref().filter.as_ref()).map_err(invalid)?;
        let store = self.shared.store.clone();
        let windows = self
            .query(&caller, async move {
                let page = store.latest_per_node().await?;
                let counts = ScanCounts {
                    corrupt: page.corrupt,
                    read: page.windows.len() as u64,
                    rollup_rows: 0,
                };
                Ok((page.windows, counts))
            })
            .await?;
        Ok(Response::new(query::cluster_snapshot(&filter, windows)))
    }

    type WatchWindowsStream = WatchStream;

    async fn watch_windows(
        &self,
        request: Request<pb::WatchWindowsRequest>,
    ) -> Result<Response<Self::WatchWindowsStream>, Status> {
        let caller = self.reader(&request).await?;
        let filter = Filter::parse(request.get_ref().filter.as_ref()).map_err(invalid)?;
        let slot = self.slot(&caller, Kind::Watch)?;
        let stream = self
            .shared
            .hub
            .subscribe(filter, self.shared.shutdown.clone())?
            .holding(slot);
        Ok(Response::new(stream))
    }
}
