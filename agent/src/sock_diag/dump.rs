//! One sock_diag dump on a netlink socket: send the request, read datagrams
//! until the kernel says done.

use std::{io, os::fd::AsRawFd, os::fd::OwnedFd, time::Duration};

use sockeye_common::tcp_state;

use super::{
    wire::{self, Message, Messages},
    SockDiagError, SocketInfo,
};

/// The kernel sends dumps in datagrams of at most 32 KiB (netlink caps its
/// dump allocation there); twice that leaves room, and a larger datagram is
/// reported (MSG_TRUNC), never cut silently.
const RECV_BUF: usize = 64 * 1024;
/// A dump of thousands of sockets takes milliseconds; a kernel that does not
/// answer within this must not hang the caller.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// `idiag_ext` bit asking for `INET_DIAG_INFO`.
const EXT_INFO: u8 = 1 << (wire::INET_DIAG_INFO - 1);

pub struct Dumper {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn family_name(family: u8) -> &'static str {
    if i32::from(family) == libc::AF_INET {
        "IPv4"
    } else {
        "IPv6"
    }
}

impl Dumper {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: setsockopt reads exactly size_of::<timeval>() bytes of `tv`.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Appends the sockets of `family` in `states` that `program` accepts.
    pub fn dump(
        &mut self,
        family: u8,
        states: u32,
        tcp_info: bool,
        program: &[u8],
        out: &mut Vec<SocketInfo>,
    ) -> Result<(), SockDiagError> {
        self.seq = self.seq.wrapping_add(1);
        let ext = if tcp_info { EXT_INFO } else { 0 };
        self.send(&wire::dump_request(self.seq, family, states, ext, program))?;
        let name = family_name(family);
        loop {
            let len = self.recv()?;
            for msg in Messages::new(&self.buf[..len], self.seq) {
                match msg? {
                    Message::Socket(payload) => {
                        let s = wire::parse_socket(payload)?;
                        if tcp_info && s.tcp.is_none() && has_tcp_info(s.state) {
                            return Err(SockDiagError::NoTcpInfo {
                                family: name,
                                state: tcp_state::name(s.state),
                            });
                        }
                        out.push(s);
                    }
                    Message::Done(0) | Message::Error(0) => return Ok(()),
                    Message::Done(errno) | Message::Error(errno) => {
                        return Err(kernel_error(name, errno));
                    }
                    Message::Other(_) => {}
                }
            }
        }
    }

    fn send(&self, req: &[u8]) -> Result<(), SockDiagError> {
        // SAFETY: an all-zero sockaddr_nl is valid; nl_pid 0 is the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: `req` and `kernel` are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    req.as_ptr().cast(),
                    req.len(),
                    0,
                    (&kernel as *const libc::sockaddr_nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(SockDiagError::Send(err));
            }
        }
    }

    /// One datagram into `self.buf`; its length.
    fn recv(&mut self) -> Result<usize, SockDiagError> {
        loop {
            // SAFETY: writes at most buf.len() bytes into buf. MSG_TRUNC makes
            // the kernel return the datagram's full length, to detect a cut.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n >= 0 {
                let n = n as usize;
                if n > self.buf.len() {
                    return Err(SockDiagError::Truncated {
                        len: n,
                        room: self.buf.len(),
                    });
                }
                return Ok(n);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    return Err(SockDiagError::Timeout(RECV_TIMEOUT))
                }
                _ => return Err(SockDiagError::Receive(err)),
            }
        }
    }
}

/// Full sockets carry `tcp_info`; TIME_WAIT and request (SYN_RECV) entries
/// are mini sockets without one.
fn has_tcp_info(state: u8) -> bool {
    !matches!(
        state,
        tcp_state::TIME_WAIT | tcp_state::SYN_RECV | tcp_state::NEW_SYN_RECV
    )
}

fn kernel_error(family: &'static str, errno: i32) -> SockDiagError {
    let errno = errno.saturating_neg();
    if errno == libc::ENOENT {
        return SockDiagError::NotSupported { family };
    }
    SockDiagError::Kernel {
        family,
        source: io::Error::from_raw_os_error(errno),
    }
}
