//! Unit tests: records in, per-key counts, episodes and limit requests out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sockeye_common::{
    event::{AF_INET, AF_INET6},
    resources::{errno, syscall, ResourceFailure, RESOURCE_FAILURE_SIZE},
};

use super::{recent::Recent, *};

const S: u64 = 1_000_000_000;
const REDIS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), 6379);

fn raw(errno: u32, which: u32, ts_ns: u64) -> ResourceFailure {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 0, 0, 5]);
    ResourceFailure {
        ts_ns,
        cgroup_id: 42,
        tgid: 4411,
        pid: 4412,
        errno,
        syscall: which,
        family: AF_INET,
        port: 6379,
        _pad: 0,
        addr,
        comm: *b"php-fpm\0\0\0\0\0\0\0\0\0",
    }
}

fn bytes(r: &ResourceFailure) -> Vec<u8> {
    // SAFETY: ResourceFailure is repr(C) plain data without padding.
    unsafe {
        std::slice::from_raw_parts(
            (r as *const ResourceFailure).cast::<u8>(),
            RESOURCE_FAILURE_SIZE,
        )
    }
    .to_vec()
}

fn connect_key() -> FailureKey {
    FailureKey {
        cgroup_id: 42,
        errno: errno::EADDRNOTAVAIL,
        syscall: Syscall::Connect,
        destination: Some(REDIS),
    }
}

#[test]
fn decodes_connects_with_their_destination() {
    let f = Failure::decode(&bytes(&raw(errno::EADDRNOTAVAIL, syscall::CONNECT, 7))).unwrap();
    assert_eq!(f.syscall, Syscall::Connect);
    assert_eq!(f.errno, errno::EADDRNOTAVAIL);
    assert_eq!(f.destination, Some(REDIS));
    assert_eq!((f.ts_ns, f.cgroup_id, f.tgid), (7, 42, 4411));
    assert_eq!(crate::event::comm_string(&f.comm), "php-fpm");
}

#[test]
fn decodes_ipv6_and_unmaps_v4_mapped_destinations() {
    let mut r = raw(errno::EADDRNOTAVAIL, syscall::CONNECT, 1);
    r.family = AF_INET6;
    r.addr = Ipv4Addr::new(10, 0, 0, 5).to_ipv6_mapped().octets();
    assert_eq!(
        Failure::decode(&bytes(&r)).unwrap().destination,
        Some(REDIS)
    );
    r.addr = "fd77::3".parse::<Ipv6Addr>().unwrap().octets();
    assert_eq!(
        Failure::decode(&bytes(&r)).unwrap().destination,
        Some("[fd77::3]:6379".parse().unwrap())
    );
}

#[test]
fn socket_failures_and_unknown_arguments_have_no_destination() {
    let f = Failure::decode(&bytes(&raw(errno::EMFILE, syscall::SOCKET, 1))).unwrap();
    assert_eq!((f.syscall, f.destination), (Syscall::Socket, None));
    let mut r = raw(errno::EADDRNOTAVAIL, syscall::CONNECT, 1);
    r.family = 0;
    assert_eq!(Failure::decode(&bytes(&r)).unwrap().destination, None);
}

#[test]
fn bad_records_are_errors_not_panics() {
    let good = bytes(&raw(errno::EMFILE, syscall::SOCKET, 1));
    assert_eq!(
        Failure::decode(&good[..10]),
        Err(DecodeError::Size { len: 10 })
    );
    let r = raw(errno::EMFILE, 9, 1);
    assert_eq!(
        Failure::decode(&bytes(&r)),
        Err(DecodeError::Syscall { value: 9 })
    );
    let r = raw(111, syscall::CONNECT, 1);
    assert_eq!(
        Failure::decode(&bytes(&r)),
        Err(DecodeError::Errno { value: 111 })
    );
    let mut r = raw(errno::EMFILE, syscall::CONNECT, 1);
    r.family = 1;
    assert_eq!(
        Failure::decode(&bytes(&r)),
        Err(DecodeError::Family { family: 1 })
    );
    let mut agg = ResourceFailures::default();
    agg.handle_record(&good[..10]);
    agg.handle_record(&bytes(&raw(111, syscall::CONNECT, 1)));
    assert_eq!((agg.decode_errors, agg.received, agg.len()), (2, 0, 0));
}

