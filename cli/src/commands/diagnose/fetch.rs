//! Asking for findings: once (an agent's or the collector's
//! ListFindings), as an agent's live stream (WatchFindings), or again every
//! few seconds from the collector (`-w`).

use std::{io::Write, time::Duration};

use sockeye_proto::connect::AuthChannel as Channel;
use sockeye_proto::v1::{self as pb, agent_service_client::AgentServiceClient};

use super::{from_agent, open_count, render, render_update, stream_header, Basis, Seen};
use crate::{
    commands::{Client, View},
    error::{CliError, Role},
    live, now_unix_ms, safe, DEFAULT_SINCE,
};

/// What to ask for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub filter: pb::Filter,
    pub include_resolved: bool,
    /// Collector only: the range, ending now.
    pub since: Option<Duration>,
}

/// One answer, rendered, and how many problems in it hold now.
pub async fn once(
    client: &mut Client,
    target: &str,
    ask: &Ask,
    view: &View,
) -> Result<(String, u64), CliError> {
    match client {
        Client::Agent(c) => {
            let reply = c
                .list_findings(pb::ListFindingsRequest {
                    filter: Some(ask.filter.clone()),
                    include_resolved: ask.include_resolved,
                })
                .await
                .map_err(|s| CliError::from_status(Role::Agent, target, &s))?
                .into_inner();
            let findings = from_agent(&reply);
            let text = render(&findings, Basis::Agent(&reply), ask.include_resolved, view);
            Ok((text, open_count(&findings)))
        }
        Client::Collector(c) => {
            let since = ask.since.unwrap_or(DEFAULT_SINCE);
            let to = view.now_unix_ms;
            // At least 1: 0 would ask for the collector's default range.
            let from = to.saturating_sub(since.as_millis() as i64).max(1);
            let reply = c
                .list_findings(pb::ClusterFindingsRequest {
                    filter: Some(ask.filter.clone()),
                    since_unix_ms: from,
                    until_unix_ms: to,
                    include_resolved: ask.include_resolved,
                })
                .await
                .map_err(|s| CliError::from_status(Role::Collector, target, &s))?
                .into_inner();
            let node = (!ask.filter.node.is_empty()).then_some(ask.filter.node.as_str());
            let basis = Basis::Collector {
                since,
                from_unix_ms: from,
                to_unix_ms: to,
                windows: reply.windows,
                dropped_windows: reply.dropped_windows,
                node,
            };
            let text = render(&reply.findings, basis, ask.include_resolved, view);
            Ok((text, open_count(&reply.findings)))
        }
    }
}

/// How `-w` shows frames.
#[derive(Debug, Clone, Copy)]
pub struct Frames {
    pub every: Duration,
    /// Stop after this many.
    pub count: Option<u64>,
    /// Redraw in place.
    pub terminal: bool,
}

/// The collector's answer every `frames.every` (`-w`); returns how many
/// problems held in the last one.
pub async fn refresh(
    client: &mut Client,
    target: &str,
    ask: &Ask,
    view: &View,
    frames: Frames,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
    let title = format!(
        "sockeye diagnose  {target}{}",
        view.filter
            .as_ref()
            .map(|f| format!("  {f}"))
            .unwrap_or_default()
    );
    let mut open = 0;
    let source = async || {
        let view = View {
            now_unix_ms: now_unix_ms(),
            ..view.clone()
        };
        let (text, n) = once(client, target, ask, &view).await?;
        open = n;
        Ok(text)
    };
    live::refresh(
        source,
        &title,
        frames.every,
        frames.count,
        frames.terminal,
        view.output,
        out,
    )
    .await?;
    Ok(open)
}

/// An agent's findings as they open, change and resolve, until `count`
/// updates; returns how many were open at their last update.
pub async fn stream(
    client: &mut AgentServiceClient<Channel>,
    target: &str,
    ask: &Ask,
    view: &View,
    count: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
    let status = |s: tonic::Status| CliError::from_status(Role::Agent, target, &s);
    let mut updates = client
        .watch_findings(pb::ListFindingsRequest {
            filter: Some(ask.filter.clone()),
            include_resolved: ask.include_resolved,
        })
        .await
        .map_err(status)?
        .into_inner();
    safe::write(out, &stream_header(view), view.output)?;
    let mut seen = Seen::default();
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        match updates.message().await.map_err(status)? {
            Some(u) => {
                let view = View {
                    now_unix_ms: now_unix_ms(),
                    ..view.clone()
                };
                safe::write(out, &render_update(&u, "", &mut seen, &view), view.output)?;
            }
            None => {
                return Err(CliError::StreamEnded {
                    role: Role::Agent,
                    target: target.to_string(),
                })
            }
        }
        n += 1;
    }
    Ok(seen.open())
}
