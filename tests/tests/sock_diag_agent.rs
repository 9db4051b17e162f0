//! sock_diag next to the rest of the agent: its cookies are the ids the
//! kernel programs give sockets, it works with exactly the DaemonSet's
//! capabilities, and one call over 1,000 sockets is cheap.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use sockeye_agent::{
    aggregate::flows::Direction,
    sock_diag::{self, listen_overflows, DiagSocket, Match, Query},
};
use sockeye_common::tcp_state;
use sockeye_tests::{
    agent::{flow, start, wait_for},
    net::TestNet,
    peer, require_root,
    sockets::Sleeper,
};

fn proc() -> &'static Path {
    Path::new("/proc")
}

#[test]
fn cookies_are_the_ids_the_kernel_programs_give_sockets() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("sdagent", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let mut agent = start();
    let addr = format!("{}:7601", server.ip4);
    let srv = peer::listen(server, &addr, "hold");
    let (cli, results) = peer::connect(client, &addr, 5, true, 2000);
    assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");

    let (c_ip, s_ip) = (IpAddr::V4(client.ip4), IpAddr::V4(server.ip4));
    let ids = [client.cgroup_id, server.cgroup_id];
    wait_for(&mut agent, &ids, Duration::from_secs(15), |s| {
        flow(s, client.cgroup_id, Direction::Outbound, s_ip, 7601).is_some_and(|f| f.open == 5)
            && flow(s, server.cgroup_id, Direction::Inbound, c_ip, 7601)
                .is_some_and(|f| f.open == 5)
    });
    let tracked = |cgroup: u64, direction: Direction| -> BTreeSet<u64> {
        agent
            .aggregator
            .sockets
            .iter()
            .filter(|(_, s)| {
                s.flow.cgroup_id == cgroup && s.flow.direction == direction && s.flow.port == 7601
            })
            .map(|(id, _)| *id)
            .collect()
    };
    let established = Query::states(&[tcp_state::ESTABLISHED]);

    let out = sock_diag::tcp_sockets(
        proc(),
        cli.pid(),
        &established.clone().with_match(Match::remote(s_ip, 7601)),
    )
    .expect("client side");
    assert_eq!(out.len(), 5);
    assert_eq!(
        out.iter().map(|s| s.cookie).collect::<BTreeSet<_>>(),
        tracked(client.cgroup_id, Direction::Outbound)
    );
    assert!(
        out.iter().all(|s| s.cgroup_id == Some(client.cgroup_id)),
        "{out:#?}"
    );

    let inb = sock_diag::tcp_sockets(
        proc(),
        srv.pid(),
        &established.with_match(Match::local_port(7601)),
    )
    .expect("server side");
    assert_eq!(inb.len(), 5);
    assert_eq!(
        inb.iter().map(|s| s.cookie).collect::<BTreeSet<_>>(),
        tracked(server.cgroup_id, Direction::Inbound)
    );
    assert!(
        inb.iter().all(|s| s.cgroup_id == Some(server.cgroup_id)),
        "{inb:#?}"
    );
}

/// Capability numbers (include/uapi/linux/capability.h).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// Runs `f` on a thread whose effective and permitted capabilities are
/// exactly `caps` (capabilities are per thread; the threads it starts
/// inherit them). The rest of the test process keeps its own.
fn with_caps<T: Send + 'static>(caps: &'static [u32], f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        for &c in caps {
            let d = &mut data[(c / 32) as usize];
            d.effective |= 1 << (c % 32);
            d.permitted |= 1 << (c % 32);
        }
        // SAFETY: capset with a v3 header and two data words, for this thread.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
        assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("capability thread")
}

