//! DNS seen through the real cgroup_skb programs: real servers (dnsmasq,
//! and a test server that injects delays, errors and silence), real clients
//! (dig, glibc) in cgroup + netns pods, exact counts per pod.

use std::time::Duration;

use sockeye_agent::Config;
use sockeye_tests::{
    agent::{start, start_with},
    dns::{dig, getent, responder, responder_on, row, total, wait_for_dns, Dnsmasq},
    net::TestNet,
    peer, require_root,
};

const WAIT: Duration = Duration::from_secs(15);
const MS: u64 = 1_000_000;

#[test]
fn udp_tcp_and_ipv6_queries_are_matched_and_attributed() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnsbasic", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let _dnsmasq = Dnsmasq::start(
        server,
        &[
            "--address=/ok.test/10.1.2.3",
            "--address=/ok.test/fd00::123",
            "--local=/test/",
        ],
    );
    let mut agent = start();
    let at = format!("@{}", server.ip4);
    let (_, out) = dig(client, &[&at, "ok.test", "A", "+tries=1", "+time=3"]);
    assert!(out.contains("10.1.2.3"), "{out}");
    let (nx_pid, out) = dig(client, &[&at, "nope.test", "A", "+tries=1", "+time=3"]);
    assert!(out.contains("NXDOMAIN"), "{out}");
    let (tcp_pid, out) = dig(
        client,
        &[&at, "ok.test", "A", "+tcp", "+tries=1", "+time=3"],
    );
    assert!(out.contains("10.1.2.3"), "{out}");
    let at6 = format!("@{}", server.ip6);
    let (_, out) = dig(client, &[&at6, "ok.test", "AAAA", "+tries=1", "+time=3"]);
    assert!(out.contains("fd00::123"), "{out}");

    let s4 = format!("{}:53", server.ip4);
    let s6 = format!("[{}]:53", server.ip6);
    let snap = wait_for_dns(&mut agent, client.cgroup_id, WAIT, |s| {
        row(s, client.cgroup_id, "ok.test", "A", &s4).is_some_and(|r| r.counts.answers == 2)
            && row(s, client.cgroup_id, "nope.test", "A", &s4)
                .is_some_and(|r| r.counts.answers == 1)
            && row(s, client.cgroup_id, "ok.test", "AAAA", &s6)
                .is_some_and(|r| r.counts.answers == 1)
    });
    let ok = row(&snap, client.cgroup_id, "ok.test", "A", &s4).unwrap();
    assert_eq!(
        (ok.counts.queries, ok.counts.tcp_queries),
        (2, 1),
        "{ok:#?}"
    );
    assert_eq!(ok.counts.rcodes.get("NOERROR"), Some(&2));
    assert_eq!((ok.counts.retries, ok.counts.timeouts), (0, 0));
    assert_eq!(ok.counts.latency.map(|l| l.count), Some(2));
    assert!(ok.counts.latency.unwrap().max_ns < 500 * MS, "{ok:#?}");
    assert_eq!(ok.last_pid, tcp_pid, "the last sender of ok.test: {ok:#?}");
    let nx = row(&snap, client.cgroup_id, "nope.test", "A", &s4).unwrap();
    assert_eq!(nx.counts.rcodes.get("NXDOMAIN"), Some(&1), "{nx:#?}");
    assert_eq!(nx.last_pid, nx_pid);
    let v6 = row(&snap, client.cgroup_id, "ok.test", "AAAA", &s6).unwrap();
    assert_eq!(v6.counts.rcodes.get("NOERROR"), Some(&1), "{v6:#?}");
    let t = total(&snap, client.cgroup_id).unwrap();
    assert_eq!((t.counts.queries, t.counts.answers), (4, 4), "{t:#?}");
    // Nothing of this pod's traffic lands on the server pod: answers are
    // taken on the client's side only.
    assert!(total(&snap, server.cgroup_id).is_none());
}

