use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

/// A `struct inet_diag_msg` as the kernel writes it.
fn diag_msg(family: u8, state: u8, src: &[u8], sport: u16, dst: &[u8], dport: u16) -> Vec<u8> {
    let mut m = vec![family, state, 0, 0];
    m.extend_from_slice(&sport.to_be_bytes());
    m.extend_from_slice(&dport.to_be_bytes());
    let mut addr = [0u8; 16];
    addr[..src.len()].copy_from_slice(src);
    m.extend_from_slice(&addr);
    let mut addr = [0u8; 16];
    addr[..dst.len()].copy_from_slice(dst);
    m.extend_from_slice(&addr);
    m.extend_from_slice(&7u32.to_ne_bytes()); // idiag_if
    m.extend_from_slice(&0xdead_beefu32.to_ne_bytes()); // cookie, low half
    m.extend_from_slice(&0x12u32.to_ne_bytes()); // cookie, high half
    for v in [0u32, 5, 6, 1000, 4242] {
        // expires, rqueue, wqueue, uid, inode
        m.extend_from_slice(&v.to_ne_bytes());
    }
    assert_eq!(m.len(), DIAG_MSG_LEN);
    m
}

fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut a = ((NLA_HDRLEN + value.len()) as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(align4(a.len()), 0);
    a
}

/// A `struct tcp_info` of `len` bytes with the fields we read set.
fn tcp_info(len: usize) -> Vec<u8> {
    let mut t = vec![0u8; len];
    let mut put = |at: usize, v: &[u8]| {
        if at + v.len() <= len {
            t[at..at + v.len()].copy_from_slice(v);
        }
    };
    put(TCPI_LAST_DATA_SENT, &1500u32.to_ne_bytes());
    put(TCPI_LAST_DATA_RECV, &2500u32.to_ne_bytes());
    put(TCPI_LAST_ACK_RECV, &40u32.to_ne_bytes());
    put(TCPI_BYTES_ACKED, &101u64.to_ne_bytes());
    put(TCPI_BYTES_RECEIVED, &202u64.to_ne_bytes());
    t
}

fn nlmsg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = ((NLMSG_HDRLEN + payload.len()) as u32)
        .to_ne_bytes()
        .to_vec();
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&99u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(align4(m.len()), 0);
    m
}

fn v4_socket() -> Vec<u8> {
    let mut p = diag_msg(
        libc::AF_INET as u8,
        1,
        &[10, 0, 0, 2],
        40000,
        &[10, 0, 0, 3],
        5432,
    );
    p.extend(attr(INET_DIAG_INFO, &tcp_info(232)));
    p.extend(attr(INET_DIAG_CGROUP_ID, &77u64.to_ne_bytes()));
    p
}

#[test]
fn reads_an_ipv4_socket_with_its_attributes() {
    let s = parse_socket(&v4_socket()).expect("valid");
    assert_eq!(s.cookie, 0x12_dead_beef);
    assert_eq!(s.state, 1);
    assert_eq!(s.local, "10.0.0.2:40000".parse().unwrap());
    assert_eq!(s.remote, "10.0.0.3:5432".parse().unwrap());
    assert_eq!((s.rqueue, s.wqueue, s.uid, s.inode), (5, 6, 1000, 4242));
    assert_eq!(s.cgroup_id, Some(77));
    assert_eq!(
        s.tcp,
        Some(TcpInfo {
            last_data_sent_ms: 1500,
            last_data_recv_ms: 2500,
            last_ack_recv_ms: 40,
            bytes_acked: Some(101),
            bytes_received: Some(202),
        })
    );
}

#[test]
fn ipv6_and_v4_mapped_addresses() {
    let v6: Ipv6Addr = "fd77::2".parse().unwrap();
    let mapped = Ipv4Addr::new(10, 77, 0, 3).to_ipv6_mapped();
    let p = diag_msg(
        libc::AF_INET6 as u8,
        10,
        &v6.octets(),
        80,
        &mapped.octets(),
        0,
    );
    let s = parse_socket(&p).expect("valid");
    assert_eq!(s.local.ip(), IpAddr::V6(v6));
    assert_eq!(s.remote.ip(), IpAddr::V4(Ipv4Addr::new(10, 77, 0, 3)));
    assert_eq!((s.tcp, s.cgroup_id), (None, None), "no attributes");
}

