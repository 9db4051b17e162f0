//! Sockeye's gRPC API, package `sockeye.v1`, generated from `proto/`.
//!
//! - [`v1::agent_service_server`] / [`v1::agent_service_client`]: the
//!   agent's snapshot and live trace stream.
//! - [`v1::collector_service_server`] / [`v1::collector_service_client`]:
//!   windows pushed by agents, cluster queries and the fan-in stream.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sockeye.v1");
}

/// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sockeye_descriptor.bin"));

pub mod connect;
pub mod filter;
pub mod rank;
pub mod top;
// The one escaping function for text from the kernel and from peers.
pub use sockeye_core::text;
