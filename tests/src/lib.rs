//! Test harness: real "pods" (a cgroup v2 child plus a network namespace on a
//! private bridge), processes run inside them, and an in-process agent.
//!
//! Everything a test creates is removed in `Drop`, so it is cleaned up even
//! when the test panics.

pub mod agent;
pub mod api;
pub mod apiserver;
pub mod container;
pub mod dns;
pub mod faults;
pub mod findings;
pub mod kube;
pub mod metrics;
pub mod net;
pub mod peer;
pub mod postgres;
pub mod procs;
pub mod redis;
pub mod sockets;
pub mod tls;

/// Privileged tests need root; without it they say why and pass vacuously
/// only when `SOCKEYE_ALLOW_SKIP=1` (CI runs as root and never sets it).
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("SOCKEYE_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!(
            "skipped: needs root (loads eBPF programs, creates cgroups and network namespaces)"
        );
        return false;
    }
    panic!("this test needs root: it loads eBPF programs and creates cgroups and network namespaces (set SOCKEYE_ALLOW_SKIP=1 to skip)");
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
