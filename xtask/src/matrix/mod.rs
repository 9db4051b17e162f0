//! `cargo xtask matrix`: every kernel program loaded, and the agent smoke
//! tested, on each kernel of the matrix: Debian's 6.1 and 6.12 cloud kernels
//! booted in QEMU (TCG), and the host's own kernel.
//!
//! Each row runs `cargo xtask smoke` ([`row`]): inside a guest from its
//! `/init`, on the host as a child process. The row prints record lines
//! ([`protocol`]); the host reads them, judges each row ([`judge`]), prints
//! the table ([`report`]) and compares the verifier figures with the file
//! kept in the repository ([`baseline`]).
//!
//! Sockeye uses only stable hooks (sock_ops on the cgroup v2 root,
//! tracepoints), which exist on every kernel here, so there is one code path
//! and every row tests all of it.

mod baseline;
mod initramfs;
mod judge;
mod kernels;
mod protocol;
mod qemu;
mod report;
pub mod row;
pub(crate) mod smoke;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::bench;
use baseline::Entry;
use protocol::RowOutput;
use report::RowReport;

/// The host row's label: it runs whatever kernel this machine has.
const HOST: &str = "host";
/// busybox-static's binary: the guest's shell and tools.
const BUSYBOX: &str = "/bin/busybox";

#[derive(Args, Debug)]
pub struct MatrixArgs {
    /// Agent binary; by default `cargo build --release -p sockeye-agent` is
    /// run first and target/release/sockeye-agent is used.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Rows to run, comma-separated: host, 6.1, 6.12.
    #[arg(long, value_delimiter = ',', default_value = "host,6.1,6.12")]
    rows: Vec<String>,
    /// Seconds a guest may run (boot, verify, smoke test) before it is
    /// killed and its row fails.
    #[arg(long, default_value_t = 300)]
    guest_timeout: u64,
    /// Where downloaded kernels are kept [default: ~/.cache/sockeye/kernels].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Write this run's figures into tests/kernel-matrix.txt (rows that ran
    /// replace theirs); growth beyond the limit is then reported, not failed.
    #[arg(long)]
    update_baseline: bool,
}

pub fn run(args: &MatrixArgs) -> Result<()> {
    for label in &args.rows {
        if label != HOST && !kernels::GUESTS.iter().any(|s| s.label == label) {
            bail!("unknown row {label}: the rows are host, 6.1 and 6.12");
        }
    }
    bootstrap()?;
    let agent = match &args.agent {
        Some(path) if path.is_file() => path.clone(),
        Some(path) => bail!("--agent {}: no such file", path.display()),
        None => bench::build_agent()?,
    };
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    let out_dir = target_dir()?.join("matrix");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    // One initramfs serves every guest: the same agent and smoke test on
    // each kernel.
    let initramfs = out_dir.join("initramfs.cpio");
    if args.rows.iter().any(|label| label != HOST) {
        initramfs::build(
            &initramfs,
            &initramfs::Contents {
                busybox: Path::new(BUSYBOX),
                agent: &agent,
                xtask: &xtask,
            },
        )?;
    }
    let mut rows = Vec::new();
    for label in &args.rows {
        let start = Instant::now();
        let output = if label == HOST {
            host_row(&xtask, &agent, &out_dir)?
        } else {
            guest_row(label, args, &initramfs, &out_dir)?
        };
        rows.push((label.as_str(), output, start.elapsed()));
    }
    judge_and_report(&rows, args.update_baseline, &out_dir)
}

/// What a row printed, plus why it may not have finished.
struct Ran {
    output: RowOutput,
    /// Not a record of the row's own: a timeout, a crash.
    problems: Vec<String>,
}

impl Ran {
    /// A row that never ran.
    fn failed(problem: String) -> Self {
        Self {
            output: RowOutput::default(),
            problems: vec![problem],
        }
    }
}

fn host_row(xtask: &Path, agent: &Path, out_dir: &Path) -> Result<Ran> {
    eprintln!("matrix: host: running the smoke row on this kernel");
    let output = Command::new(xtask)
        .arg("smoke")
        .arg("--agent")
        .arg(agent)
        .output()
        .context("running xtask smoke")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log = out_dir.join("host.log");
    fs::write(&log, format!("{stdout}\n--- stderr ---\n{stderr}"))
        .with_context(|| format!("writing {}", log.display()))?;
    let mut problems = Vec::new();
    if !output.status.success() && !stderr.trim().is_empty() {
        problems.push(format!("xtask smoke {}: {}", output.status, stderr.trim()));
    }
    Ok(Ran {
        output: protocol::parse(&stdout),
        problems,
    })
}

