//! Both ends of connections on one node, from synthetic kernel events: a
//! client and its server judged once, servers holding dead clients'
//! connections, servers at their limit, and clients refused by a server
//! elsewhere.

use std::net::{IpAddr, Ipv4Addr};

use sockeye_common::{event::EventKind, tcp_state};

use super::{Findings, FindingsConfig, Inputs, Kind};
use crate::{
    aggregate::{Aggregator, Limits},
    dns::aggregate::DnsAggregates,
    event::Event,
    findings::{probe::Answers, Finding},
    testing::ev,
    workload::{
        pod_meta::{MetaSource, PodMeta},
        Table, Workload,
    },
};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const SERVER: u64 = 77;
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

struct Node {
    agg: Aggregator,
    dns: DnsAggregates,
    names: Table,
    probe: Answers,
    findings: Findings,
    next_cookie: u64,
}

impl Node {
    fn new() -> Self {
        Self {
            agg: Aggregator::new(Limits::default()),
            dns: DnsAggregates::new(16),
            names: Table::default(),
            probe: Answers::default(),
            findings: Findings::new(FindingsConfig::default()),
            next_cookie: 1,
        }
    }

    fn evaluate(&mut self, now_ns: u64) {
        let inputs = Inputs {
            tcp: &self.agg,
            dns: &self.dns,
            now_ns,
        };
        self.findings
            .evaluate(&inputs, &mut self.names, &mut self.probe);
    }

    /// Evaluates once a second from `from` to `to` (seconds).
    fn run(&mut self, from: u64, to: u64) {
        for s in from..=to {
            self.evaluate(s * SEC);
        }
    }

    fn name(&mut self, cgroup_id: u64, pod: &str) {
        let w = Workload {
            cgroup_id,
            cgroup_path: None,
            owner: None,
            pod: Some(PodMeta {
                namespace: "auth".into(),
                name: pod.into(),
                uid: None,
                container: Some("app".into()),
                workload: None,
                labels: Default::default(),
                source: MetaSource::RuntimeRecord,
            }),
        };
        self.findings.instances.saw(&w, 0);
        self.names.known.insert(cgroup_id, w);
    }

    /// A connection from `client` (cgroup, address) to the server's port,
    /// both ends on this node; returns (client socket, server socket).
    fn connect(&mut self, client: (u64, Ipv4Addr), port: u16, ts: u64) -> (u64, u64) {
        let (c, s) = (self.next_cookie, self.next_cookie + 1);
        self.next_cookie += 2;
        let local_port = 30_000 + (c as u16);
        let mut out = ev(EventKind::Established, c, ts);
        out.raw.cgroup_id = client.0;
        out.raw.duration_ns = 100_000;
        out.raw.local_port = local_port;
        out.raw.remote_port = port;
        out.local = IpAddr::V4(client.1);
        out.remote = IpAddr::V4(SERVER_IP);
        self.agg.handle(&out);
        let acc = accepted(s, client.1, local_port, port, ts);
        self.agg.handle(&acc);
        (c, s)
    }

    fn close(&mut self, cookie: u64, old_state: u8, lifetime: u64, bytes: u64, ts: u64) {
        let mut e = ev(EventKind::Closed, cookie, ts);
        e.raw.old_state = old_state;
        e.raw.new_state = tcp_state::CLOSE;
        e.raw.duration_ns = lifetime;
        e.raw.bytes_acked = bytes;
        e.raw.bytes_received = bytes;
        self.agg.handle(&e);
    }

    fn open(&self, kind: Kind) -> Vec<Finding> {
        self.findings
            .open()
            .into_iter()
            .filter(|f| f.kind == kind)
            .cloned()
            .collect()
    }

    fn all_open(&self) -> Vec<(Kind, u64)> {
        self.findings
            .open()
            .iter()
            .map(|f| (f.kind, f.subject.cgroup_id))
            .collect()
    }
}

fn accepted(cookie: u64, client: Ipv4Addr, client_port: u16, port: u16, ts: u64) -> Event {
    let mut e = ev(EventKind::Accepted, cookie, ts);
    e.raw.cgroup_id = SERVER;
    e.raw.local_port = port;
    e.raw.remote_port = client_port;
    e.local = IpAddr::V4(SERVER_IP);
    e.remote = IpAddr::V4(client);
    e
}

