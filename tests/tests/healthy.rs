//! Nothing false: a node's varied healthy traffic, for minutes, gives no
//! finding at all. Pooled and per-request redis clients, a PostgreSQL
//! pool and per-request sessions, an HTTP service with its kubelet-like
//! health checks, a terse HTTP/1.0-style server that answers in a line and
//! closes, health checks of a port nobody listens on, DNS lookups, and a
//! server restarted gracefully while idle: each is a shape a detector
//! could mistake for a problem.
//!
//! Three minutes by default; `SOCKEYE_HEALTHY_SECS=600` for the ten-minute
//! run (README "Tests").

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sockeye_agent::{aggregate::flows::Direction, findings::FindingsConfig};
use sockeye_tests::{
    dns::{dig, total, Dnsmasq},
    findings::Watch,
    net::{Pod, TestNet},
    peer::{self, Peer},
    postgres::{ApiClient, JobClient, PostgresServer},
    redis::{ChurnClient, PoolClient, RedisServer},
    require_root,
};

fn run_for() -> Duration {
    let secs = std::env::var("SOCKEYE_HEALTHY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

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

/// Reads what a peer said since the last call; panics if it failed.
fn drain(p: &mut Peer, what: &str, seen: &mut u64) {
    while let Some(line) = p.try_line() {
        assert!(
            !line.starts_with("err") && !line.starts_with("timeout") && !line.starts_with("fail"),
            "{what} failed: {line}"
        );
        *seen += 1;
    }
}

#[test]
fn varied_healthy_traffic_makes_no_finding() {
    if !require_root() {
        return;
    }
    let run = run_for();
    let net = TestNet::with_pods(
        "healthy",
        &["app", "redis", "pg", "web", "terse", "dns", "idle"],
    );
    let (app, redis_pod, pg_pod, web, terse, dns_pod, idle) = (
        net.pod(0),
        net.pod(1),
        net.pod(2),
        net.pod(3),
        net.pod(4),
        net.pod(5),
        net.pod(6),
    );
    let redis = RedisServer::start(redis_pod);
    let pg = PostgresServer::start(pg_pod, 50);
    let redis_ip = redis_pod.ip4.to_string();
    let _dns = Dnsmasq::start(dns_pod, &[&format!("--address=/redis.test/{redis_ip}")]);
    let web_addr = SocketAddr::from((web.ip4, 8080));
    let mut web_server = peer::spawn(
        web,
        &["health", &web_addr.to_string(), &redis.addr.to_string()],
    );
    assert_eq!(web_server.expect_line(Duration::from_secs(30)), "ready");
    let terse_addr = SocketAddr::from((terse.ip4, 8081));
    let _terse_server = peer::listen(terse, &terse_addr.to_string(), "reply");
    let idle_addr = format!("{}:9000", idle.ip4);
    let mut idle_server = Some(peer::listen(idle, &idle_addr, "close"));
    let cgroups: Vec<u64> = net.pods.iter().map(|p| p.cgroup_id).collect();
    let mut watch = Watch::start(FindingsConfig::default(), &cgroups);

    // The clients.
    let mut pool = PoolClient::start(app, redis.addr, 5, 50);
    let mut churn = ChurnClient::start(app, redis.addr, 500, 1000);
    let mut job = JobClient::start(app, pg.addr, 3);
    let mut api = ApiClient::start(app, pg.addr, 500);
    net.bridge_addr();
    let mut probe_cmd = net.on_bridge(peer::netpeer_path().to_str().expect("utf-8"));
    probe_cmd.args(["probe", &web_addr.to_string(), "/healthz", "2000", "2000"]);
    let mut probes = peer::spawn_command(probe_cmd, "netpeer");
    let (mut probes_ok, mut terse_ok, mut closed_checks) = (0u64, 0u64, 0u64);
    let mut lookups = 0u32;
    let started = Instant::now();
    let mut next_second = Instant::now();
    let mut restarted_idle = false;
    watch.run_for(run, |w| {
        pool.read();
        churn.read();
        job.read();
        api.read();
        drain(&mut probes, "the health check", &mut probes_ok);
        if Instant::now() >= next_second {
            next_second += Duration::from_secs(1);
            lookup(app, dns_pod, "redis.test", &redis_ip);
            lookups += 1;
            // An HTTP/1.0-style exchange with a server that closes at once.
            let (_, r) = peer::connect(app, &terse_addr.to_string(), 1, false, 1000);
            terse_ok += r.iter().filter(|l| l.starts_with("ok")).count() as u64;
            // Every few seconds, a check of a port nobody listens on.
            if lookups.is_multiple_of(3) {
                let (_, r) = peer::connect(app, &format!("{}:9", web.ip4), 1, false, 1000);
                closed_checks += r.iter().filter(|l| l.starts_with("err")).count() as u64;
            }
            // Half-way, the idle server is restarted gracefully.
            if !restarted_idle && started.elapsed() >= run / 2 {
                drop(idle_server.take());
                idle_server = Some(peer::listen(idle, &idle_addr, "close"));
                restarted_idle = true;
            }
        }
        assert!(
            w.open().is_empty(),
            "a finding after {:.0} s of healthy traffic: {}",
            started.elapsed().as_secs_f64(),
            w.describe()
        );
    });
    drop(idle_server);
    assert!(watch.resolved().is_empty(), "{}", watch.describe());

    // Not vacuous: the traffic ran, and was judged throughout.
    let secs = run.as_secs();
    let evaluations = watch.agent.findings.stats.evaluations;
    assert!(
        evaluations + 5 >= secs,
        "{evaluations} evaluations in {secs} s"
    );
    assert!(
        churn.ok.len() as u64 + 5 >= secs * 2,
        "{} redis requests",
        churn.ok.len()
    );
    assert!(churn.errors.is_empty() && churn.failed_requests.is_empty());
    assert!(
        api.ok.len() as u64 + 5 >= secs * 2,
        "{} sessions",
        api.ok.len()
    );
    assert!(api.failed.is_empty(), "{:?}", api.failed);
    assert!(job.leaks.is_empty() && job.refused.is_empty());
    assert!(probes_ok + 2 >= secs / 2, "{probes_ok} health checks");
    assert!(terse_ok + 5 >= secs, "{terse_ok} terse exchanges");
    assert!(
        closed_checks + 2 >= secs / 3,
        "{closed_checks} closed-port checks"
    );
    let snap = watch.agent.snapshot(None);
    // The agent saw the traffic it judged: the app's sessions to each server.
    for (what, addr, at_least) in [
        ("redis", redis.addr, churn.ok.len() as u64),
        ("postgres", pg.addr, api.ok.len() as u64),
        ("the terse server", terse_addr, terse_ok),
    ] {
        let closed: u64 = snap
            .flows
            .iter()
            .filter(|f| {
                f.workload.cgroup_id == app.cgroup_id
                    && f.direction == Direction::Outbound
                    && f.remote == addr.ip()
                    && f.port == addr.port()
            })
            .map(|f| f.closed_total)
            .sum();
        // The last session's close may still be on its way.
        assert!(
            closed + 1 >= at_least,
            "{closed} sessions to {what} seen, {at_least} made"
        );
    }
    let dns = total(&snap, app.cgroup_id).expect("the app's DNS");
    assert!(dns.counts.answers >= u64::from(lookups) - 1, "{dns:?}");
    assert_eq!(dns.counts.timeouts, 0, "{dns:?}");
    eprintln!(
        "healthy: no finding in {:.0} s ({evaluations} evaluations; {} redis and {} postgres sessions, {probes_ok} health checks, {terse_ok} terse exchanges, {closed_checks} closed-port checks, {lookups} lookups, a graceful restart)",
        started.elapsed().as_secs_f64(),
        churn.ok.len(),
        api.ok.len(),
    );
    let _ = web_server.child.kill();
}
