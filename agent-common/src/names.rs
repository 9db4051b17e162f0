//! Map and program names, used by the kernel side to define them and by the
//! agent to find them, so a rename cannot silently break the pairing.

/// Ring buffer carrying [`crate::event::SockEvent`] records to user space.
pub const EVENTS_MAP: &str = "SOCKEYE_EVENTS";
/// Per-CPU array of drop/health counters, indexed by [`crate::counters::Counter`].
pub const COUNTERS_MAP: &str = "SOCKEYE_COUNTERS";
/// Hash map: socket cookie -> per-socket state tracked by the kernel side.
pub const SOCKETS_MAP: &str = "SOCKEYE_SOCKETS";
/// Hash map: (netns cookie, port) -> owner of a listening socket.
pub const LISTENERS_MAP: &str = "SOCKEYE_LISTENERS";
/// Ring buffer carrying [`crate::cgroup::CgroupEvent`] records (cgroup names).
pub const CGROUP_EVENTS_MAP: &str = "SOCKEYE_CGROUP_EVENTS";
/// Ring buffer carrying [`crate::dns::DnsPacket`] records (DNS queries and answers).
pub const DNS_EVENTS_MAP: &str = "SOCKEYE_DNS_EVENTS";
/// Read-only global `[u16; MAX_DNS_PORTS]`: the ports watched for DNS (host
/// byte order, 0 = unused), set by the agent at load time.
pub const DNS_PORTS_GLOBAL: &str = "SOCKEYE_DNS_PORT_LIST";
/// LRU hash: socket cookie -> owner of a TCP socket, captured at connect() or
/// bind() and taken by sock_ops when the socket connects or listens.
pub const OWNERS_MAP: &str = "SOCKEYE_OWNERS";
/// Ring buffer carrying [`crate::resources::ResourceFailure`] records:
/// connects and socket() calls that failed for want of a port or an fd.
pub const RESOURCE_EVENTS_MAP: &str = "SOCKEYE_RESOURCE_EVENTS";
/// Per-CPU array (one slot): [`crate::resources::SyscallArgs`], what the
/// socket() entry tracepoint or the connect hooks saw of the last socket()
/// or connect() on that CPU, tagged with its thread.
pub const SYSCALL_ARGS_MAP: &str = "SOCKEYE_SYSCALL_ARGS";
/// Array (one entry) of tracepoint field offsets, written by the agent at load time.
pub const TP_OFFSETS_MAP: &str = "SOCKEYE_TP_OFFSETS";

/// sock_ops program attached to the cgroup v2 root: the TCP lifecycle.
pub const PROG_SOCK_OPS: &str = "sockeye_sock_ops";
/// cgroup_sock_addr `connect4` on the cgroup v2 root: the owner of an IPv4
/// TCP connect, in the connecting process's context, and the destination
/// of every IPv4 connect() for its exit tracepoint.
pub const PROG_CONNECT4: &str = "sockeye_connect4";
/// cgroup_sock_addr `connect6`: the same for IPv6.
pub const PROG_CONNECT6: &str = "sockeye_connect6";
/// cgroup_sock `post_bind4` on the cgroup v2 root: the owner of a bound IPv4
/// TCP socket (a listener to be), in the binding process's context.
pub const PROG_POST_BIND4: &str = "sockeye_post_bind4";
/// cgroup_sock `post_bind6`: the same for IPv6.
pub const PROG_POST_BIND6: &str = "sockeye_post_bind6";
/// cgroup_sock `sock_release`: the application closed a socket (a connect it
/// aborted, when the socket is still connecting).
pub const PROG_SOCK_RELEASE: &str = "sockeye_sock_release";
/// Tracepoint `cgroup:cgroup_mkdir`: the name of every new cgroup.
pub const PROG_CGROUP_MKDIR: &str = "sockeye_cgroup_mkdir";
/// cgroup_skb egress on the cgroup v2 root: DNS queries leaving containers,
/// with the sending process.
pub const PROG_DNS_EGRESS: &str = "sockeye_dns_egress";
/// The same without the sending process, for kernels that do not let
/// cgroup_skb programs read the current task.
pub const PROG_DNS_EGRESS_NO_TASK: &str = "sockeye_dns_egress_no_task";
/// cgroup_skb ingress on the cgroup v2 root: DNS answers reaching containers.
pub const PROG_DNS_INGRESS: &str = "sockeye_dns_ingress";
/// Tracepoint `syscalls:sys_exit_connect`: a connect that found no free
/// local port (or memory).
pub const PROG_SYS_EXIT_CONNECT: &str = "sockeye_sys_exit_connect";
/// Tracepoint `syscalls:sys_enter_socket`: remembers the domain.
pub const PROG_SYS_ENTER_SOCKET: &str = "sockeye_sys_enter_socket";
/// Tracepoint `syscalls:sys_exit_socket`: a socket() that hit the fd limit
/// (or found no memory).
pub const PROG_SYS_EXIT_SOCKET: &str = "sockeye_sys_exit_socket";

/// Programs a kernel may refuse because a better variant needs what only
/// newer kernels allow, each with the program the agent loads instead:
/// `(preferred, fallback)`. Every other program must load on every supported
/// kernel; `sockeye-agent verify` and the kernel matrix hold to that.
pub const FALLBACKS: &[(&str, &str)] = &[(PROG_DNS_EGRESS, PROG_DNS_EGRESS_NO_TASK)];
