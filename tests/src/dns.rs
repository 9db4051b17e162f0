//! Real DNS servers and clients inside test pods: dnsmasq from Debian, the
//! `dnsresponder` test server, and dig / glibc (getent) as clients.

use std::{
    process::{Child, Command, Stdio},
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
}

impl Dnsmasq {
    /// Starts dnsmasq with `args` (e.g. `--address=/ok.test/10.1.2.3`) and
    /// waits until it answers. Start it before the agent: the readiness
    /// probe is DNS traffic too.
    pub fn start(pod: &Pod, args: &[&str]) -> Self {
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq (apt install dnsmasq-base)");
        let server = Self { child };
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
