//! The incidents, replayed for real: a real redis-server and real clients in
//! cgroup + netns pods, the real agent in-process, and the findings it
//! opens, with the numbers checked against what the pods really did. Each
//! test prints the time from the fault to the finding.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use sockeye_agent::{
    aggregate::flows::Direction,
    clock::monotonic_ns,
    findings::{Finding, FindingsConfig, Kind},
};
use sockeye_tests::{
    agent::flow,
    dns::{dig, total, Dnsmasq},
    findings::{
        duration_evidence, find_evidence, is_about, largest, names, names_process, near,
        report_fault_to_finding, seconds, Watch,
    },
    net::{Pod, TestNet},
    peer::{self, Peer},
    redis::{ChurnClient, PoolClient, RedisServer, PORT},
    require_root,
};

const S: u64 = 1_000_000_000;
/// Every fault must be found within this.
const FIND_WITHIN: Duration = Duration::from_secs(60);

fn secs(ns: u64) -> f64 {
    ns as f64 / S as f64
}

/// A finding of `kind` whose subject is `pod` and whose destination is `to`.
fn about(f: &Finding, kind: Kind, pod: &Pod, to: SocketAddr) -> bool {
    f.kind == kind && f.subject.cgroup_id == pod.cgroup_id && is_about(f, to.ip(), to.port())
}

/// The growth rate a finding states, per minute.
fn rate_per_min(f: &Finding) -> f64 {
    f.evidence
        .iter()
        .find(|e| e.unit.ends_with("/min") || e.fact.to_lowercase().contains("per minute"))
        .map(|e| e.value)
        .unwrap_or_else(|| panic!("{} states no rate per minute: {:#?}", f.id, f.evidence))
}

// --- 1. connection leak ---------------------------------------------------

/// The leak's numbers against what the app really holds and how fast.
fn check_leak_numbers(f: &Finding, app: &PoolClient, pid: u32) {
    let count = largest(f, "sockets");
    let held = app.held() as f64;
    assert!(
        near(count, held, 2.0),
        "the finding counts {count} open sockets, the app holds {held}: {f:#?}"
    );
    let (stated, real) = (rate_per_min(f), app.leak_rate_per_min());
    assert!(
        near(stated, real, real * 0.25),
        "the finding states {stated:.1} sockets/min, the app leaks {real:.1}/min: {f:#?}"
    );
    assert!(
        names_process(f, pid, "netpeer"),
        "the evidence does not name the app's process netpeer({pid}): {f:#?}"
    );
    eprintln!(
        "connection leak: stated {count} open (app holds {held}), {stated:.1}/min (real {real:.1}/min)"
    );
}

#[test]
fn a_connection_leak_to_redis_is_found_with_its_numbers_and_resolves_once_closed() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("leak", &["app", "redis"]);
    let (app_pod, redis_pod) = (net.pod(0), net.pod(1));
    let redis = RedisServer::start(redis_pod);
    let mut watch = Watch::start(
        FindingsConfig::default(),
        &[app_pod.cgroup_id, redis_pod.cgroup_id],
    );

    // Ten seconds of healthy pooled use: three connections, reused.
    let mut app = PoolClient::start(app_pod, redis.addr, 3, 100);
    let pid = app.peer.pid();
    watch.run_for(Duration::from_secs(10), |_| app.read());
    assert!(
        watch.open().is_empty(),
        "healthy pool: {}",
        watch.describe()
    );

    // Then a code path that opens a connection per request and forgets it.
    app.start_leaking(1000);
    let f = watch.wait_open(
        Kind::ConnectionLeak,
        FIND_WITHIN,
        |f| about(f, Kind::ConnectionLeak, app_pod, redis.addr),
        |_| app.read(),
    );
    let fault = app.leaks.first().expect("the app leaked").1;
    report_fault_to_finding("connection leak", fault, watch.first_seen(&f.id), &f);
    check_leak_numbers(&f, &app, pid);

    // Still right a few seconds on, as the leak goes on.
    watch.run_for(Duration::from_secs(5), |_| app.read());
    let later = watch.get(&f.id).expect("still known");
    assert!(later.is_open(), "the leak goes on: {later:#?}");
    check_leak_numbers(&later, &app, pid);

    // The fix: the app closes what it leaked; the pool stays.
    app.close_leaked();
    let (resolved, seen) = watch.wait_resolved(&f.id, Duration::from_secs(30), |_| app.read());
    let closed = app.closed_ns.expect("the app said it closed them");
    eprintln!(
        "connection leak: resolved {:.1} s after the app closed its {} leaked connections",
        secs(seen - closed),
        app.leaks.last().map_or(0, |l| l.0)
    );
    assert!(resolved.resolved_ns.is_some());
}

