//! The detectors: each reads the aggregates and reports the problems that
//! hold now as [`super::Candidate`]s.

pub mod resources;
