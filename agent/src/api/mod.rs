//! The agent's gRPC API (`sockeye.v1.AgentService`): snapshots, live
//! traces and findings for the CLI and other clients.

pub mod convert;
pub mod convert_findings;
pub mod filter;
pub mod findings;
pub mod respond;
pub mod server;
pub mod service;
pub mod traces;

use std::{net::SocketAddr, path::PathBuf};

use tokio::sync::mpsc;

use crate::Agent;

/// Where the API listens, once started.
#[derive(Debug, Clone)]
pub struct Listening {
    pub unix: Option<PathBuf>,
    pub tcp: Option<SocketAddr>,
}

/// Binds the API's listeners (errors here are start-up errors) and serves
/// it on the current tokio runtime. The agent's loop answers the requests
/// that come out of the returned receiver (`RunOptions::api`).
pub async fn start(
    agent: &Agent,
    opts: &server::ServeOptions,
) -> Result<(mpsc::Receiver<service::ApiRequest>, Listening), server::ServeError> {
    let bound = server::bind(opts).await?;
    let listening = Listening {
        unix: bound.unix_path().map(PathBuf::from),
        tcp: bound.tcp_addr(),
    };
    let (tx, rx) = mpsc::channel(16);
    let mut api =
        service::AgentApi::new(tx, agent.traces.sender(), agent.traces.node().to_string());
    api.findings_enabled = agent.findings.enabled();
    tokio::spawn(async move {
        if let Err(e) = bound.serve(api).await {
            log::error!("API stopped: {e}");
        }
    });
    Ok((rx, listening))
}
