//! Why a connect failed, from the errno and flags the kernel reported.

use sockeye_common::event::flags;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The peer answered the SYN with a RST: nothing listens on that port.
    Refused,
    /// The kernel's SYN retries ran out without an answer.
    TimedOut,
    /// The kernel aborted the connect on an ICMP error (host or network
    /// unreachable, including a failed ARP/neighbour lookup).
    Unreachable,
    /// The application closed the socket before the handshake finished,
    /// usually its own connect timeout firing first.
    Aborted,
    /// Anything else (the errno is logged at debug level).
    Other,
}

impl FailureCause {
    pub const ALL: [FailureCause; 5] = [
        FailureCause::Refused,
        FailureCause::TimedOut,
        FailureCause::Unreachable,
        FailureCause::Aborted,
        FailureCause::Other,
    ];

    pub fn classify(errno: u32, event_flags: u32) -> Self {
        match errno as i32 {
            libc::ECONNREFUSED => Self::Refused,
            libc::ETIMEDOUT => Self::TimedOut,
            libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN => {
                Self::Unreachable
            }
            0 if event_flags & flags::CONNECT_TIMED_OUT != 0 => Self::TimedOut,
            0 if event_flags & flags::CLOSED_BY_OWNER != 0 => Self::Aborted,
            // The owner is unknown: we cannot tell who closed it.
            0 if event_flags & flags::UNTRACKED != 0 => Self::Other,
            // The kernel closed a connecting socket without RST or timeout:
            // an ICMP error (host/network unreachable, ...).
            0 => Self::Unreachable,
            _ => Self::Other,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::TimedOut => "timed_out",
            Self::Unreachable => "unreachable",
            Self::Aborted => "aborted",
            Self::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_kernel_errnos() {
        assert_eq!(FailureCause::classify(111, 0), FailureCause::Refused);
        assert_eq!(FailureCause::classify(110, 0), FailureCause::TimedOut);
        assert_eq!(
            FailureCause::classify(0, flags::CONNECT_TIMED_OUT),
            FailureCause::TimedOut
        );
        assert_eq!(FailureCause::classify(113, 0), FailureCause::Unreachable);
        assert_eq!(FailureCause::classify(101, 0), FailureCause::Unreachable);
        assert_eq!(
            FailureCause::classify(0, flags::CLOSED_BY_OWNER),
            FailureCause::Aborted
        );
        assert_eq!(FailureCause::classify(0, 0), FailureCause::Unreachable);
        assert_eq!(
            FailureCause::classify(0, flags::UNTRACKED),
            FailureCause::Other
        );
        assert_eq!(FailureCause::classify(13, 0), FailureCause::Other);
    }
}
