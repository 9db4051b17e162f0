//! The TCP lifecycle seen through real programs, real sockets and real pods:
//! exact counts, both sides attributed, and every way a connect fails.

use std::{net::IpAddr, time::Duration};

use sockeye_agent::aggregate::flows::Direction;
use sockeye_tests::{
    agent::{flow, start, wait_for, wait_for_flow},
    net::TestNet,
    peer, require_root,
};

const WAIT: Duration = Duration::from_secs(15);

/// A client pod whose route to 10.99.0.0/24 goes through a "router" pod that
/// does not forward: SYNs sent there vanish without any ICMP error.
fn blackholed(name: &str) -> TestNet {
    let net = TestNet::with_pods(name, &["client", "router"]);
    let router = net.pod(1).ip4.to_string();
    net.pod(0)
        .ip(&["route", "add", "10.99.0.0/24", "via", &router]);
    net
}

#[test]
fn connects_are_counted_and_attributed_on_both_sides() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("both", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let mut agent = start();

    let srv = peer::listen(server, &format!("{}:8080", server.ip4), "read");
    let (cli, results) = peer::connect(client, &format!("{}:8080", server.ip4), 5, false, 2000);
    assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");

    let (c_ip, s_ip) = (IpAddr::V4(client.ip4), IpAddr::V4(server.ip4));
    let snap = wait_for(
        &mut agent,
        &[client.cgroup_id, server.cgroup_id],
        WAIT,
        |s| {
            flow(s, client.cgroup_id, Direction::Outbound, s_ip, 8080)
                .is_some_and(|f| f.closed_total == 5)
                && flow(s, server.cgroup_id, Direction::Inbound, c_ip, 8080)
                    .is_some_and(|f| f.closed_total == 5)
        },
    );
    let out = flow(&snap, client.cgroup_id, Direction::Outbound, s_ip, 8080).unwrap();
    assert_eq!(out.connects_ok, 5);
    assert_eq!(out.failed_total(), 0);
    assert_eq!(out.opened_total, 5);
    assert_eq!(out.connect_latency.map(|l| l.count), Some(5));
    assert!(out.connect_latency.unwrap().max_ns < 500_000_000, "{out:?}");
    assert_eq!(out.last_pid, cli.pid());
    assert_eq!(out.last_comm, "netpeer");
    // "ping" per connection plus one sequence byte each for SYN and FIN.
    assert_eq!(out.bytes_sent, 5 * (4 + 2), "{out:?}");
    assert_eq!(out.open, 0);
    assert_eq!(
        out.states.get("TIME_WAIT"),
        Some(&5),
        "the client closed first: {out:?}"
    );

    let inb = flow(&snap, server.cgroup_id, Direction::Inbound, c_ip, 8080).unwrap();
    assert_eq!(inb.connects_ok, 5);
    assert_eq!(
        inb.last_pid,
        srv.pid(),
        "accepted sockets belong to the listener's process"
    );
    assert_eq!(
        inb.connect_latency, None,
        "latency is only measured on the connecting side"
    );
    let l = snap
        .listeners
        .iter()
        .find(|l| l.workload.cgroup_id == server.cgroup_id)
        .expect("listener seen");
    assert_eq!((l.port, l.pid), (8080, srv.pid()));
    // Nothing of this test's was lost: the counts above are exact. The
    // agent's loss counters are not judged here, because it sees every
    // socket on the machine, and another suite's burst may overflow its
    // ring while this test blocks in a peer.
}

#[test]
fn refused_connects_are_classified() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("refused", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let mut agent = start();

    let (_cli, results) = peer::connect(client, &format!("{}:9", server.ip4), 3, false, 2000);
    assert_eq!(results, vec!["err 111"; 3]);
    let s_ip = IpAddr::V4(server.ip4);
    let snap = wait_for(&mut agent, &[client.cgroup_id], WAIT, |s| {
        flow(s, client.cgroup_id, Direction::Outbound, s_ip, 9)
            .is_some_and(|f| f.failed_total() == 3)
    });
    let f = flow(&snap, client.cgroup_id, Direction::Outbound, s_ip, 9).unwrap();
    assert_eq!(f.connects_failed["refused"], 3, "{f:?}");
    assert_eq!(f.connects_ok, 0);
    assert_eq!(f.open, 0);
}