// --- 2. CLOSE_WAIT --------------------------------------------------------

/// A server that answers one request per connection and then closes it.
fn closing_server(pod: &Pod, port: u16) -> Peer {
    peer::listen(pod, &format!("{}:{port}", pod.ip4), "reply")
}

/// A client that makes one exchange per connection and never closes it:
/// the server's FIN leaves each socket in CLOSE_WAIT. Returns the client
/// and the monotonic ns once all its sockets have been answered and closed
/// by the server.
fn forgetful_client(pod: &Pod, server: SocketAddr, count: u32) -> (Peer, u64) {
    let mut p = peer::spawn(
        pod,
        &[
            "connect",
            &server.to_string(),
            &count.to_string(),
            "exchange",
            "2000",
        ],
    );
    let results = p.results(Duration::from_secs(30));
    let at = monotonic_ns();
    assert_eq!(
        results.iter().filter(|r| r.starts_with("ok")).count(),
        count as usize,
        "{results:?}"
    );
    (p, at)
}

#[test]
fn sockets_left_in_close_wait_are_found_with_their_count_and_wait() {
    if !require_root() {
        return;
    }
    const COUNT: u32 = 8;
    const MIN_WAIT_S: f64 = 5.0;
    let net = TestNet::with_pods("closewait", &["client", "server"]);
    let (client_pod, server_pod) = (net.pod(0), net.pod(1));
    let server = SocketAddr::new(IpAddr::V4(server_pod.ip4), 7000);
    let _srv = closing_server(server_pod, server.port());
    let mut config = FindingsConfig::default();
    config.close_wait.min_wait_s = MIN_WAIT_S;
    let mut watch = Watch::start(config, &[client_pod.cgroup_id, server_pod.cgroup_id]);

    let (client, fault) = forgetful_client(client_pod, server, COUNT);
    let f = watch.wait_open(
        Kind::CloseWait,
        FIND_WITHIN,
        |f| about(f, Kind::CloseWait, client_pod, server),
        |_| {},
    );
    let seen = watch.first_seen(&f.id);
    let waited = report_fault_to_finding("close_wait", fault, seen, &f);
    assert!(
        waited >= MIN_WAIT_S - 0.5,
        "opened after {waited:.1} s, before the sockets waited min_wait_s = {MIN_WAIT_S} s"
    );
    let count = largest(&f, "sockets");
    assert_eq!(count, f64::from(COUNT), "CLOSE_WAIT sockets: {f:#?}");
    let wait = duration_evidence(&f, &["wait", "oldest", "since", "age"]);
    let wait_s = seconds(wait).expect("a duration");
    assert!(
        wait_s >= MIN_WAIT_S && wait_s <= secs(monotonic_ns() - fault) + 1.0,
        "stated wait {wait_s:.1} s; min_wait_s {MIN_WAIT_S}, really {:.1} s: {f:#?}",
        secs(monotonic_ns() - fault)
    );
    assert!(
        watch
            .open()
            .iter()
            .all(|f| !(f.kind == Kind::CloseWait && f.subject.cgroup_id == server_pod.cgroup_id)),
        "the server closed properly (FIN_WAIT_2 is not CLOSE_WAIT): {}",
        watch.describe()
    );

    // The client exits: its sockets close and the pile-up is over.
    let gone = monotonic_ns();
    drop(client);
    let (_, resolved) = watch.wait_resolved(&f.id, Duration::from_secs(30), |_| {});
    eprintln!(
        "close_wait: {count} sockets, stated wait {wait_s:.1} s; resolved {:.1} s after the client exited",
        secs(resolved - gone)
    );
}

// --- 3. dependency restart ------------------------------------------------

#[test]
fn a_redis_restart_is_found_with_its_gap_and_refused_connects() {
    if !require_root() {
        return;
    }
    redis_restart("restart", Started::AfterTheAgent);
}

