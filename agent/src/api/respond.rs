//! Answers API requests inside the agent's loop, which owns the aggregates.

use sockeye_proto::v1 as pb;

use super::{convert, service::ApiRequest};
use crate::Agent;

pub fn answer(agent: &mut Agent, request: ApiRequest) {
    match request {
        ApiRequest::Snapshot { filter, reply } => {
            let snap = filter.apply(agent.snapshot_filtered(&filter.workload));
            let health = agent.health();
            let node = agent.traces.node().to_string();
            let snapshot = pb::Snapshot {
                aggregates: Some(convert::aggregates(&snap, &health, &node)),
                node,
                taken_unix_ms: unix_ms(),
            };
            // The client may have gone: nothing to do then.
            let _ = reply.send(snapshot);
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
