//! The DNS pipeline from kernel records to aggregates, fed with records
//! built in memory: matching, timeouts, retries, fan-out, truncation, TCP
//! framing and malformed input.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sockeye_common::dns::{direction, tcp_flags, DnsPacket, DNS_CAPTURE};

use super::{
    aggregate::{RowKey, OTHER_NAME},
    testing::{answer, message},
    DnsConfig, DnsTracer,
};

const MS: u64 = 1_000_000;
const CLIENT: &str = "10.77.0.2:40000";
const SERVER: &str = "10.77.0.1:53";
const A: u16 = 1;

/// One kernel record, as bytes, for a packet from `src` to `dst`; `tcp` is
/// (sequence number, flags), ignored for UDP.
fn record(
    ts_ns: u64,
    egress: bool,
    proto: u8,
    src: &str,
    dst: &str,
    (seq, flags): (u32, u8),
    payload: &[u8],
) -> Vec<u8> {
    let src: SocketAddr = src.parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    let v4 = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(ip) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&ip.octets());
            b
        }
        std::net::IpAddr::V6(ip) => ip.octets(),
    };
    let captured = payload.len().min(DNS_CAPTURE);
    let mut p = DnsPacket {
        ts_ns,
        cgroup_id: 42,
        tgid: if egress { 4411 } else { 0 },
        payload_len: payload.len() as u32,
        tcp_seq: seq,
        captured: captured as u16,
        sport: src.port(),
        dport: dst.port(),
        ip_version: if src.is_ipv4() { 4 } else { 6 },
        protocol: proto,
        direction: if egress {
            direction::EGRESS
        } else {
            direction::INGRESS
        },
        tcp_flags: flags,
        _pad: [0; 2],
        comm: *b"resolver\0\0\0\0\0\0\0\0",
        saddr: v4(src),
        daddr: v4(dst),
        payload: [0; DNS_CAPTURE],
    };
    p.payload[..captured].copy_from_slice(&payload[..captured]);
    // SAFETY: DnsPacket is plain old data without padding.
    unsafe {
        std::slice::from_raw_parts(
            (&p as *const DnsPacket).cast::<u8>(),
            std::mem::size_of::<DnsPacket>(),
        )
    }
    .to_vec()
}

fn udp(ts_ms: u64, egress: bool, src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    record(ts_ms * MS, egress, 17, src, dst, (0, 0), payload)
}

fn tracer() -> DnsTracer {
    DnsTracer::new(DnsConfig {
        timeout: Duration::from_secs(5),
        max_pending: 100,
        max_names: 8,
        max_tcp_streams: 4,
    })
}

fn row<'a>(t: &'a DnsTracer, name: &str, server: &str) -> &'a super::aggregate::DnsStats {
    let key = RowKey {
        cgroup_id: 42,
        name: Arc::from(name),
        qtype: A,
        server: server.parse().unwrap(),
    };
    t.aggregates
        .rows
        .get(&key)
        .unwrap_or_else(|| panic!("no row for {name}"))
}

#[test]
fn answer_is_matched_and_timed() {
    let mut t = tracer();
    let q = message(7, "redis.prod.svc", A);
    t.handle_record(&udp(1000, true, CLIENT, SERVER, &q));
    t.handle_record(&udp(1200, false, SERVER, CLIENT, &answer(q, 0, 1, false)));
    let r = row(&t, "redis.prod.svc", SERVER);
    assert_eq!(
        (r.queries, r.answers(), r.errors(), r.timeouts),
        (1, 1, 0, 0)
    );
    assert_eq!(r.latency.max_ns(), Some(200 * MS));
    assert_eq!(r.last_tgid, 4411);
}