#[test]
fn a_restart_of_a_redis_older_than_the_agent_is_found_the_same() {
    if !require_root() {
        return;
    }
    redis_restart("restartold", Started::BeforeTheAgent);
}

/// Whether the dependency was already listening when the agent started
/// (found by the start-up scan, not seen starting).
#[derive(PartialEq)]
enum Started {
    BeforeTheAgent,
    AfterTheAgent,
}

/// redis-server is SIGKILLed under a client connecting five times a second
/// and started again 3 s later in the same pod.
fn redis_restart(name: &str, started: Started) {
    let net = TestNet::with_pods(name, &["client", "redis"]);
    let (client_pod, redis_pod) = (net.pod(0), net.pod(1));
    let cgroups = [client_pod.cgroup_id, redis_pod.cgroup_id];
    let (mut redis, mut watch) = match started {
        Started::BeforeTheAgent => {
            let redis = RedisServer::start(redis_pod);
            (redis, Watch::start(FindingsConfig::default(), &cgroups))
        }
        Started::AfterTheAgent => {
            let watch = Watch::start(FindingsConfig::default(), &cgroups);
            (RedisServer::start(redis_pod), watch)
        }
    };
    let old_pid = redis.pid().expect("running");

    // A client that connects for every request, five times a second.
    let mut client = ChurnClient::start(client_pod, redis.addr, 200, 1000);
    // Ten requests answered before the fault, however long the client took
    // to start on a busy machine.
    watch.run_until(Duration::from_secs(30), "10 requests answered", |_| {
        client.read();
        client.ok.len() >= 10
    });
    assert!(client.errors.is_empty(), "{:?}", client.errors);

    // redis-server crashes and comes back three seconds later.
    let killed = redis.kill();
    watch.run_for(Duration::from_secs(3), |_| client.read());
    let up = redis.start_again(redis_pod);
    let gap = secs(up - killed);

    let about_redis =
        |f: &Finding| is_about(f, redis.addr.ip(), PORT) && names(f, client_pod.cgroup_id);
    let f = watch.wait_found(Kind::DependencyRestart, FIND_WITHIN, about_redis, |_| {
        client.read()
    });
    let scenario = format!("dependency restart ({name})");
    report_fault_to_finding(&scenario, killed, watch.first_seen(&f.id), &f);

    // It resolves once redis accepts again, dated when it listened again.
    let (f, _) = watch.wait_resolved(&f.id, Duration::from_secs(20), |_| client.read());
    watch.run_for(Duration::from_secs(1), |_| client.read());
    assert!(
        client.ok.iter().any(|t| *t > up),
        "requests succeed after the restart"
    );
    let ended = f.resolved_ns.expect("resolved");
    assert!(
        near(secs(ended), secs(up), 0.5),
        "resolved as of {:+.2} s from the restart: {f:#?}",
        secs(ended) - secs(up)
    );
    // The dependency is the subject; the client felt it.
    assert_eq!(f.subject.cgroup_id, redis_pod.cgroup_id, "{f:#?}");
    assert!(
        f.affected
            .iter()
            .any(|w| w.cgroup_id == client_pod.cgroup_id),
        "{f:#?}"
    );
    assert!(
        names_process(&f, old_pid, "redis-server"),
        "the evidence names the listener that stopped, redis-server({old_pid}): {f:#?}"
    );
    let stated_gap = seconds(duration_evidence(&f, &["listened again"])).expect("a duration");
    assert!(
        near(stated_gap, gap, 0.5),
        "stated gap {stated_gap:.2} s, real {gap:.2} s (kill to accepting): {f:#?}"
    );
    let refused = client.refused_between(killed, up) as f64;
    let stated_refused = f
        .evidence
        .iter()
        .find(|e| e.fact.to_lowercase().contains("refused") && seconds(e).is_none())
        .unwrap_or_else(|| panic!("no refused count: {f:#?}"))
        .value;
    assert!(
        near(stated_refused, refused, 2.0),
        "stated {stated_refused} refused connects, the client saw {refused}: {f:#?}"
    );
    eprintln!(
        "{scenario}: gap {stated_gap:.2} s (real {gap:.2} s), {stated_refused} refused (client saw {refused})"
    );
    assert!(
        watch
            .open()
            .iter()
            .all(|f| f.kind != Kind::DependencyRestart),
        "nothing else is down: {}",
        watch.describe()
    );
}

