//! A socket whose close event was lost is closed once the kernel's own
//! table (sock_diag, in every network namespace) says it is gone, and
//! counted; sockets the kernel still has are left alone, however long the
//! agent runs.

use std::{net::IpAddr, time::Duration};

use sockeye_agent::{
    aggregate::{
        flows::Direction,
        sockets::{Origin, TrackedSocket},
    },
    Config,
};
use sockeye_tests::{
    agent::{flow, start_with, wait_for},
    net::TestNet,
    peer, require_root,
};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn a_socket_whose_close_was_lost_is_reconciled_and_live_ones_stay() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("reconcile", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let addr = format!("{}:8080", server.ip4);
    let _srv = peer::listen(server, &addr, "hold");
    let mut agent = start_with(&Config {
        reconcile_every: Some(Duration::from_millis(500)),
        ..Config::default()
    });
    let s_ip = IpAddr::V4(server.ip4);
    // Three connections held open: the kernel has them all along.
    let (_held, results) = peer::connect(client, &addr, 3, true, 2000);
    assert_eq!(results.len(), 3);
    let snap = wait_for(&mut agent, &[client.cgroup_id], WAIT, |s| {
        flow(s, client.cgroup_id, Direction::Outbound, s_ip, 8080).is_some_and(|f| f.open == 3)
    });
    let key = agent
        .aggregator
        .sockets
        .iter()
        .find(|(_, s)| s.flow.cgroup_id == client.cgroup_id)
        .map(|(_, s)| s.flow)
        .expect("a tracked socket of the client");
    drop(snap);
    // A fourth socket of the same flow whose close event never arrived: a
    // cookie the kernel does not have (cookies count up from 1; this one
    // is far above any the machine will hand out), opened before the agent
    // looks.
    let lost_cookie = u64::MAX / 3;
    agent.aggregator.insert_socket(
        lost_cookie,
        TrackedSocket::new(
            key,
            sockeye_common::tcp_state::ESTABLISHED,
            1,
            0,
            Origin::Kernel,
        ),
    );
    let before = agent.reconciler.as_ref().unwrap().stats;
    let snap = wait_for(&mut agent, &[client.cgroup_id], WAIT, |s| {
        flow(s, client.cgroup_id, Direction::Outbound, s_ip, 8080).is_some_and(|f| f.open == 4)
    });
    assert!(snap.flows.iter().any(|f| f.open == 4));
    // Two complete passes later it is gone, counted; the held ones are not.
    let snap = wait_for(&mut agent, &[client.cgroup_id], WAIT, |s| {
        flow(s, client.cgroup_id, Direction::Outbound, s_ip, 8080).is_some_and(|f| f.open == 3)
    });
    let f = flow(&snap, client.cgroup_id, Direction::Outbound, s_ip, 8080).unwrap();
    assert_eq!(f.states.get("ESTABLISHED"), Some(&3), "{f:?}");
    assert!(agent.aggregator.sockets.get(lost_cookie).is_none());
    let stats = agent.reconciler.as_ref().unwrap().stats;
    assert!(stats.complete >= before.complete + 2, "{stats:?}");
    // Other tests' sockets on this machine may lose events too: at least ours.
    assert!(
        stats.sockets_reconciled > before.sockets_reconciled,
        "{stats:?}"
    );
    assert!(agent.health().lost["sockets_reconciled"] >= 1);
    // Several more passes: the three live sockets stay open.
    let passes = stats.complete;
    wait_for(&mut agent, &[client.cgroup_id], WAIT, |_| true);
    let deadline = std::time::Instant::now() + WAIT;
    while agent.reconciler.as_ref().unwrap().stats.complete < passes + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "reconcile passes stopped"
        );
        agent.drain();
        agent.housekeeping();
        std::thread::sleep(Duration::from_millis(100));
    }
    let snap = agent.snapshot(None);
    let f = flow(&snap, client.cgroup_id, Direction::Outbound, s_ip, 8080).unwrap();
    assert_eq!(f.open, 3, "{f:?}");
}
