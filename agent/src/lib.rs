//! Sockeye's node agent: TCP lifecycle per container, from eBPF to evidence.
//!
//! Data path: kernel programs (`agent-ebpf`) -> ring buffer -> [`event`]
//! decoding -> [`aggregate`] (flows, sockets, listeners) -> [`attribution`]
//! (cgroup -> container) -> [`snapshot`] -> [`output`], and [`metrics`]
//! for Prometheus.

pub mod agent;
pub mod api;
pub mod attribution;
pub mod ebpf;
pub mod http;
pub mod metrics;
pub mod netns;
pub mod output;
pub mod preexisting;
pub mod probe;
pub mod proc_limits;
pub mod procfs_sockets;
pub mod push;
pub mod run;
pub mod snapshot;
pub mod sock_diag;

// The domain, free of I/O, is `sockeye-core`'s; the agent feeds it the
// kernel's events and answers its questions.
pub use sockeye_core::{aggregate, clock, dns, event, findings};

pub use agent::{Agent, Config};