#[test]
fn counts_per_key_with_first_last_and_last_process() {
    let mut agg = ResourceFailures::default();
    for i in 0..23 {
        agg.handle_record(&bytes(&raw(
            errno::EADDRNOTAVAIL,
            syscall::CONNECT,
            S + i * S,
        )));
    }
    let mut other = raw(errno::EMFILE, syscall::SOCKET, 5 * S);
    other.tgid = 77;
    agg.handle_record(&bytes(&other));
    assert_eq!((agg.received, agg.len()), (24, 2));
    let s = agg.get(&connect_key()).unwrap();
    assert_eq!((s.total, s.first_ns, s.last_ns), (23, S, 23 * S));
    assert_eq!((s.episode_start_ns, s.episode_failures), (S, 23));
    assert_eq!(s.last_tgid, 4411);
    assert_eq!(s.recent(23 * S), 23);
    let fd = FailureKey {
        cgroup_id: 42,
        errno: errno::EMFILE,
        syscall: Syscall::Socket,
        destination: None,
    };
    assert_eq!(agg.get(&fd).unwrap().last_tgid, 77);
    assert_eq!(agg.new_cgroups, vec![42, 42], "one per new key");
}

#[test]
fn a_gap_longer_than_the_window_starts_a_new_episode() {
    let mut agg = ResourceFailures::new(16, 10 * S);
    for ts in [S, 2 * S, 3 * S, 20 * S, 21 * S] {
        agg.record(
            &Failure::decode(&bytes(&raw(errno::EADDRNOTAVAIL, syscall::CONNECT, ts))).unwrap(),
        );
    }
    let s = agg.get(&connect_key()).unwrap();
    assert_eq!(s.total, 5, "cumulative");
    assert_eq!((s.episode_start_ns, s.episode_failures), (20 * S, 2));
    assert_eq!(s.first_ns, S);
    assert_eq!(s.recent(21 * S), 2, "the first three are out of the window");
    assert_eq!(s.recent(40 * S), 0);
}

#[test]
fn the_table_is_bounded_and_evicts_the_stalest_key() {
    let mut agg = ResourceFailures::new(2, 60 * S);
    for (port, ts) in [(1u16, 3 * S), (2, S), (3, 5 * S)] {
        let mut r = raw(errno::EADDRNOTAVAIL, syscall::CONNECT, ts);
        r.port = port;
        agg.handle_record(&bytes(&r));
    }
    assert_eq!((agg.len(), agg.evicted, agg.received), (2, 1, 3));
    let ports: Vec<u16> = {
        let mut p: Vec<u16> = agg
            .iter()
            .filter_map(|(k, _)| k.destination.map(|d| d.port()))
            .collect();
        p.sort();
        p
    };
    assert_eq!(ports, vec![1, 3], "port 2 failed longest ago");
}

#[test]
fn limits_are_asked_for_once_per_episode_and_kept() {
    let mut agg = ResourceFailures::new(16, 10 * S);
    let rec = |agg: &mut ResourceFailures, ts: u64, tgid: u32| {
        let mut r = raw(errno::EADDRNOTAVAIL, syscall::CONNECT, ts);
        r.tgid = tgid;
        agg.handle_record(&bytes(&r));
    };
    rec(&mut agg, S, 10);
    rec(&mut agg, 2 * S, 10);
    assert_eq!(agg.take_limit_requests(), vec![(connect_key(), 10)]);
    assert!(agg.take_limit_requests().is_empty());
    let range = Limit::PortRange {
        low: 40000,
        high: 40003,
    };
    agg.set_limit(&connect_key(), Some(range));
    agg.set_limit(&connect_key(), None);
    assert_eq!(agg.get(&connect_key()).unwrap().limit, Some(range));
    // Another process soon after: not read again; after REREAD_NS: read.
    rec(&mut agg, 3 * S, 11);
    assert!(agg.take_limit_requests().is_empty());
    rec(&mut agg, 12 * S, 11);
    assert_eq!(agg.take_limit_requests(), vec![(connect_key(), 11)]);
    // A new episode asks again, even for the same process.
    rec(&mut agg, 30 * S, 11);
    assert_eq!(agg.take_limit_requests(), vec![(connect_key(), 11)]);
    // Memory failures have no limit to read.
    agg.handle_record(&bytes(&raw(errno::ENOBUFS, syscall::SOCKET, 31 * S)));
    assert!(agg.take_limit_requests().is_empty());
}

#[test]
fn recent_counts_slide_with_the_window() {
    let mut r = Recent::new(60 * S);
    for ts in [0, S, 30 * S, 59 * S] {
        r.add(ts);
    }
    assert_eq!(r.count(59 * S), 4);
    assert_eq!(r.count(61 * S), 2, "0 s and 1 s slid out");
    r.add(100 * S);
    assert_eq!(r.count(100 * S), 2, "59 s is still within 60 s of 100 s");
    r.add(130 * S);
    assert_eq!(r.count(130 * S), 2, "the jump cleared the stale buckets");
    r.add(30 * S);
    assert_eq!(
        r.count(130 * S),
        2,
        "a record older than the window is ignored"
    );
    assert_eq!(r.count(1000 * S), 0);
}
