//! Unit tests of the aggregator: event sequences in, flow statistics out.

use std::net::{IpAddr, Ipv4Addr};

use sockeye_common::{
    event::{flags, EventKind},
    tcp_state,
};

use super::{
    flows::{Direction, FlowKey},
    Aggregator, Limits,
};
use crate::{
    event::Event,
    testing::{closed, ev},
};

const MS: u64 = 1_000_000;
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

fn key() -> FlowKey {
    FlowKey {
        cgroup_id: 42,
        direction: Direction::Outbound,
        remote: IpAddr::V4(SERVER),
        port: 6379,
    }
}

fn state(cookie: u64, ts: u64, old: u8, new: u8) -> Event {
    let mut e = ev(EventKind::StateChange, cookie, ts);
    e.raw.old_state = old;
    e.raw.new_state = new;
    e
}

#[test]
fn a_connection_lifecycle() {
    let mut agg = Aggregator::new(Limits::default());
    agg.handle(&ev(EventKind::ConnectStart, 1, 1000 * MS));
    let mut est = ev(EventKind::Established, 1, 1002 * MS);
    est.raw.duration_ns = 2 * MS;
    est.raw.syn_retransmits = 1;
    agg.handle(&est);
    assert_eq!(agg.sockets.summarize(1003 * MS)[&key()].open, 1);

    agg.handle(&state(
        1,
        1500 * MS,
        tcp_state::ESTABLISHED,
        tcp_state::CLOSE_WAIT,
    ));
    let sum = &agg.sockets.summarize(1600 * MS)[&key()];
    assert_eq!(sum.by_state[tcp_state::CLOSE_WAIT as usize], 1);
    assert_eq!(
        sum.oldest_age_ns,
        600 * MS,
        "age counts from the connect start"
    );

    let mut c = closed(1, 2000 * MS, tcp_state::LAST_ACK);
    c.raw.bytes_acked = 10;
    c.raw.bytes_received = 20;
    agg.handle(&c);
    let f = &agg.flows[&key()];
    assert_eq!(
        (f.connects_ok, f.opened, f.closed, f.syn_retransmits),
        (1, 1, 1, 1)
    );
    assert_eq!((f.bytes_sent, f.bytes_received), (10, 20));
    assert_eq!(f.latency.max_ns(), Some(2 * MS));
    assert_eq!(f.last_tgid, 100);
    assert!(agg.sockets.is_empty());
}

#[test]
fn failed_connects_by_cause() {
    let mut agg = Aggregator::new(Limits::default());
    let cases = [
        (111, 0),
        (0, flags::CONNECT_TIMED_OUT),
        (0, flags::CLOSED_BY_OWNER),
        (0, 0),
    ];
    for (i, (errno, fl)) in cases.into_iter().enumerate() {
        let cookie = i as u64 + 1;
        agg.handle(&ev(EventKind::ConnectStart, cookie, MS));
        let mut c = closed(cookie, 2 * MS, tcp_state::SYN_SENT);
        c.raw.errno = errno;
        c.raw.flags = fl;
        c.raw.syn_retransmits = 2;
        agg.handle(&c);
    }
    let f = &agg.flows[&key()];
    assert_eq!(
        f.failed,
        [1, 1, 1, 1, 0],
        "refused, timed out, aborted, unreachable"
    );
    assert_eq!(f.connects_ok, 0);
    assert_eq!(f.closed, 0, "a failed connect is not a close");
    assert_eq!(f.syn_retransmits, 8);
    assert_eq!(f.window.connects_failed, 4);
    assert!(agg.sockets.is_empty());
}

#[test]
fn time_wait_is_counted_for_sixty_seconds() {
    let mut agg = Aggregator::new(Limits::default());
    agg.handle(&ev(EventKind::ConnectStart, 7, 0));
    agg.handle(&ev(EventKind::Established, 7, MS));
    let mut c = closed(7, 10 * MS, tcp_state::FIN_WAIT2);
    c.raw.flags = flags::ENTERED_TIME_WAIT;
    agg.handle(&c);
    assert!(agg.sockets.is_empty(), "TIME_WAIT is not an open socket");
    assert_eq!(agg.time_wait.count(&key()), 1);
    agg.sweep(61_000 * MS);
    assert_eq!(agg.time_wait.count(&key()), 0);
}

#[test]
fn flow_limit_evicts_and_counts() {
    let limits = Limits {
        max_flows: 16,
        ..Limits::default()
    };
    let mut agg = Aggregator::new(limits);
    for port in 0..40u16 {
        let mut e = ev(
            EventKind::ConnectStart,
            u64::from(port),
            u64::from(port) * MS,
        );
        e.raw.remote_port = port;
        agg.handle(&e);
        let mut c = closed(
            u64::from(port),
            u64::from(port) * MS + 1,
            tcp_state::SYN_SENT,
        );
        c.raw.remote_port = port;
        c.raw.errno = 111;
        agg.handle(&c);
    }
    assert!(agg.flows.len() <= 16);
    assert_eq!(agg.drops().flows_evicted, 40 - agg.flows.len() as u64);
    // The newest flow survived.
    let newest = FlowKey { port: 39, ..key() };
    assert!(agg.flows.contains_key(&newest));
}

