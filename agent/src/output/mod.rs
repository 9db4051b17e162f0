//! How the agent prints what it sees: a refreshing table on a terminal, or
//! JSON lines for machines.

pub mod dns_table;
pub mod format;
pub mod json;
pub mod table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table redrawn every interval (the default on a terminal).
    Table,
    /// One JSON object per line (the default when stdout is not a terminal).
    Json,
}
