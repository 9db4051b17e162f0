//! Kernel-side filters: `inet_diag` bytecode, the little language `ss`
//! compiles its filters to (net/ipv4/inet_diag.c `inet_diag_bc_run`), so a
//! query about a few destinations does not copy every socket of a namespace.
//!
//! Only host conditions (address and port) are used: the kernel checks them
//! without CAP_NET_ADMIN (only mark conditions need it).

use std::net::IpAddr;

/// Which end of a connection a [`Match`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This namespace's end: a listener's or a server's port.
    Local,
    /// The peer: a client's destination.
    Remote,
}

/// One end of a connection: an address, a port, or both (`None` matches any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub side: Side,
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
}

impl Match {
    /// Connections to `addr`:`port`.
    pub fn remote(addr: IpAddr, port: u16) -> Self {
        Self {
            side: Side::Remote,
            addr: Some(addr),
            port: Some(port),
        }
    }

    /// Sockets whose local port is `port` (a listener and what it accepted).
    pub fn local_port(port: u16) -> Self {
        Self {
            side: Side::Local,
            addr: None,
            port: Some(port),
        }
    }
}

/// At most this many matches per query: each costs the kernel a comparison
/// per socket, and the offsets in the program are 16-bit.
pub const MAX_MATCHES: usize = 64;

const BC_JMP: u8 = 1;
const BC_S_COND: u8 = 7;
const BC_D_COND: u8 = 8;
/// `struct inet_diag_bc_op`: code, yes (u8), no (u16).
const OP_LEN: usize = 4;
/// `struct inet_diag_hostcond` without its address: family, prefix_len,
/// two bytes of padding, port (int, -1 for any).
const HOSTCOND_LEN: usize = 8;

fn cond_len(m: &Match) -> usize {
    OP_LEN
        + HOSTCOND_LEN
        + match m.addr.map(|a| a.to_canonical()) {
            None => 0,
            Some(IpAddr::V4(_)) => 4,
            Some(IpAddr::V6(_)) => 16,
        }
}

fn op(out: &mut Vec<u8>, code: u8, yes: usize, no: usize) {
    // Lengths are bounded by MAX_MATCHES * 32 bytes, far below both limits.
    out.extend_from_slice(&[code, yes as u8]);
    out.extend_from_slice(&(no as u16).to_ne_bytes());
}

/// A program that accepts a socket when any of `matches` holds: each
/// condition jumps to the end (accept) when it holds and to the next one
/// when not; the last one's "no" points past the end, which rejects.
/// Empty `matches`: an empty program (no filter). Callers bound the length
/// by [`MAX_MATCHES`].
pub fn compile(matches: &[Match]) -> Vec<u8> {
    let total: usize =
        matches.iter().map(cond_len).sum::<usize>() + OP_LEN * matches.len().saturating_sub(1);
    let mut out = Vec::with_capacity(total);
    for (i, m) in matches.iter().enumerate() {
        let len = cond_len(m);
        let code = match m.side {
            Side::Local => BC_S_COND,
            Side::Remote => BC_D_COND,
        };
        // yes: the next op (a jump to the end); no: skip that jump.
        op(&mut out, code, len, len + OP_LEN);
        let (family, prefix, addr): (i32, u8, Vec<u8>) = match m.addr.map(|a| a.to_canonical()) {
            None => (libc::AF_UNSPEC, 0, Vec::new()),
            Some(IpAddr::V4(a)) => (libc::AF_INET, 32, a.octets().to_vec()),
            Some(IpAddr::V6(a)) => (libc::AF_INET6, 128, a.octets().to_vec()),
        };
        out.extend_from_slice(&[family as u8, prefix, 0, 0]);
        out.extend_from_slice(&m.port.map_or(-1, i32::from).to_ne_bytes());
        out.extend_from_slice(&addr);
        if i + 1 < matches.len() {
            let to_end = total - out.len();
            op(&mut out, BC_JMP, OP_LEN, to_end);
        }
    }
    out
}

#[cfg(test)]
#[path = "bytecode_tests.rs"]
mod tests;
