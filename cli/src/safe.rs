//! Every byte the CLI prints passes here: text from agents and peers
//! (process names, DNS names, pod names, labels) could carry terminal
//! control sequences, and a hostile container chooses them. Tables and
//! blocks get `sockeye_proto::text::escape` line by line (the agent's own
//! table uses the same function); JSON keeps being the same JSON, with the
//! characters serde leaves raw written as `\uXXXX`.

use std::{borrow::Cow, io::Write};

use sockeye_proto::text::{escape_json, escape_lines};

use crate::{args::Output, error::CliError};

/// `text` as it may reach a terminal in `output` format.
pub fn shown(text: &str, output: Output) -> Cow<'_, str> {
    match output {
        Output::Json => escape_json(text),
        Output::Table | Output::Wide => escape_lines(text),
    }
}

/// Writes `text` made safe, and flushes: someone is watching, or a pipe is
/// reading, each update as it comes.
pub fn write(out: &mut dyn Write, text: &str, output: Output) -> Result<(), CliError> {
    out.write_all(shown(text, output).as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_name_is_inert_in_every_format() {
        let comm = "curl\x1b]0;owned\x07";
        assert_eq!(shown(comm, Output::Table), "curl\\x1b]0;owned\\x07");
        let json = serde_json::json!({ "comm": comm, "dns": "a\u{9b}2J" }).to_string();
        let safe = shown(&json, Output::Json);
        assert!(!safe.chars().any(sockeye_proto::text::is_unsafe));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["comm"], comm, "the same JSON to a parser");
        assert_eq!(back["dns"], "a\u{9b}2J");
    }
}
