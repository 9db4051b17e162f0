//! The kernel's answers to the detectors' questions (see
//! `sockeye_core::findings::probe`): idle times and accept queues through
//! `sock_diag` in the owner's network namespace, listen overflows, process
//! names and a workload's resolv.conf from procfs.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use sockeye_common::tcp_state;
use sockeye_core::findings::probe::{Idle, Probe, ProbeError, ResolvConfText};

use crate::{
    attribution::cgroup_handle::HandleResolver,
    sock_diag::{self, netstat, Match, Query, SockDiagError},
};

/// Asks the running kernel, through procfs at `proc_root` and the cgroup
/// v2 mount.
pub struct KernelProbe {
    pub proc_root: PathBuf,
    /// Opens cgroups by id; None without CAP_DAC_READ_SEARCH (or no
    /// mount), and then no cgroup is judged gone.
    pub cgroups: Option<HandleResolver>,
    /// The cgroup v2 mount, to find a workload's processes when the one
    /// asked about is gone.
    pub cgroup_root: Option<PathBuf>,
}

impl KernelProbe {
    pub fn new(proc_root: PathBuf, cgroup_root: &Path) -> Self {
        let cgroups = HandleResolver::new(cgroup_root)
            .map_err(|e| log::info!("cgroups cannot be opened by id ({e}): a connection's client is judged gone by its socket alone"))
            .ok();
        Self {
            proc_root,
            cgroups,
            cgroup_root: Some(cgroup_root.to_path_buf()),
        }
    }
}

impl Probe for KernelProbe {
    fn idle(
        &mut self,
        pid: u32,
        remote: IpAddr,
        port: u16,
        idle_after_ms: u64,
    ) -> Result<Idle, ProbeError> {
        idle(&self.proc_root, pid, remote, port, idle_after_ms)
            .map_err(|e| failed("idle times", pid, e))
    }

    fn accept_queue(&mut self, pid: u32, port: u16) -> Result<Option<(u32, u32)>, ProbeError> {
        accept_queue(&self.proc_root, pid, port).map_err(|e| failed("accept queue", pid, e))
    }

    fn listen_overflows(&mut self, pid: u32) -> Result<u64, ProbeError> {
        netstat::listen_overflows(&self.proc_root, pid)
            .map(|c| c.overflows)
            .map_err(|e| failed("listen overflows", pid, e))
    }

    fn process_name(&mut self, pid: u32) -> Option<String> {
        let comm =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("comm")).ok()?;
        Some(comm.trim().to_string()).filter(|c| !c.is_empty())
    }

    fn cgroup_alive(&mut self, cgroup_id: u64) -> Option<bool> {
        match self.cgroups.as_ref()?.path_of(cgroup_id) {
            Ok(_) => Some(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESTALE | libc::ENOENT)) => Some(false),
            Err(_) => None,
        }
    }
    fn resolv_conf(
        &mut self,
        pid: u32,
        cgroup_path: Option<&str>,
    ) -> Result<ResolvConfText, ProbeError> {
        resolv_conf(
            &self.proc_root,
            self.cgroup_root.as_deref(),
            pid,
            cgroup_path,
        )
    }
}

/// Processes of a cgroup tried when the one asked about is gone.
const RESOLV_CONF_TRIES: usize = 8;
/// A resolv.conf larger than this is not one (glibc reads lines of 1 KiB).
const RESOLV_CONF_MAX: u64 = 64 * 1024;

/// /etc/resolv.conf through /proc/<pid>/root, which resolves in the
/// process's own mount namespace (a container's file, or what `ip netns
/// exec` bound there). `pid` first, if it is still in `cgroup_path`; else
/// the first processes listed in that cgroup.
pub fn resolv_conf(
    proc_root: &Path,
    cgroup_root: Option<&Path>,
    pid: u32,
    cgroup_path: Option<&str>,
) -> Result<ResolvConfText, ProbeError> {
    let in_cgroup = |pid: u32| match cgroup_path {
        Some(want) => v2_cgroup(proc_root, pid).is_some_and(|p| p == want),
        None => true,
    };
    let mut tried = Vec::new();
    if pid != 0 && in_cgroup(pid) {
        tried.push(pid);
    }
    if let (Some(root), Some(path)) = (cgroup_root, cgroup_path) {
        let procs = root.join(path.trim_start_matches('/')).join("cgroup.procs");
        if let Ok(list) = std::fs::read_to_string(procs) {
            tried.extend(
                list.lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok())
                    .filter(|p| *p != pid)
                    .take(RESOLV_CONF_TRIES),
            );
        }
    }
    let mut last = format!("no process left in {}", cgroup_path.unwrap_or("its cgroup"));
    for p in tried {
        let file = proc_root.join(p.to_string()).join("root/etc/resolv.conf");
        match read_bounded(&file) {
            Ok(text) => return Ok(ResolvConfText { pid: p, text }),
            Err(e) => last = format!("{}: {e}", file.display()),
        }
    }
    Err(failed("resolv.conf", pid, last))
}

