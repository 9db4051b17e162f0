//! Connects that find no free local port and socket() calls over the fd
//! limit, made by real processes in real pods: the syscall tracepoints
//! count every one (exactly, under the right pod, errno and destination),
//! the limit is read from the process, and a finding opens and resolves.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sockeye_agent::{
    aggregate::resources::{FailureKey, FailureStats, Limit, Syscall},
    findings::{
        config::ResourcesConfig, detect::resources::HOLD_NS, Finding, FindingsConfig, Kind,
        Severity,
    },
    Agent, Config,
};
use sockeye_tests::{
    agent::start_with,
    net::{Pod, TestNet},
    peer::{self, Peer},
    require_root,
};

const WAIT: Duration = Duration::from_secs(20);
const EADDRNOTAVAIL: u32 = libc::EADDRNOTAVAIL as u32;
const EMFILE: u32 = libc::EMFILE as u32;
/// The findings' window in these tests: short, so they resolve quickly.
const RESOLVE_AFTER_S: f64 = 3.0;

fn config() -> Config {
    Config {
        findings: Some(FindingsConfig {
            resources: ResourcesConfig {
                min_failures: 1,
                resolve_after_s: RESOLVE_AFTER_S,
            },
            ..FindingsConfig::default()
        }),
        ..Config::default()
    }
}

fn start(config: &Config) -> Agent {
    let agent = start_with(config);
    let feature = agent
        .features()
        .iter()
        .find(|f| f.name == "connect_resources")
        .expect("the feature is reported");
    assert!(
        feature.enabled,
        "connect_resources is off: {}",
        feature.detail
    );
    agent
}

/// Runs the agent's loop by hand (drain, housekeeping, findings) until
/// `done` holds; panics with `explain` after `timeout`.
fn wait(
    agent: &mut Agent,
    what: &str,
    mut done: impl FnMut(&mut Agent) -> bool,
    explain: impl Fn(&Agent) -> String,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        agent.drain();
        agent.housekeeping();
        agent.evaluate_findings();
        if done(agent) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}; {}\nhealth: {:#?}",
            explain(agent),
            agent.health()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every failure key of one pod.
fn keys_of(agent: &Agent, cgroup: u64) -> Vec<(FailureKey, FailureStats)> {
    let mut keys: Vec<(FailureKey, FailureStats)> = agent
        .aggregator
        .resources
        .iter()
        .filter(|(k, _)| k.cgroup_id == cgroup)
        .map(|(k, s)| (*k, s.clone()))
        .collect();
    keys.sort_by_key(|(k, _)| *k);
    keys
}

fn findings_of(agent: &Agent, cgroup: u64, include_resolved: bool) -> Vec<Finding> {
    agent
        .findings
        .list(include_resolved)
        .into_iter()
        .filter(|f| f.kind == Kind::ConnectResourceExhaustion && f.subject.cgroup_id == cgroup)
        .collect()
}

fn dest_of(f: &Finding) -> Option<SocketAddr> {
    f.destination
        .as_ref()
        .map(|d| SocketAddr::new(d.addr, d.port))
}

/// Starts the hog and waits for its first failure: (hog, held).
fn hog_start(pod: &Pod, args: &[&str]) -> (Peer, usize) {
    let mut p = peer::spawn_bin(pod, "resourcehog", args);
    let held = number(&mut p, "held ");
    (p, held)
}

/// Waits for the hog to finish failing: how many times it failed.
fn hog_finish(p: &mut Peer) -> usize {
    let failed = number(p, "failed ");
    assert_eq!(p.expect_line(WAIT), "done");
    failed
}

fn hog(pod: &Pod, args: &[&str]) -> (Peer, usize, usize) {
    let (mut p, held) = hog_start(pod, args);
    let failed = hog_finish(&mut p);
    (p, held, failed)
}

fn number(p: &mut Peer, prefix: &str) -> usize {
    let line = p.expect_line(WAIT);
    line.strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("resourcehog said {line:?}, expected {prefix}N"))
}

