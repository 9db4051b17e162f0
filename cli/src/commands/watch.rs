//! `sockeye watch`: an agent's live traces (connects, accepts, state
//! changes, closes, DNS queries and answers) or the windows agents push to
//! the collector, one line each, as they arrive. What the stream had to
//! skip because this client read too slowly is printed where it happened.

use std::io::Write;

use sockeye_proto::connect::AuthChannel as Channel;
use sockeye_proto::v1::{
    self as pb, agent_service_client::AgentServiceClient,
    collector_service_client::CollectorServiceClient, trace_event::Event,
};

use super::{workload_name, View};
use crate::{
    args::Output,
    error::{CliError, Role},
    format, json, safe,
    table::Width,
};

/// The drop counter the collector adds to a watched window: windows this
/// stream missed just before it (`sockeye_collector::WATCH_MISSED_COUNTER`).
pub const COLLECTOR_MISSED_COUNTER: &str = "collector_watch_missed_windows";

const WORKLOAD_WIDTH: usize = 40;
/// What a narrow trace line keeps for its details when it fits a terminal
/// ("10.244.1.7:41234 → 10.96.0.12:6379 in 850µs" and most processes).
const DETAILS_ROOM: usize = 52;

/// A narrow trace line's WORKLOAD: what a terminal leaves beside the time,
/// the event and the details, between 16 and 40 characters.
fn workload_width(view: &View) -> usize {
    match view.fit() {
        Width::Fit(w) => w
            .saturating_sub(12 + 2 + 2 + 15 + 2 + DETAILS_ROOM)
            .clamp(16, WORKLOAD_WIDTH),
        Width::All => WORKLOAD_WIDTH,
    }
}

/// The column titles, printed once the stream is open; none for JSON.
pub fn header(view: &View) -> String {
    match (view.output, view.role) {
        (Output::Json, _) => String::new(),
        (Output::Table, Role::Agent) => {
            let w = workload_width(view);
            format!(
                "{:<12}  {:<w$}  {:<15}  DETAILS\n",
                "TIME(UTC)", "WORKLOAD", "EVENT"
            )
        }
        (Output::Wide, Role::Agent) => format!(
            "{:<27}  {:<16}  {:<WORKLOAD_WIDTH$}  {:<15}  DETAILS\n",
            "TIME(UTC)", "NODE", "WORKLOAD", "EVENT"
        ),
        (output, Role::Collector) => window_cells(
            output,
            [
                "TIME(UTC)",
                "NODE",
                "SEQ",
                "SPAN",
                "FLOWS",
                "CONNECTS",
                "FAILED",
                "OPEN",
                "DNS-Q",
                "NXDOM",
                "FAIL",
                "TMO",
                "AGENT",
                "LOST",
            ]
            .map(String::from),
        ),
    }
}

fn tcp_event(t: &pb::TcpEvent) -> (String, String) {
    let local = format::endpoint_of(t.local.as_ref());
    let remote = format::endpoint_of(t.remote.as_ref());
    let took = |prefix: &str| {
        if t.duration_ns > 0 {
            format!(" {prefix} {}", format::duration_ns(Some(t.duration_ns)))
        } else {
            String::new()
        }
    };
    let (name, details) = match t.kind.as_str() {
        "connect_pending" => ("connect", format!("{local} → {remote}")),
        "established" => ("established", format!("{local} → {remote}{}", took("in"))),
        "accepted" => ("accepted", format!("{local} ← {remote}")),
        "state_change" => (
            "state",
            format!("{local} ↔ {remote} {} → {}", t.old_state, t.new_state),
        ),
        "closed" => ("closed", format!("{local} ↔ {remote}{}", took("after"))),
        "listen" => ("listen", local),
        "connect_failed" => (
            "failed",
            format!("{local} → {remote} {}{}", t.cause, took("after")),
        ),
        other => (other, format!("{local} ↔ {remote}")),
    };
    (format!("tcp {name}"), with_process(details, &t.comm, t.pid))
}

