//! Sockeye's collector: agents push aggregated windows to it over gRPC, it
//! stores them durably, removes duplicates, answers cluster-wide queries and
//! fans what agents report out to live watchers.

pub mod filter;
pub mod histogram;
pub mod query;
pub mod store;

pub use store::{Store, StoreError};