#[test]
fn blackholed_connects_time_out_with_syn_retransmits() {
    if !require_root() {
        return;
    }
    let net = blackholed("timeout");
    let client = net.pod(0);
    // One SYN retry: the kernel gives up after 1 s + 2 s.
    client.sysctl("net.ipv4.tcp_syn_retries", "1");
    let mut agent = start();

    let (_cli, results) = peer::connect(client, "10.99.0.5:80", 2, false, 10_000);
    assert_eq!(results, vec!["err 110"; 2], "kernel connect timeout");
    let dst: IpAddr = "10.99.0.5".parse().unwrap();
    let snap = wait_for(&mut agent, &[client.cgroup_id], WAIT, |s| {
        flow(s, client.cgroup_id, Direction::Outbound, dst, 80)
            .is_some_and(|f| f.failed_total() == 2)
    });
    let f = flow(&snap, client.cgroup_id, Direction::Outbound, dst, 80).unwrap();
    assert_eq!(f.connects_failed["timed_out"], 2, "{f:?}");
    // The kernel's own count in the client's (fresh) namespace; the expiry
    // is time-based, so it is 1 or 2 per connect depending on timer slack.
    let kernel = client.netstat("TcpExt", "TCPSynRetrans");
    assert!(kernel >= 2, "kernel counted {kernel} SYN retransmissions");
    assert_eq!(f.syn_retransmits, kernel, "{f:?}");
}

#[test]
fn application_connect_timeouts_are_aborts() {
    if !require_root() {
        return;
    }
    let net = blackholed("abort");
    let client = net.pod(0);
    let mut agent = start();

    // The application gives up after 300 ms, long before the kernel would.
    let (_cli, results) = peer::connect(client, "10.99.0.6:81", 2, false, 300);
    assert_eq!(results, vec!["err 110"; 2]);
    let dst: IpAddr = "10.99.0.6".parse().unwrap();
    let snap = wait_for(&mut agent, &[client.cgroup_id], WAIT, |s| {
        flow(s, client.cgroup_id, Direction::Outbound, dst, 81)
            .is_some_and(|f| f.failed_total() == 2)
    });
    let f = flow(&snap, client.cgroup_id, Direction::Outbound, dst, 81).unwrap();
    assert_eq!(f.connects_failed["aborted"], 2, "{f:?}");
}

#[test]
fn unreachable_hosts_are_classified() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("unreach", &["client"]);
    let client = net.pod(0);
    let mut agent = start();

    // Nobody answers ARP for .200: after ~3 s the kernel reports EHOSTUNREACH.
    let nobody = net.ip4(200);
    let (_cli, results) = peer::connect(client, &format!("{nobody}:80"), 1, false, 20_000);
    assert_eq!(results, vec!["err 113"]);
    let dst = IpAddr::V4(nobody);
    let snap = wait_for(&mut agent, &[client.cgroup_id], WAIT, |s| {
        flow(s, client.cgroup_id, Direction::Outbound, dst, 80)
            .is_some_and(|f| f.failed_total() == 1)
    });
    let f = flow(&snap, client.cgroup_id, Direction::Outbound, dst, 80).unwrap();
    assert_eq!(f.connects_failed["unreachable"], 1, "{f:?}");
}

