//! Real DNS servers and clients inside test pods: dnsmasq from Debian (and
//! its own log of every query and reply), the `dnsresponder` test server,
//! and dig / glibc (getent) as clients.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use sockeye_agent::{
    dns::view::{DnsNameView, DnsTotalView},
    snapshot::Snapshot,
    Agent,
};

use crate::{
    agent::wait_until,
    net::Pod,
    peer::{self, command_in, Peer},
};

/// dnsmasq serving on the pod's addresses, port 53; killed on drop.
pub struct Dnsmasq {
    child: Child,
    /// Its log of queries and replies, with the directory holding it.
    log: Option<TempDir>,
}

impl Dnsmasq {
    /// Starts dnsmasq with `args` (e.g. `--address=/ok.test/10.1.2.3`) and
    /// waits until it answers. Start it before the agent: the readiness
    /// probe is DNS traffic too.
    pub fn start(pod: &Pod, args: &[&str]) -> Self {
        Self::spawn(pod, args, None)
    }

    /// Like [`Self::start`], logging every query and its reply with the
    /// client's address (`--log-queries=extra`), read with [`Self::log`].
    pub fn start_logged(pod: &Pod, args: &[&str]) -> Self {
        Self::spawn(pod, args, Some(TempDir::new("dnsmasq")))
    }

    /// What dnsmasq logged so far about the queries from `client`.
    pub fn log(&self, client: IpAddr) -> QueryLog {
        let dir = self.log.as_ref().expect("started with start_logged");
        let text = std::fs::read_to_string(dir.0.join("dnsmasq.log")).unwrap_or_default();
        QueryLog::parse(&text, client)
    }

    fn spawn(pod: &Pod, args: &[&str], log: Option<TempDir>) -> Self {
        let log_args: Vec<String> = match &log {
            Some(dir) => vec![
                "--log-queries=extra".into(),
                format!("--log-facility={}", dir.0.join("dnsmasq.log").display()),
            ],
            None => Vec::new(),
        };
        let child = command_in(pod, "dnsmasq", true)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--pid-file",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--port=53",
                &format!("--listen-address={}", pod.ip4),
                &format!("--listen-address={}", pod.ip6),
            ])
            .args(args)
            .args(&log_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq (apt install dnsmasq-base)");
        let server = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, out) = dig(
                pod,
                &[
                    &format!("@{}", pod.ip4),
                    "probe.invalid",
                    "+tries=1",
                    "+time=1",
                ],
            );
            if out.contains("status:") {
                return server;
            }
            assert!(Instant::now() < deadline, "dnsmasq did not answer: {out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory of its own under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sockeye-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// dnsmasq's own count of one client's queries and replies, from its log
/// (`<serial> <client>/<port> query[A] <name> from <client>`, then
/// `<serial> <client>/<port> config <name> is NXDOMAIN`, ...).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QueryLog {
    pub queries: u64,
    pub replies: u64,
    /// NXDOMAIN replies by name.
    pub nxdomain: BTreeMap<String, u64>,
    /// Lines saying dnsmasq dropped log lines: its counts are then short.
    pub dropped_lines: u64,
}

