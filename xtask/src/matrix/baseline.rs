//! The figures file (`tests/kernel-matrix.txt`): per kernel and program, the
//! instructions the verifier processed and the load time, as a plain table
//! kept in the repository. A run compares itself with it, so a change that
//! more than doubles a program's verifier work fails the run and shows up in
//! review.

use anyhow::{bail, Context, Result};

use super::protocol::ProgramRecord;

/// The file, relative to the workspace root.
pub const PATH: &str = "tests/kernel-matrix.txt";
/// A program may need up to this many times its recorded instructions.
pub const MAX_GROWTH: u32 = 2;

const HEADER: &str = "\
# Sockeye kernel matrix: per kernel and program, the instructions the verifier
# processed (verified_insns) and the wall time of loading it (load_us; the 6.1
# and 6.12 rows run under QEMU TCG emulation, so their times are inflated and
# noisy). Written by `cargo xtask matrix --update-baseline`; a run fails when
# a program needs more than twice the instructions recorded here.
#
# kernel release program kind verified_insns load_us
";

/// One program on one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Row label: `6.1`, `6.12`, `host`.
    pub kernel: String,
    pub release: String,
    pub program: String,
    pub kind: String,
    /// `None` when the program was refused (or the kernel predates 5.16).
    pub verified_insns: Option<u32>,
    pub load_us: u64,
}

impl Entry {
    pub fn new(kernel: &str, release: &str, program: &ProgramRecord) -> Self {
        Self {
            kernel: kernel.to_string(),
            release: release.to_string(),
            program: program.name.clone(),
            kind: program.kind.clone(),
            // A refused program's count stops where the verifier gave up:
            // not a figure to compare.
            verified_insns: program.verified_insns.filter(|_| program.loaded),
            load_us: program.load_us,
        }
    }
}

pub fn render(entries: &[Entry]) -> String {
    let mut text = HEADER.to_string();
    for e in entries {
        let insns = e
            .verified_insns
            .map_or_else(|| "-".to_string(), |n| n.to_string());
        text.push_str(&format!(
            "{:<6} {:<28} {:<30} {:<16} {:>8} {:>9}\n",
            e.kernel, e.release, e.program, e.kind, insns, e.load_us
        ));
    }
    text
}

pub fn parse(text: &str) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [kernel, release, program, kind, insns, load_us] = fields[..] else {
            bail!("line {}: expected 6 columns: {line}", number + 1);
        };
        let verified_insns = match insns {
            "-" => None,
            n => Some(
                n.parse()
                    .with_context(|| format!("line {}: bad verified_insns {n}", number + 1))?,
            ),
        };
        entries.push(Entry {
            kernel: kernel.to_string(),
            release: release.to_string(),
            program: program.to_string(),
            kind: kind.to_string(),
            verified_insns,
            load_us: load_us
                .parse()
                .with_context(|| format!("line {}: bad load_us {load_us}", number + 1))?,
        });
    }
    Ok(entries)
}

/// What a run's figures say against the file's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Programs that need more than [`MAX_GROWTH`] times their recorded
    /// instructions: these fail the run.
    pub regressions: Vec<String>,
    /// Worth a look but not a failure: new programs, other kernel series.
    pub notes: Vec<String>,
}

