//! The JSON the page polls: open findings with their evidence and a
//! timeline of the signals behind each, and one workload's flows. Read
//! from the store with the same queries as ListFindings and QueryTop, and
//! bounded like them (`--max-query-windows`).

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};
use sockeye_proto::v1 as pb;

use crate::{
    collector::unix_ms_now,
    filter::Filter,
    findings::{self, FindingsQuery},
    query::{self, scan_range, TopQuery},
    Collector,
};

/// Findings shown at most (the worst first), each with its timeline.
const MAX_FINDINGS: usize = 50;
/// The timeline spans this much before a finding's start and after it
/// (up to now).
const AROUND_MS: i64 = 5 * 60 * 1000;
/// The flows of a workload over this much time.
const FLOWS_RANGE_MS: i64 = 15 * 60 * 1000;

fn reply(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn failed(e: impl std::fmt::Display) -> Response {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": e.to_string()}),
    )
}

fn endpoint(e: Option<&pb::Endpoint>) -> String {
    e.map_or(String::new(), |e| {
        if e.ip.contains(':') {
            format!("[{}]:{}", e.ip, e.port)
        } else {
            format!("{}:{}", e.ip, e.port)
        }
    })
}

fn workload(w: Option<&pb::Workload>) -> Value {
    let w = w.cloned().unwrap_or_default();
    json!({"namespace": w.namespace, "pod": w.pod, "container": w.container,
        "label": w.label, "node": w.node})
}

/// The answer, and the stored windows read for it (charged to the
/// caller's query budget as a query's are).
pub(super) async fn findings(c: &Collector) -> (Response, u64) {
    let shared = &c.shared;
    let now = unix_ms_now();
    let q = match FindingsQuery::parse(&pb::ClusterFindingsRequest::default(), now) {
        Ok(q) => q,
        Err(e) => return (failed(e), 0),
    };
    let max = shared.config.caller_limits.max_query_windows;
    let (reply_, counts) =
        match findings::list(shared.store.as_ref(), &q, max, &shared.silences()).await {
            Ok(r) => r,
            Err(e) => return (failed(e), max),
        };
    let mut read = counts.read;
    let mut out = Vec::new();
    for m in reply_.findings.iter().take(MAX_FINDINGS) {
        let Some(f) = m.findings.first() else {
            continue;
        };
        let timeline = match timeline(c, f, now).await {
            Ok((t, n)) => {
                read += n;
                t
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        out.push(json!({
            "kind": m.kind,
            "severity": m.severity,
            "confidence": m.confidence,
            "since": m.since_unix_ms,
            "summary": m.summary,
            "nodes": m.nodes,
            "destination": endpoint(m.destination.as_ref()),
            "dns_name": m.dns_name,
            "subject": workload(f.subject.as_ref()),
            "next_step": f.next_step,
            "signals": f.signals,
            "evidence": f.evidence.iter().map(|e| json!({
                "key": e.key, "fact": e.fact, "value": e.value, "unit": e.unit,
                "at": e.at_unix_ms, "about": e.about,
            })).collect::<Vec<_>>(),
            "timeline": timeline,
        }));
    }
    let body = json!({"now": now, "windows": reply_.windows,
        "dropped_windows": reply_.dropped_windows,
        "shown": out.len(), "open": reply_.findings.len(), "findings": out});
    (reply(StatusCode::OK, body), read)
}

/// Per window of the finding's node around its start: the subject's open
/// sockets, connects and failed connects to the destination, DNS queries
/// and timeouts, and whether the process listening on the destination's
/// port on that node changed (a restart), so the page draws what the
/// detector saw.
async fn timeline(
    c: &Collector,
    f: &pb::Finding,
    now: i64,
) -> Result<(Value, u64), query::ScanError> {
    let s = f.subject.clone().unwrap_or_default();
    let filter = Filter::parse(Some(&pb::Filter {
        namespace: s.namespace.clone(),
        pod: s.pod.clone(),
        container: if s.pod.is_empty() {
            s.label.clone()
        } else {
            String::new()
        },
        destination: if f.dns_name.is_empty() {
            endpoint(f.destination.as_ref())
        } else {
            f.dns_name.clone()
        },
        node: f.node.clone(),
    }))
    .unwrap_or_default();
    let start = f.since_unix_ms;
    let (from, to) = (start - AROUND_MS, (start + AROUND_MS).min(now));
    let mut points = Vec::new();
    let mut listener_pid = None;
    let port = f.destination.as_ref().map(|d| d.port);
    let max = c.shared.config.caller_limits.max_query_windows;
    let counts = scan_range(c.shared.store.as_ref(), from..=to, &filter, max, |w| {
        // The listener is the destination's, not the subject's: read it
        // from the whole window.
        let pid = w.aggregates.as_ref().and_then(|a| {
            let l = a
                .listeners
                .iter()
                .find(|l| l.local.as_ref().map(|e| e.port) == port)?;
            Some(l.pid)
        });
        let restart = matches!((listener_pid, pid), (Some(a), Some(b)) if a != b);
        if pid.is_some() {
            listener_pid = pid;
        }
        let Some(agg) = w.aggregates.as_ref().map(|a| filter.apply(a)) else {
            return;
        };
        let flows = &agg.tcp_flows;
        let dns = agg.dns_names.iter().filter_map(|d| d.counts.as_ref());
        let (queries, timeouts) = dns.fold((0, 0), |(q, t), c| (q + c.queries, t + c.timeouts));
        points.push(json!({
            "t": w.end_unix_ms,
            "open": flows.iter().map(|f| f.open).sum::<u64>(),
            "connects": flows.iter().map(|f| f.connects_ok).sum::<u64>(),
            "failed": flows.iter().map(|f| f.connects_failed.values().sum::<u64>()).sum::<u64>(),
            "dns_queries": queries,
            "dns_timeouts": timeouts,
            "restart": restart,
        }));
    })
    .await?;
    let t = json!({"from": from, "to": to, "start": start, "points": points});
    Ok((t, counts.read))
}

/// `namespace=..&pod=..` of the query string (names are DNS labels, so
/// nothing in them needs decoding beyond what is refused).
fn param<'a>(query: &'a str, name: &str) -> &'a str {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_default()
}