fn value(f: &Finding, key: &str) -> f64 {
    f.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {f:#?}"))
        .value
}

#[test]
fn a_leak_between_two_pods_here_is_the_clients_not_the_servers() {
    let mut n = Node::new();
    // The job opens one connection a second to the server and keeps it.
    for s in 1..=40u64 {
        n.connect((50, Ipv4Addr::new(10, 0, 0, 50)), 5432, s * SEC);
        n.evaluate(s * SEC);
    }
    assert_eq!(
        n.all_open(),
        [(Kind::ConnectionLeak, 50)],
        "one root cause, the client: {:#?}",
        n.findings.open()
    );
    let leak = &n.open(Kind::ConnectionLeak)[0];
    assert_eq!(value(leak, "held_at_server"), 40.0, "the server holds them");
}

#[test]
fn a_restarting_client_leaves_its_pool_at_the_server() {
    let mut n = Node::new();
    n.name(50, "otp-service-5f8d7c9b6-aaaaa");
    n.name(51, "otp-service-5f8d7c9b6-bbbbb");
    n.name(52, "otp-service-5f8d7c9b6-ccccc");
    // Each instance fills a pool of 10, then dies without a FIN: its
    // cgroup goes, its connections stay at the server.
    for (i, cgroup) in [50u64, 51, 52].iter().enumerate() {
        let t = 1 + i as u64 * 20;
        for _ in 0..10 {
            n.connect(
                (*cgroup, Ipv4Addr::new(10, 0, 1, *cgroup as u8)),
                6379,
                t * SEC,
            );
        }
        n.run(t, t + 9);
        if *cgroup != 52 {
            n.probe.gone_cgroups.insert(*cgroup);
        }
        n.run(t + 10, t + 19);
    }
    assert_eq!(
        n.all_open(),
        [(Kind::StaleConnections, SERVER)],
        "{:#?}",
        n.findings.open()
    );
    let f = &n.open(Kind::StaleConnections)[0];
    assert_eq!(value(f, "stale_connections"), 20.0);
    assert_eq!(value(f, "held_connections"), 30.0);
    assert_eq!(value(f, "client_restarts"), 2.0, "{f:#?}");
    assert_eq!(value(f, "left_per_instance"), 10.0);
    assert!(
        f.summary
            .contains("each restart of auth/otp-service/app leaves 10 behind"),
        "{}",
        f.summary
    );
    let affected: Vec<u64> = f.affected.iter().map(|w| w.cgroup_id).collect();
    assert_eq!(
        affected,
        [50, 51, 52],
        "the gone instances and the live one"
    );
}

#[test]
fn a_server_at_its_limit_refusing_a_client_held_by_a_leak_is_that_leak() {
    let mut n = Node::new();
    // The job leaks one a second until the server holds 30.
    for s in 1..=30u64 {
        n.connect((50, Ipv4Addr::new(10, 0, 0, 50)), 5432, s * SEC);
        n.evaluate(s * SEC);
    }
    // The server is full: the api's connects are accepted and closed by
    // the server within 2 ms, after a 90-byte error, twice a second.
    for i in 0..60u64 {
        let t = 31 * SEC + i * SEC / 2;
        let (c, s) = n.connect((60, Ipv4Addr::new(10, 0, 0, 60)), 5432, t);
        n.close(s, tcp_state::FIN_WAIT2, 2 * MS, 90, t + 2 * MS);
        n.close(c, tcp_state::LAST_ACK, 2 * MS, 90, t + 3 * MS);
        if i % 2 == 0 {
            n.evaluate(t);
        }
    }
    assert_eq!(
        n.all_open(),
        [(Kind::ConnectionLeak, 50)],
        "the limit is the leak's, the api's refusals too: {:#?}",
        n.findings.open()
    );
    let leak = &n.open(Kind::ConnectionLeak)[0];
    assert!(leak.signals.contains(&"server_at_limit"), "{leak:#?}");
    assert_eq!(value(leak, "limit_held"), 30.0);
    let affected: Vec<u64> = leak.affected.iter().map(|w| w.cgroup_id).collect();
    assert!(
        affected.contains(&60) && affected.contains(&SERVER),
        "{affected:?}"
    );
}

const API: (u64, Ipv4Addr) = (60, Ipv4Addr::new(10, 0, 0, 60));

/// The job leaks one a second until the server holds `upto`, while the
/// api's sessions are served (about 410 bytes from the server) and the api
/// closes them when done.
fn leak_while_the_api_is_served(n: &mut Node, upto: u64) {
    for s in 1..=upto {
        n.connect((50, Ipv4Addr::new(10, 0, 0, 50)), 5432, s * SEC);
        let (c, sv) = n.connect(API, 5432, s * SEC);
        n.close(c, tcp_state::FIN_WAIT2, 20 * MS, 410, s * SEC + 20 * MS);
        n.close(sv, tcp_state::LAST_ACK, 20 * MS, 410, s * SEC + 20 * MS);
        n.evaluate(s * SEC);
    }
    assert_eq!(n.all_open(), [(Kind::ConnectionLeak, 50)]);
}

/// One short session of `who` at `t` answered in 90 bytes (a refusal's
/// error, or a terse answer), closed after `lifetime` by the server first,
/// or by the client once it read it.
fn terse_session(n: &mut Node, who: (u64, Ipv4Addr), t: u64, lifetime: u64, server_first: bool) {
    let (c, sv) = n.connect(who, 5432, t);
    let (first, then) = if server_first { (sv, c) } else { (c, sv) };
    n.close(first, tcp_state::FIN_WAIT2, lifetime, 90, t + lifetime);
    n.close(then, tcp_state::LAST_ACK, lifetime, 90, t + lifetime + MS);
}

/// The leak's finding has the server's limit folded in, the api among
/// the refused.
fn limit_refuses_the_api(n: &Node) -> bool {
    n.open(Kind::ConnectionLeak).iter().any(|f| {
        f.signals.contains(&"server_at_limit") && f.affected.iter().any(|w| w.cgroup_id == API.0)
    })
}

#[test]
fn a_full_server_refusing_a_client_that_closes_first_is_at_its_limit() {
    let mut n = Node::new();
    leak_while_the_api_is_served(&mut n, 30);
    // Full: each api session gets a 90-byte error; the api, a few µs away
    // on this node, reads it and closes before the server does seven times
    // in eight.
    let (first_refusal, mut found) = (31 * SEC, None);
    for i in 0..60u64 {
        let t = first_refusal + i * SEC / 2;
        terse_session(&mut n, API, t, 2 * MS, i % 8 == 0);
        if i % 2 == 0 {
            n.evaluate(t);
            if limit_refuses_the_api(&n) && found.is_none() {
                found = Some(t - first_refusal);
            }
        }
    }
    let took = found.expect("the limit, with the api among the refused");
    assert!(took <= 20 * SEC, "after {} s", took / SEC);
    assert_eq!(
        n.all_open(),
        [(Kind::ConnectionLeak, 50)],
        "{:#?}",
        n.findings.open()
    );
    // All of the last 30 s of its sessions, not the eighth the server closed.
    let leak = &n.open(Kind::ConnectionLeak)[0];
    assert!(value(leak, "limit_refused") >= 55.0, "{leak:#?}");
}

#[test]
fn a_full_server_is_at_its_limit_though_evaluations_catch_refused_sessions_open() {
    let mut n = Node::new();
    leak_while_the_api_is_served(&mut n, 30);
    // Full, and slow: a refusal takes 40 ms, so the evaluation (once a
    // second) often finds one or two refused sessions (the api's, and the
    // job's pool asking for one more) accepted and not yet closed.
    let in_flight = [1, 0, 2, 1, 0, 1, 2, 0, 1, 1, 0, 2, 1, 0, 0, 1, 2, 1, 0, 1];
    let (first_refusal, mut found) = (31 * SEC, None);
    for (i, open) in in_flight.iter().cycle().take(40).enumerate() {
        let t = first_refusal + i as u64 * SEC;
        let sessions: Vec<(u64, u64)> = (0..*open)
            .map(|k| {
                let who = if k == 0 {
                    API
                } else {
                    (50, Ipv4Addr::new(10, 0, 0, 50))
                };
                n.connect(who, 5432, t)
            })
            .collect();
        n.evaluate(t + MS);
        for (c, sv) in sessions {
            n.close(sv, tcp_state::FIN_WAIT2, 40 * MS, 90, t + 40 * MS);
            n.close(c, tcp_state::LAST_ACK, 40 * MS, 90, t + 41 * MS);
        }
        // The api's other sessions this second, refused between evaluations.
        for k in 1..3u64 {
            terse_session(&mut n, API, t + k * 300 * MS, 40 * MS, true);
        }
        if limit_refuses_the_api(&n) && found.is_none() {
            found = Some(t - first_refusal);
        }
    }
    let took = found.expect("the limit, with the api among the refused");
    assert!(took <= 16 * SEC, "after {} s", took / SEC);
    let leak = &n.open(Kind::ConnectionLeak)[0];
    assert_eq!(value(leak, "limit_held"), 30.0, "the level, not the peaks");
}

#[test]
fn a_limit_reached_while_refusals_began_is_the_count_it_reached() {
    let mut n = Node::new();
    leak_while_the_api_is_served(&mut n, 28);
    // The api is refused from here on (its sessions need a slot the
    // superuser reserve does not give it), while the job's last two
    // sessions still get in: the count reaches 30 a few seconds later.
    let (first_refusal, mut first_seen) = (29 * SEC, None);
    for i in 0..60u64 {
        let t = first_refusal + i * SEC / 2;
        if i == 4 || i == 10 {
            n.connect((50, Ipv4Addr::new(10, 0, 0, 50)), 5432, t);
        }
        terse_session(&mut n, API, t, 2 * MS, true);
        if i % 2 == 0 {
            n.evaluate(t);
            if first_seen.is_none() {
                first_seen = n
                    .open(Kind::ConnectionLeak)
                    .iter()
                    .find(|f| f.signals.contains(&"server_at_limit"))
                    .map(|f| value(f, "limit_held"));
            }
        }
    }
    assert_eq!(
        first_seen,
        Some(30.0),
        "the count reached, not one on the way"
    );
}

#[test]
fn a_server_whose_answers_shrank_is_no_limit_while_it_closes_none_itself() {
    let mut n = Node::new();
    leak_while_the_api_is_served(&mut n, 30);
    // The api now gets a short answer (an error page, a smaller value) and
    // closes, twice a second: terse, turned, but the server refuses nothing.
    for i in 0..60u64 {
        let t = 31 * SEC + i * SEC / 2;
        terse_session(&mut n, API, t, 2 * MS, false);
        if i % 2 == 0 {
            n.evaluate(t);
        }
    }
    let leak = &n.open(Kind::ConnectionLeak)[0];
    assert!(!leak.signals.contains(&"server_at_limit"), "{leak:#?}");
    assert_eq!(n.all_open(), [(Kind::ConnectionLeak, 50)]);
}

#[test]
fn a_server_elsewhere_closing_new_sessions_at_once_is_told_from_the_client() {
    let mut n = Node::new();
    let (mut cookie, remote) = (1000u64, IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)));
    let session = |n: &mut Node, cookie: u64, t: u64, old: u8, bytes: u64| {
        let mut e = ev(EventKind::Established, cookie, t);
        e.raw.remote_port = 5672;
        e.remote = remote;
        e.raw.duration_ns = 100_000;
        n.agg.handle(&e);
        let mut c = ev(EventKind::Closed, cookie, t + 3 * MS);
        c.raw.remote_port = 5672;
        c.remote = remote;
        c.raw.old_state = old;
        c.raw.duration_ns = 3 * MS;
        c.raw.bytes_received = bytes;
        n.agg.handle(&c);
    };
    // Served first (the client closes when done), for a minute.
    for s in 1..=60u64 {
        session(&mut n, cookie, s * SEC, tcp_state::FIN_WAIT2, 200);
        cookie += 1;
        n.evaluate(s * SEC);
    }
    assert!(n.all_open().is_empty(), "{:#?}", n.findings.open());
    // The secret changes: the server says no and closes, every time.
    let fault = 61 * SEC;
    let mut found = None;
    for s in 61..=100u64 {
        session(&mut n, cookie, s * SEC, tcp_state::LAST_ACK, 60);
        cookie += 1;
        n.evaluate(s * SEC);
        if found.is_none() && !n.open(Kind::SessionsRefused).is_empty() {
            found = Some(s * SEC - fault);
        }
    }
    let took = found.expect("a sessions_refused finding");
    assert!(took <= 10 * SEC, "found after {} s", took / SEC);
    assert_eq!(n.all_open(), [(Kind::SessionsRefused, 42)]);
    let f = &n.open(Kind::SessionsRefused)[0];
    assert!(value(f, "refused_sessions") >= 5.0);
    assert_eq!(f.destination.as_ref().unwrap().port, 5672);
}