#[test]
fn connects_without_a_free_local_port_are_counted_and_found() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("ports", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    // Per network namespace: four ports for the client pod, nothing else.
    client.sysctl("net.ipv4.ip_local_port_range", "40000 40003");
    let mut agent = start(&config());
    let v4: SocketAddr = SocketAddr::new(IpAddr::V4(server.ip4), 6379);
    let v6: SocketAddr = SocketAddr::new(IpAddr::V6(server.ip6), 6379);
    let _srv4 = peer::listen(server, &v4.to_string(), "hold");
    let _srv6 = peer::listen(server, &v6.to_string(), "hold");

    // Ports are unique per destination: each address gets all four.
    let (hog4, held4, failed4) = hog(client, &["ports", &v4.to_string(), "5", "100"]);
    let (hog6, held6, failed6) = hog(client, &["ports", &v6.to_string(), "2", "100"]);
    assert_eq!((held4, held6), (4, 4), "the range has four ports");
    assert_eq!((failed4, failed6), (6, 3));

    let key = |dest| FailureKey {
        cgroup_id: client.cgroup_id,
        errno: EADDRNOTAVAIL,
        syscall: Syscall::Connect,
        destination: Some(dest),
    };
    wait(
        &mut agent,
        "every failed connect counted",
        |a| {
            let keys = keys_of(a, client.cgroup_id);
            let total = |dest| {
                keys.iter()
                    .find(|(k, _)| *k == key(dest))
                    .map_or(0, |(_, s)| s.total)
            };
            total(v4) >= 6 && total(v6) >= 3
        },
        |a| format!("client's failures: {:#?}", keys_of(a, client.cgroup_id)),
    );
    let keys = keys_of(&agent, client.cgroup_id);
    assert_eq!(keys.len(), 2, "nothing but the two destinations: {keys:#?}");
    for ((k, s), (dest, failed, hog)) in keys.iter().zip([(v4, 6, &hog4), (v6, 3, &hog6)]) {
        assert_eq!(*k, key(dest));
        assert_eq!(s.total, failed, "exact: {s:#?}");
        assert_eq!(s.episode_failures, failed);
        assert_eq!(s.last_tgid, hog.pid());
        assert_eq!(
            sockeye_agent::event::comm_string(&s.last_comm),
            "resourcehog"
        );
        assert!(s.first_ns <= s.last_ns);
        assert_eq!(
            s.limit,
            Some(Limit::PortRange {
                low: 40000,
                high: 40003
            }),
            "read in the client's network namespace, not the agent's"
        );
    }
    assert!(
        keys_of(&agent, server.cgroup_id).is_empty(),
        "the server failed nothing"
    );
    // The same rows in the snapshot (the JSON `resource_failure` lines).
    let snap = agent.snapshot(None);
    let rows: Vec<_> = snap
        .resource_failures
        .iter()
        .filter(|r| r.workload.cgroup_id == client.cgroup_id)
        .map(|r| {
            (
                r.syscall,
                r.errno,
                r.destination,
                r.failures_total,
                r.last_pid,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (Syscall::Connect, "EADDRNOTAVAIL", Some(v4), 6, hog4.pid()),
            (Syscall::Connect, "EADDRNOTAVAIL", Some(v6), 3, hog6.pid()),
        ]
    );

    wait(
        &mut agent,
        "a finding per destination",
        |a| findings_of(a, client.cgroup_id, false).len() == 2,
        |a| format!("findings: {:#?}", a.findings.list(true)),
    );
    for f in findings_of(&agent, client.cgroup_id, false) {
        let dest = dest_of(&f).expect("a destination");
        let (n, stats) = if dest == v4 {
            (6, &keys[0].1)
        } else {
            (3, &keys[1].1)
        };
        assert_eq!(f.since_ns, stats.episode_start_ns, "{f:#?}");
        assert_eq!(
            f.severity,
            Severity::Warning,
            "a burst, not sustained: {f:#?}"
        );
        assert_eq!(
            f.signals,
            ["errno", "at_limit"],
            "errno, and the range is full: {f:#?}"
        );
        assert!(
            f.subject
                .cgroup_path
                .as_deref()
                .is_some_and(|p| p.ends_with("/client")),
            "{:?}",
            f.subject
        );
        let facts: Vec<&str> = f
            .evidence
            .iter()
            .map(|e| e.fact.as_str())
            .filter(|f| !f.is_empty())
            .collect();
        assert_eq!(
            facts[0],
            format!(
                "{n} connects to {dest} failed with EADDRNOTAVAIL (no free local port) in the last 3 s"
            ),
            "{facts:#?}"
        );
        let range = format!(
            "local port range 40000-40003 (4 ports) in the network namespace of pid {} (resourcehog)",
            stats.last_tgid
        );
        assert!(facts.contains(&range.as_str()), "{facts:#?}");
        let seen = format!(
            "the agent sees 4 sockets from this workload to {dest} (4 open, 0 in TIME_WAIT)"
        );
        assert!(facts.contains(&seen.as_str()), "{facts:#?}");
        let value = |key: &str| f.evidence.iter().find(|e| e.key == key).map(|e| e.value);
        assert_eq!(value("port_range_ports"), Some(4.0), "{f:#?}");
        assert_eq!(value("sockets_to_destination"), Some(4.0), "{f:#?}");
    }

    // No more failures: each resolves a hold plus a window after its last.
    wait(
        &mut agent,
        "both findings resolved",
        |a| {
            let f = findings_of(a, client.cgroup_id, true);
            f.len() == 2 && f.iter().all(|f| !f.is_open())
        },
        |a| format!("findings: {:#?}", findings_of(a, client.cgroup_id, true)),
    );
    for f in findings_of(&agent, client.cgroup_id, true) {
        let last = if dest_of(&f) == Some(v4) {
            keys[0].1.last_ns
        } else {
            keys[1].1.last_ns
        };
        let ended = f.resolved_ns.expect("resolved");
        assert!(
            ended >= last && ended - last <= HOLD_NS + 1_000_000_000,
            "it ended when the failures stopped: last {last}, resolved {ended}"
        );
    }
    let health = agent.health();
    assert_eq!(health.lost.get("kernel_resource_ringbuf_full"), Some(&0));
    assert_eq!(health.lost.get("user_resource_decode_errors"), Some(&0));
    assert!(health.resource_failures_received >= 9);
}

#[test]
fn socket_calls_over_the_fd_limit_are_counted_and_found() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("fds", &["app"]);
    let app = net.pod(0);
    let mut agent = start(&config());
    // Failures for 11 s, past the 10 s that make it critical; the agent
    // watches while they come.
    let (mut hog, held) = hog_start(app, &["fds", "16", "11", "1000"]);
    assert!(
        held > 0 && held < 16,
        "stdio and its pipes take the rest: {held}"
    );
    let key = FailureKey {
        cgroup_id: app.cgroup_id,
        errno: EMFILE,
        syscall: Syscall::Socket,
        destination: None,
    };
    let mut severities = Vec::new();
    wait(
        &mut agent,
        "every failed socket() counted",
        |a| {
            for f in a.findings.take_changes() {
                if f.kind == Kind::ConnectResourceExhaustion && f.subject.cgroup_id == app.cgroup_id
                {
                    severities.push((f.severity, f.is_open()));
                }
            }
            a.aggregator
                .resources
                .get(&key)
                .is_some_and(|s| s.total >= 12)
                && severities.contains(&(Severity::Critical, true))
        },
        |a| format!("app's failures: {:#?}", keys_of(a, app.cgroup_id)),
    );
    assert_eq!(hog_finish(&mut hog), 12);
    agent.drain();
    let keys = keys_of(&agent, app.cgroup_id);
    assert_eq!(keys.len(), 1, "{keys:#?}");
    let s = &keys[0].1;
    assert_eq!(s.total, 12, "exact");
    assert_eq!(s.last_tgid, hog.pid());
    // Every descriptor below the limit is in use; one the process
    // inherited above it (a test harness's pipe) may be open too.
    assert!(
        matches!(
            s.limit,
            Some(Limit::OpenFiles {
                soft: Some(16),
                hard: Some(16),
                open: Some(n),
            }) if n >= 16
        ),
        "its own limit, and every descriptor in use: {:?}",
        s.limit
    );
    let Some(Limit::OpenFiles {
        open: Some(open), ..
    }) = s.limit
    else {
        unreachable!("checked above")
    };
    assert_eq!(
        severities.first(),
        Some(&(Severity::Warning, true)),
        "opened as a warning, then escalated: {severities:?}"
    );
    let f = findings_of(&agent, app.cgroup_id, false);
    assert_eq!(f.len(), 1, "{f:#?}");
    let f = &f[0];
    assert_eq!(f.destination, None);
    assert_eq!(
        f.signals,
        ["errno", "at_limit", "sustained"],
        "errno, fds at the limit, sustained: {f:#?}"
    );
    assert!(
        f.summary.starts_with(&format!(
            "pid {} (resourcehog) hit its open-file limit: ",
            hog.pid()
        )) && f
            .summary
            .contains("socket() calls failed with EMFILE in the last 3 s"),
        "{}",
        f.summary
    );
    let limit = format!(
        "pid {} (resourcehog): RLIMIT_NOFILE 16 (hard 16), {open} files open just after the failure",
        hog.pid()
    );
    assert!(
        f.evidence.iter().any(|e| e.fact == limit),
        "{:#?}",
        f.evidence
    );
    assert!(f.next_step.contains(&format!("/proc/{}/fd", hog.pid())));

    wait(
        &mut agent,
        "resolved",
        |a| findings_of(a, app.cgroup_id, false).is_empty(),
        |a| format!("findings: {:#?}", findings_of(a, app.cgroup_id, true)),
    );
    assert!(findings_of(&agent, app.cgroup_id, true)[0]
        .resolved_ns
        .is_some());
}

