//! The kernel's own view of a pod's TCP sockets (sock_diag), read from
//! outside the pod through a pid: real sockets in real network namespaces,
//! checked against what their owner sees (SO_COOKIE, fstat), what the
//! kernel programs report (the agent's socket ids) and the kernel's
//! counters (ListenOverflows).

use std::{
    collections::{BTreeSet, HashMap},
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use sockeye_agent::sock_diag::{
    self, listen_overflows, DiagSocket, Families, Match, Query, Side, SocketInfo,
};
use sockeye_common::tcp_state;
use sockeye_tests::{
    net::TestNet,
    require_root,
    sockets::{
        connect_from, connect_nonblocking, in_netns, inode, listen_with_backlog, so_cookie, Sleeper,
    },
};

fn proc() -> &'static Path {
    Path::new("/proc")
}

fn query(pid: u32, q: &Query) -> Vec<SocketInfo> {
    sock_diag::tcp_sockets(proc(), pid, q).unwrap_or_else(|e| panic!("sock_diag of pid {pid}: {e}"))
}

fn by_local(sockets: &[SocketInfo]) -> HashMap<SocketAddr, &SocketInfo> {
    sockets.iter().map(|s| (s.local, s)).collect()
}

#[test]
fn cookies_states_queues_and_idle_times_of_real_connections() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("sockdiag", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let server_addr = SocketAddr::new(IpAddr::V4(server.ip4), 7301);
    let listener = in_netns(server, move || {
        std::net::TcpListener::bind(server_addr).unwrap()
    });
    let mut clients = connect_from(client, server_addr, 8);
    let mut accepted: HashMap<SocketAddr, TcpStream> = (0..8)
        .map(|_| {
            let (s, peer) = listener.accept().expect("accept");
            (peer, s)
        })
        .collect();
    let client_pid = Sleeper::start(client);

    // Everything idle for 2 s, then: three connections exchange data, one
    // receives 777 bytes it does not read, four stay idle.
    std::thread::sleep(Duration::from_millis(2200));
    for c in &mut clients[..3] {
        let srv = accepted.get_mut(&c.local_addr().unwrap()).unwrap();
        c.write_all(&[1; 100]).unwrap();
        let mut buf = [0; 100];
        srv.read_exact(&mut buf).unwrap();
        srv.write_all(&[2; 50]).unwrap();
        c.read_exact(&mut buf[..50]).unwrap();
    }
    let unread = clients[3].local_addr().unwrap();
    accepted
        .get_mut(&unread)
        .unwrap()
        .write_all(&[3; 777])
        .unwrap();

    let to_server = Query::default().with_match(Match::remote(server_addr.ip(), 7301));
    let deadline = Instant::now() + Duration::from_secs(5);
    let sockets = loop {
        let s = query(client_pid.pid(), &to_server);
        if by_local(&s).get(&unread).is_some_and(|u| u.rqueue == 777) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(sockets.len(), 8, "{sockets:#?}");
    let found = by_local(&sockets);
    for (i, c) in clients.iter().enumerate() {
        let s = found[&c.local_addr().unwrap()];
        assert_eq!(
            s.cookie,
            so_cookie(c),
            "socket {i}: the cookie SO_COOKIE gives"
        );
        assert_eq!(u64::from(s.inode), inode(c), "socket {i}: inode");
        assert_eq!(s.state, tcp_state::ESTABLISHED);
        assert_eq!(s.remote, server_addr);
        assert_eq!((s.uid, s.wqueue), (0, 0), "socket {i}");
        let t = s.tcp.unwrap_or_else(|| panic!("socket {i} has tcp_info"));
        match i {
            0..=2 => {
                assert!(
                    t.last_data_sent_ms < 1000 && t.last_data_recv_ms < 1000,
                    "active {i}: {t:?}"
                );
                // The SYN counts one byte acked; received counts data only.
                assert_eq!(
                    (t.bytes_acked, t.bytes_received),
                    (Some(101), Some(50)),
                    "{i}"
                );
                assert_eq!(s.rqueue, 0);
            }
            3 => {
                assert!(
                    t.last_data_recv_ms < 1000 && t.last_data_sent_ms >= 1800,
                    "unread: {t:?}"
                );
                assert_eq!(
                    (t.bytes_acked, t.bytes_received, s.rqueue),
                    (Some(1), Some(777), 777)
                );
            }
            _ => {
                assert!(
                    t.last_data_sent_ms >= 1800 && t.last_data_recv_ms >= 1800,
                    "idle {i}: {t:?}"
                );
                assert!(t.last_ack_recv_ms >= 1800, "idle {i}: {t:?}");
                assert_eq!((t.bytes_acked, t.bytes_received), (Some(1), Some(0)), "{i}");
            }
        }
    }
    assert_eq!(
        sockets
            .iter()
            .map(|s| s.cookie)
            .collect::<BTreeSet<_>>()
            .len(),
        8,
        "cookies are unique"
    );

    // The server side, through a pid of the server pod: the listener and
    // the eight connections it accepted, each with its own cookie.
    let server_pid = Sleeper::start(server);
    let all = query(
        server_pid.pid(),
        &Query::default().with_match(Match::local_port(7301)),
    );
    assert_eq!(all.len(), 9, "{all:#?}");
    let l = all
        .iter()
        .find(|s| s.state == tcp_state::LISTEN)
        .expect("listener");
    assert_eq!(l.cookie, so_cookie(&listener));
    assert_eq!(l.accept_queue().map(|q| q.0), Some(0));
    for (peer, s) in &accepted {
        let d = all
            .iter()
            .find(|d| d.remote == *peer)
            .expect("accepted socket");
        assert_eq!(d.cookie, so_cookie(s));
    }
    drop(clients);
}

#[test]
fn the_kernel_filters_by_state_family_and_endpoint() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("sdfilter", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let (ip4, ip6) = (IpAddr::V4(server.ip4), IpAddr::V6(server.ip6));
    // A v4-only listener on 7401 and a dual-stack one on 7402.
    let (_l4, _l6) = in_netns(server, move || {
        (
            std::net::TcpListener::bind((ip4, 7401)).unwrap(),
            std::net::TcpListener::bind("[::]:7402").unwrap(),
        )
    });
    let _a = connect_from(client, SocketAddr::new(ip4, 7401), 2);
    let _b = connect_from(client, SocketAddr::new(ip6, 7402), 3);
    let _c = connect_from(client, SocketAddr::new(ip4, 7402), 1);
    let (cpid, spid) = (Sleeper::start(client), Sleeper::start(server));
    let count = |pid: &Sleeper, q: Query| query(pid.pid(), &q).len();

    let established = Query::states(&[tcp_state::ESTABLISHED]);
    assert_eq!(count(&cpid, established.clone()), 6);
    assert_eq!(
        count(&cpid, established.clone().with_families(Families::V4)),
        3
    );
    assert_eq!(
        count(&cpid, established.clone().with_families(Families::V6)),
        3
    );
    assert_eq!(count(&cpid, Query::states(&[tcp_state::LISTEN])), 0);
    assert_eq!(
        count(
            &cpid,
            established.clone().with_match(Match::remote(ip4, 7401))
        ),
        2
    );
    assert_eq!(
        count(
            &cpid,
            established.clone().with_match(Match::remote(ip6, 7402))
        ),
        3
    );
    let either = established
        .clone()
        .with_match(Match::remote(ip4, 7401))
        .with_match(Match::remote(ip6, 7402));
    assert_eq!(count(&cpid, either), 5);
    let port_only = Match {
        side: Side::Remote,
        addr: None,
        port: Some(7402),
    };
    assert_eq!(count(&cpid, established.clone().with_match(port_only)), 4);
    assert_eq!(
        count(&cpid, established.clone().with_match(Match::remote(ip4, 9))),
        0
    );

    let listeners = query(spid.pid(), &Query::states(&[tcp_state::LISTEN]));
    let mut ports: Vec<(bool, u16)> = listeners
        .iter()
        .map(|l| (l.local.is_ipv4(), l.local.port()))
        .collect();
    ports.sort();
    assert_eq!(ports, vec![(false, 7402), (true, 7401)]);
    // The dual-stack listener accepted one IPv4 client: a v4-mapped socket,
    // given as IPv4 and matched by an IPv4 condition in the kernel.
    let mapped = Match {
        side: Side::Remote,
        addr: Some(IpAddr::V4(client.ip4)),
        port: None,
    };
    let from_v4 = query(
        spid.pid(),
        &established
            .clone()
            .with_families(Families::V6)
            .with_match(mapped),
    );
    assert_eq!(from_v4.len(), 1, "{from_v4:#?}");
    assert_eq!(from_v4[0].remote.ip(), IpAddr::V4(client.ip4));
    assert_eq!(from_v4[0].local, SocketAddr::new(ip4, 7402));
    let on_7402 = established.with_match(Match::local_port(7402));
    assert_eq!(count(&spid, on_7402), 4);
}

#[test]
fn a_listener_that_never_accepts_shows_a_full_queue_and_overflows() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("sdbacklog", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let addr = SocketAddr::new(IpAddr::V4(server.ip4), 7501);
    let listener = in_netns(server, move || listen_with_backlog(addr, 4));
    let spid = Sleeper::start(server);
    let before = listen_overflows(proc(), spid.pid()).expect("netstat");

    // One at a time, so each handshake completes before the next SYN: the
    // kernel queues backlog + 1 = 5, then drops the sixth SYN.
    let conns = in_netns(client, move || {
        (0..6)
            .map(|_| connect_nonblocking(addr, Duration::from_millis(800)))
            .collect::<Vec<_>>()
    });
    let done: Vec<bool> = conns.iter().map(|c| c.1).collect();
    assert_eq!(done, [true, true, true, true, true, false]);

    let l = query(
        spid.pid(),
        &Query::states(&[tcp_state::LISTEN]).with_match(Match::local_port(7501)),
    );
    assert_eq!(l.len(), 1, "{l:#?}");
    assert_eq!(l[0].accept_queue(), Some((5, 4)), "{:?}", l[0]);
    assert_eq!(l[0].cookie, so_cookie(&listener));
    let after = listen_overflows(proc(), spid.pid()).expect("netstat");
    assert!(
        after.overflows > before.overflows,
        "{before:?} -> {after:?}"
    );
    assert!(after.drops - before.drops >= after.overflows - before.overflows);
    // The pod's own view agrees (the harness reads it with `cat` inside).
    assert_eq!(server.netstat("TcpExt", "ListenOverflows"), after.overflows);

    let cpid = Sleeper::start(client);
    let mut states: Vec<u8> = query(
        cpid.pid(),
        &Query::default().with_match(Match::remote(addr.ip(), 7501)),
    )
    .iter()
    .map(|s| s.state)
    .collect();
    states.sort();
    assert_eq!(states, [1, 1, 1, 1, 1, tcp_state::SYN_SENT]);
}

#[test]
fn errors_say_what_went_wrong() {
    if !require_root() {
        return;
    }
    let pid = sockeye_tests::sockets::gone_pid();
    let err = sock_diag::tcp_sockets(proc(), pid, &Query::default()).unwrap_err();
    assert!(err.is_gone(), "{err}");
    assert!(
        err.to_string().contains(&format!("process {pid} is gone")),
        "{err}"
    );
    let err = listen_overflows(proc(), pid).unwrap_err();
    assert!(
        matches!(err, sock_diag::NetstatError::ProcessGone { .. }),
        "{err}"
    );
    let err =
        sock_diag::tcp_sockets(Path::new("/nonexistent-proc"), 1, &Query::default()).unwrap_err();
    assert!(
        err.is_gone(),
        "a wrong --proc-root looks like a gone process: {err}"
    );
    // The agent's own namespace needs no setns.
    let own = DiagSocket::current()
        .and_then(|mut s| s.tcp_sockets(&Query::states(&[tcp_state::LISTEN])))
        .expect("own namespace");
    assert!(own.iter().all(|s| s.state == tcp_state::LISTEN));
}