// --- 4. pool / backlog exhaustion -----------------------------------------

/// A server too busy to accept: its accept queue (BACKLOG + 1) fills up and
/// later SYNs are dropped.
fn stuck_server(pod: &Pod, port: u16, backlog: u32) -> Peer {
    let mut p = peer::spawn(
        pod,
        &[
            "listen",
            &format!("{}:{port}", pod.ip4),
            "none",
            &backlog.to_string(),
        ],
    );
    assert_eq!(p.expect_line(Duration::from_secs(30)), "ready");
    p
}

/// What a client that opens connection after connection said so far.
#[derive(Default)]
struct Attempts {
    ok: u32,
    failed: u32,
    /// Monotonic ns when the last connect that succeeded returned: the
    /// next one is the first to stall.
    last_ok_ns: u64,
    done: bool,
}

impl Attempts {
    fn read(&mut self, p: &mut Peer) {
        while let Some(line) = p.try_line() {
            if line.starts_with("ok") {
                self.ok += 1;
                self.last_ok_ns = monotonic_ns();
            } else if line.starts_with("err") {
                self.failed += 1;
            } else if line == "done" {
                self.done = true;
            }
        }
    }
}

#[test]
fn connects_stalling_at_a_full_backlog_are_pool_exhaustion() {
    if !require_root() {
        return;
    }
    const BACKLOG: u32 = 4;
    const ATTEMPTS: u32 = 12;
    let net = TestNet::with_pods("pool", &["client", "server"]);
    let (client_pod, server_pod) = (net.pod(0), net.pod(1));
    let server = SocketAddr::new(IpAddr::V4(server_pod.ip4), 7100);
    let _srv = stuck_server(server_pod, server.port(), BACKLOG);
    let mut watch = Watch::start(
        FindingsConfig::default(),
        &[client_pod.cgroup_id, server_pod.cgroup_id],
    );

    // Connection after connection, each with a 2 s connect timeout, kept.
    let mut client = peer::spawn(
        client_pod,
        &[
            "connect",
            &server.to_string(),
            &ATTEMPTS.to_string(),
            "hold",
            "2000",
        ],
    );
    let mut seen = Attempts::default();
    let f = watch.wait_open(
        Kind::PoolExhaustion,
        FIND_WITHIN,
        |f| about(f, Kind::PoolExhaustion, client_pod, server),
        |_| seen.read(&mut client),
    );
    report_fault_to_finding(
        "pool exhaustion",
        seen.last_ok_ns,
        watch.first_seen(&f.id),
        &f,
    );
    let ceiling = BACKLOG + 1;
    assert_eq!(seen.ok, ceiling, "the kernel queues backlog + 1");
    // The established connections; a connect in flight is not part of it.
    let open = largest(&f, "sockets");
    assert_eq!(
        open,
        f64::from(ceiling),
        "stated ceiling; backlog {BACKLOG} holds {ceiling}: {f:#?}"
    );
    let stalled = f
        .evidence
        .iter()
        .find(|e| {
            let fact = e.fact.to_lowercase();
            seconds(e).is_none()
                && ["failed", "slow", "timed out", "aborted", "retransmit"]
                    .iter()
                    .any(|w| fact.contains(w))
        })
        .unwrap_or_else(|| panic!("no failed or slow connects in the evidence: {f:#?}"));
    assert!(
        stalled.value >= 3.0 && near(stalled.value, f64::from(seen.failed), 1.0),
        "stated {} failed or slow connects; the client saw {} fail, and 3 (pool.min_failed_or_slow) open it: {f:#?}",
        stalled.value,
        seen.failed
    );

    // The client's own account: the ceiling, then only timeouts.
    let end = Instant::now() + Duration::from_secs(30);
    while !seen.done && Instant::now() < end {
        watch.tick();
        seen.read(&mut client);
    }
    assert!(seen.done, "the client did not finish");
    assert_eq!((seen.ok, seen.failed), (ceiling, ATTEMPTS - ceiling));
    // And the finding's, now that all of them are in.
    watch.run_for(Duration::from_secs(2), |_| {});
    let f = watch.get(&f.id).expect("known");
    assert!(f.is_open(), "the ceiling still holds: {f:#?}");
    let kernel = client_pod.netstat("TcpExt", "TCPSynRetrans");
    let retrans = find_evidence(&f, "retransmits", &["syn"])
        .unwrap_or_else(|| panic!("no SYN retransmits in the evidence: {f:#?}"))
        .value;
    // Counted from the flow's first sample, taken at the first evaluation
    // after its first socket: a retransmission before it (1 s into the
    // first stalled connect) may be left out.
    assert!(
        retrans <= kernel as f64 && retrans >= kernel as f64 - 1.0,
        "stated {retrans}; the client pod's kernel counted {kernel} SYN retransmissions: {f:#?}"
    );
    eprintln!(
        "pool exhaustion: ceiling {open} open (backlog {BACKLOG}), {} failed connects stated when it opened ({} seen by the client in all), {retrans} SYN retransmits ({kernel} by the kernel)",
        stalled.value, seen.failed
    );
}

