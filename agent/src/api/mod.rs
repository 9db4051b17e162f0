//! The agent's gRPC API (`sockeye.v1.AgentService`): snapshots and live
//! traces for the CLI and other clients.

pub mod convert;
pub mod filter;
pub mod respond;
pub mod server;
pub mod service;
pub mod traces;