#[test]
fn latency_matches_injected_delays() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnsdelay", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let _srv = responder(server);
    let mut agent = start();
    let at = format!("@{}", server.ip4);
    for name in ["delay200.test", "delay1500.test"] {
        let (_, out) = dig(client, &[&at, name, "+tries=1", "+time=5"]);
        assert!(out.contains("10.0.0.1"), "{out}");
    }
    let s4 = format!("{}:53", server.ip4);
    let snap = wait_for_dns(&mut agent, client.cgroup_id, WAIT, |s| {
        ["delay200.test", "delay1500.test"]
            .iter()
            .all(|n| row(s, client.cgroup_id, n, "A", &s4).is_some_and(|r| r.counts.answers == 1))
    });
    for (name, delay_ms) in [("delay200.test", 200), ("delay1500.test", 1500)] {
        let r = row(&snap, client.cgroup_id, name, "A", &s4).unwrap();
        let got = r.counts.latency.unwrap().max_ns;
        let want = delay_ms * MS;
        // Never less than the delay; more by what a busy machine adds to
        // the responder's wake-up and the client's (10%, at least 100 ms).
        let slack = (want / 10).max(100 * MS);
        assert!(
            got >= want && got <= want + slack,
            "{name}: latency {got} ns, injected {want} ns"
        );
    }
}

#[test]
fn servfail_refused_and_unanswered_queries() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnsfail", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let _srv = responder(server);
    let mut agent = start();
    let at = format!("@{}", server.ip4);
    for name in ["servfail.test", "refused.test"] {
        dig(client, &[&at, name, "+tries=1", "+time=3"]);
    }
    // The server never answers this name; and nothing at all answers at
    // .250 (no such host on the pod network).
    let nobody = format!("@{}", net.ip4(250));
    let nobody53 = format!("{}:53", net.ip4(250));
    let silent = std::thread::scope(|s| {
        let a = s.spawn(|| dig(client, &[&at, "silent.test", "+tries=1", "+time=2"]));
        let b = s.spawn(|| dig(client, &[&nobody, "nobody.test", "+tries=1", "+time=2"]));
        // Answered after the agent's 5 s timeout: a timeout, then a late answer.
        let c = s.spawn(|| dig(client, &[&at, "delay6000.test", "+tries=1", "+time=8"]));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert!(silent.2 .1.contains("10.0.0.1"), "{}", silent.2 .1);

    let s4 = format!("{}:53", server.ip4);
    let snap = wait_for_dns(&mut agent, client.cgroup_id, WAIT, |s| {
        let r = |n: &str, srv: &str| row(s, client.cgroup_id, n, "A", srv).map(|r| &r.counts);
        r("servfail.test", &s4).is_some_and(|c| c.rcodes.get("SERVFAIL") == Some(&1))
            && r("refused.test", &s4).is_some_and(|c| c.rcodes.get("REFUSED") == Some(&1))
            && r("silent.test", &s4).is_some_and(|c| c.timeouts == 1)
            && r("nobody.test", &nobody53).is_some_and(|c| c.timeouts == 1)
            && r("delay6000.test", &s4).is_some_and(|c| c.late_answers == 1)
    });
    let late = row(&snap, client.cgroup_id, "delay6000.test", "A", &s4).unwrap();
    assert_eq!(
        (late.counts.timeouts, late.counts.answers),
        (1, 0),
        "{late:#?}"
    );
    let t = total(&snap, client.cgroup_id).unwrap();
    assert_eq!(t.counts.timeouts, 3, "{t:#?}");
    assert_eq!(t.counts.failures(), 2, "SERVFAIL and REFUSED: {t:#?}");
}

#[test]
fn search_domain_fanout_counts_wasted_queries() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnsndots", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let _dnsmasq = Dnsmasq::start(
        server,
        &[
            "--local=/cluster.local/",
            "--address=/api.example.com/10.1.2.4",
        ],
    );
    // What the kubelet writes into a pod: three search suffixes, ndots:5.
    client.set_resolv_conf(&format!(
        "nameserver {}\nsearch prod.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 attempts:1 timeout:2\n",
        server.ip4
    ));
    let mut agent = start();
    let (_, out) = getent(client, "api.example.com");
    assert!(out.contains("10.1.2.4"), "{out}");

    let s4 = format!("{}:53", server.ip4);
    let snap = wait_for_dns(&mut agent, client.cgroup_id, WAIT, |s| {
        row(s, client.cgroup_id, "api.example.com", "A", &s4)
            .is_some_and(|r| r.counts.fanout_lookups == 1)
    });
    let a = row(&snap, client.cgroup_id, "api.example.com", "A", &s4).unwrap();
    assert_eq!(a.counts.fanout_wasted, 3, "{a:#?}");
    assert_eq!(a.last_comm, "getent");
    for suffix in [
        "prod.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ] {
        let name = format!("api.example.com.{suffix}");
        let r = row(&snap, client.cgroup_id, &name, "A", &s4)
            .unwrap_or_else(|| panic!("no row for {name}"));
        assert_eq!(r.counts.rcodes.get("NXDOMAIN"), Some(&1), "{r:#?}");
    }
}

