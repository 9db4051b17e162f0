//! Loading, attaching and reading Sockeye's kernel programs.

pub mod counters;
pub mod dns;
pub mod lag;
pub mod listeners;
pub mod loader;
pub mod owners;
pub mod resources;
pub mod tracefs;
pub mod verify;

pub use loader::{load, Feature, LoadError, LoadOptions, Probes};

/// A load failure in a few lines: the syscall's error and the end of the
/// verifier's log (where its reason is), not the whole log, which can run
/// to thousands of lines and would bury the reason in a log message.
pub fn verifier_message(e: &aya::programs::ProgramError) -> String {
    const TAIL_LINES: usize = 3;
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            // The log ends with statistics; the reason is the line before.
            let stats = ["verification time", "stack depth", "processed "];
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.trim().is_empty() && !stats.iter().any(|s| l.starts_with(s)))
                .collect();
            let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ");
            format!("{io_error}; verifier: {tail}")
        }
        other => other.to_string(),
    }
}
