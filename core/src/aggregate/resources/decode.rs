//! Decoding of the kernel's resource-failure records.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sockeye_common::{
    event::{AF_INET, AF_INET6},
    resources::{errno, is_exhaustion, syscall, ResourceFailure, RESOURCE_FAILURE_SIZE},
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("resource failure record of {len} bytes, expected {RESOURCE_FAILURE_SIZE}")]
    Size { len: usize },
    #[error("resource failure record with unknown syscall {value}")]
    Syscall { value: u32 },
    #[error("resource failure record with errno {value}, which is not one the kernel sends")]
    Errno { value: u32 },
    #[error("resource failure record with address family {family}")]
    Family { family: u16 },
}

/// The syscall that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Syscall {
    Connect,
    Socket,
}

impl Syscall {
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Connect => "connect",
            Syscall::Socket => "socket",
        }
    }
}

/// One failed call, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub errno: u32,
    pub syscall: Syscall,
    /// connect(): where to; None for socket(), and for a connect whose
    /// arguments the kernel side did not find (`kernel_syscall_args_missed`).
    pub destination: Option<SocketAddr>,
    pub comm: [u8; 16],
}

impl Failure {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != RESOURCE_FAILURE_SIZE {
            return Err(DecodeError::Size { len: bytes.len() });
        }
        // SAFETY: the length matches, ResourceFailure is plain old data (any
        // bit pattern is valid) and read_unaligned copes with any alignment.
        let raw: ResourceFailure = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let syscall = match raw.syscall {
            syscall::CONNECT => Syscall::Connect,
            syscall::SOCKET => Syscall::Socket,
            value => return Err(DecodeError::Syscall { value }),
        };
        if !is_exhaustion(raw.errno) {
            return Err(DecodeError::Errno { value: raw.errno });
        }
        let ip = match raw.family {
            0 => None,
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                raw.addr[0],
                raw.addr[1],
                raw.addr[2],
                raw.addr[3],
            ))),
            // A dual-stack socket connecting to IPv4 is shown as the IPv4
            // address it is, like the TCP flows.
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(raw.addr)).to_canonical()),
            family => return Err(DecodeError::Family { family }),
        };
        let destination = match (syscall, ip) {
            (Syscall::Connect, Some(ip)) => Some(SocketAddr::new(ip, raw.port)),
            _ => None,
        };
        Ok(Self {
            ts_ns: raw.ts_ns,
            cgroup_id: raw.cgroup_id,
            tgid: raw.tgid,
            errno: raw.errno,
            syscall,
            destination,
            comm: raw.comm,
        })
    }
}

/// The errno's name, as `errno.h` spells it.
pub const fn errno_name(e: u32) -> &'static str {
    match e {
        errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        errno::EMFILE => "EMFILE",
        errno::ENFILE => "ENFILE",
        errno::ENOBUFS => "ENOBUFS",
        errno::ENOMEM => "ENOMEM",
        _ => "E?",
    }
}

/// What ran out, in the on-call engineer's words.
pub const fn errno_meaning(e: u32) -> &'static str {
    match e {
        errno::EADDRNOTAVAIL => "no free local port",
        errno::EMFILE => "the process's open-file limit",
        errno::ENFILE => "the system's open-file limit",
        errno::ENOBUFS | errno::ENOMEM => "kernel memory",
        _ => "a resource",
    }
}
