//! The findings engine and detectors on event sequences: the aggregator
//! fed synthetic kernel events at chosen times, the detectors run at
//! chosen "now"s.

use sockeye_common::{
    event::{flags, EventKind},
    tcp_state,
};

use super::{Findings, FindingsConfig, Inputs, Kind};
use crate::{
    aggregate::{Aggregator, Limits},
    dns::aggregate::DnsAggregates,
    findings::probe::Answers,
    testing::{closed, ev},
    workload::Table,
};

const SEC: u64 = 1_000_000_000;

/// The evidence with `key`.
fn fact<'f>(f: &'f super::Finding, key: &str) -> &'f super::Evidence {
    f.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {:#?}", f.evidence))
}

struct Bench {
    agg: Aggregator,
    dns: DnsAggregates,
    attributor: Table,
    probe: Answers,
    findings: Findings,
}

impl Bench {
    fn new(config: FindingsConfig) -> Self {
        Self {
            agg: Aggregator::new(Limits::default()),
            dns: DnsAggregates::new(16),
            attributor: Table::default(),
            probe: Answers::default(),
            findings: Findings::new(config),
        }
    }

    fn evaluate(&mut self, now_ns: u64) {
        let inputs = Inputs {
            tcp: &self.agg,
            dns: &self.dns,
            now_ns,
        };
        self.findings
            .evaluate(&inputs, &mut self.attributor, &mut self.probe);
    }

    fn open(&self, kind: Kind) -> Vec<super::Finding> {
        self.findings
            .open()
            .into_iter()
            .filter(|f| f.kind == kind)
            .cloned()
            .collect()
    }
}

fn established(cookie: u64, ts: u64) -> crate::event::Event {
    let mut e = ev(EventKind::Established, cookie, ts);
    e.raw.duration_ns = 200_000;
    e
}

#[test]
fn a_leak_opens_with_its_numbers_and_resolves_when_released() {
    let mut b = Bench::new(FindingsConfig::default());
    let start = 1000 * SEC;
    let mut opened_at = None;
    // One more connection every second, never closed.
    for i in 0..60u64 {
        let now = start + i * SEC;
        b.agg.handle(&established(i + 1, now));
        b.evaluate(now);
        if opened_at.is_none() && !b.open(Kind::ConnectionLeak).is_empty() {
            opened_at = Some(i);
        }
    }
    let at = opened_at.expect("a leak finding");
    assert!((20..=30).contains(&at), "opened after {at} s");
    let f = &b.open(Kind::ConnectionLeak)[0];
    assert_eq!(f.subject.cgroup_id, 42);
    assert_eq!(f.destination.as_ref().unwrap().to_string(), "10.0.0.9:6379");
    assert_eq!(fact(f, "open_sockets").value, 60.0, "{:?}", f.evidence);
    let rate = fact(f, "growth_per_min").value;
    assert!((50.0..=70.0).contains(&rate), "rate {rate}/min");
    assert_eq!(fact(f, "closed").value, 0.0, "nothing closed");
    let owner = fact(f, "held_by");
    assert_eq!(owner.about.as_deref(), Some("pid 100"), "{owner:?}");
    assert_eq!(owner.value, 60.0);
    assert_eq!(f.signals, ["growth", "few_closes", "single_owner"]);
    // The application releases them: resolved, with the time it ended.
    let end = start + 60 * SEC;
    for i in 0..60u64 {
        b.agg.handle(&closed(i + 1, end, tcp_state::FIN_WAIT1));
    }
    b.evaluate(end + SEC);
    assert!(b.open(Kind::ConnectionLeak).is_empty());
    let r = b.findings.resolved().next().expect("resolved");
    assert_eq!(r.id, f.id);
    assert!(r.resolved_ns.unwrap() <= end + SEC);
    let changes = b.findings.take_changes();
    assert!(changes.first().is_some_and(|c| c.is_open()));
    assert!(changes.last().is_some_and(|c| !c.is_open()));
}

#[test]
fn a_pool_that_fills_at_once_is_no_leak() {
    let mut b = Bench::new(FindingsConfig::default());
    let start = 1000 * SEC;
    for i in 0..40u64 {
        b.agg.handle(&established(i + 1, start));
    }
    for s in 0..180u64 {
        b.evaluate(start + s * SEC);
    }
    assert!(
        b.findings.list(true).is_empty(),
        "{:#?}",
        b.findings.list(true)
    );
}