#[test]
fn a_dropped_first_syn_costs_about_one_second() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("synloss", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    // 10.99.0.7 is routed to the server, which does not own it yet: the first
    // SYN is dropped silently. Once it has left (the client's namespace
    // counts the active open) the server takes the address, so the
    // retransmission (after the 1 s initial RTO) is answered.
    client.ip(&[
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        &server.ip4.to_string(),
    ]);
    let _srv = peer::listen(server, "0.0.0.0:8081", "close");
    let mut agent = start();

    let mut cli = peer::spawn(
        client,
        &["connect", "10.99.0.7:8081", "1", "close", "10000"],
    );
    let sent = std::time::Instant::now() + WAIT;
    while client.netstat("Tcp", "ActiveOpens") == 0 {
        assert!(
            std::time::Instant::now() < sent,
            "the client sent no SYN within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.ip(&["addr", "add", "10.99.0.7/32", "dev", "eth0"]);
    let results = cli.results(Duration::from_secs(15));
    assert_eq!(results.len(), 1);
    assert!(results[0].starts_with("ok"), "{results:?}");

    let dst: IpAddr = "10.99.0.7".parse().unwrap();
    let snap = wait_for(&mut agent, &[client.cgroup_id], WAIT, |s| {
        flow(s, client.cgroup_id, Direction::Outbound, dst, 8081)
            .is_some_and(|f| f.connects_ok == 1)
    });
    let f = flow(&snap, client.cgroup_id, Direction::Outbound, dst, 8081).unwrap();
    let max = f.connect_latency.unwrap().max_ns;
    assert!(
        (950_000_000..1_300_000_000).contains(&max),
        "connect latency {max} ns, expected about 1 s: {f:?}"
    );
    assert_eq!(f.syn_retransmits, 1);
    assert_eq!(client.netstat("TcpExt", "TCPSynRetrans"), 1);
}

#[test]
fn close_wait_from_a_peer_that_never_closes() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("closewait", &["app", "server"]);
    let (app, server) = (net.pod(0), net.pod(1));
    let mut agent = start();

    // The server closes every connection at once; the app never closes its
    // side, so its sockets sit in CLOSE_WAIT.
    let _srv = peer::listen(server, &format!("{}:6379", server.ip4), "close");
    let (_app_peer, results) = peer::connect(app, &format!("{}:6379", server.ip4), 3, true, 2000);
    assert_eq!(results.len(), 3);

    let s_ip = IpAddr::V4(server.ip4);
    let f = wait_for_flow(
        &mut agent,
        app.cgroup_id,
        Direction::Outbound,
        s_ip,
        6379,
        |f| f.states.get("CLOSE_WAIT") == Some(&3),
    );
    assert_eq!(f.open, 3, "CLOSE_WAIT sockets are still open: {f:?}");
    assert_eq!(f.closed_total, 0);
}

#[test]
fn ipv6_and_v4_mapped_connections() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("ipv6", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let mut agent = start();

    // A dual-stack listener: IPv4 clients arrive as v4-mapped addresses.
    let _srv = peer::listen(server, "[::]:8443", "read");
    let (_c6, r6) = peer::connect(client, &format!("[{}]:8443", server.ip6), 2, false, 2000);
    let (_c4, r4) = peer::connect(client, &format!("{}:8443", server.ip4), 3, false, 2000);
    assert!(r6.iter().chain(&r4).all(|r| r.starts_with("ok")));

    let (c6, c4) = (IpAddr::V6(client.ip6), IpAddr::V4(client.ip4));
    let s6 = IpAddr::V6(server.ip6);
    let snap = wait_for(
        &mut agent,
        &[client.cgroup_id, server.cgroup_id],
        WAIT,
        |s| {
            flow(s, client.cgroup_id, Direction::Outbound, s6, 8443)
                .is_some_and(|f| f.connects_ok == 2)
                && flow(s, server.cgroup_id, Direction::Inbound, c6, 8443)
                    .is_some_and(|f| f.connects_ok == 2)
                && flow(s, server.cgroup_id, Direction::Inbound, c4, 8443)
                    .is_some_and(|f| f.connects_ok == 3)
        },
    );
    let out6 = flow(&snap, client.cgroup_id, Direction::Outbound, s6, 8443).unwrap();
    assert_eq!(out6.connect_latency.map(|l| l.count), Some(2));
    assert!(flow(
        &snap,
        client.cgroup_id,
        Direction::Outbound,
        IpAddr::V4(server.ip4),
        8443
    )
    .is_some());
}

#[test]
fn a_hanging_connect_is_visible_while_it_hangs() {
    if !require_root() {
        return;
    }
    let net = blackholed("pending");
    let client = net.pod(0);
    let mut agent = start();

    // A dependency that does not answer: the application waits up to 20 s.
    let _cli = peer::spawn(
        client,
        &["connect", "10.99.0.8:5432", "1", "close", "20000"],
    );
    let dst: IpAddr = "10.99.0.8".parse().unwrap();
    // Announced at the first SYN retransmission (about 1 s), not at the end.
    let f = wait_for_flow(
        &mut agent,
        client.cgroup_id,
        Direction::Outbound,
        dst,
        5432,
        |f| f.states.get("SYN_SENT") == Some(&1),
    );
    assert_eq!(
        (f.open, f.connects_ok, f.failed_total()),
        (1, 0, 0),
        "{f:?}"
    );
    assert!(
        f.oldest_open_s >= 0.9,
        "its age counts from the connect: {f:?}"
    );
}
