//! Answers API requests inside the agent's loop, which owns the aggregates
//! and the findings.

use sockeye_proto::v1 as pb;

use super::{convert, filter::ApiFilter, findings, service::ApiRequest};
use crate::{clock, Agent};

pub fn answer(agent: &mut Agent, request: ApiRequest) {
    // The client may have gone by the time a reply is sent: nothing to do then.
    match request {
        ApiRequest::Snapshot { filter, reply } => {
            let snapshot = pb::Snapshot {
                aggregates: Some(aggregates(agent, &filter)),
                node: agent.traces.node().to_string(),
                taken_unix_ms: clock::unix_ms(),
            };
            let _ = reply.send(snapshot);
        }
        ApiRequest::Findings {
            filter,
            include_resolved,
            reply,
        } => {
            let _ = reply.send(findings_reply(agent, &filter, include_resolved));
        }
        ApiRequest::WatchFindings {
            filter,
            include_resolved,
            reply,
        } => {
            let now = list(agent, &filter, include_resolved);
            let watch = agent.finding_updates.watch(filter);
            let _ = reply.send((now, watch));
        }
    }
}

/// The agent's aggregates that pass `filter`, as the API sends them, with
/// the findings open now.
pub fn aggregates(agent: &mut Agent, filter: &ApiFilter) -> pb::Aggregates {
    let snap = filter.apply(agent.snapshot_filtered(filter.workloads()));
    let health = agent.health();
    let mut agg = convert::aggregates(&snap, &health, agent.traces.node());
    agg.findings = list(agent, filter, false);
    agg
}

/// Findings that pass `filter`: open ones worst first, then (if asked)
/// resolved ones newest first.
pub fn list(agent: &Agent, filter: &ApiFilter, include_resolved: bool) -> Vec<pb::Finding> {
    let f = &agent.findings;
    let resolved = include_resolved.then(|| f.resolved()).into_iter().flatten();
    findings::messages(
        &agent.finding_updates,
        f.open().into_iter().chain(resolved),
        filter,
    )
}

pub fn findings_reply(
    agent: &Agent,
    filter: &ApiFilter,
    include_resolved: bool,
) -> pb::FindingsReply {
    pb::FindingsReply {
        node: agent.traces.node().to_string(),
        taken_unix_ms: clock::unix_ms(),
        findings: list(agent, filter, include_resolved),
        // Every loss can hide a finding: events lost, tables full.
        drops: Some(convert::all_drops(&agent.health())),
    }
}