fn listener(cookie: u64, cgroup: u64, ts: u64) -> crate::event::Event {
    let mut e = ev(EventKind::Listen, cookie, ts);
    e.raw.cgroup_id = cgroup;
    e.raw.local_port = 6379;
    e.raw.netns_cookie = 9;
    e.local = "0.0.0.0".parse().unwrap();
    e
}

fn refused(cookie: u64, ts: u64) -> crate::event::Event {
    let mut e = closed(cookie, ts, tcp_state::SYN_SENT);
    e.raw.errno = 111;
    e
}

#[test]
fn a_restart_is_measured_from_the_listener_and_not_reopened() {
    let mut b = Bench::new(FindingsConfig::default());
    let t = 1000 * SEC;
    b.agg.handle(&listener(900, 77, t));
    // A connection accepted on the server's address tells us its namespace
    // owns 10.0.0.9.
    let mut acc = ev(EventKind::Accepted, 901, t + SEC);
    acc.raw.netns_cookie = 9;
    acc.local = "10.0.0.9".parse().unwrap();
    b.agg.handle(&acc);
    b.agg.handle(&established(1, t + SEC));
    // The server stops at t+2 s; clients are refused until it listens again
    // at t+5.5 s.
    let mut stop = closed(900, t + 2 * SEC, tcp_state::LISTEN);
    stop.raw.cgroup_id = 77;
    b.agg.handle(&stop);
    for i in 0..6u64 {
        b.agg
            .handle(&refused(100 + i, t + 2 * SEC + (i + 1) * SEC / 2));
        b.evaluate(t + 2 * SEC + (i + 1) * SEC / 2);
    }
    let open = b.open(Kind::DependencyRestart);
    assert_eq!(open.len(), 1, "open while it is down");
    assert!(open[0].summary.contains("so far"), "{}", open[0].summary);
    b.agg.handle(&listener(902, 78, t + 5_500_000_000));
    b.agg.handle(&established(2, t + 6 * SEC));
    b.evaluate(t + 6 * SEC);
    assert!(b.open(Kind::DependencyRestart).is_empty());
    let r = b.findings.resolved().next().expect("resolved").clone();
    assert_eq!(r.resolved_ns, Some(t + 5_500_000_000));
    assert_eq!(r.since_ns, t + 2 * SEC);
    let gap = fact(&r, "gap_s");
    assert_eq!(gap.value, 3.5, "{}", gap.fact);
    assert!(gap.fact.contains("not accepting for 3.50s"), "{}", gap.fact);
    assert_eq!(fact(&r, "refused").value, 6.0);
    assert!(fact(&r, "refused").fact.starts_with("6 connects refused"));
    assert_eq!(
        r.subject.cgroup_id, 78,
        "the dependency, in its new container"
    );
    // Later evaluations see the same finished episode: not opened again.
    for s in 7..20u64 {
        b.evaluate(t + s * SEC);
    }
    assert_eq!(
        b.findings.stats.opened[super::kind_index(Kind::DependencyRestart)],
        1
    );
    assert!(b.open(Kind::DependencyRestart).is_empty());
}

#[test]
fn close_wait_needs_enough_sockets_waiting_long_enough() {
    let mut config = FindingsConfig::default();
    config.close_wait.min_sockets = 3;
    config.close_wait.min_wait_s = 10.0;
    let mut b = Bench::new(config);
    let t = 1000 * SEC;
    for c in 1..=3u64 {
        b.agg.handle(&established(c, t));
        let mut e = ev(EventKind::StateChange, c, t + SEC);
        e.raw.old_state = tcp_state::ESTABLISHED;
        e.raw.new_state = tcp_state::CLOSE_WAIT;
        b.agg.handle(&e);
    }
    b.evaluate(t + 10 * SEC);
    assert!(b.open(Kind::CloseWait).is_empty(), "not waited long enough");
    b.evaluate(t + 11 * SEC);
    let f = &b.open(Kind::CloseWait)[0];
    assert_eq!(fact(f, "close_wait_sockets").value, 3.0);
    assert_eq!(f.since_ns, t + SEC);
    // The application closes one: below the minimum, resolved after the
    // grace that keeps it from flapping.
    b.agg.handle(&closed(1, t + 12 * SEC, tcp_state::LAST_ACK));
    b.evaluate(t + 13 * SEC);
    assert_eq!(b.open(Kind::CloseWait).len(), 1);
    b.evaluate(t + 30 * SEC);
    assert!(b.open(Kind::CloseWait).is_empty());
    assert_eq!(
        b.findings.resolved().next().unwrap().resolved_ns,
        Some(t + 11 * SEC)
    );
}

