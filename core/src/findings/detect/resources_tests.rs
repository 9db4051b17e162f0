//! Unit tests of the resource-exhaustion detector: failures in, candidates
//! (or none) out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sockeye_common::{event::EventKind, resources::errno};

use super::*;
use crate::findings::words;
use crate::{
    aggregate::{
        resources::{Failure, ResourceFailures},
        Limits,
    },
    dns::aggregate::DnsAggregates,
    event::comm_bytes,
    testing::ev,
};

const S: u64 = 1_000_000_000;
/// Where `aggregate::tests::ev` connects (cgroup 42).
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 6379);

fn failure(errno: u32, syscall: Syscall, ts_ns: u64) -> Failure {
    Failure {
        ts_ns,
        cgroup_id: 42,
        tgid: 4411,
        errno,
        syscall,
        destination: (syscall == Syscall::Connect).then_some(SERVER),
        comm: comm_bytes("php-fpm"),
    }
}

fn config(min_failures: u64) -> ResourcesConfig {
    ResourcesConfig {
        min_failures,
        resolve_after_s: 60.0,
    }
}

/// A verdict with its words, as a finding shows them.
#[derive(Debug)]
struct Worded {
    v: Verdict,
    summary: String,
    evidence: Vec<crate::findings::Evidence>,
    next_step: String,
}

impl std::ops::Deref for Worded {
    type Target = Verdict;
    fn deref(&self) -> &Verdict {
        &self.v
    }
}

fn run(agg: &Aggregator, now_ns: u64, config: &ResourcesConfig) -> Vec<Worded> {
    let dns = DnsAggregates::new(1);
    let mut names = crate::workload::Table::default();
    detect(
        &Inputs {
            tcp: agg,
            dns: &dns,
            now_ns,
        },
        config,
    )
    .into_iter()
    .map(|v| {
        let w = words::word(&v, &mut names);
        Worded {
            evidence: words::evidence(&v, w.facts, &mut names),
            summary: w.summary,
            next_step: w.next_step,
            v,
        }
    })
    .collect()
}

/// The evidence with `key`.
fn fact<'w>(c: &'w Worded, key: &str) -> &'w crate::findings::Evidence {
    c.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {:#?}", c.evidence))
}

fn aggregator() -> Aggregator {
    let mut agg = Aggregator::new(Limits::default());
    agg.resources = ResourceFailures::new(64, 60 * S);
    agg
}

#[test]
fn port_exhaustion_names_the_destination_the_range_and_the_sockets() {
    let mut agg = aggregator();
    // Four connections to the server hold every port of a 4-port range.
    for cookie in 1..=4 {
        agg.handle(&ev(EventKind::Established, cookie, S));
    }
    for i in 0..23 {
        agg.resources.record(&failure(
            errno::EADDRNOTAVAIL,
            Syscall::Connect,
            2 * S + i * S / 10,
        ));
    }
    let key = agg.resources.iter().next().map(|(k, _)| *k).unwrap();
    agg.resources.set_limit(
        &key,
        Some(Limit::PortRange {
            low: 40000,
            high: 40003,
        }),
    );
    let now = 5 * S;
    let c = run(&agg, now, &config(1));
    assert_eq!(c.len(), 1, "{c:#?}");
    let c = &c[0];
    assert_eq!(c.kind, Kind::ConnectResourceExhaustion);
    assert_eq!(c.key_subject, 42);
    let d = c.destination.as_ref().unwrap();
    assert_eq!((d.addr, d.port), (SERVER.ip(), SERVER.port()));
    assert_eq!(c.since_ns, 2 * S);
    assert_eq!(c.severity, Severity::Warning, "only 2.2 s of failures");
    assert_eq!(
        c.signals,
        ["errno", "at_limit"],
        "errno, and the range is full of sockets"
    );
    assert!(c.summary.contains("no free local port"), "{}", c.summary);
    assert!(
        c.summary
            .contains("23 connects to 10.0.0.9:6379 failed with EADDRNOTAVAIL"),
        "{}",
        c.summary
    );
    let facts: Vec<&str> = c.evidence.iter().map(|e| e.fact.as_str()).collect();
    assert_eq!(
        fact(c, "failures").fact,
        "23 connects to 10.0.0.9:6379 failed with EADDRNOTAVAIL (no free local port) in the last 60 s"
    );
    assert_eq!(fact(c, "failures").value, 23.0);
    assert_eq!(fact(c, "port_range_ports").value, 4.0);
    assert_eq!(fact(c, "sockets_to_destination").value, 4.0);
    assert!(facts.contains(&"local port range 40000-40003 (4 ports) in the network namespace of pid 4411 (php-fpm)"), "{facts:#?}");
    assert!(facts.contains(&"the agent sees 4 sockets from this workload to 10.0.0.9:6379 (4 open, 0 in TIME_WAIT)"), "{facts:#?}");
    assert!(c.next_step.contains("ip_local_port_range"));
}

