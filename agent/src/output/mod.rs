//! How the agent prints what it sees: a refreshing table on a terminal,
//! JSON lines for machines, or nothing (when it is read through its API).

pub mod dns_table;
pub mod findings;
pub mod findings_table;
pub use sockeye_core::format;
pub mod json;
pub mod table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table redrawn every interval (the default on a terminal).
    Table,
    /// One JSON object per line (the default when stdout is not a terminal).
    Json,
    /// Nothing on stdout: for an agent read through its API, its metrics or
    /// its collector (the DaemonSet), whose logs should not fill with tables.
    None,
}