/// The process's cgroup v2 path ("0::/path" in /proc/<pid>/cgroup).
fn v2_cgroup(proc_root: &Path, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(RESOLV_CONF_MAX)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn failed(question: &'static str, pid: u32, e: impl std::fmt::Display) -> ProbeError {
    ProbeError {
        question,
        pid,
        reason: e.to_string(),
    }
}

/// Idle times of the connections to `remote`:`port` in `pid`'s network
/// namespace (a pod's: its containers share it, so they are counted
/// together).
pub fn idle(
    proc_root: &Path,
    pid: u32,
    remote: IpAddr,
    port: u16,
    idle_after_ms: u64,
) -> Result<Idle, SockDiagError> {
    let query = Query::states(&[tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT])
        .with_match(Match::remote(remote, port));
    let mut quiet: Vec<u32> = sock_diag::tcp_sockets(proc_root, pid, &query)?
        .into_iter()
        .filter_map(|s| s.tcp)
        .map(|t| t.last_data_sent_ms.min(t.last_data_recv_ms))
        .collect();
    quiet.sort_unstable();
    Ok(Idle {
        sockets: quiet.len() as u64,
        idle: quiet
            .iter()
            .filter(|ms| u64::from(**ms) >= idle_after_ms)
            .count() as u64,
        longest_ms: quiet.last().copied().unwrap_or(0),
        median_ms: quiet.get(quiet.len() / 2).copied().unwrap_or(0),
    })
}

/// A listener's accept queue on `port` in `pid`'s namespace: (waiting,
/// limit) of the fullest one (a full queue shows limit + 1).
pub fn accept_queue(
    proc_root: &Path,
    pid: u32,
    port: u16,
) -> Result<Option<(u32, u32)>, SockDiagError> {
    let mut q = Query::states(&[tcp_state::LISTEN]).with_match(Match::local_port(port));
    q.tcp_info = false;
    Ok(sock_diag::tcp_sockets(proc_root, pid, &q)?
        .iter()
        .filter_map(|s| s.accept_queue())
        .max_by_key(|(waiting, limit)| i64::from(*waiting) - i64::from(*limit)))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// A procfs and a cgroup mount in a temp dir, removed on drop.
    struct Roots(PathBuf);

    impl Roots {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("sockeye-resolv-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Self(dir)
        }

        fn process(&self, pid: u32, cgroup: &str, resolv_conf: Option<&str>) {
            let p = self.0.join("proc").join(pid.to_string());
            fs::create_dir_all(p.join("root/etc")).unwrap();
            fs::write(p.join("cgroup"), format!("12:cpu:/x\n0::{cgroup}\n")).unwrap();
            if let Some(text) = resolv_conf {
                fs::write(p.join("root/etc/resolv.conf"), text).unwrap();
            }
        }

        fn cgroup(&self, path: &str, procs: &[u32]) {
            let dir = self.0.join("cgroup").join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            let list: Vec<String> = procs.iter().map(u32::to_string).collect();
            fs::write(dir.join("cgroup.procs"), list.join("\n")).unwrap();
        }

        fn read(&self, pid: u32, cgroup: &str) -> Result<ResolvConfText, ProbeError> {
            resolv_conf(
                &self.0.join("proc"),
                Some(&self.0.join("cgroup")),
                pid,
                Some(cgroup),
            )
        }
    }

    impl Drop for Roots {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn resolv_conf_is_read_through_the_process_or_another_of_its_cgroup() {
        let r = Roots::new();
        r.process(10, "/pods/a", Some("options ndots:5\n"));
        r.process(11, "/pods/a", Some("options ndots:2\n"));
        r.process(20, "/pods/b", Some("options ndots:1\n"));
        r.cgroup("/pods/a", &[11, 10]);
        let got = r.read(10, "/pods/a").unwrap();
        assert_eq!((got.pid, got.text.as_str()), (10, "options ndots:5\n"));
        // Gone, or reused by a process of another cgroup: the cgroup's own.
        assert_eq!(r.read(99, "/pods/a").unwrap().pid, 11);
        assert_eq!(r.read(20, "/pods/a").unwrap().pid, 11);
        // Nobody left to ask.
        r.cgroup("/pods/c", &[]);
        let e = r.read(99, "/pods/c").unwrap_err();
        assert!(e.to_string().contains("no process left in /pods/c"), "{e}");
    }
}
