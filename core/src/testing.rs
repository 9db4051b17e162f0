//! Kernel events built by hand, for the unit tests of this crate and of
//! the agent's (metrics) that feed an aggregator.

use std::net::{IpAddr, Ipv4Addr};

use sockeye_common::{
    event::{EventKind, SockEvent, AF_INET},
    tcp_state,
};

use crate::event::Event;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

/// An event of cgroup 42 to 10.0.0.9:6379 (also used by the metrics' tests).
pub fn ev(kind: EventKind, cookie: u64, ts_ns: u64) -> Event {
    let mut remote_addr = [0u8; 16];
    remote_addr[..4].copy_from_slice(&SERVER.octets());
    Event {
        kind,
        local: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        remote: IpAddr::V4(SERVER),
        raw: SockEvent {
            ts_ns,
            cookie,
            cgroup_id: 42,
            netns_cookie: 1,
            duration_ns: 0,
            old_state_ns: 0,
            bytes_acked: 0,
            bytes_received: 0,
            tgid: 100,
            pid: 100,
            kind: kind as u32,
            errno: 0,
            syn_retransmits: 0,
            flags: 0,
            family: AF_INET,
            local_port: 40000,
            remote_port: 6379,
            old_state: 0,
            new_state: 0,
            local_addr: [0; 16],
            remote_addr,
            comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
        },
    }
}

pub fn closed(cookie: u64, ts: u64, old: u8) -> Event {
    let mut e = ev(EventKind::Closed, cookie, ts);
    e.raw.old_state = old;
    e.raw.new_state = tcp_state::CLOSE;
    e
}
