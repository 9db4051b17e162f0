//! The programs are checked against ports of the kernel's own auditor and
//! interpreter (net/ipv4/inet_diag.c `inet_diag_bc_audit`, `valid_cc`,
//! `inet_diag_bc_run`, 6.x); the privileged tests run them in the kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

struct Entry {
    family: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
}

fn entry(local: &str, remote: &str) -> Entry {
    let l: std::net::SocketAddr = local.parse().unwrap();
    let r: std::net::SocketAddr = remote.parse().unwrap();
    let raw = |ip: IpAddr| match ip {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    };
    Entry {
        family: if l.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        } as u8,
        saddr: raw(l.ip()),
        daddr: raw(r.ip()),
        sport: l.port(),
        dport: r.port(),
    }
}

fn op_at(bc: &[u8], at: usize) -> (u8, usize, usize) {
    let no = u16::from_ne_bytes([bc[at + 2], bc[at + 3]]);
    (bc[at], bc[at + 1] as usize, no as usize)
}

fn bits_match(a: &[u8], b: &[u8], bits: usize) -> bool {
    (0..bits).all(|i| (a[i / 8] ^ b[i / 8]) & (0x80 >> (i % 8)) == 0)
}

/// `inet_diag_bc_run` for host conditions and jumps.
fn run(bc: &[u8], e: &Entry) -> bool {
    let (mut at, mut len) = (0usize, bc.len() as isize);
    while len > 0 {
        let (code, yes_len, no_len) = op_at(bc, at);
        let yes = match code {
            BC_JMP => false,
            BC_S_COND | BC_D_COND => {
                let c = &bc[at + 4..];
                let port = i32::from_ne_bytes(c[4..8].try_into().unwrap());
                let (eport, addr) = if code == BC_S_COND {
                    (e.sport, &e.saddr)
                } else {
                    (e.dport, &e.daddr)
                };
                let (family, prefix) = (c[0], c[1] as usize);
                if port != -1 && port != i32::from(eport) {
                    false
                } else if family != libc::AF_UNSPEC as u8 && family != e.family {
                    family == libc::AF_INET as u8
                        && e.family == libc::AF_INET6 as u8
                        && addr[..10] == [0; 10]
                        && addr[10..12] == [0xff, 0xff]
                        && bits_match(&addr[12..], &c[8..], prefix)
                } else {
                    prefix == 0 || bits_match(addr, &c[8..], prefix)
                }
            }
            other => panic!("op {other} not modelled"),
        };
        let step = if yes { yes_len } else { no_len };
        at += step;
        len -= step as isize;
    }
    len == 0
}

fn valid_cc(bc: &[u8], mut len: isize, cc: isize) -> bool {
    let mut at = 0;
    while len >= 0 {
        if cc > len {
            return false;
        }
        if cc == len {
            return true;
        }
        let yes = bc[at + 1] as isize;
        if yes < 4 || yes & 3 != 0 {
            return false;
        }
        len -= yes;
        at += yes as usize;
    }
    false
}

/// `inet_diag_bc_audit` for host conditions and jumps.
fn audit(bc: &[u8]) -> Result<(), String> {
    let total = bc.len() as isize;
    let (mut at, mut len) = (0usize, total);
    while len > 0 {
        let (code, yes, no) = op_at(bc, at);
        let (yes, no) = (yes as isize, no as isize);
        let min_len = match code {
            BC_S_COND | BC_D_COND => {
                let addr_len = match i32::from(bc[at + 4]) {
                    libc::AF_UNSPEC => 0,
                    libc::AF_INET => 4,
                    libc::AF_INET6 => 16,
                    f => return Err(format!("family {f}")),
                };
                let min = 4 + 8 + addr_len;
                if len < min || isize::from(bc[at + 5]) > addr_len * 8 {
                    return Err(format!("hostcond at {at}"));
                }
                min
            }
            BC_JMP => 4,
            c => return Err(format!("code {c}")),
        };
        if no < min_len || no > len + 4 || no & 3 != 0 {
            return Err(format!("no={no} at {at}"));
        }
        if no < len && !valid_cc(bc, total, len - no) {
            return Err(format!("no={no} at {at} lands inside an op"));
        }
        if yes < min_len || yes > len + 4 || yes & 3 != 0 {
            return Err(format!("yes={yes} at {at}"));
        }
        at += yes as usize;
        len -= yes;
    }
    if len == 0 {
        Ok(())
    } else {
        Err(format!("ends at {len}"))
    }
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

#[test]
fn no_matches_is_no_program() {
    assert!(compile(&[]).is_empty());
}

#[test]
fn one_destination() {
    let bc = compile(&[Match::remote(v4([10, 0, 0, 3]), 5432)]);
    audit(&bc).unwrap();
    assert!(run(&bc, &entry("10.0.0.2:40000", "10.0.0.3:5432")));
    assert!(
        !run(&bc, &entry("10.0.0.2:40000", "10.0.0.3:5433")),
        "other port"
    );
    assert!(
        !run(&bc, &entry("10.0.0.2:40000", "10.0.0.4:5432")),
        "other host"
    );
    assert!(
        !run(&bc, &entry("10.0.0.3:5432", "10.0.0.2:40000")),
        "the other side"
    );
    assert!(
        run(&bc, &entry("[::ffff:10.0.0.2]:1", "[::ffff:10.0.0.3]:5432")),
        "a dual-stack socket's v4-mapped peer"
    );
}

#[test]
fn any_of_several_matches() {
    let v6: Ipv6Addr = "fd77::3".parse().unwrap();
    let ms = [
        Match::remote(v4([10, 0, 0, 3]), 5432),
        Match {
            side: Side::Remote,
            addr: Some(IpAddr::V6(v6)),
            port: None,
        },
        Match::local_port(8080),
        Match {
            side: Side::Remote,
            addr: None,
            port: Some(6379),
        },
    ];
    let bc = compile(&ms);
    audit(&bc).unwrap();
    assert!(run(&bc, &entry("10.0.0.2:1", "10.0.0.3:5432")));
    assert!(run(&bc, &entry("[fd77::2]:1", "[fd77::3]:443")));
    assert!(run(&bc, &entry("10.0.0.2:8080", "10.0.0.9:1")));
    assert!(run(&bc, &entry("10.0.0.2:1", "10.0.0.9:6379")));
    assert!(run(&bc, &entry("[fd77::2]:1", "[fd77::9]:6379")));
    assert!(!run(&bc, &entry("10.0.0.2:1", "10.0.0.9:5432")));
    assert!(!run(&bc, &entry("[fd77::2]:1", "[fd77::4]:443")));
    assert!(!run(&bc, &entry("10.0.0.2:8081", "10.0.0.3:80")));
}

#[test]
fn a_v4_mapped_match_is_compiled_as_ipv4() {
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 3).to_ipv6_mapped());
    let bc = compile(&[Match::remote(mapped, 1)]);
    audit(&bc).unwrap();
    assert_eq!(bc.len(), 4 + 8 + 4);
    assert!(run(&bc, &entry("10.0.0.2:9", "10.0.0.3:1")));
}

#[test]
fn the_largest_query_passes_the_audit() {
    let v6: Ipv6Addr = "fd77::3".parse().unwrap();
    let ms: Vec<Match> = (0..MAX_MATCHES as u16)
        .map(|i| Match::remote(IpAddr::V6(v6), i))
        .collect();
    let bc = compile(&ms);
    audit(&bc).unwrap();
    assert!(run(&bc, &entry("[fd77::2]:1", "[fd77::3]:63")));
    assert!(!run(&bc, &entry("[fd77::2]:1", "[fd77::3]:64")));
}
