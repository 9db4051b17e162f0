//! DNS degradation, replayed for real: two client pods ask a real DNS
//! server (the tests' responder, whose answers are delayed or withheld by
//! the name asked) through dig. Healthy lookups give no finding; slow
//! answers and timeouts for both clients give one, naming the server and
//! both clients, with ratios that match what the clients saw.

use std::time::{Duration, Instant};

use sockeye_agent::{
    dns::DnsConfig,
    findings::{Finding, FindingsConfig, Kind},
    Agent, Config,
};
use sockeye_tests::{
    agent::start_with,
    dns::{dig, responder},
    net::{Pod, TestNet},
    require_root,
};

/// Runs the agent's loop (drain, housekeeping, detectors) for `secs`, or
/// until `done` holds; true if it did.
fn drive(agent: &mut Agent, secs: f64, done: impl Fn(&Agent) -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        agent.drain();
        agent.housekeeping();
        agent.evaluate_findings();
        if done(agent) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `n` lookups of `name` from each pod, several at a time, as dig sees them.
fn lookups(pods: &[&Pod], server: &Pod, name: &str, n: usize) {
    let at = format!("@{}", server.ip4);
    std::thread::scope(|s| {
        for pod in pods {
            for _ in 0..n {
                let at = at.clone();
                s.spawn(move || dig(pod, &[&at, name, "+tries=1", "+time=3"]));
            }
        }
    });
}

fn dns_findings(agent: &Agent, server: &Pod) -> Vec<Finding> {
    agent
        .findings
        .list(true)
        .into_iter()
        .filter(|f| {
            f.kind == Kind::DnsDegradation
                && f.destination
                    .as_ref()
                    .is_some_and(|d| d.addr == std::net::IpAddr::V4(server.ip4))
        })
        .collect()
}

#[test]
fn slow_and_unanswered_lookups_degrade_the_server_for_both_clients() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("fdns", &["client1", "client2", "server"]);
    let (c1, c2, server) = (net.pod(0), net.pod(1), net.pod(2));
    let _srv = responder(server);
    let mut agent = start_with(&Config {
        // A short timeout keeps the test short; the detector only counts.
        // It is well above the slow answers' 700 ms, so one answered late
        // by a busy machine is still an answer, not a timeout.
        dns: DnsConfig {
            timeout: Duration::from_secs(2),
            ..DnsConfig::default()
        },
        findings: Some(FindingsConfig::default()),
        ..Config::default()
    });
    // Healthy: 15 fast lookups per client, no finding.
    lookups(&[c1, c2], server, "ok.test", 15);
    drive(&mut agent, 6.0, |_| false);
    assert!(
        dns_findings(&agent, server).is_empty(),
        "healthy lookups: {:#?}",
        dns_findings(&agent, server)
    );
    // Degraded: per client, 10 answers after 700 ms and 4 never answered.
    let fault = Instant::now();
    lookups(&[c1, c2], server, "delay700.test", 10);
    lookups(&[c1, c2], server, "silent.test", 4);
    let found = drive(&mut agent, 30.0, |a| {
        dns_findings(a, server)
            .iter()
            .any(|f| f.is_open() && f.affected.len() + 1 >= 2)
    });
    let took = fault.elapsed();
    eprintln!("time from fault to finding: {:.1} s", took.as_secs_f64());
    let findings = dns_findings(&agent, server);
    assert!(found, "no DNS finding naming both clients: {findings:#?}");
    let f = &findings[0];
    let mut clients: Vec<u64> = f.affected.iter().map(|w| w.cgroup_id).collect();
    clients.push(f.subject.cgroup_id);
    clients.sort();
    clients.dedup();
    let mut want = vec![c1.cgroup_id, c2.cgroup_id];
    want.sort();
    assert_eq!(clients, want, "{f:#?}");
    // The window starts at the first sample, taken after the healthy
    // lookups: 8 of the 28 queries since timed out, and all 20 answers were
    // slower than 500 ms.
    let ratio = |unit_fact: &str| {
        f.evidence
            .iter()
            .find(|e| e.fact.contains(unit_fact))
            .map(|e| e.value)
    };
    let timeouts = ratio("timed out").expect("timeout evidence");
    assert!((timeouts - 8.0 / 28.0).abs() < 0.01, "{f:#?}");
    let slow = ratio("took longer than").expect("latency evidence");
    assert!((slow - 1.0).abs() < 0.01, "{f:#?}");
    assert!(
        f.evidence
            .iter()
            .any(|e| e.fact.contains("silent.test (8 timeouts)")),
        "{f:#?}"
    );
    assert!(took < Duration::from_secs(60));
}
