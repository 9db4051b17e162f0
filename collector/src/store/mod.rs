//! Where windows are kept: the [`Store`] trait (the seam for scaling past one
//! machine), its embedded, durable implementation on redb (the default) and
//! one on ClickHouse shared by collector replicas.
//!
//! A store only has to do five things, all keyed so that several collector
//! replicas could share one store: put a window idempotently by
//! `(agent_id, seq)`, tell an agent's highest stored seq, scan windows by end
//! time in pages, return each node's latest window, and delete what ended
//! before a cutoff.

pub mod clickhouse;
pub mod feed;
pub(crate) mod health;
mod redb_store;

use std::ops::RangeInclusive;

use sockeye_proto::v1::Window;

pub use clickhouse::{ClickHouseStore, ClickHouseUrl};
pub use feed::{Feed, Inserted};
pub use redb_store::RedbStore;

/// Name of the store's file inside the data directory.
pub const DB_FILE: &str = "collector.redb";

/// Identity and time position of a stored window. Windows sort by end time
/// first, so a time-range scan is one contiguous range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WindowKey {
    pub end_unix_ms: i64,
    pub agent_id: String,
    pub seq: u64,
}

/// Whether [`Store::put`] stored the window or already had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// `(agent_id, seq)` was already stored: nothing was written.
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutResult {
    pub outcome: PutOutcome,
    /// Highest seq stored for this agent, after this put.
    pub highest_seq: u64,
    /// Stored, but the store's rollups of it could not be written: queries
    /// read its minute from raw windows (slower, still exact).
    pub rollup_failed: bool,
}

/// One page of a time-range scan.
#[derive(Debug, Default)]
pub struct Page {
    pub windows: Vec<Window>,
    /// Where the next page starts (exclusive); `None` when the range is done.
    pub next: Option<WindowKey>,
    /// Records in the range that could not be decoded (skipped, logged).
    pub corrupt: u64,
}

/// Errors of a store. Every variant says which operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot open the store {path}: {source} (is another sockeye-collector using this --data-dir?)"
    )]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("store {path} has schema version {found}, this collector reads version {expected}; use another --data-dir or a matching collector")]
    Schema {
        path: std::path::PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("store operation `{op}` failed: {source}")]
    Db {
        op: &'static str,
        #[source]
        source: redb::Error,
    },
    #[error("ClickHouse store operation `{op}` failed: {source}")]
    ClickHouse {
        op: &'static str,
        #[source]
        source: clickhouse::ClickHouseError,
    },
    #[error(transparent)]
    ClickHouseSchema(#[from] clickhouse::SchemaError),
    #[error("the store is closed")]
    Closed,
    #[error("the store is being reopened after a failed write; retry in a moment")]
    Reopening,
    #[error("store task `{op}` did not complete: {source}")]
    Task {
        op: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl StoreError {
    fn io(&self) -> Option<Option<&std::io::Error>> {
        match self {
            StoreError::Db {
                source: redb::Error::Io(e),
                ..
            } => Some(Some(e)),
            StoreError::Db {
                source: redb::Error::PreviousIo,
                ..
            } => Some(None),
            _ => None,
        }
    }

    /// An I/O error of the disk (or redb's refusal after one): the store
    /// must be reopened before it writes again.
    pub fn is_io(&self) -> bool {
        self.io().is_some()
    }

    /// The store's server could not be asked (down, unreachable, timed
    /// out), as opposed to answering no.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::ClickHouse { source, .. } => source.is_unreachable(),
            StoreError::ClickHouseSchema(clickhouse::SchemaError::Apply { source, .. }) => {
                source.is_unreachable()
            }
            _ => false,
        }
    }

    /// The disk (or the user's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self.io(), Some(Some(e))
            if e.kind() == std::io::ErrorKind::StorageFull
                || e.kind() == std::io::ErrorKind::QuotaExceeded
                || e.raw_os_error() == Some(libc::ENOSPC))
    }
}

/// Durable storage of pushed windows.
///
/// The embedded [`RedbStore`] is the default. A store shared by several
/// collector replicas (a TSDB, or an object store with an index) implements
/// the same trait: `put` must be idempotent on `(agent_id, seq)` across
/// replicas, which is what keeps dedup correct when an agent reconnects to a
/// different replica.
#[tonic::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores `window` unless its `(agent_id, seq)` is already stored.
    /// `window.agent_id` and `window.node` are already validated (non-empty).
    async fn put(&self, window: &Window) -> Result<PutResult, StoreError>;

    /// Highest seq stored for `agent_id`, if any window of it is stored.
    async fn highest_seq(&self, agent_id: &str) -> Result<Option<u64>, StoreError>;

    /// Windows whose end lies in `end_unix_ms`, in (end, agent, seq) order,
    /// at most `limit` of them, starting after `after`.
    async fn scan(
        &self,
        end_unix_ms: RangeInclusive<i64>,
        after: Option<WindowKey>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// The latest stored window of every node (by end time).
    async fn latest_per_node(&self) -> Result<Page, StoreError>;

    /// Deletes every window that ended before `cutoff_unix_ms`, with its
    /// dedup record. Returns how many windows were deleted.
    async fn delete_ended_before(&self, cutoff_unix_ms: i64) -> Result<u64, StoreError>;

    /// Number of windows stored.
    async fn window_count(&self) -> Result<u64, StoreError>;

    /// Flushes and releases the store (its file lock, for the embedded
    /// store). Later calls fail with [`StoreError::Closed`].
    async fn close(&self) -> Result<(), StoreError>;

    /// Opens the store again after a write failed with an I/O error (redb
    /// then refuses every write until it is reopened). What was committed
    /// stays. A store that needs nothing of the kind does nothing.
    async fn reopen(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the store answers now (a store on a server pings it). The
    /// collector asks every few seconds while a write failed, and reports
    /// the answer in `/readyz` and the metrics.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// What other replicas insert, for a store that several collectors
    /// share; `None` for a store only this process writes (its live
    /// streams need nothing but what it stores itself).
    fn feed(&self) -> Option<&dyn Feed> {
        None
    }

    /// Pre-aggregated TCP flows by minute, for a store that keeps them;
    /// `None` for one that only keeps windows (QueryTop then reads them).
    fn rollups(&self) -> Option<&dyn Rollups> {
        None
    }
}

/// Per-minute rollups of outbound TCP flows (see `query::rollup`).
#[tonic::async_trait]
pub trait Rollups: Send + Sync {
    /// Windows that ended before this are not to be read (retention).
    fn floor_unix_ms(&self) -> i64;

    /// The rollups of the minutes `minutes` (Unix ms / 60 000), but for the
    /// (minute, node) pairs they cannot answer exactly, which the answer
    /// lists so that the caller reads them raw.
    async fn tcp_minutes(
        &self,
        minutes: RangeInclusive<i64>,
    ) -> Result<crate::query::RollupAnswer, StoreError>;
}