fn dns_event(d: &pb::DnsEvent, wide: bool) -> (String, String) {
    let server = format::endpoint_of(d.server.as_ref());
    let q = format!("{} {}", d.qtype, d.name);
    let tcp = if d.transport == "tcp" { " tcp" } else { "" };
    let (name, mut details) = match d.kind.as_str() {
        "query" => (
            "query",
            format!("{q} → {server}{tcp}{}", if d.retry { " retry" } else { "" }),
        ),
        "answer" => (
            "answer",
            format!(
                "{q} ← {server}{tcp} {} {} answer{} in {}{}",
                d.rcode,
                d.answers,
                if d.answers == 1 { "" } else { "s" },
                format::duration_nonzero(d.latency_ns),
                if d.truncated { " truncated" } else { "" }
            ),
        ),
        "timeout" => ("timeout", format!("{q} → {server}{tcp} no answer")),
        "late_answer" => (
            "late",
            format!(
                "{q} ← {server}{tcp} after {}",
                format::duration_nonzero(d.latency_ns)
            ),
        ),
        other => (other, format!("{q} {server}{tcp}")),
    };
    if wide {
        details.push_str(&format!(
            " id {} from {}",
            d.id,
            format::endpoint_of(d.client.as_ref())
        ));
    }
    (format!("dns {name}"), with_process(details, &d.comm, d.pid))
}

fn with_process(details: String, comm: &str, pid: u32) -> String {
    if comm.is_empty() && pid == 0 {
        details
    } else {
        format!("{details}  {}", format::process(comm, pid))
    }
}