fn guest_row(label: &str, args: &MatrixArgs, initramfs: &Path, out_dir: &Path) -> Result<Ran> {
    let series = kernels::GUESTS
        .iter()
        .find(|s| s.label == label)
        .context("unknown guest row")?;
    let cache = match &args.cache {
        Some(dir) => dir.clone(),
        None => default_cache()?,
    };
    // A kernel that cannot be fetched or booted fails its row, not the run:
    // the other rows still report.
    let kernel = match kernels::fetch(series, &cache) {
        Ok(kernel) => kernel,
        Err(e) => return Ok(Ran::failed(format!("fetching the {label} kernel: {e:#}"))),
    };
    let serial_log = out_dir.join(format!("{label}.serial.log"));
    eprintln!(
        "matrix: {label}: booting {} under QEMU TCG (console: {})",
        kernel.package,
        serial_log.display()
    );
    let timeout = Duration::from_secs(args.guest_timeout);
    let boot = match qemu::boot(&kernel.vmlinuz, initramfs, timeout, &serial_log) {
        Ok(boot) => boot,
        Err(e) => return Ok(Ran::failed(format!("booting {}: {e:#}", kernel.package))),
    };
    let mut problems = Vec::new();
    if boot.timed_out {
        problems.push(format!(
            "killed after {} s (--guest-timeout); last console lines:\n{}",
            timeout.as_secs(),
            tail(&boot.serial, 15)
        ));
    }
    let output = protocol::parse(&boot.serial);
    if output.passed.is_none() && !boot.timed_out {
        problems.push(format!(
            "QEMU exited ({}) before the result marker; last console lines:\n{}",
            boot.status
                .map_or_else(|| "?".to_string(), |s| s.to_string()),
            tail(&boot.serial, 15)
        ));
    }
    Ok(Ran { output, problems })
}

fn judge_and_report(rows: &[(&str, Ran, Duration)], update: bool, out_dir: &Path) -> Result<()> {
    let mut all_programs: Vec<String> = rows
        .iter()
        .flat_map(|(_, ran, _)| ran.output.programs.iter().map(|p| p.name.clone()))
        .collect();
    all_programs.sort();
    all_programs.dedup();

    let baseline_path = workspace_root()?.join(baseline::PATH);
    let recorded = match fs::read_to_string(&baseline_path) {
        Ok(text) => baseline::parse(&text)
            .with_context(|| format!("reading {}", baseline_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).context(format!("reading {}", baseline_path.display())),
    };
    let current: Vec<Entry> = rows
        .iter()
        .flat_map(|(label, ran, _)| {
            let release = ran.output.release.as_deref().unwrap_or("?");
            ran.output
                .programs
                .iter()
                .map(move |p| Entry::new(label, release, p))
        })
        .collect();
    let comparison = baseline::compare(&recorded, &current);

    let failures: Vec<Vec<String>> = rows
        .iter()
        .map(|(_, ran, _)| {
            let mut failures = ran.problems.clone();
            // A row that printed nothing has said why in its problems; the
            // judge would only add that every record is missing.
            if ran.output.release.is_some() || failures.is_empty() {
                failures.extend(judge::failures(&ran.output, &all_programs));
            }
            failures
        })
        .collect();
    let reports: Vec<RowReport> = rows
        .iter()
        .zip(&failures)
        .map(|((label, ran, elapsed), failures)| RowReport {
            label,
            output: &ran.output,
            elapsed: *elapsed,
            failures,
        })
        .collect();
    println!();
    report::print_programs(&reports, &recorded);
    report::print_rows(&reports);
    for note in &comparison.notes {
        println!("note: {note}");
    }
    for regression in &comparison.regressions {
        println!("complexity: {regression}");
    }

    let figures = out_dir.join("kernel-matrix.txt");
    fs::write(&figures, baseline::render(&current))
        .with_context(|| format!("writing {}", figures.display()))?;
    println!("\nthis run's figures: {}", figures.display());
    if update {
        let ran: Vec<&str> = rows.iter().map(|(label, _, _)| *label).collect();
        let mut merged: Vec<Entry> = recorded
            .into_iter()
            .filter(|e| !ran.contains(&e.kernel.as_str()))
            .chain(current)
            .collect();
        merged.sort_by_key(|e| (row_order(&e.kernel), e.program.clone()));
        fs::write(&baseline_path, baseline::render(&merged))
            .with_context(|| format!("writing {}", baseline_path.display()))?;
        println!("updated {}", baseline_path.display());
    }

    let failed_rows = failures.iter().filter(|f| !f.is_empty()).count();
    // scripts/test.sh adds these to its test totals.
    println!(
        "\nkernel matrix: {} passed, {failed_rows} failed",
        rows.len() - failed_rows
    );
    if failed_rows > 0 {
        bail!(
            "{failed_rows} of {} kernel rows failed (see above)",
            rows.len()
        );
    }
    if !comparison.regressions.is_empty() && !update {
        bail!(
            "{} program(s) need more than {}x the verifier instructions recorded in {}; \
             if that is intended, rerun with --update-baseline and commit the file",
            comparison.regressions.len(),
            baseline::MAX_GROWTH,
            baseline::PATH
        );
    }
    Ok(())
}

/// host, 6.1, 6.12: the order of the table and of the file.
fn row_order(label: &str) -> usize {
    if label == HOST {
        return 0;
    }
    1 + kernels::GUESTS
        .iter()
        .position(|s| s.label == label)
        .unwrap_or(kernels::GUESTS.len())
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")
}

/// Installs or checks QEMU and busybox-static for the guests, on top of what
/// the build needs, the way the README's commands do.
fn bootstrap() -> Result<()> {
    let root = workspace_root()?;
    let status = Command::new(root.join("scripts/bootstrap.sh"))
        .arg("--matrix")
        .current_dir(root)
        .status()
        .context("running scripts/bootstrap.sh --matrix")?;
    if !status.success() {
        bail!("scripts/bootstrap.sh --matrix failed ({status})");
    }
    Ok(())
}

/// Cargo's target directory, as `bench::build_agent` finds it.
fn target_dir() -> Result<PathBuf> {
    let root = workspace_root()?;
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target")))
}

fn default_cache() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("sockeye").join("kernels"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {}", l.trim_end_matches('\r')))
        .collect::<Vec<_>>()
        .join("\n")
}
