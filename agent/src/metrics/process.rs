//! The agent process's own resident memory and CPU time, read from
//! /proc/self at scrape time.

use std::path::Path;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

impl Process {
    /// Whatever can be read; a figure that cannot is left out, not guessed.
    pub fn read() -> Self {
        Self::read_from(Path::new("/proc/self"))
    }

    fn read_from(dir: &Path) -> Self {
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            resident_bytes: resident_bytes(&status),
            cpu_seconds: cpu_ticks(&stat)
                .filter(|_| ticks > 0)
                .map(|t| t as f64 / ticks as f64),
        }
    }
}

/// `VmRSS:  1234 kB` in /proc/<pid>/status.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// utime + stime (fields 14 and 15) of /proc/<pid>/stat. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from
/// its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(
            resident_bytes("Name:\tx\nVmRSS:\t   2048 kB\nThreads: 3\n"),
            Some(2 << 20)
        );
        assert_eq!(resident_bytes("Name:\tkthread\n"), None);
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 7 0 0";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn reads_this_process() {
        let p = Process::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
    }
}