#[test]
fn truncated_answer_is_followed_over_tcp() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnstc", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let _srv = responder(server);
    let mut agent = start();
    let (_, out) = dig(
        client,
        &[
            &format!("@{}", server.ip4),
            "trunc.test",
            "+tries=1",
            "+time=3",
        ],
    );
    assert!(out.contains("10.0.0.1"), "dig retried over TCP: {out}");

    let s4 = format!("{}:53", server.ip4);
    let snap = wait_for_dns(&mut agent, client.cgroup_id, WAIT, |s| {
        row(s, client.cgroup_id, "trunc.test", "A", &s4).is_some_and(|r| r.counts.answers == 2)
    });
    let r = row(&snap, client.cgroup_id, "trunc.test", "A", &s4).unwrap();
    assert_eq!(
        (
            r.counts.queries,
            r.counts.truncated,
            r.counts.tcp_queries,
            r.counts.tcp_after_truncation
        ),
        (2, 1, 1, 1),
        "{r:#?}"
    );
}

#[test]
fn malformed_packets_are_counted_without_harm() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnsbad", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let _srv = responder(server);
    let mut agent = start();
    let to = format!("{}:53", server.ip4);
    let bad_queries = [
        "0102030405".to_string(),
        // A question whose name is a compression pointer to itself.
        "abcd01000001000000000000c00c00010001".to_string(),
        // A 64-byte label (the limit is 63).
        format!("abcd0100000100000000000040{}0000010001", "61".repeat(64)),
    ];
    for hex in &bad_queries {
        let mut p = peer::spawn(client, &["udp", &to, hex]);
        assert_eq!(p.expect_line(WAIT), "done");
    }
    // A malformed answer to a well-formed query.
    dig(
        client,
        &[
            &format!("@{}", server.ip4),
            "garbage.test",
            "+tries=1",
            "+time=1",
        ],
    );
    // And a good query after all that.
    let (_, out) = dig(
        client,
        &[
            &format!("@{}", server.ip4),
            "fine.test",
            "+tries=1",
            "+time=3",
        ],
    );
    assert!(out.contains("10.0.0.1"), "{out}");

    let snap = wait_for_dns(&mut agent, client.cgroup_id, WAIT, |s| {
        row(s, client.cgroup_id, "fine.test", "A", &to).is_some_and(|r| r.counts.answers == 1)
    });
    let fine = row(&snap, client.cgroup_id, "fine.test", "A", &to).unwrap();
    assert_eq!(
        fine.counts.failures() + fine.counts.timeouts,
        0,
        "{fine:#?}"
    );
    let h = agent.health();
    let parse_errors: u64 = h.dns.parse_errors.values().sum();
    assert!(
        parse_errors >= 4,
        "3 bad queries + the bad answer: {:#?}",
        h.dns
    );
    assert_eq!(h.dns.decode_errors, 0);
}

#[test]
fn configured_ports_are_watched_and_others_are_not() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnsport", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let _watched = responder_on(server, 5353);
    let _unwatched = responder_on(server, 5354);
    let mut agent = start_with(&Config {
        dns_ports: vec![53, 5353],
        ..Config::default()
    });
    let at = format!("@{}", server.ip4);
    for port in ["5353", "5354"] {
        let (_, out) = dig(
            client,
            &[
                &at,
                "-p",
                port,
                &format!("p{port}.test"),
                "+tries=1",
                "+time=3",
            ],
        );
        assert!(out.contains("10.0.0.1"), "{out}");
    }
    let watched = format!("{}:5353", server.ip4);
    let snap = wait_for_dns(&mut agent, client.cgroup_id, WAIT, |s| {
        row(s, client.cgroup_id, "p5353.test", "A", &watched).is_some_and(|r| r.counts.answers == 1)
    });
    assert!(
        !snap.dns_names.iter().any(|r| r.name == "p5354.test"),
        "port 5354 is not watched"
    );
}
