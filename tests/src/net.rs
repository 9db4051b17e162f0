//! Test networks: a bridge in its own namespace, and pods attached to it.
//!
//! Pods talk over a private L2 segment (10.77.N.0/24, fd77:N::/64) that
//! lives entirely inside test namespaces: nothing is routed through, or
//! changed in, the host's network namespace. Each network of a test process
//! gets its own N, so tests running in parallel in one process have
//! distinct addresses: the agent sees every pod on the machine, and a
//! finding about a destination address (a restart, a DNS server) would
//! otherwise mix two tests' traffic. N is claimed machine-wide with a lock
//! file, so test processes running at once (two checkouts' suites, a
//! benchmark) never share a segment either; the kernel drops the lock when
//! its process dies, so a killed run leaves nothing to clean.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::sh;

const CGROUP_V2: &str = "/sys/fs/cgroup/unified";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Where the segments' lock files live (one per N in use).
const SEGMENT_LOCKS: &str = "/run/sockeye-tests/segments";
/// N of 10.77.N.0/24 is 0..SEGMENTS.
const SEGMENTS: u32 = 250;

/// Claims a free N of 10.77.N.0/24 for this process: holds an exclusive
/// `flock` on its lock file for as long as the returned file is open.
fn claim_segment(first: u32) -> (u8, fs::File) {
    fs::create_dir_all(SEGMENT_LOCKS).unwrap_or_else(|e| panic!("mkdir {SEGMENT_LOCKS}: {e}"));
    for i in 0..SEGMENTS {
        let n = (first + i) % SEGMENTS;
        let path = PathBuf::from(SEGMENT_LOCKS).join(n.to_string());
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        // SAFETY: flock on a descriptor we own; it only takes or refuses a lock.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (n as u8, file);
        }
    }
    panic!("all {SEGMENTS} test networks (10.77.N.0/24) are in use: see the holders with `fuser {SEGMENT_LOCKS}/*`");
}

/// A pod: cgroup + network namespace + veth into the test bridge.
#[derive(Debug)]
pub struct Pod {
    pub netns: String,
    pub cgroup_dir: PathBuf,
    pub cgroup_id: u64,
    pub ip4: Ipv4Addr,
    pub ip6: Ipv6Addr,
}

impl Pod {
    /// Runs `ip` inside the pod's namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.netns, "ip"];
        all.extend_from_slice(args);
        sh("ip", &all);
    }

    /// A counter from /proc/net/netstat (or snmp) as the pod's namespace sees
    /// it, e.g. ("TcpExt", "TCPSynRetrans").
    pub fn netstat(&self, group: &str, name: &str) -> u64 {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "cat",
                "/proc/net/netstat",
                "/proc/net/snmp",
            ])
            .output()
            .expect("read netstat");
        let text = String::from_utf8_lossy(&out.stdout);
        // The agent's parser: one place that knows the format.
        sockeye_agent::sock_diag::netstat::counter(&text, group, name)
            .unwrap_or_else(|| panic!("counter {group}:{name} not found"))
    }

    /// The resolv.conf that `ip netns exec` shows processes of this pod
    /// (removed with the network).
    pub fn set_resolv_conf(&self, content: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.netns);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::write(dir.join("resolv.conf"), content).expect("write resolv.conf");
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        let kv = format!("{key}={value}");
        sh("ip", &["netns", "exec", &self.netns, "sysctl", "-qw", &kv]);
    }
}

/// A private network with its pods; removes everything on drop.
pub struct TestNet {
    tag: String,
    /// N of this network's 10.77.N.0/24.
    segment: u8,
    bridge_ns: String,
    pub pods: Vec<Pod>,
    cgroup_parent: PathBuf,
    /// Holds this network's claim on its segment until it is dropped.
    _segment_lock: fs::File,
}

