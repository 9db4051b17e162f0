//! The CollectorService gRPC handlers: request validation and the mapping
//! of errors to statuses; the work is in `ingest`, `query`, `findings` and
//! `watch`.

use std::sync::Arc;

use sockeye_proto::v1::{self as pb, collector_service_server::CollectorService};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    collector::{unix_ms_now, Shared},
    filter::Filter,
    findings::{self, FindingsQuery},
    ingest::{self, AckStream},
    query::{self, QueryError, TopQuery},
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
        Ok(Response::new(ingest::start(
            self.shared.clone(),
            request.into_inner(),
        )))
    }

    async fn list_findings(
        &self,
        request: Request<pb::ClusterFindingsRequest>,
    ) -> Result<Response<pb::ClusterFindingsReply>, Status> {
        let q = FindingsQuery::parse(request.get_ref(), unix_ms_now()).map_err(invalid)?;
        let (reply, counts) = findings::list(self.shared.store.as_ref(), &q)
            .await
            .map_err(store_status)?;
        Counters::add(&self.shared.counters.store_corrupt_records, counts.corrupt);
        Ok(Response::new(reply))
    }

    async fn query_top(
        &self,
        request: Request<pb::QueryTopRequest>,
    ) -> Result<Response<pb::QueryTopResponse>, Status> {
        let q = TopQuery::parse(request.get_ref())?;
        let (resp, counts) = query::query_top(self.shared.store.as_ref(), &q)
            .await
            .map_err(store_status)?;
        Counters::add(&self.shared.counters.store_corrupt_records, counts.corrupt);
        Ok(Response::new(resp))
    }

    async fn get_cluster_snapshot(
        &self,
        request: Request<pb::GetClusterSnapshotRequest>,
    ) -> Result<Response<pb::ClusterSnapshot>, Status> {
        let filter = Filter::parse(request.get_ref().filter.as_ref()).map_err(invalid)?;
        let page = self
            .shared
            .store
            .latest_per_node()
            .await
            .map_err(store_status)?;
        Counters::add(&self.shared.counters.store_corrupt_records, page.corrupt);
        Ok(Response::new(query::cluster_snapshot(
            &filter,
            page.windows,
        )))
    }

    type WatchWindowsStream = WatchStream;

    async fn watch_windows(
        &self,
        request: Request<pb::WatchWindowsRequest>,
    ) -> Result<Response<Self::WatchWindowsStream>, Status> {
        let filter = Filter::parse(request.get_ref().filter.as_ref()).map_err(invalid)?;
        let stream = self
            .shared
            .hub
            .subscribe(filter, self.shared.shutdown.clone())?;
        Ok(Response::new(stream))
    }
}
