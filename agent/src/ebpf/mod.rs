//! Loading, attaching and reading Sockeye's kernel programs.

pub mod counters;
pub mod listeners;
pub mod loader;
pub mod tracefs;

pub use loader::{load, Feature, LoadError, LoadOptions, Probes};
