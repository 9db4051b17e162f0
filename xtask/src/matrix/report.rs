//! The matrix as people read it: one table line per kernel and program
//! (like veristat), then one line per kernel with its verdict and run time.

use std::time::Duration;

use super::baseline::Entry;
use super::protocol::RowOutput;

/// One row of the matrix after it ran.
pub struct RowReport<'a> {
    pub label: &'a str,
    pub output: &'a RowOutput,
    pub elapsed: Duration,
    pub failures: &'a [String],
}

pub fn print_programs(rows: &[RowReport], baseline: &[Entry]) {
    println!(
        "{:<6} {:<28} {:<30} {:<16} {:<13} {:>8} {:>9} {:>10}",
        "KERNEL", "RELEASE", "PROGRAM", "KIND", "LOADED", "INSNS", "BASELINE", "LOAD ms"
    );
    for row in rows {
        let release = row.output.release.as_deref().unwrap_or("?");
        if row.output.programs.is_empty() {
            println!("{:<6} {release:<28} (no program reported)", row.label);
        }
        for p in &row.output.programs {
            let insns = p
                .verified_insns
                .map_or_else(|| "-".to_string(), |n| n.to_string());
            let recorded = baseline
                .iter()
                .find(|b| b.kernel == row.label && b.program == p.name)
                .and_then(|b| b.verified_insns)
                .map_or_else(|| "-".to_string(), |n| n.to_string());
            let loaded = if p.loaded {
                "yes"
            } else if p.covered(&row.output.programs) {
                "no, fallback"
            } else {
                "NO"
            };
            println!(
                "{:<6} {release:<28} {:<30} {:<16} {loaded:<13} {insns:>8} {recorded:>9} {:>10.1}",
                row.label,
                p.name,
                p.kind,
                p.load_us as f64 / 1000.0
            );
        }
    }
}

pub fn print_rows(rows: &[RowReport]) {
    println!();
    for row in rows {
        let checks = &row.output.checks;
        let passed = checks.iter().filter(|c| c.ok).count();
        println!(
            "{:<6} {:<28} {}  smoke checks {passed}/{}  {:.1} s",
            row.label,
            row.output.release.as_deref().unwrap_or("?"),
            if row.failures.is_empty() {
                "PASS"
            } else {
                "FAIL"
            },
            checks.len(),
            row.elapsed.as_secs_f64()
        );
    }
    for row in rows.iter().filter(|r| !r.failures.is_empty()) {
        println!("\n{} failed:", row.label);
        for failure in row.failures {
            println!("  - {failure}");
        }
    }
}
