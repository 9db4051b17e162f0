//! An agent deployed into a pod that is already leaking must see the leak:
//! sockets opened before the agent started are found, kept up to date, and
//! connections accepted by an old listener are attributed to its process.

use std::{net::IpAddr, time::Duration};

use sockeye_agent::aggregate::{flows::Direction, listeners::Change};
use sockeye_tests::{
    agent::{flow, start, wait_for},
    net::TestNet,
    peer, require_root,
};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn sockets_that_predate_the_agent_are_found_and_followed() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("preexist", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let addr = format!("{}:8080", server.ip4);

    // Before the agent: a listener that never closes what it accepts, and a
    // client holding four connections.
    let mut srv = peer::listen(server, &addr, "hold");
    let (old_client, results) = peer::connect(client, &addr, 4, true, 2000);
    assert_eq!(results.len(), 4);
    // The client's handshakes are done; the server must have accepted them
    // too, or the scan finds them still queued (no inode, not open).
    wait_for_sockets(srv.pid(), 5);

    let mut agent = start();
    let (c_ip, s_ip) = (IpAddr::V4(client.ip4), IpAddr::V4(server.ip4));
    let ids = [client.cgroup_id, server.cgroup_id];
    let snap = wait_for(&mut agent, &ids, WAIT, |s| {
        flow(s, client.cgroup_id, Direction::Outbound, s_ip, 8080).is_some_and(|f| f.open == 4)
            && flow(s, server.cgroup_id, Direction::Inbound, c_ip, 8080)
                .is_some_and(|f| f.open == 4)
    });
    let out = flow(&snap, client.cgroup_id, Direction::Outbound, s_ip, 8080).unwrap();
    assert_eq!(out.open_preexisting, 4);
    assert_eq!(out.states.get("ESTABLISHED"), Some(&4));
    let l = snap
        .listeners
        .iter()
        .find(|l| l.workload.cgroup_id == server.cgroup_id)
        .expect("pre-existing listener found");
    assert_eq!(
        (l.port, l.pid, l.comm.as_str()),
        (8080, srv.pid(), "netpeer")
    );

    // New connections to the old listener: the kernel learns the listener's
    // owner from the seeded listener map.
    let (_new_client, results) = peer::connect(client, &addr, 2, true, 2000);
    assert_eq!(results.len(), 2);
    let snap = wait_for(&mut agent, &ids, WAIT, |s| {
        flow(s, server.cgroup_id, Direction::Inbound, c_ip, 8080)
            .is_some_and(|f| f.connects_ok == 2)
    });
    let inb = flow(&snap, server.cgroup_id, Direction::Inbound, c_ip, 8080).unwrap();
    assert_eq!(inb.last_pid, srv.pid(), "{inb:?}");
    assert_eq!(inb.open, 6);

    // All clients go away; the server never closes its side: six sockets in
    // CLOSE_WAIT, four of them only visible through the /proc refresh.
    drop(old_client);
    drop(_new_client);
    let snap = wait_for(&mut agent, &ids, WAIT, |s| {
        flow(s, server.cgroup_id, Direction::Inbound, c_ip, 8080)
            .is_some_and(|f| f.states.get("CLOSE_WAIT") == Some(&6))
            && flow(s, client.cgroup_id, Direction::Outbound, s_ip, 8080)
                .is_some_and(|f| f.open == 0)
    });
    let out = flow(&snap, client.cgroup_id, Direction::Outbound, s_ip, 8080).unwrap();
    assert_eq!(out.closed_total, 6, "{out:?}");

    // The dependency goes away: its listener's disappearance is recorded.
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    let snap = wait_for(&mut agent, &ids, WAIT, |s| {
        s.listener_changes
            .iter()
            .any(|c| c.change == Change::Stopped && c.listener.cgroup_id == server.cgroup_id)
    });
    assert!(!snap
        .listeners
        .iter()
        .any(|l| l.workload.cgroup_id == server.cgroup_id));
}

#[test]
fn listener_start_and_stop_are_recorded() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("listen", &["db"]);
    let db = net.pod(0);
    let mut agent = start();

    let mut srv = peer::listen(db, "0.0.0.0:5432", "close");
    let pid = srv.pid();
    wait_for(&mut agent, &[db.cgroup_id], WAIT, |s| {
        s.listeners
            .iter()
            .any(|l| l.workload.cgroup_id == db.cgroup_id && l.port == 5432)
    });
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    let snap = wait_for(&mut agent, &[db.cgroup_id], WAIT, |s| {
        !s.listeners
            .iter()
            .any(|l| l.workload.cgroup_id == db.cgroup_id)
    });
    let changes: Vec<_> = snap
        .listener_changes
        .iter()
        .filter(|c| c.listener.cgroup_id == db.cgroup_id)
        .map(|c| (c.change, c.listener.port, c.listener.tgid))
        .collect();
    assert_eq!(
        changes,
        vec![(Change::Started, 5432, pid), (Change::Stopped, 5432, pid)]
    );
}

/// Waits until `pid` holds `n` sockets (its listener and what it accepted).
fn wait_for_sockets(pid: u32, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                    })
                    .count()
            })
            .unwrap_or(0);
        if held >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} holds {held} sockets, not {n}, after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