#[test]
fn health_checks_and_terse_servers_are_no_refusals() {
    let mut n = Node::new();
    let remote = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
    // An HTTP/1.0 client of a server that answers in a line and closes,
    // twice a second, from the start: nothing says it was ever otherwise.
    for i in 0..240u64 {
        let t = SEC + i * SEC / 2;
        let mut e = ev(EventKind::Established, 5000 + i, t);
        e.raw.remote_port = 8080;
        e.remote = remote;
        n.agg.handle(&e);
        let mut c = ev(EventKind::Closed, 5000 + i, t + MS);
        c.raw.remote_port = 8080;
        c.remote = remote;
        c.raw.old_state = tcp_state::LAST_ACK;
        c.raw.duration_ns = MS;
        c.raw.bytes_received = 80;
        n.agg.handle(&c);
        if i % 2 == 0 {
            n.evaluate(t);
        }
    }
    // A probe every 10 s of a server here that holds a few connections.
    for s in 0..5u64 {
        n.connect((50, Ipv4Addr::new(10, 0, 0, 50)), 8081, SEC);
        let _ = s;
    }
    for s in 0..12u64 {
        let t = 2 * SEC + s * 10 * SEC;
        let (c, sv) = n.connect((60, Ipv4Addr::new(10, 0, 0, 60)), 8081, t);
        n.close(sv, tcp_state::FIN_WAIT2, MS, 100, t + MS);
        n.close(c, tcp_state::LAST_ACK, MS, 100, t + MS);
        n.run(t / SEC, t / SEC + 9);
    }
    assert!(n.all_open().is_empty(), "{:#?}", n.findings.open());
}