pub(super) async fn flows(c: &Collector, query_string: &str) -> (Response, u64) {
    let now = unix_ms_now();
    let req = pb::QueryTopRequest {
        filter: Some(pb::Filter {
            namespace: param(query_string, "namespace").to_string(),
            pod: param(query_string, "pod").to_string(),
            ..Default::default()
        }),
        from_unix_ms: now - FLOWS_RANGE_MS,
        to_unix_ms: 0,
        by: "failures".into(),
        limit: 50,
    };
    let q = match TopQuery::parse(&req) {
        Ok(q) => q,
        Err(e) => {
            let body = json!({"error": e.to_string()});
            return (reply(StatusCode::BAD_REQUEST, body), 0);
        }
    };
    let max = c.shared.config.caller_limits.max_query_windows;
    let (top, counts) = match query::query_top(c.shared.store.as_ref(), &q, max).await {
        Ok(r) => r,
        Err(e) => return (failed(e), max),
    };
    let rows: Vec<Value> = top
        .rows
        .iter()
        .map(|r| {
            let p = r.connect_percentiles.unwrap_or_default();
            json!({
                "workload": workload(r.workload.as_ref()),
                "destination": endpoint(r.destination.as_ref()),
                "connects_ok": r.connects_ok,
                "connects_failed": r.connects_failed,
                "open": r.open,
                "p99_ms": p.p99_ns as f64 / 1e6,
                "nodes": r.nodes,
            })
        })
        .collect();
    let body = json!({"from": req.from_unix_ms, "windows": top.windows, "rows": rows});
    (reply(StatusCode::OK, body), counts.read)
}
