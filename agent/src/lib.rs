//! Sockeye's node agent: TCP lifecycle per container, from eBPF to evidence.
//!
//! Data path: kernel programs (`agent-ebpf`) -> ring buffer -> [`event`]
//! decoding -> [`aggregate`] (flows, sockets, listeners) -> [`attribution`]
//! (cgroup -> container) -> [`snapshot`] -> [`output`], and [`metrics`]
//! for Prometheus.

pub mod agent;
pub mod aggregate;
pub mod api;
pub mod attribution;
pub mod clock;
pub mod dns;
pub mod ebpf;
pub mod event;
pub mod findings;
pub mod http;
pub mod metrics;
pub mod netns;
pub mod output;
pub mod preexisting;
pub mod proc_limits;
pub mod procfs_sockets;
pub mod push;
pub mod reconcile;
pub mod run;
pub mod snapshot;
pub mod sock_diag;

pub use agent::{Agent, Config};