// --- 5. healthy -----------------------------------------------------------

/// Resolves `name` with dig from `pod`; panics unless it is answered.
fn lookup(pod: &Pod, server: &Pod, name: &str, want: &str) {
    let (_, out) = dig(
        pod,
        &[
            &format!("@{}", server.ip4),
            name,
            "A",
            "+tries=1",
            "+time=2",
        ],
    );
    assert!(
        out.contains("status: NOERROR") && out.contains(want),
        "{out}"
    );
}

#[test]
fn healthy_pooled_short_lived_and_dns_traffic_makes_no_finding() {
    if !require_root() {
        return;
    }
    const RUN: Duration = Duration::from_secs(125);
    let net = TestNet::with_pods("healthy", &["app", "redis", "dns"]);
    let (app_pod, redis_pod, dns_pod) = (net.pod(0), net.pod(1), net.pod(2));
    let redis = RedisServer::start(redis_pod);
    let redis_ip = redis_pod.ip4.to_string();
    let _dns = Dnsmasq::start(dns_pod, &[&format!("--address=/redis.test/{redis_ip}")]);
    let mut watch = Watch::start(
        FindingsConfig::default(),
        &[app_pod.cgroup_id, redis_pod.cgroup_id, dns_pod.cgroup_id],
    );

    // A pool of five, busy; a connection per second opened and closed
    // properly; a DNS lookup per second.
    let mut pool = PoolClient::start(app_pod, redis.addr, 5, 50);
    let mut churn = ChurnClient::start(app_pod, redis.addr, 1000, 1000);
    let mut lookups = 0u32;
    let mut next_lookup = Instant::now();
    let started = Instant::now();
    watch.run_for(RUN, |w| {
        pool.read();
        churn.read();
        if Instant::now() >= next_lookup {
            lookup(app_pod, dns_pod, "redis.test", &redis_ip);
            lookups += 1;
            next_lookup += Duration::from_secs(1);
        }
        assert!(
            w.open().is_empty(),
            "a finding after {:.0} s of healthy traffic: {}",
            started.elapsed().as_secs_f64(),
            w.describe()
        );
    });
    assert!(watch.resolved().is_empty(), "{}", watch.describe());

    // Not vacuous: the agent saw all of it, and judged it many times.
    let evaluations = watch.agent.findings.stats.evaluations;
    assert!(evaluations >= 115, "{evaluations} evaluations");
    assert!(
        churn.ok.len() >= 115,
        "{} short-lived requests",
        churn.ok.len()
    );
    assert!(churn.errors.is_empty() && churn.failed_requests.is_empty());
    let snap = watch.agent.snapshot(None);
    let f = flow(
        &snap,
        app_pod.cgroup_id,
        Direction::Outbound,
        IpAddr::V4(redis_pod.ip4),
        PORT,
    )
    .expect("the app's flow to redis");
    assert!(f.open >= 5, "the pool's 5 connections: {f:?}");
    assert!(f.connects_ok >= 5 + 115, "{f:?}");
    assert_eq!(f.failed_total(), 0, "{f:?}");
    let dns = total(&snap, app_pod.cgroup_id).expect("the app's DNS");
    assert!(dns.counts.answers >= u64::from(lookups) - 1, "{dns:?}");
    assert_eq!(dns.counts.timeouts, 0, "{dns:?}");
    eprintln!(
        "healthy: no finding in {:.0} s ({evaluations} evaluations; {} short-lived connections, {lookups} lookups, pool of {})",
        started.elapsed().as_secs_f64(),
        churn.ok.len(),
        pool.size
    );
}
