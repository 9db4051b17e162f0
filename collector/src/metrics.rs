//! `/metrics` (Prometheus text format), `/healthz` and `/readyz` on a
//! plain HTTP listener of their own: the kubelet's probes and Prometheus
//! speak neither gRPC over TLS nor bearer tokens, and the counters say
//! nothing a reader of the data could not see anyway. The web view (`ui`)
//! shares the listener and checks a reader's token itself.

use std::fmt::Write as _;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use tokio::net::TcpListener;

use crate::{
    stats::{Kind, Stats},
    Collector, Error,
};

/// Every counter and gauge of `stats` as `sockeye_collector_<name>`
/// (counters end in `_total`), with its meaning as HELP.
pub fn render(stats: &Stats) -> String {
    let mut out = String::new();
    for (name, kind, doc, value) in stats.entries() {
        let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        let (metric, ty) = match kind {
            Kind::Counter => (format!("sockeye_collector_{name}_total"), "counter"),
            Kind::Gauge => (format!("sockeye_collector_{name}"), "gauge"),
        };
        let _ = writeln!(out, "# HELP {metric} {doc}");
        let _ = writeln!(out, "# TYPE {metric} {ty}");
        let _ = writeln!(out, "{metric} {value}");
    }
    out
}

async fn metrics(State(c): State<Collector>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        render(&c.stats()),
    )
}

/// Ready while serving; a full disk does not make it unready (queries go
/// on, agents keep their windows), the metrics say it. A store server that
/// does not answer does: neither pushes nor queries can be served.
async fn ready(State(c): State<Collector>) -> impl IntoResponse {
    if c.shared.shutdown.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        )
    } else if let Some(why) = c.shared.store_health.unavailable() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {why}\n"),
        )
    } else {
        (StatusCode::OK, "ready\n".to_string())
    }
}

impl Collector {
    /// Serves `/metrics`, `/healthz`, `/readyz` and the web view (`/ui`,
    /// which checks credentials as queries do) on `listener` until
    /// shutdown.
    pub async fn serve_http(&self, listener: TcpListener) -> Result<(), Error> {
        let name = match listener.local_addr() {
            Ok(a) => format!("http {a}"),
            Err(_) => "http".to_string(),
        };
        log::info!("serving /metrics, /healthz, /readyz and the web view /ui on {name}");
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .merge(crate::ui::routes())
            .with_state(self.clone());
        let token = self.shared.shutdown.clone();
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(token.cancelled_owned())
        .await
        .map_err(|source| Error::Http {
            listener: name,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_gauges_do_not() {
        let text = render(&Stats {
            store_disk_full: 1,
            auth_pushes_refused: 2,
            ..Stats::default()
        });
        assert!(text.contains("# TYPE sockeye_collector_auth_pushes_refused_total counter\nsockeye_collector_auth_pushes_refused_total 2\n"));
        assert!(text.contains(
            "# TYPE sockeye_collector_store_disk_full gauge\nsockeye_collector_store_disk_full 1\n"
        ));
        assert!(text.lines().all(|l| !l.is_empty()));
    }
}