#[test]
fn the_daemonsets_capabilities_suffice_without_net_admin() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("sdcaps", &["pod"]);
    let pod = net.pod(0);
    let l = peer::listen(pod, &format!("{}:7701", pod.ip4), "hold");
    // A process holding every capability, as most containers' processes
    // hold more than the agent: reading its namespace needs SYS_PTRACE.
    let pid = Sleeper::start(pod);
    let p = pid.pid();
    let ask = move || {
        sock_diag::tcp_sockets(proc(), p, &Query::states(&[tcp_state::LISTEN])).map(|v| {
            v.into_iter()
                .map(|s| (s.local.port(), s.tcp.is_some()))
                .collect::<Vec<_>>()
        })
    };

    const DAEMONSET: &[u32] = &[CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH];
    assert!(!DAEMONSET.contains(&CAP_NET_ADMIN));
    let got = with_caps(DAEMONSET, ask).expect("works with the DaemonSet's set");
    assert_eq!(got, vec![(7701, true)], "the listener, with tcp_info");
    with_caps(DAEMONSET, move || listen_overflows(proc(), p)).expect("netstat");

    let err = with_caps(&[CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH], ask).unwrap_err();
    assert!(
        err.is_denied() && err.to_string().contains("CAP_SYS_ADMIN"),
        "{err}"
    );
    let err = with_caps(&[CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH], ask).unwrap_err();
    assert!(
        err.is_denied() && err.to_string().contains("CAP_SYS_PTRACE"),
        "{err}"
    );
    drop(l);
}

#[test]
fn one_call_over_a_thousand_sockets_is_cheap() {
    if !require_root() {
        return;
    }
    // 500 loopback connections in one namespace: 1,000 sockets and a listener.
    let net = TestNet::with_pods("sdcost", &["pod"]);
    let pod = net.pod(0);
    let _srv = peer::listen(pod, "127.0.0.1:7801", "hold");
    let (cli, results) = peer::connect(pod, "127.0.0.1:7801", 500, true, 5000);
    assert_eq!(results.iter().filter(|r| r.starts_with("ok")).count(), 500);
    let pid = cli.pid();
    let all = Query::default();
    let a_few = Query::default()
        .with_match(Match::local_port(7801))
        .with_match(Match::remote("10.1.2.3".parse().unwrap(), 5432));

    let time = |f: &mut dyn FnMut() -> usize, expect: usize| -> (Duration, Duration) {
        let mut runs: Vec<Duration> = (0..30)
            .map(|_| {
                let t = Instant::now();
                assert_eq!(f(), expect);
                t.elapsed()
            })
            .collect();
        runs.sort();
        (runs[runs.len() / 2], runs[runs.len() - 1])
    };
    let fresh = time(
        &mut || sock_diag::tcp_sockets(proc(), pid, &all).unwrap().len(),
        1001,
    );
    let mut held = DiagSocket::enter(proc(), pid).expect("enter");
    let reused = time(&mut || held.tcp_sockets(&all).unwrap().len(), 1001);
    // The listener and the 500 sockets accepted on its port.
    let filtered = time(
        &mut || sock_diag::tcp_sockets(proc(), pid, &a_few).unwrap().len(),
        501,
    );
    let one = Query::default().with_match(Match::remote("127.0.0.1".parse().unwrap(), 7801));
    let first = sock_diag::tcp_sockets(proc(), pid, &one).unwrap()[0].local;
    let single = Query::default().with_match(Match {
        side: sock_diag::Side::Local,
        addr: Some(first.ip()),
        port: Some(first.port()),
    });
    let narrow = time(
        &mut || sock_diag::tcp_sockets(proc(), pid, &single).unwrap().len(),
        1,
    );
    let thread_only = time(
        &mut || {
            drop(DiagSocket::enter(proc(), pid).unwrap());
            0
        },
        0,
    );
    eprintln!(
        "sock_diag over 1,001 sockets, median / max of 30: all {:?} / {:?}; all on a held socket {:?} / {:?}; \
         501 matched in the kernel {:?} / {:?}; 1 matched {:?} / {:?}; entering the namespace alone {:?} / {:?}",
        fresh.0, fresh.1, reused.0, reused.1, filtered.0, filtered.1, narrow.0, narrow.1, thread_only.0, thread_only.1
    );
    // Budget: a handful of queries every few seconds must stay far below a
    // core's percent; 50 ms per full dump is a loose ceiling for this slow VM.
    assert!(fresh.0 < Duration::from_millis(50), "{fresh:?}");
}