/// A tracefs copy without the syscall tracepoints, as on a kernel built
/// without CONFIG_FTRACE_SYSCALLS; removed on drop.
struct TracefsWithoutSyscalls(PathBuf);

impl TracefsWithoutSyscalls {
    fn new() -> Self {
        let root = std::env::temp_dir().join(format!("sockeye-nosyscalls-{}", std::process::id()));
        for tp in [
            "tcp/tcp_receive_reset",
            "sock/inet_sk_error_report",
            "cgroup/cgroup_mkdir",
        ] {
            let dir = root.join("events").join(tp);
            std::fs::create_dir_all(&dir).expect("mkdir");
            let real = Path::new("/sys/kernel/tracing/events")
                .join(tp)
                .join("format");
            std::fs::copy(&real, dir.join("format"))
                .unwrap_or_else(|e| panic!("copy {}: {e}", real.display()));
        }
        Self(root)
    }
}

impl Drop for TracefsWithoutSyscalls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn without_syscall_tracepoints_the_agent_runs_and_says_why() {
    if !require_root() {
        return;
    }
    let tracefs = TracefsWithoutSyscalls::new();
    let agent = start_with(&Config {
        tracefs: tracefs.0.clone(),
        ..Config::default()
    });
    let feature = |name: &str| {
        agent
            .features()
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("feature {name} not reported"))
            .clone()
    };
    let off = feature("connect_resources");
    assert!(!off.enabled);
    assert!(
        off.detail.contains("CONFIG_FTRACE_SYSCALLS"),
        "{}",
        off.detail
    );
    assert!(agent.probes.resource_events.is_none());
    assert!(feature("tcp_lifecycle").enabled);
    assert!(
        feature("connect_refused_cause").enabled,
        "the other tracepoints still work"
    );
}