#[test]
fn an_unknown_family_is_an_error() {
    let p = diag_msg(99, 1, &[], 1, &[], 2);
    assert_eq!(parse_socket(&p), Err(Malformed::Family(99)));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let full = v4_socket();
    for len in 0..full.len() {
        // Cutting inside an attribute breaks its length; cutting exactly
        // between attributes leaves a valid, shorter message.
        let cut = &full[..len];
        let between = len >= DIAG_MSG_LEN && {
            let info_end = DIAG_MSG_LEN + NLA_HDRLEN + 232;
            len == DIAG_MSG_LEN || len == info_end
        };
        assert_eq!(parse_socket(cut).is_ok(), between, "cut at {len}");
    }
}

#[test]
fn odd_attribute_lengths_are_errors() {
    let mut p = diag_msg(libc::AF_INET as u8, 1, &[1, 2, 3, 4], 1, &[5, 6, 7, 8], 2);
    p.extend_from_slice(&[2, 0, 2, 0]); // nla_len 2 < header
    assert!(matches!(
        parse_socket(&p),
        Err(Malformed::Length { len: 2, .. })
    ));
    p.truncate(DIAG_MSG_LEN);
    p.extend_from_slice(&[200, 0, 2, 0, 0, 0, 0, 0]); // longer than what is left
    assert!(matches!(
        parse_socket(&p),
        Err(Malformed::Length { len: 200, .. })
    ));
    p.truncate(DIAG_MSG_LEN);
    p.push(1); // a byte of a header
    assert!(matches!(parse_socket(&p), Err(Malformed::Short { .. })));
}

#[test]
fn unknown_attributes_and_flag_bits_are_skipped_and_the_last_needs_no_padding() {
    let mut p = diag_msg(libc::AF_INET as u8, 1, &[1, 2, 3, 4], 1, &[5, 6, 7, 8], 2);
    p.extend(attr(14, &[0; 5])); // INET_DIAG_PAD-like, padded to 12
                                 // INET_DIAG_CGROUP_ID with NLA_F_NET_BYTEORDER set: still type 21.
    p.extend(attr(INET_DIAG_CGROUP_ID | 0x4000, &5u64.to_ne_bytes()));
    p.extend_from_slice(&(NLA_HDRLEN as u16 + 1).to_ne_bytes());
    p.extend_from_slice(&5u16.to_ne_bytes());
    p.push(9); // a 1-byte attribute at the very end, unpadded
    let s = parse_socket(&p).expect("valid");
    assert_eq!(s.cgroup_id, Some(5));
}

#[test]
fn a_short_tcp_info_gives_what_it_has() {
    // Before 4.1 the struct ended at tcpi_total_retrans (104 bytes).
    let t = parse_tcp_info(&tcp_info(104)).expect("times are there");
    assert_eq!(
        (t.last_data_sent_ms, t.bytes_acked, t.bytes_received),
        (1500, None, None)
    );
    let t = parse_tcp_info(&tcp_info(136)).expect("valid");
    assert_eq!((t.bytes_acked, t.bytes_received), (Some(101), Some(202)));
    assert!(matches!(
        parse_tcp_info(&tcp_info(59)),
        Err(Malformed::Short { need: 60, .. })
    ));
    let mut p = diag_msg(libc::AF_INET as u8, 1, &[1, 2, 3, 4], 1, &[5, 6, 7, 8], 2);
    p.extend(attr(INET_DIAG_INFO, &tcp_info(20)));
    assert!(parse_socket(&p).is_err(), "a tcp_info without the times");
}

#[test]
fn splits_a_datagram_and_keeps_only_our_sequence() {
    let sock = v4_socket();
    let mut d = nlmsg(SOCK_DIAG_BY_FAMILY, 7, &sock);
    d.extend(nlmsg(SOCK_DIAG_BY_FAMILY, 6, &sock)); // an older request's
    d.extend(nlmsg(NLMSG_NOOP, 7, &[]));
    d.extend(nlmsg(NLMSG_DONE, 7, &0i32.to_ne_bytes()));
    let msgs: Vec<_> = Messages::new(&d, 7)
        .collect::<Result<_, _>>()
        .expect("valid");
    assert_eq!(
        msgs,
        vec![
            Message::Socket(&sock),
            Message::Other(NLMSG_NOOP),
            Message::Done(0)
        ]
    );
}

