//! The agent's HTTP endpoint for Kubernetes probes: `/healthz` (the event
//! loop is turning) and `/readyz` (programs attached, events read). The
//! Prometheus `/metrics` endpoint will be served here too.

pub mod health;

use std::net::SocketAddr;

use axum::{extract::State, http::StatusCode, routing::get, Router};
pub use health::HealthState;
use health::Verdict;
use tokio::net::TcpListener;

/// Default listen address: all interfaces (the kubelet probes the pod IP,
/// which is the node's with hostNetwork), port 9464 (Prometheus exporters'
/// range, free of the usual node daemons).
pub const DEFAULT_ADDR: &str = "0.0.0.0:9464";

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the health endpoint; pick another with --http-addr, or turn it off with --http-addr off")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|State(h): State<HealthState>| async move { answer(h.liveness()) }),
        )
        .route(
            "/readyz",
            get(|State(h): State<HealthState>| async move { answer(h.readiness()) }),
        )
        .with_state(state)
}

fn answer(v: Verdict) -> (StatusCode, String) {
    let code = if v.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{}\n", v.reason))
}

/// Serves until the process ends; an error is logged (the agent keeps
/// tracing, and the failing probes make it visible).
pub async fn serve(listener: TcpListener, state: HealthState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        log::error!("health endpoint stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A real HTTP/1.1 exchange over loopback.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probes_answer_over_http() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = HealthState::new(Duration::from_secs(30));
        tokio::spawn(serve(listener, state.clone()));

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.contains("not attached"), "{not_ready}");
        state.set_ready(true);
        state.beat();
        let ready = get(addr, "/readyz").await;
        assert!(
            ready.starts_with("HTTP/1.1 200") && ready.contains("attached"),
            "{ready}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        // A port in use is a clear error, not a panic.
        let err = bind(addr).await.unwrap_err();
        assert!(err.to_string().contains("--http-addr"), "{err}");
    }
}
