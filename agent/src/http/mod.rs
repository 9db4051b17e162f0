//! The agent's HTTP endpoint: `/healthz` (the event loop is turning) and
//! `/readyz` (programs attached, events read) for Kubernetes probes, and
//! `/metrics` for Prometheus.

pub mod health;
pub mod metrics;

use std::net::SocketAddr;

use axum::{extract::State, http::StatusCode, routing::get, Router};
pub use health::HealthState;
use health::Verdict;
use tokio::net::TcpListener;

use crate::metrics::MetricsHandle;

/// Default listen address: all interfaces (the kubelet probes the pod IP,
/// which is the node's with hostNetwork), port 9464 (Prometheus exporters'
/// range, free of the usual node daemons).
pub const DEFAULT_ADDR: &str = "0.0.0.0:9464";

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the health and metrics endpoint; pick another with --http-addr, or turn it off with --http-addr off")]
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

/// `/metrics` is served when `metrics` is given (404 otherwise).
pub fn router(state: HealthState, metrics: Option<MetricsHandle>) -> Router {
    let probes = Router::new()
        .route(
            "/healthz",
            get(|State(h): State<HealthState>| async move { answer(h.liveness()) }),
        )
        .route(
            "/readyz",
            get(|State(h): State<HealthState>| async move { answer(h.readiness()) }),
        )
        .with_state(state);
    match metrics {
        Some(m) => probes.merge(
            Router::new()
                .route("/metrics", get(metrics::scrape))
                .with_state(m),
        ),
        None => probes,
    }
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
pub async fn serve(listener: TcpListener, state: HealthState, metrics: Option<MetricsHandle>) {
    if let Err(e) = axum::serve(listener, router(state, metrics)).await {
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
        tokio::spawn(serve(listener, state.clone(), None));

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
        assert!(
            get(addr, "/metrics").await.starts_with("HTTP/1.1 404"),
            "no metrics handle, no /metrics"
        );

        // A port in use is a clear error, not a panic.
        let err = bind(addr).await.unwrap_err();
        assert!(err.to_string().contains("--http-addr"), "{err}");
    }

    #[tokio::test]
    async fn metrics_answer_over_http() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_metrics, handle) = crate::metrics::Metrics::new(
            crate::metrics::MetricsConfig::default(),
            crate::metrics::Capacities::default(),
        );
        let state = HealthState::new(Duration::from_secs(30));
        tokio::spawn(serve(listener, state, Some(handle)));
        let answer = get(addr, "/metrics").await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("headers end");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        // Before the loop's first fold: build info and the process figures.
        assert!(body.contains("# TYPE sockeye_build info"), "{body}");
        assert!(
            body.contains("sockeye_process_resident_memory_bytes "),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    }
}
