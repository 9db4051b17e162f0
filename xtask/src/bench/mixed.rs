//! The mixed arm: the churn next to many long-lived connections that
//! exchange small messages, as on a node where a service holds a pool of
//! connections while short ones come and go.

use std::time::Duration;

use anyhow::Result;

use super::held::{join_ping, Held};
use super::workload::{Close, RoundResult, Workload};

/// What one mixed run measured.
#[derive(Debug, Clone)]
pub struct MixedResult {
    pub churn: RoundResult,
    /// One-byte request/response round trips over the held connections.
    pub trips_per_sec: f64,
}

/// Opens `held` connections, then runs one churn thread and one ping
/// thread over the held connections for `duration`.
pub fn run(held: usize, close: Close, duration: Duration) -> Result<MixedResult> {
    let conns = Held::open(held)?;
    let churn = Workload::bind_closing(1, close)?;
    let ping = conns.ping(duration)?;
    let churn = churn.run(duration)?;
    let (_conns, trips) = join_ping(ping)?;
    let trips_per_sec = trips as f64 / churn.elapsed.as_secs_f64();
    Ok(MixedResult {
        churn,
        trips_per_sec,
    })
}