#[test]
fn unanswered_query_times_out_and_a_late_answer_is_told_apart() {
    let mut t = tracer();
    let q = message(9, "slow.test", A);
    t.handle_record(&udp(1000, true, CLIENT, SERVER, &q));
    t.tick(5_500 * MS);
    assert_eq!(row(&t, "slow.test", SERVER).timeouts, 0, "not yet due");
    t.tick(6_100 * MS);
    assert_eq!(row(&t, "slow.test", SERVER).timeouts, 1);
    t.handle_record(&udp(7000, false, SERVER, CLIENT, &answer(q, 0, 1, false)));
    let r = row(&t, "slow.test", SERVER);
    assert_eq!((r.late_answers, r.answers()), (1, 0));
    assert_eq!(t.health().tracker.unmatched_answers, 0);
}

#[test]
fn an_answer_past_the_timeout_is_late_even_without_a_sweep() {
    let mut t = tracer();
    let q = message(9, "slow.test", A);
    t.handle_record(&udp(1000, true, CLIENT, SERVER, &q));
    t.handle_record(&udp(7000, false, SERVER, CLIENT, &answer(q, 0, 1, false)));
    let r = row(&t, "slow.test", SERVER);
    assert_eq!((r.timeouts, r.late_answers, r.answers()), (1, 1, 0));
    t.tick(8_000 * MS);
    assert_eq!(
        row(&t, "slow.test", SERVER).timeouts,
        1,
        "not counted twice"
    );
}

#[test]
fn asking_again_without_an_answer_is_a_retry() {
    let mut t = tracer();
    t.handle_record(&udp(0, true, CLIENT, SERVER, &message(1, "x.test", A)));
    // Same id resent, then a new id from another port: both retries.
    t.handle_record(&udp(1000, true, CLIENT, SERVER, &message(1, "x.test", A)));
    t.handle_record(&udp(
        2000,
        true,
        "10.77.0.2:40001",
        SERVER,
        &message(2, "x.test", A),
    ));
    let r = row(&t, "x.test", SERVER);
    assert_eq!((r.queries, r.retries), (3, 2));
    // An answered name asked again later is a new lookup, not a retry.
    let q = message(3, "y.test", A);
    t.handle_record(&udp(3000, true, CLIENT, SERVER, &q));
    t.handle_record(&udp(3001, false, SERVER, CLIENT, &answer(q, 0, 1, false)));
    t.handle_record(&udp(3002, true, CLIENT, SERVER, &message(4, "y.test", A)));
    assert_eq!(row(&t, "y.test", SERVER).retries, 0);
}

