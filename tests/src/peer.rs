//! Processes inside pods: the `netpeer` and `dnsresponder` test binaries,
//! or any program, started in a pod's cgroup and network namespace.

use std::{
    ffi::OsStr,
    fs::File,
    io::{BufRead, BufReader, Write},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::net::Pod;

/// A running netpeer; killed on drop.
pub struct Peer {
    pub child: Child,
    /// Commands for the modes that read them (`redis-pool`).
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next line of output, panicking after `timeout`.
    pub fn expect_line(&mut self, timeout: Duration) -> String {
        self.lines.recv_timeout(timeout).unwrap_or_else(|e| {
            panic!(
                "netpeer {} said nothing within {timeout:?}: {e}",
                self.pid()
            )
        })
    }

    /// The next line if one is waiting; never blocks.
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Sends one command line to the peer's stdin.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("netpeer {} stdin: {e}", self.pid()));
    }

    /// Collects output until "done"; returns the per-connect lines.
    pub fn results(&mut self, timeout: Duration) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = self.expect_line(timeout);
            if line == "done" {
                return out;
            }
            out.push(line);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command that will run inside `pod`: in its cgroup and, if
/// `enter_netns`, in its network namespace (leave it out for `ip netns
/// exec`, which enters the namespace itself and also applies the pod's
/// /etc/netns files, such as resolv.conf).
pub fn command_in(pod: &Pod, program: impl AsRef<OsStr>, enter_netns: bool) -> Command {
    let netns = File::open(format!("/run/netns/{}", pod.netns)).expect("open netns");
    let procs = File::options()
        .write(true)
        .open(pod.cgroup_dir.join("cgroup.procs"))
        .expect("open cgroup.procs");
    let mut cmd = Command::new(program);
    // SAFETY: between fork and exec we only make async-signal-safe syscalls
    // (write, setns) on fds opened before the fork; the closure owns them.
    unsafe {
        cmd.pre_exec(move || {
            // "0" moves the writing process itself into the cgroup.
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if enter_netns && libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Starts a test binary (built next to the tests) inside `pod`, reading its
/// output lines.
pub fn spawn_bin(pod: &Pod, bin: &str, args: &[&str]) -> Peer {
    let mut child = command_in(pod, bin_path(bin), true)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let stdin = child.stdin.take().expect("piped stdin");
    Peer {
        child,
        stdin,
        lines: reader(stdout),
    }
}

/// Starts `netpeer ARGS` inside `pod`.
pub fn spawn(pod: &Pod, args: &[&str]) -> Peer {
    spawn_bin(pod, "netpeer", args)
}

/// Cargo builds `netpeer` next to the test binaries' `deps/` directory.
pub fn netpeer_path() -> std::path::PathBuf {
    bin_path("netpeer")
}

/// Cargo builds the test binaries next to the tests' `deps/` directory.
pub fn bin_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built (run the tests through cargo)",
        path.display()
    );
    path
}

fn reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts a listener and waits until it is ready.
pub fn listen(pod: &Pod, addr: &str, mode: &str) -> Peer {
    let mut p = spawn(pod, &["listen", addr, mode]);
    assert_eq!(p.expect_line(Duration::from_secs(30)), "ready");
    p
}

/// Opens `count` connections; returns the peer (holding them if `hold`)
/// and its per-connect results.
pub fn connect(
    pod: &Pod,
    addr: &str,
    count: u32,
    hold: bool,
    timeout_ms: u64,
) -> (Peer, Vec<String>) {
    let count = count.to_string();
    let timeout = timeout_ms.to_string();
    let mut p = spawn(
        pod,
        &[
            "connect",
            addr,
            &count,
            if hold { "hold" } else { "close" },
            &timeout,
        ],
    );
    let results = p.results(Duration::from_millis(timeout_ms * 3 + 30_000));
    (p, results)
}