#[test]
fn errors_and_done_carry_the_kernels_status() {
    let mut err = (-libc::EPERM).to_ne_bytes().to_vec();
    err.extend_from_slice(&[0; 16]); // the request's header, echoed
    let d = nlmsg(NLMSG_ERROR, 1, &err);
    assert_eq!(
        Messages::new(&d, 1).next(),
        Some(Ok(Message::Error(-libc::EPERM)))
    );
    let d = nlmsg(NLMSG_DONE, 1, &(-libc::EINTR).to_ne_bytes());
    assert_eq!(
        Messages::new(&d, 1).next(),
        Some(Ok(Message::Done(-libc::EINTR)))
    );
    let d = nlmsg(NLMSG_DONE, 1, &[]);
    assert_eq!(Messages::new(&d, 1).next(), Some(Ok(Message::Done(0))));
    let d = nlmsg(NLMSG_ERROR, 1, &[1, 2]);
    assert!(matches!(
        Messages::new(&d, 1).next(),
        Some(Err(Malformed::Short { .. }))
    ));
    let d = nlmsg(NLMSG_OVERRUN, 1, &[]);
    assert_eq!(Messages::new(&d, 1).next(), Some(Err(Malformed::Overrun)));
}

#[test]
fn broken_message_lengths_end_the_datagram_with_one_error() {
    let mut d = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &v4_socket());
    d[0..4].copy_from_slice(&10_000u32.to_ne_bytes());
    let all: Vec<_> = Messages::new(&d, 1).collect();
    assert_eq!(all.len(), 1);
    assert!(matches!(all[0], Err(Malformed::Length { len: 10_000, .. })));
    let mut d = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &v4_socket());
    d[0..4].copy_from_slice(&3u32.to_ne_bytes());
    assert!(matches!(
        Messages::new(&d, 1).next(),
        Some(Err(Malformed::Length { len: 3, .. }))
    ));
    for len in 1..NLMSG_HDRLEN {
        assert!(
            Messages::new(&d[..len], 1).next().unwrap().is_err(),
            "cut at {len}"
        );
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // xorshift: deterministic, no dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let template = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &v4_socket());
    for _ in 0..20_000 {
        let mut d = template.clone();
        d.truncate((next() as usize) % (template.len() + 1));
        for _ in 0..(next() % 8) {
            if !d.is_empty() {
                let i = (next() as usize) % d.len();
                d[i] = next() as u8;
            }
        }
        for m in Messages::new(&d, 1) {
            if let Ok(Message::Socket(p)) = m {
                let _ = parse_socket(p);
            }
        }
    }
}

#[test]
fn the_request_has_the_kernels_layout() {
    let r = dump_request(9, libc::AF_INET6 as u8, 0x400, 2, &[]);
    assert_eq!(r.len(), NLMSG_HDRLEN + REQ_V2_LEN);
    assert_eq!(
        u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize,
        r.len()
    );
    assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 20);
    assert_eq!(u16::from_ne_bytes(r[6..8].try_into().unwrap()), 0x301);
    assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 9);
    assert_eq!(
        &r[16..20],
        &[libc::AF_INET6 as u8, libc::IPPROTO_TCP as u8, 2, 0]
    );
    assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 0x400);
    let bc = [1u8, 4, 8, 0, 9, 9, 9, 9];
    let r = dump_request(1, 2, 1, 0, &bc);
    assert_eq!(r.len(), NLMSG_HDRLEN + REQ_V2_LEN + NLA_HDRLEN + 8);
    let attr = &r[NLMSG_HDRLEN + REQ_V2_LEN..];
    assert_eq!(u16::from_ne_bytes(attr[0..2].try_into().unwrap()), 12);
    assert_eq!(u16::from_ne_bytes(attr[2..4].try_into().unwrap()), 1);
    assert_eq!(&attr[4..], &bc);
}
