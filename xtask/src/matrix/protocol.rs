//! The lines one matrix row prints, and their parser. A row (`cargo xtask
//! smoke`) runs inside a QEMU guest, where its only way out is the serial
//! console, or on the host as a child process; both print the same lines:
//!
//! ```text
//! SOCKEYE-MATRIX kernel 6.1.0-56-cloud-amd64
//! SOCKEYE-MATRIX program {"name":"sockeye_sock_ops","kind":"sock_ops","loaded":true,...}
//! SOCKEYE-MATRIX check {"name":"outbound connects","ok":true,"detail":"..."}
//! SOCKEYE-MATRIX-RESULT kernel=6.1.0-56-cloud-amd64 status=PASS
//! ```
//!
//! The console also carries kernel messages, which can land in the middle of
//! a line, so a marker is looked for anywhere in a line and a line that
//! carries one but does not parse is kept as garbled, never skipped.

use serde::{Deserialize, Serialize};

/// Starts every record line.
pub const MARKER: &str = "SOCKEYE-MATRIX";
/// Starts the last line of a row: the guest's own verdict.
pub const RESULT_MARKER: &str = "SOCKEYE-MATRIX-RESULT";

/// What `sockeye-agent verify` printed for one program (its JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRecord {
    pub name: String,
    pub kind: String,
    pub loaded: bool,
    /// The verifier's message when the program was refused.
    pub error: Option<String>,
    pub verified_insns: Option<u32>,
    pub load_us: u64,
    /// The program the agent loads instead if this one is refused.
    #[serde(default)]
    pub fallback: Option<String>,
}

impl ProgramRecord {
    /// Loaded, or refused with a fallback that loaded on the same kernel
    /// (`programs`): the agent has the feature there.
    pub fn covered(&self, programs: &[ProgramRecord]) -> bool {
        self.loaded
            || self
                .fallback
                .as_ref()
                .is_some_and(|f| programs.iter().any(|p| &p.name == f && p.loaded))
    }
}

/// One smoke-test check and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Everything one row printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RowOutput {
    /// `uname -r` of the kernel the row ran on.
    pub release: Option<String>,
    pub programs: Vec<ProgramRecord>,
    pub checks: Vec<Check>,
    /// The row's own verdict; `None` if it never printed one (crashed, hung,
    /// killed at the timeout).
    pub passed: Option<bool>,
    /// Lines with a marker that could not be read.
    pub garbled: Vec<String>,
}

pub fn kernel_line(release: &str) -> String {
    format!("{MARKER} kernel {release}")
}

pub fn program_line(json: &str) -> String {
    format!("{MARKER} program {json}")
}

pub fn check_line(check: &Check) -> String {
    // Serializing a struct of strings and a bool cannot fail.
    let json = serde_json::to_string(check).unwrap_or_default();
    format!("{MARKER} check {json}")
}

pub fn result_line(release: &str, passed: bool) -> String {
    let status = if passed { "PASS" } else { "FAIL" };
    format!("{RESULT_MARKER} kernel={release} status={status}")
}

/// Reads a row's output (serial console or stdout).
pub fn parse(text: &str) -> RowOutput {
    let mut row = RowOutput::default();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        let Some(at) = line.find(MARKER) else {
            continue;
        };
        if !parse_record(&line[at..], &mut row) {
            row.garbled.push(line.to_string());
        }
    }
    row
}

/// Adds one record to `row`; false if it is not a well-formed record.
fn parse_record(record: &str, row: &mut RowOutput) -> bool {
    if let Some(rest) = record.strip_prefix(RESULT_MARKER) {
        let status = rest
            .split_whitespace()
            .find_map(|field| field.strip_prefix("status="));
        row.passed = match status {
            Some("PASS") => Some(true),
            Some("FAIL") => Some(false),
            _ => return false,
        };
        return true;
    }
    let Some(rest) = record
        .strip_prefix(MARKER)
        .and_then(|r| r.strip_prefix(' '))
    else {
        return false;
    };
    let (kind, body) = rest.split_once(' ').unwrap_or((rest, ""));
    match kind {
        "kernel" if !body.trim().is_empty() => {
            row.release = Some(body.trim().to_string());
            true
        }
        "program" => serde_json::from_str(body)
            .map(|program| row.programs.push(program))
            .is_ok(),
        "check" => serde_json::from_str(body)
            .map(|check| row.checks.push(check))
            .is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_row_through_console_noise() {
        let check = Check {
            name: "outbound connects".into(),
            ok: true,
            detail: "5 of 5".into(),
        };
        let text = format!(
            "SeaBIOS\r\n{}\r\n[    3.1] random: crng init done\r\n\
             {}\r\n[    4.0] kernel noise {}\r\n{}\r\n",
            kernel_line("6.1.0-56-cloud-amd64"),
            program_line(
                r#"{"name":"p","kind":"sock_ops","loaded":true,"error":null,"verified_insns":120,"load_us":900}"#
            ),
            check_line(&check),
            result_line("6.1.0-56-cloud-amd64", true),
        );
        let row = parse(&text);
        assert_eq!(row.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(row.programs.len(), 1);
        assert_eq!(row.programs[0].verified_insns, Some(120));
        assert_eq!(row.checks, vec![check]);
        assert_eq!(row.passed, Some(true));
        assert!(row.garbled.is_empty(), "{:?}", row.garbled);
    }

    #[test]
    fn a_cut_line_is_garbled_not_lost_and_no_marker_means_no_verdict() {
        let row = parse("SOCKEYE-MATRIX program {\"name\":\"p\",\"ki[  5.0] oops\n");
        assert_eq!(row.garbled.len(), 1);
        assert!(row.programs.is_empty());
        assert_eq!(row.passed, None);
        assert_eq!(
            parse("SOCKEYE-MATRIX-RESULT kernel=x status=FAIL").passed,
            Some(false)
        );
        assert_eq!(parse("SOCKEYE-MATRIX-RESULT kernel=x").garbled.len(), 1);
    }
}