#[test]
fn search_list_walk_is_reported_as_wasted_queries() {
    let mut t = tracer();
    let suffixes = [
        "default.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ];
    let mut ts = 0;
    for (i, s) in suffixes.iter().enumerate() {
        let q = message(i as u16, &format!("api.example.com.{s}"), A);
        t.handle_record(&udp(ts, true, CLIENT, SERVER, &q));
        t.handle_record(&udp(ts + 1, false, SERVER, CLIENT, &answer(q, 3, 0, false)));
        ts += 2;
    }
    let q = message(9, "api.example.com", A);
    t.handle_record(&udp(ts, true, CLIENT, SERVER, &q));
    t.handle_record(&udp(ts + 1, false, SERVER, CLIENT, &answer(q, 0, 1, false)));
    let r = row(&t, "api.example.com", SERVER);
    assert_eq!((r.fanout_lookups, r.fanout_wasted), (1, 3));
    assert_eq!(
        row(&t, "api.example.com.cluster.local", SERVER).rcodes[3],
        1
    );
}

#[test]
fn truncated_answer_then_tcp_query_is_linked() {
    let mut t = tracer();
    let q = message(5, "big.test", A);
    t.handle_record(&udp(0, true, CLIENT, SERVER, &q));
    t.handle_record(&udp(
        1,
        false,
        SERVER,
        CLIENT,
        &answer(q.clone(), 0, 0, true),
    ));
    // The TCP retry: SYN, then the query with its length prefix.
    let client = "10.77.0.2:40100";
    t.handle_record(&record(
        2 * MS,
        true,
        6,
        client,
        SERVER,
        (1000, tcp_flags::SYN),
        &[],
    ));
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    t.handle_record(&record(3 * MS, true, 6, client, SERVER, (1001, 0), &framed));
    let r = row(&t, "big.test", SERVER);
    assert_eq!(
        (r.truncated, r.tcp_queries, r.tcp_after_truncation),
        (1, 1, 1)
    );
}

#[test]
fn tcp_segments_with_two_messages_and_continuations() {
    let mut t = tracer();
    let client = "10.77.0.2:40200";
    t.handle_record(&record(
        0,
        true,
        6,
        client,
        SERVER,
        (99, tcp_flags::SYN),
        &[],
    ));
    let (q1, q2) = (message(1, "one.test", A), message(2, "two.test", A));
    let mut seg = Vec::new();
    for q in [&q1, &q2] {
        seg.extend_from_slice(&(q.len() as u16).to_be_bytes());
        seg.extend_from_slice(q);
    }
    t.handle_record(&record(MS, true, 6, client, SERVER, (100, 0), &seg));
    // The server's side: SYN-ACK, then one answer split over two segments.
    t.handle_record(&record(
        2 * MS,
        false,
        6,
        SERVER,
        client,
        (500, tcp_flags::SYN),
        &[],
    ));
    let a1 = answer(q1, 0, 1, false);
    let mut framed = (a1.len() as u16 + 100).to_be_bytes().to_vec();
    framed.extend_from_slice(&a1);
    framed.extend_from_slice(&[0xab; 100]); // answer records
                                            // The question fits the first segment (the kernel copies up to 320 bytes).
    let (first, rest) = framed.split_at(40);
    t.handle_record(&record(3 * MS, false, 6, SERVER, client, (501, 0), first));
    t.handle_record(&record(3 * MS, false, 6, SERVER, client, (541, 0), rest));
    assert_eq!(row(&t, "one.test", SERVER).answers(), 1);
    assert_eq!(row(&t, "two.test", SERVER).queries, 1);
    let h = t.health();
    assert!(h.parse_errors.is_empty(), "{h:?}");
    assert_eq!(h.tcp.resyncs, 0);
}

#[test]
fn malformed_messages_are_counted_and_do_not_disturb_others() {
    let mut t = tracer();
    let q = message(1, "ok.test", A);
    t.handle_record(&udp(0, true, CLIENT, SERVER, &q));
    let mut looped = q[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    for bad in [&[1u8, 2, 3][..], &looped, &[0xff; 300]] {
        t.handle_record(&udp(1, true, CLIENT, SERVER, bad));
        t.handle_record(&udp(1, false, SERVER, CLIENT, bad));
    }
    t.handle_record(&[0u8; 10]); // not even a record
    t.handle_record(&udp(2, false, SERVER, CLIENT, &answer(q, 0, 1, false)));
    assert_eq!(row(&t, "ok.test", SERVER).answers(), 1);
    let h = t.health();
    assert_eq!(h.parse_errors.values().sum::<u64>(), 6, "{h:?}");
    assert_eq!(h.decode_errors, 1);
}

#[test]
fn names_past_the_bound_are_counted_as_other() {
    let mut t = tracer();
    for i in 0..12u16 {
        let q = message(i, &format!("n{i}.test"), A);
        t.handle_record(&udp(u64::from(i), true, CLIENT, SERVER, &q));
    }
    let other = row_other(&t);
    assert_eq!(other.queries, 4);
    assert_eq!(t.health().names_over_limit, 4);
    // Rows idle for a whole interval are folded to make room; totals stay
    // the same.
    t.end_window();
    assert_eq!(t.health().names_folded, 0, "all rows were active");
    t.end_window();
    let total: u64 = t.aggregates.rows.values().map(|s| s.queries).sum();
    assert_eq!(total, 12);
    assert!(t.health().names_folded > 0);
}

fn row_other(t: &DnsTracer) -> &super::aggregate::DnsStats {
    t.aggregates
        .rows
        .iter()
        .find(|(k, _)| &*k.name == OTHER_NAME)
        .map(|(_, s)| s)
        .expect("an other row")
}
