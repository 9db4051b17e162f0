//! The insert feed of a store shared by replicas: which windows any replica
//! inserted since a time, so each replica can follow the others' windows
//! into its live streams ([`crate::follow`]).

use sockeye_proto::v1::Window;

use super::StoreError;

/// One inserted window, as the feed lists it (no body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// When the inserting replica stamped the row, on its own clock, just
    /// before the insert (so it is visible only some time later).
    pub inserted_unix_ms: i64,
    /// Day (since 1970, UTC) of the window's end: where its row is.
    pub end_day: u16,
    pub agent_id: String,
    pub seq: u64,
}

/// Windows as replicas insert them. Only a store that several collectors
/// share has one ([`super::Store::feed`]).
#[tonic::async_trait]
pub trait Feed: Send + Sync {
    /// Windows inserted at or after `since_unix_ms`, in
    /// `(inserted_unix_ms, agent_id, seq)` order, after `after`, at most
    /// `limit`. A window two replicas inserted at once is listed twice.
    async fn inserted(
        &self,
        since_unix_ms: i64,
        after: Option<&Inserted>,
        limit: usize,
    ) -> Result<Vec<Inserted>, StoreError>;

    /// The windows of `keys` that are still stored, each once, in any
    /// order, and how many rows could not be decoded.
    async fn windows(&self, keys: &[Inserted]) -> Result<(Vec<Window>, u64), StoreError>;
}