impl TestNet {
    /// `name` keeps namespaces recognisable (`ip netns` shows them).
    pub fn new(name: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Start where another process is unlikely to be: fewer lock probes.
        let (segment, lock) = claim_segment(std::process::id().wrapping_mul(7).wrapping_add(n));
        // Unique on the machine: this process's id and its count.
        let tag = format!("{}-{n}", std::process::id());
        let bridge_ns = format!("sk{tag}-br");
        let cgroup_parent = PathBuf::from(CGROUP_V2).join(format!("sockeye-test-{name}-{tag}"));
        let net = Self {
            tag,
            segment,
            bridge_ns,
            pods: Vec::new(),
            cgroup_parent,
            _segment_lock: lock,
        };
        sh("ip", &["netns", "add", &net.bridge_ns]);
        let br = |args: &[&str]| {
            let mut all = vec!["netns", "exec", net.bridge_ns.as_str(), "ip"];
            all.extend_from_slice(args);
            sh("ip", &all);
        };
        br(&["link", "add", "br0", "type", "bridge"]);
        br(&["link", "set", "br0", "up"]);
        fs::create_dir_all(&net.cgroup_parent)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", net.cgroup_parent.display()));
        net
    }

    /// A network with these pods, in order (`pod(0)` is the first).
    pub fn with_pods(name: &str, pods: &[&str]) -> Self {
        let mut net = Self::new(name);
        for pod in pods {
            net.add_pod(pod);
        }
        net
    }

    /// An address on this network: `10.77.N.host`. Hosts from 2 up are
    /// the pods', in the order they were added; others answer nothing.
    pub fn ip4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.segment, host)
    }

    /// Adds a pod with addresses 10.77.N.(n+2) and fd77:N::(n+2).
    pub fn add_pod(&mut self, name: &str) -> &Pod {
        let host = self.pods.len() as u8 + 2;
        let netns = format!("sk{}-{name}", self.tag);
        // Interface names are limited to 15 bytes; this one only needs to
        // be unique in the network's own bridge namespace.
        let veth_br = format!("veth{host}");
        sh("ip", &["netns", "add", &netns]);
        sh(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "netns",
                &netns,
                "type",
                "veth",
                "peer",
                "name",
                &veth_br,
                "netns",
                &self.bridge_ns,
            ],
        );
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.bridge_ns,
                "ip",
                "link",
                "set",
                &veth_br,
                "master",
                "br0",
                "up",
            ],
        );
        let ip4 = self.ip4(host);
        let ip6: Ipv6Addr = format!("fd77:{:x}::{host}", self.segment)
            .parse()
            .expect("valid ipv6");
        let cgroup_dir = self.cgroup_parent.join(name);
        fs::create_dir_all(&cgroup_dir)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup_dir.display()));
        let cgroup_id = fs::metadata(&cgroup_dir).expect("stat cgroup").ino();
        let pod = Pod {
            netns,
            cgroup_dir,
            cgroup_id,
            ip4,
            ip6,
        };
        // A new namespace inherits forwarding from the host on some setups;
        // pods are hosts, not routers, and the tests that route through a
        // pod rely on it dropping what is not addressed to it.
        pod.sysctl("net.ipv4.ip_forward", "0");
        pod.sysctl("net.ipv6.conf.all.forwarding", "0");
        pod.ip(&["link", "set", "lo", "up"]);
        pod.ip(&["addr", "add", &format!("{ip4}/24"), "dev", "eth0"]);
        pod.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        pod.ip(&["link", "set", "eth0", "up"]);
        self.pods.push(pod);
        self.pods.last().expect("just pushed")
    }

    pub fn pod(&self, i: usize) -> &Pod {
        &self.pods[i]
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for pod in &self.pods {
            kill_cgroup(&pod.cgroup_dir);
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &pod.netns])
                .status();
            let _ = fs::remove_dir(&pod.cgroup_dir);
            let _ = fs::remove_dir_all(PathBuf::from("/etc/netns").join(&pod.netns));
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.bridge_ns])
            .status();
        let _ = fs::remove_dir(&self.cgroup_parent);
    }
}

/// Kills every process in a cgroup and waits until it is empty, so the
/// directory can be removed.
fn kill_cgroup(dir: &std::path::Path) {
    for _ in 0..100 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill with a pid read from the cgroup; at worst ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