#[test]
fn a_pools_short_sessions_the_server_now_and_then_closes_first_are_no_limit() {
    let mut n = Node::new();
    // The app holds a pool of 3 and opens a short session twice a second:
    // it sends Terminate and closes, and on a loaded node the backend
    // often exits before the app's FIN arrives, so the server closes
    // first (one in three, seen in the healthy test). A served session
    // sends its settings first (about 410 bytes): no limit, no refusal.
    let app = (50, Ipv4Addr::new(10, 0, 0, 50));
    for _ in 0..3 {
        n.connect(app, 5432, SEC);
    }
    for i in 0..240u64 {
        let t = 2 * SEC + i * SEC / 2;
        let (c, s) = n.connect(app, 5432, t);
        let (first, second) = if i % 3 == 1 { (s, c) } else { (c, s) };
        n.close(first, tcp_state::FIN_WAIT2, 4 * MS, 450, t + 4 * MS);
        n.close(second, tcp_state::LAST_ACK, 4 * MS, 450, t + 4 * MS);
        if i % 2 == 0 {
            n.evaluate(t);
        }
    }
    assert!(n.all_open().is_empty(), "{:#?}", n.findings.open());
}

/// The kubelet probes `pod` on 8080 and gives up after 2 s without an
/// answer, at `t`.
fn probe_times_out(n: &mut Node, pod: u64, cookie: u64, t: u64) {
    let mut acc = ev(EventKind::Accepted, cookie, t);
    acc.raw.cgroup_id = pod;
    acc.raw.local_port = 8080;
    acc.raw.remote_port = 40_000 + cookie as u16;
    acc.local = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 90));
    acc.remote = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    n.agg.handle(&acc);
    let mut gave_up = ev(EventKind::StateChange, cookie, t + 2 * SEC);
    gave_up.raw.old_state = tcp_state::ESTABLISHED;
    gave_up.raw.new_state = tcp_state::CLOSE_WAIT;
    gave_up.raw.bytes_acked = 0;
    n.agg.handle(&gave_up);
}