/// A flow evicted while it holds sockets forgets its history, not its
/// sockets: back with its next event, it counts them still.
#[test]
fn a_flow_evicted_with_open_sockets_counts_them_when_it_is_back() {
    let limits = Limits {
        max_flows: 16,
        ..Limits::default()
    };
    let mut agg = Aggregator::new(limits);
    for cookie in 1..=3 {
        agg.handle(&ev(EventKind::Established, cookie, MS));
    }
    // Newer flows, each holding a socket, push it out.
    for port in 0..40u16 {
        let mut e = ev(
            EventKind::Established,
            100 + u64::from(port),
            (10 + u64::from(port)) * MS,
        );
        e.raw.remote_port = port;
        agg.handle(&e);
    }
    assert!(!agg.flows.contains_key(&key()), "evicted");
    assert_eq!(agg.socket_counts(&key()).established, 3);
    agg.handle(&closed(1, 100 * MS, tcp_state::ESTABLISHED));
    let back = &agg.flows[&key()];
    assert_eq!(
        (back.sockets.counts.open, back.sockets.ids().count()),
        (2, 2)
    );
    agg.handle(&state(
        2,
        101 * MS,
        tcp_state::ESTABLISHED,
        tcp_state::CLOSE_WAIT,
    ));
    assert_eq!(agg.flows[&key()].sockets.counts.close_wait, 1);
    // Every socket is in its flow's entry, wherever that is.
    let entries: usize = agg
        .flows
        .values()
        .map(|f| f.sockets.ids().count())
        .sum::<usize>()
        + agg.orphans.values().map(|s| s.ids().count()).sum::<usize>();
    assert_eq!(entries, agg.sockets.len());
}

#[test]
fn socket_limit_rejects_and_counts() {
    let limits = Limits {
        max_sockets: 2,
        ..Limits::default()
    };
    let mut agg = Aggregator::new(limits);
    for cookie in 0..5 {
        agg.handle(&ev(EventKind::ConnectStart, cookie, MS));
    }
    assert_eq!(agg.sockets.len(), 2);
    assert_eq!(agg.drops().socket_table_full, 3);
}

#[test]
fn idle_flows_expire_but_flows_with_open_sockets_stay() {
    let limits = Limits {
        flow_idle_ns: 1000 * MS,
        ..Limits::default()
    };
    let mut agg = Aggregator::new(limits);
    agg.handle(&ev(EventKind::ConnectStart, 1, 0));
    agg.handle(&ev(EventKind::Established, 1, MS));
    let mut other = ev(EventKind::ConnectStart, 2, 0);
    other.raw.remote_port = 80;
    agg.handle(&other);
    let mut c = closed(2, MS, tcp_state::SYN_SENT);
    c.raw.remote_port = 80;
    agg.handle(&c);
    agg.sweep(5000 * MS);
    assert!(agg.flows.contains_key(&key()), "has an open socket");
    assert!(!agg.flows.contains_key(&FlowKey { port: 80, ..key() }));
}

#[test]
fn undecodable_records_are_counted() {
    let mut agg = Aggregator::new(Limits::default());
    agg.handle_record(&[1, 2, 3]);
    assert_eq!(agg.drops().decode_errors, 1);
    assert_eq!(agg.events_received, 0);
}

#[test]
fn window_counters_reset() {
    let mut agg = Aggregator::new(Limits::default());
    agg.handle(&ev(EventKind::ConnectStart, 1, 0));
    agg.handle(&ev(EventKind::Established, 1, MS));
    assert_eq!(agg.flows[&key()].window.opened, 1);
    agg.reset_window();
    assert_eq!(agg.flows[&key()].window.opened, 0);
    assert_eq!(agg.flows[&key()].opened, 1);
}

#[test]
fn a_preexisting_listeners_close_reported_twice_is_one_stop() {
    use super::listeners::{Change, Listener, PREEXISTING};
    let mut agg = Aggregator::new(Limits::default());
    let scanned = Listener {
        cgroup_id: 42,
        addr: "0.0.0.0".parse().unwrap(),
        port: 6379,
        tgid: 4411,
        comm: "redis-server".into(),
        since_ns: 0,
        netns_cookie: 7,
    };
    agg.listeners
        .add_preexisting(PREEXISTING | 99, Some(555), scanned.clone());
    // The release hook: by cookie, no address or port.
    let mut release = closed(555, 10 * MS, tcp_state::LISTEN);
    release.raw.local_port = 0;
    release.raw.netns_cookie = 7;
    release.local = "0.0.0.0".parse().unwrap();
    agg.handle(&release);
    // sock_ops, microseconds later: the same socket, with its port.
    let mut state_cb = closed(555, 10 * MS + 20_000, tcp_state::LISTEN);
    state_cb.raw.local_port = 6379;
    state_cb.raw.netns_cookie = 7;
    state_cb.raw.tgid = 0;
    state_cb.local = "0.0.0.0".parse().unwrap();
    agg.handle(&state_cb);
    let stops: Vec<_> = agg
        .listeners
        .history
        .iter()
        .filter(|c| c.change == Change::Stopped)
        .collect();
    assert_eq!(stops.len(), 1, "{stops:#?}");
    assert_eq!(stops[0].listener, scanned, "the scan's listener, by cookie");
    assert_eq!(stops[0].at_ns, 10 * MS);
    assert_eq!(agg.listeners.closes_unmatched, 0);
    assert!(agg.listeners.active.is_empty());
}