/// One trace as its line(s): a note first when traces were missed before it.
pub fn render_trace(ev: &pb::TraceEvent, view: &View) -> String {
    if view.output == Output::Json {
        return json::line(&json::trace(ev));
    }
    let mut out = String::new();
    if ev.missed_before > 0 {
        out.push_str(&format!(
            "... {} traces missed (client too slow)\n",
            ev.missed_before
        ));
    }
    let wide = view.wide();
    let (name, details) = match &ev.event {
        Some(Event::Tcp(t)) => tcp_event(t),
        Some(Event::Dns(d)) => dns_event(d, wide),
        None => ("?".to_string(), String::new()),
    };
    let workload = workload_name(ev.workload.as_ref());
    let line = if wide {
        format!(
            "{:<27}  {:<16}  {workload:<WORKLOAD_WIDTH$}  {name:<15}  {details}",
            format::rfc3339_ns(ev.ts_unix_ns),
            ev.node,
        )
    } else {
        let w = workload_width(view);
        format!(
            "{:<12}  {:<w$}  {name:<15}  {details}",
            format::time_of_day_ns(ev.ts_unix_ns),
            format::truncate(&workload, w),
        )
    };
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// Fixed-width cells of a window line (the table cannot be measured ahead
/// of a stream); wide adds the agent id and its lost-event count.
fn window_cells(output: Output, c: [String; 14]) -> String {
    let mut line = format!(
        "{:<12}  {:<16}  {:>6}  {:>5}  {:>5}  {:>8}  {:>6}  {:>5}  {:>6}  {:>5}  {:>5}  {:>5}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]
    );
    if output == Output::Wide {
        line.push_str(&format!("  {:<36}  {:>6}", c[12], c[13]));
    }
    format!("{}\n", line.trim_end())
}

fn sum(it: impl Iterator<Item = u64>) -> u64 {
    it.fold(0u64, |n, v| n.saturating_add(v))
}

/// One pushed window as a summary line, after notes on what was missed.
pub fn render_window(w: &pb::Window, view: &View) -> String {
    let empty = pb::Aggregates::default();
    let agg = w.aggregates.as_ref().unwrap_or(&empty);
    let drops = agg.drops.as_ref();
    let missed = drops
        .and_then(|d| d.counters.get(COLLECTOR_MISSED_COUNTER))
        .copied()
        .unwrap_or(0);
    if view.output == Output::Json {
        return json::line(&json::window(w, missed));
    }
    let mut out = String::new();
    if missed > 0 {
        out.push_str(&format!("... {missed} windows missed (client too slow)\n"));
    }
    if w.dropped_windows_before > 0 {
        out.push_str(&format!(
            "... {} dropped {} windows before this one (the collector was away too long)\n",
            w.node, w.dropped_windows_before
        ));
    }
    let flows = &agg.tcp_flows;
    let failed = sum(flows
        .iter()
        .map(|f| sum(f.connects_failed.values().copied())));
    let connects = sum(flows.iter().map(|f| f.connects_ok)).saturating_add(failed);
    // Totals over all servers; per-server totals would count twice.
    let totals: Vec<&pb::DnsCounts> = agg
        .dns_totals
        .iter()
        .filter(|t| t.server.is_none())
        .filter_map(|t| t.counts.as_ref())
        .collect();
    let rcode = |c: &pb::DnsCounts, k: &str| c.rcodes.get(k).copied().unwrap_or(0);
    let other_rcodes = |c: &pb::DnsCounts| {
        sum(c
            .rcodes
            .iter()
            .filter(|(k, _)| *k != "NOERROR" && *k != "NXDOMAIN")
            .map(|(_, v)| *v))
    };
    // The agent's own losses, without the counter this stream added.
    let lost = drops.map_or(0, |d| {
        sum(d
            .counters
            .iter()
            .filter(|(k, _)| *k != COLLECTOR_MISSED_COUNTER)
            .map(|(_, v)| *v))
    });
    let span_s = (w.end_unix_ms - w.start_unix_ms).max(0) as f64 / 1e3;
    out.push_str(&window_cells(
        view.output,
        [
            format::time_of_day_ms(w.end_unix_ms),
            w.node.clone(),
            format!("#{}", w.seq),
            format::age_s(span_s),
            flows.len().to_string(),
            connects.to_string(),
            failed.to_string(),
            sum(flows.iter().map(|f| f.open)).to_string(),
            sum(totals.iter().map(|c| c.queries)).to_string(),
            sum(totals.iter().map(|c| rcode(c, "NXDOMAIN"))).to_string(),
            sum(totals.iter().map(|c| other_rcodes(c))).to_string(),
            sum(totals.iter().map(|c| c.timeouts)).to_string(),
            w.agent_id.clone(),
            lost.to_string(),
        ],
    ));
    out
}

/// Streams an agent's traces until `count` events or the stream ends.
pub async fn traces(
    client: &mut AgentServiceClient<Channel>,
    target: &str,
    request: pb::WatchTracesRequest,
    view: &View,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let stream = client
        .watch_traces(request)
        .await
        .map_err(|s| CliError::from_status(Role::Agent, target, &s))?
        .into_inner();
    // The agent subscribes before it answers: from here on nothing is missed
    // unnoticed, so the header also tells a reader the watch has begun.
    follow(stream, Role::Agent, target, view, count, out, render_trace).await
}

/// Streams the windows agents push to the collector.
pub async fn windows(
    client: &mut CollectorServiceClient<Channel>,
    target: &str,
    filter: pb::Filter,
    view: &View,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let stream = client
        .watch_windows(pb::WatchWindowsRequest {
            filter: Some(filter),
        })
        .await
        .map_err(|s| CliError::from_status(Role::Collector, target, &s))?
        .into_inner();
    follow(
        stream,
        Role::Collector,
        target,
        view,
        count,
        out,
        render_window,
    )
    .await
}

/// Writes the header, then each message of `stream` as `render` shows it,
/// until `count` messages; a stream that ends first is an error (a watch
/// ends only when its reader stops it).
async fn follow<M>(
    mut stream: tonic::Streaming<M>,
    role: Role,
    target: &str,
    view: &View,
    count: Option<u64>,
    out: &mut dyn Write,
    render: fn(&M, &View) -> String,
) -> Result<(), CliError> {
    safe::write(out, &header(view), view.output)?;
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        let Some(m) = stream
            .message()
            .await
            .map_err(|s| CliError::from_status(role, target, &s))?
        else {
            return Err(CliError::StreamEnded {
                role,
                target: target.to_string(),
            });
        };
        safe::write(out, &render(&m, view), view.output)?;
        n += 1;
    }
    Ok(())
}