/// Compares `current` with `baseline`, row by row and program by program.
pub fn compare(baseline: &[Entry], current: &[Entry]) -> Comparison {
    let mut result = Comparison::default();
    if baseline.is_empty() {
        result.notes.push(format!(
            "{PATH} has no figures yet: nothing compared; record them with --update-baseline"
        ));
        return result;
    }
    let mut series_noted = Vec::new();
    for now in current {
        let Some(before) = baseline
            .iter()
            .find(|b| b.kernel == now.kernel && b.program == now.program)
        else {
            result.notes.push(format!(
                "{} on {}: not in {PATH} yet (new program?); record it with --update-baseline",
                now.program, now.kernel
            ));
            continue;
        };
        // The host row runs whatever kernel the machine has: figures from
        // another kernel series are not comparable.
        if series(&before.release) != series(&now.release) {
            if !series_noted.contains(&now.kernel) {
                series_noted.push(now.kernel.clone());
                result.notes.push(format!(
                    "row {}: {PATH} has figures for {}, this is {}; not compared",
                    now.kernel, before.release, now.release
                ));
            }
            continue;
        }
        if let (Some(was), Some(is)) = (before.verified_insns, now.verified_insns) {
            if u64::from(is) > u64::from(was) * u64::from(MAX_GROWTH) {
                result.regressions.push(format!(
                    "{} on {}: {is} verified instructions, more than {MAX_GROWTH}x the {was} in {PATH}",
                    now.program, now.kernel
                ));
            }
        }
    }
    for before in baseline {
        let in_this_run = current.iter().any(|c| c.kernel == before.kernel);
        let still_there = current
            .iter()
            .any(|c| c.kernel == before.kernel && c.program == before.program);
        if in_this_run && !still_there {
            result.notes.push(format!(
                "{} on {}: in {PATH} but not in this run (removed or renamed?)",
                before.program, before.kernel
            ));
        }
    }
    result
}

/// `6.12.117+deb12-cloud-amd64` -> `6.12`.
fn series(release: &str) -> String {
    release.split('.').take(2).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kernel: &str, release: &str, program: &str, insns: Option<u32>) -> Entry {
        Entry {
            kernel: kernel.into(),
            release: release.into(),
            program: program.into(),
            kind: "sock_ops".into(),
            verified_insns: insns,
            load_us: 1234,
        }
    }

    #[test]
    fn render_and_parse_round_trip() {
        let entries = vec![
            entry(
                "6.1",
                "6.1.0-56-cloud-amd64",
                "sockeye_sock_ops",
                Some(2500),
            ),
            entry("host", "6.18.3", "sockeye_cgroup_mkdir", None),
        ];
        assert_eq!(parse(&render(&entries)).unwrap(), entries);
        assert!(parse("6.1 x y z 1\n").is_err());
        assert!(parse("6.1 x y z many 1\n").is_err());
    }

    #[test]
    fn more_than_double_is_a_regression_double_is_not() {
        let base = vec![
            entry("6.1", "6.1.0-56-cloud-amd64", "a", Some(1000)),
            entry("6.1", "6.1.0-56-cloud-amd64", "b", Some(1000)),
        ];
        let now = vec![
            entry("6.1", "6.1.0-57-cloud-amd64", "a", Some(2000)),
            entry("6.1", "6.1.0-57-cloud-amd64", "b", Some(2001)),
        ];
        let c = compare(&base, &now);
        assert_eq!(c.regressions.len(), 1, "{c:?}");
        assert!(c.regressions[0].starts_with("b on 6.1: 2001 verified instructions"));
        assert!(c.notes.is_empty(), "{c:?}");
    }

    #[test]
    fn without_a_baseline_one_note_says_so() {
        let now = vec![entry("6.1", "6.1.0-56-cloud-amd64", "a", Some(10))];
        let c = compare(&[], &now);
        assert!(c.regressions.is_empty());
        assert_eq!(c.notes.len(), 1, "{c:?}");
    }

    #[test]
    fn new_removed_and_other_series_are_notes() {
        let base = vec![
            entry("host", "6.18.3", "a", Some(10)),
            entry("6.12", "6.12.117+deb12-cloud-amd64", "gone", Some(10)),
        ];
        let now = vec![
            entry("host", "6.19.1", "a", Some(1000)),
            entry("6.12", "6.12.117+deb12-cloud-amd64", "new", Some(10)),
        ];
        let c = compare(&base, &now);
        assert!(c.regressions.is_empty(), "{c:?}");
        assert_eq!(c.notes.len(), 3, "{c:?}");
        assert!(c.notes[0].contains("has figures for 6.18.3, this is 6.19.1"));
        assert!(c.notes[1].starts_with("new on 6.12: not in"));
        assert!(c.notes[2].starts_with("gone on 6.12: in"));
    }
}