fn liveness(n: &mut Node, pod: u64) {
    use crate::workload::probes::{ProbeAction, ProbeKind, ProbeSpec};
    n.names.probes.insert(
        pod,
        vec![ProbeSpec {
            kind: ProbeKind::Liveness,
            action: ProbeAction::Http {
                path: "/healthz".into(),
            },
            port: 8080,
            timeout_s: 2,
            period_s: 3,
            failure_threshold: 3,
        }],
    );
}

#[test]
fn probes_timing_out_while_the_pod_waits_on_a_restarting_dependency_are_its() {
    let mut n = Node::new();
    let pod = 90;
    liveness(&mut n, pod);
    // The pod uses redis (elsewhere), which then refuses for 6 s.
    let mut ok = ev(EventKind::Established, 500, SEC);
    ok.raw.cgroup_id = pod;
    n.agg.handle(&ok);
    for i in 0..12u64 {
        let mut r = ev(EventKind::Closed, 600 + i, 2 * SEC + i * SEC / 2);
        r.raw.cgroup_id = pod;
        r.raw.old_state = tcp_state::SYN_SENT;
        r.raw.new_state = tcp_state::CLOSE;
        r.raw.errno = 111;
        n.agg.handle(&r);
    }
    // Meanwhile its liveness probe times out three times.
    for (i, t) in [2u64, 5, 8].iter().enumerate() {
        probe_times_out(&mut n, pod, 700 + i as u64, t * SEC);
    }
    n.run(2, 11);
    assert_eq!(
        n.all_open(),
        [(Kind::DependencyRestart, pod)],
        "one finding: the dependency's (named by its client, it is elsewhere)",
    );
    let f = &n.open(Kind::DependencyRestart)[0];
    assert!(f.signals.contains(&"probes_failed"), "{f:#?}");
    assert_eq!(value(f, "probed_failures"), 3.0);
    let said = f
        .evidence
        .iter()
        .find(|e| e.key == "probed_failures")
        .unwrap();
    assert!(
        said.fact.starts_with("the liveness probe of cgroup:90 (timeout 2.00s) failed 3 times while 10.0.0.9:6379 did not accept for"),
        "{}",
        said.fact
    );
    assert!(
        said.fact
            .contains("the probe's timeout (2.00s) is shorter than"),
        "{}",
        said.fact
    );
}

#[test]
fn probes_timing_out_with_nothing_failing_are_their_own_finding() {
    let mut n = Node::new();
    liveness(&mut n, 90);
    for (i, t) in [2u64, 5, 8].iter().enumerate() {
        probe_times_out(&mut n, 90, 700 + i as u64, t * SEC);
    }
    // A probe that only waited a moment longer than usual is no timeout.
    let mut acc = ev(EventKind::Accepted, 800, 12 * SEC);
    acc.raw.cgroup_id = 90;
    acc.raw.local_port = 8080;
    n.agg.handle(&acc);
    n.run(2, 13);
    assert_eq!(
        n.all_open(),
        [(Kind::ProbeFailures, 90)],
        "{:#?}",
        n.findings.open()
    );
    let f = &n.open(Kind::ProbeFailures)[0];
    assert_eq!(value(f, "probe_failures"), 3.0);
    assert_eq!(
        f.severity,
        crate::findings::Severity::Critical,
        "3 restart it"
    );
    assert!(
        f.summary
            .starts_with("the liveness probe of cgroup:90 (timeout 2.00s) timed out 3 times"),
        "{}",
        f.summary
    );
}
