//! Whether one row of the matrix passed. The row's own verdict is not
//! trusted alone: the host re-reads every record, so a refused program fails
//! the run with the verifier's message even if the guest said PASS, and a
//! guest that printed nothing (crashed, hung) fails even though QEMU exited 0.

use super::protocol::RowOutput;

/// Why the row failed; empty if it passed. `all_programs` is every program
/// name seen on any row: each row must report each of them.
pub fn failures(row: &RowOutput, all_programs: &[String]) -> Vec<String> {
    let mut failures = Vec::new();
    if row.release.is_none() {
        failures.push("the row never reported its kernel (it did not start)".to_string());
    }
    if row.programs.is_empty() {
        failures.push(
            "no program was reported (verify did not run or its output was lost)".to_string(),
        );
    }
    // A refused program whose fallback loaded is the path the agent takes
    // on this kernel: shown in the table, not a failure.
    for program in row.programs.iter().filter(|p| !p.covered(&row.programs)) {
        let fallback = match &program.fallback {
            Some(f) => format!(", and neither was its fallback {f}"),
            None => String::new(),
        };
        failures.push(format!(
            "program {} ({}) was not loaded{fallback}:\n{}",
            program.name,
            program.kind,
            indent(program.error.as_deref().unwrap_or("(no reason given)"))
        ));
    }
    for name in all_programs {
        if !row.programs.iter().any(|p| &p.name == name) {
            failures.push(format!(
                "program {name} was reported on another kernel but not on this one"
            ));
        }
    }
    for check in row.checks.iter().filter(|c| !c.ok) {
        failures.push(format!(
            "smoke check '{}' failed:\n{}",
            check.name,
            indent(&check.detail)
        ));
    }
    for line in &row.garbled {
        failures.push(format!("unreadable record line: {line}"));
    }
    match row.passed {
        Some(true) if row.checks.is_empty() => {
            failures.push("the row said PASS without running any smoke check".to_string());
        }
        Some(true) => {}
        // The reason is in the failed checks above; say so only if none is.
        Some(false) if failures.is_empty() => {
            failures.push("the row said FAIL without a failed check".to_string());
        }
        Some(false) => {}
        None => failures.push(
            "no result marker: the row crashed, hung or was killed before it finished".to_string(),
        ),
    }
    failures
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::super::protocol::{Check, ProgramRecord};
    use super::*;

    fn program(name: &str, loaded: bool, error: Option<&str>) -> ProgramRecord {
        ProgramRecord {
            name: name.into(),
            kind: "tracepoint".into(),
            loaded,
            error: error.map(Into::into),
            verified_insns: loaded.then_some(100),
            load_us: 1000,
            fallback: None,
        }
    }

    fn passing_row() -> RowOutput {
        RowOutput {
            release: Some("6.12.117+deb12-cloud-amd64".into()),
            programs: vec![program("a", true, None), program("b", true, None)],
            checks: vec![Check {
                name: "outbound connects".into(),
                ok: true,
                detail: "5".into(),
            }],
            passed: Some(true),
            garbled: Vec::new(),
        }
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn a_complete_row_passes() {
        assert_eq!(failures(&passing_row(), &names()), Vec::<String>::new());
    }

    #[test]
    fn a_refused_program_fails_the_row_with_the_verifiers_message() {
        let mut row = passing_row();
        row.programs[1] = program(
            "b",
            false,
            Some("BPF_PROG_LOAD failed: Permission denied (os error 13)\nR1 invalid mem access 'scalar'"),
        );
        // Even if the guest (wrongly) said PASS.
        let failures = failures(&row, &names());
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("program b (tracepoint) was not loaded:"));
        assert!(failures[0].contains("R1 invalid mem access 'scalar'"));
    }

    #[test]
    fn a_refused_program_is_fine_only_if_its_fallback_loaded() {
        let mut row = passing_row();
        row.programs[0] = ProgramRecord {
            fallback: Some("b".into()),
            ..program("a", false, Some("unknown func bpf_get_current_pid_tgid#14"))
        };
        assert_eq!(failures(&row, &names()), Vec::<String>::new());
        row.programs[1] = program("b", false, Some("R1 invalid mem access"));
        let failures = failures(&row, &names());
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("was not loaded, and neither was its fallback b"));
        assert!(failures[0].contains("unknown func bpf_get_current_pid_tgid#14"));
        assert!(failures[1].contains("R1 invalid mem access"));
    }

    #[test]
    fn silence_fails_whatever_qemu_said() {
        let failures = failures(&RowOutput::default(), &names());
        assert!(failures.iter().any(|f| f.starts_with("no result marker")));
        assert!(failures
            .iter()
            .any(|f| f.contains("program a was reported on another kernel")));
    }

    #[test]
    fn failed_checks_and_missing_programs_fail() {
        let mut row = passing_row();
        row.programs.pop();
        row.checks[0].ok = false;
        row.passed = Some(false);
        let failures = failures(&row, &names());
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("program b was reported on another kernel"));
        assert!(failures[1].starts_with("smoke check 'outbound connects' failed"));
    }
}