#[test]
fn disabled_finds_nothing() {
    let mut b = Bench::new(FindingsConfig::default());
    b.findings = Findings::disabled();
    for i in 0..60u64 {
        b.agg.handle(&established(i + 1, 1000 * SEC + i * SEC));
        b.evaluate(1000 * SEC + i * SEC);
    }
    assert!(b.findings.list(true).is_empty());
    assert_eq!(b.findings.stats.evaluations, 0);
}

#[test]
fn connects_in_flight_do_not_raise_a_pool_ceiling() {
    let mut b = Bench::new(FindingsConfig::default());
    let start = 1000 * SEC;
    // A server with a full accept queue: 5 connections in, then
    // back-to-back connects it never answers, each pending from its first
    // SYN retransmission (1 s) until the application gives up (2 s).
    for i in 0..5u64 {
        b.agg.handle(&established(i + 1, start));
    }
    let mut first = None;
    for s in 1..=40u64 {
        let now = start + s * SEC;
        let attempt = 100 + (s - 1) / 2;
        if s % 2 == 1 {
            b.agg
                .handle(&ev(EventKind::ConnectStart, attempt, now - SEC));
        } else {
            let mut c = closed(attempt, now, tcp_state::SYN_SENT);
            c.raw.flags = flags::CLOSED_BY_OWNER;
            c.raw.syn_retransmits = 1;
            b.agg.handle(&c);
        }
        b.evaluate(now);
        let Some(f) = b.open(Kind::PoolExhaustion).pop() else {
            assert!(first.is_none(), "dropped at {s} s");
            continue;
        };
        first.get_or_insert(s);
        // Reported at every evaluation, a connect in flight or not.
        assert_eq!(f.updated_ns, now, "not reported at {s} s: {f:#?}");
        assert_eq!(fact(&f, "ceiling").value, 5.0, "the ceiling: {f:#?}");
        assert!(
            fact(&f, "established")
                .fact
                .starts_with("5 connections open"),
            "{f:#?}"
        );
        assert!(f.summary.contains(": 5 open at a ceiling"), "{f:#?}");
    }
    let at = first.expect("a pool finding");
    assert!((10..=15).contains(&at), "opened after {at} s");
}

#[test]
fn refusals_from_a_port_that_never_accepted_are_no_restart() {
    let mut b = Bench::new(FindingsConfig::default());
    let t = 1000 * SEC;
    // A health check of a closed port: refused, again and again.
    for i in 0..20u64 {
        b.agg.handle(&refused(100 + i, t + i * SEC / 2));
        b.evaluate(t + i * SEC / 2);
    }
    assert!(
        b.findings.list(true).is_empty(),
        "{:#?}",
        b.findings.list(true)
    );
    let flow = b.agg.flows.values().next().expect("the flow");
    assert_eq!(flow.failed_total(), 20, "still counted as failed connects");
}

#[test]
fn a_remote_dependency_that_went_away_is_a_warning_not_critical() {
    let mut b = Bench::new(FindingsConfig::default());
    let t = 1000 * SEC;
    // It accepted before; its listener is on another node.
    b.agg.handle(&established(1, t));
    for i in 0..6u64 {
        b.agg.handle(&refused(100 + i, t + SEC + i * SEC / 2));
        b.evaluate(t + SEC + i * SEC / 2);
    }
    let open = b.open(Kind::DependencyRestart);
    assert_eq!(open.len(), 1, "{:#?}", b.findings.list(true));
    assert_eq!(open[0].severity, super::Severity::Warning);
    assert_eq!(fact(&open[0], "refused").value, 6.0);
}
