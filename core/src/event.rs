//! Decoding of ring buffer records into typed socket events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sockeye_common::{
    cgroup::CgroupEvent,
    event::{flags, EventKind, SockEvent, AF_INET, AF_INET6, SOCK_EVENT_SIZE},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes, expected {SOCK_EVENT_SIZE}")]
    Size { len: usize },
    #[error("unknown event kind {kind}")]
    Kind { kind: u32 },
    #[error("unknown address family {family}")]
    Family { family: u16 },
}

/// A decoded event: the raw record plus the typed fields user space needs.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub raw: SockEvent,
    pub local: IpAddr,
    pub remote: IpAddr,
}

impl Event {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != SOCK_EVENT_SIZE {
            return Err(DecodeError::Size { len: bytes.len() });
        }
        // SAFETY: the length matches, SockEvent is plain old data (any bit
        // pattern is valid) and read_unaligned copes with any alignment.
        let raw: SockEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let kind = EventKind::from_u32(raw.kind).ok_or(DecodeError::Kind { kind: raw.kind })?;
        let local = addr(raw.family, &raw.local_addr)?;
        let remote = addr(raw.family, &raw.remote_addr)?;
        Ok(Self {
            kind,
            raw,
            local,
            remote,
        })
    }

    pub fn comm(&self) -> String {
        comm_string(&self.raw.comm)
    }

    pub fn has_flag(&self, flag: u32) -> bool {
        self.raw.flags & flag != 0
    }

    /// Whether the kernel knew the owning process (see [`flags::UNTRACKED`]).
    pub fn owner_known(&self) -> bool {
        !self.has_flag(flags::UNTRACKED) && self.raw.tgid != 0
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket talking IPv4) are shown
/// and aggregated as the IPv4 address they are.
fn addr(family: u16, bytes: &[u8; 16]) -> Result<IpAddr, DecodeError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(*bytes)).to_canonical()),
        family => Err(DecodeError::Family { family }),
    }
}

/// A kernel task command name (NUL padded, at most 15 bytes) as text.
pub fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// The kernel's layout of a command name: truncated to 15 bytes, NUL padded.
pub fn comm_bytes(comm: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = comm.len().min(15);
    out[..n].copy_from_slice(&comm.as_bytes()[..n]);
    out
}

/// A cgroup's id and path, as the kernel reported it at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupName {
    pub id: u64,
    pub path: String,
}

impl CgroupName {
    /// None for a record of the wrong size or a path that is not UTF-8.
    /// A truncated path is kept: its container id is near the end and may
    /// be cut, but the prefix still names the pod and runtime.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != std::mem::size_of::<CgroupEvent>() {
            return None;
        }
        // SAFETY: the size matches and CgroupEvent is plain old data.
        let raw: CgroupEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let len = (raw.path_len as usize).min(raw.path.len());
        let path = std::str::from_utf8(&raw.path[..len]).ok()?.to_string();
        if raw.truncated != 0 {
            log::debug!("cgroup {} path truncated: {path}", raw.id);
        }
        Some(Self { id: raw.id, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SockEvent {
        SockEvent {
            ts_ns: 1,
            cookie: 2,
            cgroup_id: 3,
            netns_cookie: 4,
            duration_ns: 5,
            old_state_ns: 0,
            bytes_acked: 6,
            bytes_received: 7,
            tgid: 8,
            pid: 9,
            kind: EventKind::Established as u32,
            errno: 0,
            syn_retransmits: 1,
            flags: 0,
            family: AF_INET6,
            local_port: 80,
            remote_port: 443,
            old_state: 2,
            new_state: 1,
            local_addr: Ipv6Addr::LOCALHOST.octets(),
            remote_addr: Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets(),
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn bytes(ev: &SockEvent) -> Vec<u8> {
        // SAFETY: SockEvent is repr(C) plain data without padding.
        unsafe {
            std::slice::from_raw_parts((ev as *const SockEvent).cast::<u8>(), SOCK_EVENT_SIZE)
        }
        .to_vec()
    }

    #[test]
    fn decodes_and_unmaps_v4_mapped_addresses() {
        let ev = Event::decode(&bytes(&sample())).unwrap();
        assert_eq!(ev.kind, EventKind::Established);
        assert_eq!(ev.remote, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(ev.local, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(ev.comm(), "curl");
    }

    #[test]
    fn comm_round_trips_and_truncates_like_the_kernel() {
        assert_eq!(comm_string(&comm_bytes("redis-server")), "redis-server");
        let long = comm_bytes("a-very-long-command-name");
        assert_eq!(long[15], 0, "NUL terminated");
        assert_eq!(comm_string(&long), "a-very-long-com");
        assert_eq!(comm_string(&[b'x'; 16]), "x".repeat(16));
    }

    #[test]
    fn decodes_cgroup_names() {
        let mut raw = CgroupEvent {
            id: 42,
            path_len: 0,
            truncated: 0,
            path: [0; sockeye_common::cgroup::CGROUP_PATH_MAX],
        };
        let path = b"/libpod_parent/libpod-0123";
        raw.path[..path.len()].copy_from_slice(path);
        raw.path_len = path.len() as u32;
        // SAFETY: CgroupEvent is repr(C) plain data without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const CgroupEvent).cast::<u8>(),
                std::mem::size_of::<CgroupEvent>(),
            )
        };
        let name = CgroupName::decode(bytes).expect("decodes");
        assert_eq!(
            (name.id, name.path.as_str()),
            (42, "/libpod_parent/libpod-0123")
        );
        assert_eq!(CgroupName::decode(&bytes[1..]), None, "wrong size");
        raw.path_len = 9999;
        raw.path[0] = 0xff;
        // SAFETY: as above.
        let bad = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const CgroupEvent).cast::<u8>(),
                std::mem::size_of::<CgroupEvent>(),
            )
        };
        assert_eq!(CgroupName::decode(bad), None, "not UTF-8, length clamped");
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(
            Event::decode(&[0u8; 10]).unwrap_err(),
            DecodeError::Size { len: 10 }
        );
        let mut s = sample();
        s.kind = 99;
        assert_eq!(
            Event::decode(&bytes(&s)).unwrap_err(),
            DecodeError::Kind { kind: 99 }
        );
        let mut s = sample();
        s.family = 1;
        assert_eq!(
            Event::decode(&bytes(&s)).unwrap_err(),
            DecodeError::Family { family: 1 }
        );
    }
}
