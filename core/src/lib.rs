//! Sockeye's domain, free of I/O, shared by the agent, the collector and
//! the CLI.
//!
//! Data path: kernel records -> [`event`] decoding -> [`aggregate`] (flows,
//! sockets, listeners) and [`dns`] (queries matched to answers) ->
//! [`snapshot`] views named by [`workload`] -> [`findings`] (detectors as
//! functions of those facts, typed verdicts, their wording). Time comes
//! from [`clock`]; [`format`] writes numbers for people.

pub mod aggregate;
pub mod clock;
pub mod dns;
pub mod event;
pub mod findings;
pub mod format;
pub mod snapshot;
pub mod testing;
// The one escaping function for text from the kernel and from peers, also
// `sockeye_proto::text` (the CLI's and the collector's): the same file,
// compiled here so this crate stays free of the API's dependencies.
#[path = "../../proto/src/text.rs"]
pub mod text;
pub mod workload;
