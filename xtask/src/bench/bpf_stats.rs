//! What each BPF program of a tracer costs per connection: the kernel's
//! own run counts and run times (`kernel.bpf_stats_enabled`), read before
//! and after a round for the programs that one process holds.
//!
//! Stats are switched on with `BPF_ENABLE_STATS` (a file descriptor that
//! keeps them on while it is open, counted by the kernel), not by writing
//! the sysctl: another process that also wants them does not race us.
//! They cost two clock reads per program run, so the ratio rounds run
//! without them and these figures come from rounds of their own.
//!
//! # Minimum kernel version
//! `BPF_ENABLE_STATS`: 5.8.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};

/// Keeps the kernel's BPF run-time statistics on while it lives.
pub struct StatsOn {
    _fd: OwnedFd,
}

impl StatsOn {
    pub fn enable() -> Result<StatsOn> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (needs Linux 5.8 and CAP_SYS_ADMIN)")?;
        Ok(StatsOn { _fd: fd })
    }
}

/// One program's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgCounters {
    pub name: String,
    pub runs: u64,
    pub run_ns: u64,
}

/// Counters of every program `pid` holds (a program fd, or a link to one),
/// by program id.
pub fn snapshot(pid: u32) -> Result<BTreeMap<u32, ProgCounters>> {
    let ids = program_ids(pid)?;
    let names = full_names();
    let mut out = BTreeMap::new();
    for info in aya::programs::loaded_programs() {
        // Programs come and go (other processes' tests); one that vanished
        // between listing and reading is not ours anyway.
        let Ok(info) = info else { continue };
        if ids.contains(&info.id()) {
            out.insert(
                info.id(),
                ProgCounters {
                    name: names
                        .get(&info.tag())
                        .cloned()
                        .unwrap_or_else(|| info.name_as_str().unwrap_or("?").to_string()),
                    runs: info.run_count(),
                    run_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                },
            );
        }
    }
    Ok(out)
}

/// Programs' full names by tag, from /proc/kallsyms: the kernel keeps
/// only 15 characters of a program's name, which leaves
/// `sockeye_sys_enter_connect` and `sockeye_sys_enter_socket` both
/// `sockeye_sys_ent`, but names its JIT image `bpf_prog_<tag>_<function>`
/// after the whole function name from the program's BTF. Programs with
/// the same code have the same tag (`sockeye_connect4` and `_connect6`):
/// their names are joined. Empty when kallsyms hides them
/// (`net.core.bpf_jit_kallsyms` 0).
fn full_names() -> BTreeMap<u64, String> {
    let Ok(text) = fs::read_to_string("/proc/kallsyms") else {
        return BTreeMap::new();
    };
    let mut names: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (tag, name) in text.lines().filter_map(kallsyms_name) {
        names.entry(tag).or_default().insert(name);
    }
    names
        .into_iter()
        .map(|(tag, set)| (tag, set.into_iter().collect::<Vec<_>>().join("|")))
        .collect()
}

/// (tag, name) of a `... t bpf_prog_<16 hex>_<name>\t[bpf]` line.
fn kallsyms_name(line: &str) -> Option<(u64, String)> {
    let symbol = line.strip_suffix("[bpf]")?.split_whitespace().nth(2)?;
    let rest = symbol.strip_prefix("bpf_prog_")?;
    let (tag, name) = (rest.get(..16)?, rest.get(17..)?);
    Some((u64::from_str_radix(tag, 16).ok()?, name.to_string()))
}

/// The ids of the programs behind `pid`'s BPF program and link fds, from
/// /proc/PID/fdinfo (`prog_id:`).
fn program_ids(pid: u32) -> Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = BTreeSet::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        ids.extend(prog_id(&text));
    }
    Ok(ids)
}

fn prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs and time per connection of one program over a round.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProgCost {
    pub name: String,
    pub runs_per_conn: f64,
    pub ns_per_run: f64,
    pub ns_per_conn: f64,
}

/// Each program's cost between two snapshots over `connections`,
/// costliest first. Programs that did not run are left out.
pub fn per_connection(
    before: &BTreeMap<u32, ProgCounters>,
    after: &BTreeMap<u32, ProgCounters>,
    connections: u64,
) -> Vec<ProgCost> {
    let conns = connections.max(1) as f64;
    let mut costs: Vec<ProgCost> = after
        .iter()
        .filter_map(|(id, a)| {
            let (runs0, ns0) = before.get(id).map_or((0, 0), |b| (b.runs, b.run_ns));
            let runs = a.runs.saturating_sub(runs0);
            let ns = a.run_ns.saturating_sub(ns0);
            (runs > 0).then(|| ProgCost {
                name: a.name.clone(),
                runs_per_conn: runs as f64 / conns,
                ns_per_run: ns as f64 / runs as f64,
                ns_per_conn: ns as f64 / conns,
            })
        })
        .collect();
    costs.sort_by(|a, b| b.ns_per_conn.total_cmp(&a.ns_per_conn));
    costs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_id_from_fdinfo() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nprog_type:\t13\nprog_id:\t4711\nrun_cnt:\t9\n";
        assert_eq!(prog_id(fdinfo), Some(4711));
        assert_eq!(prog_id("pos:\t0\nmap_id:\t3\n"), None);
    }

    #[test]
    fn full_names_from_kallsyms() {
        let line = "ffffffffc0a1b2c3 t bpf_prog_0123456789abcdef_sockeye_sys_enter_socket\t[bpf]";
        assert_eq!(
            kallsyms_name(line),
            Some((0x0123_4567_89ab_cdef, "sockeye_sys_enter_socket".into()))
        );
        assert_eq!(
            kallsyms_name("ffffffff81211498 t bpf_prog_realloc.cold"),
            None
        );
    }

    #[test]
    fn costs_per_connection() {
        let c = |name: &str, runs, run_ns| ProgCounters {
            name: name.into(),
            runs,
            run_ns,
        };
        let before = BTreeMap::from([(1, c("a", 10, 1000)), (2, c("b", 5, 50))]);
        let after = BTreeMap::from([
            (1, c("a", 30, 5000)),
            (2, c("b", 5, 50)),
            (3, c("new", 4, 400)),
        ]);
        let costs = per_connection(&before, &after, 10);
        assert_eq!(costs.len(), 2, "b did not run: {costs:?}");
        assert_eq!(costs[0].name, "a");
        assert_eq!(costs[0].runs_per_conn, 2.0);
        assert_eq!(costs[0].ns_per_run, 200.0);
        assert_eq!(costs[0].ns_per_conn, 400.0);
        assert_eq!(costs[1].ns_per_conn, 40.0);
    }
}
