//! Indices of the kernel-side counters, one per way an event can be lost or skipped.

/// Index into the per-CPU [`crate::names::COUNTERS_MAP`] array. Discriminants are
/// part of the kernel/user ABI: never reuse or renumber one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full, the event is lost.
    RingbufFull = 0,
    /// The kernel could not allocate a socket's record (socket storage):
    /// the socket is not tracked, or its owner is unknown. (The name is
    /// from when the records were a hash map with a fixed size.)
    SocketsMapFull = 1,
    /// Inserting into the listener map failed (map full).
    ListenersMapFull = 2,
    /// Setting sock_ops callback flags failed: state changes of that socket are not seen.
    CbFlagsFailed = 3,
    /// Events emitted into the ring buffer.
    EventsEmitted = 4,
    /// A socket event arrived for a socket the kernel side was not tracking
    /// (opened before the agent started, or dropped by a full map).
    UntrackedSocket = 5,
    /// A tracepoint could not read its arguments (bad offset or read failure).
    TracepointReadFailed = 6,
    // 7 was ConnectErrorsMapFull: connect errors are no longer recorded by
    // tracepoints in a map (sock_ops tells the cause itself). Never reuse it.
    /// The DNS ring buffer was full: a DNS query or answer is lost.
    DnsRingbufFull = 8,
    /// DNS packets copied into the DNS ring buffer.
    DnsPacketsEmitted = 9,
    /// An IPv6 packet with more extension headers before UDP/TCP than the
    /// program follows (3): its ports are not known, so a DNS packet among
    /// these is missed.
    DnsSkippedIpv6Extension = 10,
    /// Reading a DNS packet's headers or payload failed (a packet shorter
    /// than its headers claim): that packet is missed.
    DnsReadFailed = 11,
    /// A TCP socket connected or started listening without its owner having
    /// been captured (the connect/bind hooks did not see it, e.g. it was bound
    /// before the agent started): its connections are shown under an
    /// unknown workload.
    OwnerNotCaptured = 12,
    /// The resource-failure ring buffer was full: a failed connect() or
    /// socket() (no free port, fd limit) is lost.
    ResourceRingbufFull = 13,
    /// Failed connect() and socket() calls sent to user space.
    ResourceFailuresEmitted = 14,
    /// A connect() or socket() failed for want of a resource, but what was
    /// kept for its exit (the destination by connect4/connect6, the domain
    /// by the socket() entry tracepoint) was not found or was an earlier
    /// call's (evicted from the per-thread map, or the call began before
    /// the agent): it is still reported, without its destination or domain.
    SyscallArgsMissed = 15,
}

/// Slots of the counters array map: the highest discriminant plus one
/// (retired ones stay unused).
pub const COUNTER_COUNT: u32 = 16;

impl Counter {
    /// Every counter in use, in discriminant order.
    pub const ALL: [Counter; 15] = [
        Counter::RingbufFull,
        Counter::SocketsMapFull,
        Counter::ListenersMapFull,
        Counter::CbFlagsFailed,
        Counter::EventsEmitted,
        Counter::UntrackedSocket,
        Counter::TracepointReadFailed,
        Counter::DnsRingbufFull,
        Counter::DnsPacketsEmitted,
        Counter::DnsSkippedIpv6Extension,
        Counter::DnsReadFailed,
        Counter::OwnerNotCaptured,
        Counter::ResourceRingbufFull,
        Counter::ResourceFailuresEmitted,
        Counter::SyscallArgsMissed,
    ];

    /// Stable snake_case name used in logs, JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::RingbufFull => "kernel_ringbuf_full",
            Counter::SocketsMapFull => "kernel_sockets_map_full",
            Counter::ListenersMapFull => "kernel_listeners_map_full",
            Counter::CbFlagsFailed => "kernel_cb_flags_failed",
            Counter::EventsEmitted => "kernel_events_emitted",
            Counter::UntrackedSocket => "kernel_untracked_socket_events",
            Counter::TracepointReadFailed => "kernel_tracepoint_read_failed",
            Counter::DnsRingbufFull => "kernel_dns_ringbuf_full",
            Counter::DnsPacketsEmitted => "kernel_dns_packets_emitted",
            Counter::DnsSkippedIpv6Extension => "kernel_dns_skipped_ipv6_extension",
            Counter::DnsReadFailed => "kernel_dns_read_failed",
            Counter::OwnerNotCaptured => "kernel_owner_not_captured",
            Counter::ResourceRingbufFull => "kernel_resource_ringbuf_full",
            Counter::ResourceFailuresEmitted => "kernel_resource_failures_emitted",
            Counter::SyscallArgsMissed => "kernel_syscall_args_missed",
        }
    }

    /// Whether the counter records lost data (as opposed to throughput).
    pub const fn is_loss(self) -> bool {
        !matches!(
            self,
            Counter::EventsEmitted
                | Counter::UntrackedSocket
                | Counter::DnsPacketsEmitted
                | Counter::ResourceFailuresEmitted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_fits_the_map_and_has_its_own_slot() {
        let mut seen = [false; COUNTER_COUNT as usize];
        for c in Counter::ALL {
            let i = c as usize;
            assert!(i < COUNTER_COUNT as usize, "{c:?}");
            assert!(!seen[i], "{c:?} shares slot {i}");
            seen[i] = true;
        }
        assert!(!seen[7], "slot 7 is retired");
    }
}
