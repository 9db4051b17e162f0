//! Sockeye's domain, free of I/O, shared by the agent, the collector and
//! the CLI.
//!
//! Data path: kernel records -> [`event`] decoding -> [`aggregate`] (flows,
//! sockets, listeners) and [`dns`] (queries matched to answers) ->
//! [`snapshot`] views named by [`workload`] and selected by [`filter`] ->
//! [`findings`] (detectors as functions of those facts, typed verdicts,
//! their wording). Time comes from [`clock`]; [`format`] writes numbers for
//! people.

pub mod aggregate;
pub mod clock;
pub mod dns;
pub mod event;
pub mod filter;
pub mod findings;
pub mod format;
pub mod snapshot;
pub mod testing;
pub mod text;
pub mod workload;