impl QueryLog {
    pub fn parse(text: &str, client: IpAddr) -> Self {
        let mut log = Self::default();
        let from = format!("{client}/");
        for line in text.lines() {
            if line.contains("log messages dropped") {
                log.dropped_lines += 1;
            }
            // "<date> dnsmasq[pid]: <serial> <client>/<port> <what...>"
            let Some((_, rest)) = line.split_once("]: ") else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.len() < 4 || !words[1].starts_with(&from) {
                continue;
            }
            match &words[2..] {
                [q, _, ..] if q.starts_with("query[") => log.queries += 1,
                [_, name, "is", what, ..] => {
                    log.replies += 1;
                    if *what == "NXDOMAIN" {
                        *log.nxdomain.entry(name.to_string()).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        log
    }

    pub fn nxdomains(&self) -> u64 {
        self.nxdomain.values().sum()
    }

    /// NXDOMAIN replies for names that end with one of `search` (the
    /// candidates a search-list walk asked), and for the others.
    pub fn nxdomains_split(&self, search: &[&str]) -> (u64, u64) {
        let suffixed = |n: &str| search.iter().any(|s| n.ends_with(&format!(".{s}")));
        self.nxdomain.iter().fold(
            (0, 0),
            |(a, b), (n, c)| if suffixed(n) { (a + c, b) } else { (a, b + c) },
        )
    }
}

/// A shell script run in a pod the way its processes see the pod
/// (`ip netns exec`: its resolv.conf), which touches a marker file when
/// its lookups are done and then stays (`exec sleep`) as the pod's
/// process; killed on drop.
pub struct PodScript {
    pub child: Child,
    dir: TempDir,
}

impl PodScript {
    /// Runs `lookups` (shell), then sleeps until dropped.
    pub fn start(pod: &Pod, lookups: &str) -> Self {
        let dir = TempDir::new("podscript");
        let done = dir.0.join("done");
        let script = format!("{lookups}\ntouch {}\nexec sleep 600\n", done.display());
        let child = command_in(pod, "ip", false)
            .args(["netns", "exec", &pod.netns, "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh in the pod");
        Self { child, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the lookups are done.
    pub fn done(&self) -> bool {
        Path::new(&self.dir.0.join("done")).exists()
    }
}

impl Drop for PodScript {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `dnsresponder` test server on the pod's IPv4 address, port 53.
pub fn responder(pod: &Pod) -> Peer {
    responder_on(pod, 53)
}

/// The `dnsresponder` test server on the pod's IPv4 address and `port`.
pub fn responder_on(pod: &Pod, port: u16) -> Peer {
    let addr = format!("{}:{port}", pod.ip4);
    let mut p = peer::spawn_bin(pod, "dnsresponder", &[&addr]);
    assert_eq!(p.expect_line(Duration::from_secs(30)), "ready");
    p
}

/// Runs dig inside `pod`; returns its pid and output.
pub fn dig(pod: &Pod, args: &[&str]) -> (u32, String) {
    run(command_in(pod, "dig", true).args(args))
}

/// Resolves `name` with glibc (`getent ahosts`), using the resolv.conf set
/// with [`Pod::set_resolv_conf`]; returns its pid and output.
pub fn getent(pod: &Pod, name: &str) -> (u32, String) {
    run(command_in(pod, "ip", false).args(["netns", "exec", &pod.netns, "getent", "ahosts", name]))
}

fn run(cmd: &mut Command) -> (u32, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for client");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (pid, text)
}

/// The row of `cgroup` for `name`/`qtype` ("A", "AAAA") asked of `server`.
pub fn row<'a>(
    snap: &'a Snapshot,
    cgroup: u64,
    name: &str,
    qtype: &str,
    server: &str,
) -> Option<&'a DnsNameView> {
    snap.dns_names.iter().find(|r| {
        r.workload.cgroup_id == cgroup
            && r.name == name
            && r.qtype == qtype
            && r.server.to_string() == server
    })
}

/// The totals of `cgroup` over all servers.
pub fn total(snap: &Snapshot, cgroup: u64) -> Option<&DnsTotalView> {
    snap.dns_totals
        .iter()
        .find(|t| t.workload.cgroup_id == cgroup && t.server.is_none())
}

/// Drains until `done` holds; panics with the DNS rows of `cgroup` if it
/// does not within `timeout`.
pub fn wait_for_dns(
    agent: &mut Agent,
    cgroup: u64,
    timeout: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    wait_until(agent, timeout, done, |snap| {
        let rows: Vec<&DnsNameView> = snap
            .dns_names
            .iter()
            .filter(|r| r.workload.cgroup_id == cgroup)
            .collect();
        format!("DNS rows of the test pod: {rows:#?}")
    })
}