#[test]
fn fd_exhaustion_names_the_process_and_its_limit() {
    let mut agg = aggregator();
    for i in 0..12 {
        agg.resources
            .record(&failure(errno::EMFILE, Syscall::Socket, S + i * S));
    }
    let key = agg.resources.iter().next().map(|(k, _)| *k).unwrap();
    agg.resources.set_limit(
        &key,
        Some(Limit::OpenFiles {
            soft: Some(32),
            hard: Some(4096),
            open: Some(32),
        }),
    );
    let c = run(&agg, 12 * S, &config(3));
    assert_eq!(c.len(), 1, "{c:#?}");
    let c = &c[0];
    assert_eq!(c.destination, None);
    assert_eq!(
        c.summary,
        "pid 4411 (php-fpm) hit its open-file limit: 12 socket() calls failed with EMFILE in the last 60 s"
    );
    assert_eq!(
        c.severity,
        Severity::Critical,
        "failures kept coming for 11 s"
    );
    assert_eq!(c.signals, ["errno", "at_limit", "sustained"]);
    let nofile = fact(c, "nofile_soft");
    assert_eq!(
        nofile.fact,
        "pid 4411 (php-fpm): RLIMIT_NOFILE 32 (hard 4096), 32 files open just after the failure"
    );
    assert_eq!(nofile.value, 32.0);
    assert_eq!(fact(c, "files_open").value, 32.0);
    assert!(c.next_step.contains("/proc/4411/fd"), "{}", c.next_step);
}

#[test]
fn nothing_below_the_threshold_or_once_the_failures_stop() {
    let mut agg = aggregator();
    for i in 0..2 {
        agg.resources
            .record(&failure(errno::EMFILE, Syscall::Socket, S + i * S));
    }
    assert!(run(&agg, 2 * S, &config(3)).is_empty(), "2 of 3");
    assert_eq!(run(&agg, 2 * S, &config(2)).len(), 1);
    assert_eq!(run(&agg, 2 * S + HOLD_NS, &config(2)).len(), 1);
    assert!(
        run(&agg, 2 * S + HOLD_NS + 1, &config(2)).is_empty(),
        "no failure for longer than the hold: the engine's grace takes over"
    );
}

#[test]
fn one_candidate_per_workload_and_destination() {
    let mut agg = aggregator();
    let now = 10 * S;
    agg.resources
        .record(&failure(errno::EADDRNOTAVAIL, Syscall::Connect, now));
    agg.resources
        .record(&failure(errno::EMFILE, Syscall::Socket, now));
    agg.resources
        .record(&failure(errno::ENFILE, Syscall::Socket, now));
    let mut other = failure(errno::EADDRNOTAVAIL, Syscall::Connect, now);
    other.cgroup_id = 7;
    agg.resources.record(&other);
    let c = run(&agg, now, &config(1));
    assert_eq!(c.len(), 3, "{c:#?}");
    let fds = c
        .iter()
        .find(|c| c.key_subject == 42 && c.destination.is_none())
        .unwrap();
    assert_eq!(
        fds.facts_of("failures").count(),
        2,
        "EMFILE and ENFILE: {fds:#?}"
    );
    assert_eq!(fds.severity, Severity::Critical, "ENFILE: the whole node");
}

#[test]
fn the_episode_starts_after_a_quiet_window() {
    let mut agg = aggregator();
    agg.resources
        .record(&failure(errno::EADDRNOTAVAIL, Syscall::Connect, S));
    agg.resources
        .record(&failure(errno::EADDRNOTAVAIL, Syscall::Connect, 100 * S));
    let c = run(&agg, 100 * S, &config(1));
    assert_eq!(c[0].since_ns, 100 * S);
    assert_eq!(fact(&c[0], "failures").value, 1.0, "one in the window");
    assert!(
        fact(&c[0], "failing_for_s")
            .fact
            .contains("1 failures in this episode, 2 since the agent started"),
        "{:#?}",
        c[0].evidence
    );
}
