//! Answers API requests inside the agent's loop, which owns the aggregates.

use sockeye_proto::v1 as pb;

use super::{convert, filter::ApiFilter, service::ApiRequest};
use crate::{clock, Agent};

pub fn answer(agent: &mut Agent, request: ApiRequest) {
    match request {
        ApiRequest::Snapshot { filter, reply } => {
            let snapshot = pb::Snapshot {
                aggregates: Some(aggregates(agent, &filter)),
                node: agent.traces.node().to_string(),
                taken_unix_ms: clock::unix_ms(),
            };
            // The client may have gone: nothing to do then.
            let _ = reply.send(snapshot);
        }
    }
}

/// The agent's aggregates that pass `filter`, as the API sends them.
pub fn aggregates(agent: &mut Agent, filter: &ApiFilter) -> pb::Aggregates {
    let snap = filter.apply(agent.snapshot_filtered(&filter.workload));
    let health = agent.health();
    convert::aggregates(&snap, &health, agent.traces.node())
}
