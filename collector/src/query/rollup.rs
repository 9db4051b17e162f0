//! QueryTop from per-minute rollups: what one window adds to them, which
//! part of a range they answer, and how their answer merges with raw
//! windows into one [`TopBuilder`] so the result equals the raw one.
//!
//! Rollup rows keep the workload and the destination as the agent sent
//! them (encoded), not the QueryTop row key: the filter is applied here, in
//! Rust, with `sockeye_core`'s rules, to the same fields it reads in a raw
//! window. Nothing of the filter is translated to SQL.

use std::{collections::HashMap, ops::RangeInclusive};

use prost::Message;
use sockeye_proto::v1 as pb;

use super::{canonical_ip, failed_connects, RowKey, TopBuilder};
use crate::{
    filter::Filter,
    histogram::MergedHistogram,
    identity::{Grain, WorkloadId},
};

pub const MINUTE_MS: i64 = 60_000;

/// Ranges with fewer whole minutes than this are read raw: their windows
/// are few, and the raw path needs no rollup bookkeeping.
pub const MIN_ROLLUP_MINUTES: i64 = 60;

/// Where a flow stands in raw scan order: (window end, agent, seq, index of
/// the flow in its window). "The latest" and "the first at the latest end"
/// then mean the same on both paths.
pub type FlowAt = (i64, String, u64, u32);

/// What one window adds to the rollups.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRollup {
    pub minute: i64,
    pub end_unix_ms: i64,
    pub dropped_windows_before: u64,
    pub groups: Vec<FlowGroup>,
}

/// The window's outbound flows with one workload and one remote endpoint,
/// merged: a rollup row.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowGroup {
    pub workload: Vec<u8>,
    pub remote: Vec<u8>,
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub open: u64,
    pub latency: MergedHistogram,
    /// The group's last flow.
    pub latest: FlowAt,
    /// The group's first flow with drop counters, and those counters
    /// (encoded with [`encode_opt`]).
    pub drops: Option<(FlowAt, Vec<u8>)>,
}

/// `None` as no bytes, `Some(m)` as a 1 and `m`'s encoding: an absent
/// workload and an empty one are different to the filter.
pub fn encode_opt<M: Message>(m: Option<&M>) -> Vec<u8> {
    m.map_or_else(Vec::new, |m| {
        let mut out = vec![1];
        m.encode(&mut out).expect("a Vec grows");
        out
    })
}

/// Bytes [`decode_opt`] cannot read: a rollup row not written by
/// [`encode_opt`], or damaged.
#[derive(Debug, thiserror::Error)]
pub enum EncodingError {
    #[error("starts with {0}, not 1")]
    Tag(u8),
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

/// The inverse of [`encode_opt`].
pub fn decode_opt<M: Message + Default>(b: &[u8]) -> Result<Option<M>, EncodingError> {
    match b.split_first() {
        None => Ok(None),
        Some((1, rest)) => Ok(Some(M::decode(rest)?)),
        Some((&t, _)) => Err(EncodingError::Tag(t)),
    }
}

/// The rollup rows of `w`.
pub fn window_rollup(w: &pb::Window) -> WindowRollup {
    let mut groups: Vec<FlowGroup> = Vec::new();
    let mut index: HashMap<(Vec<u8>, Vec<u8>), usize> = HashMap::new();
    let flows = w.aggregates.as_ref().map_or(&[][..], |a| &a.tcp_flows[..]);
    for (i, f) in flows.iter().enumerate() {
        if f.direction != pb::Direction::Outbound as i32 {
            continue;
        }
        let at: FlowAt = (
            w.end_unix_ms,
            w.agent_id.clone(),
            w.seq,
            u32::try_from(i).unwrap_or(u32::MAX),
        );
        let key = (
            encode_opt(f.workload.as_ref()),
            encode_opt(f.remote.as_ref()),
        );
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push(FlowGroup {
                workload: key.0,
                remote: key.1,
                connects_ok: 0,
                connects_failed: 0,
                open: 0,
                latency: MergedHistogram::default(),
                latest: at.clone(),
                drops: None,
            });
            groups.len() - 1
        });
        let g = &mut groups[g];
        g.connects_ok = g.connects_ok.saturating_add(f.connects_ok);
        g.connects_failed = g.connects_failed.saturating_add(failed_connects(f));
        g.open = g.open.saturating_add(f.open);
        if let Some(h) = &f.connect_latency {
            g.latency.add(h);
        }
        if g.drops.is_none() {
            if let Some(d) = &f.drops {
                g.drops = Some((at.clone(), encode_opt(Some(d))));
            }
        }
        g.latest = at;
    }
    WindowRollup {
        minute: w.end_unix_ms.div_euclid(MINUTE_MS),
        end_unix_ms: w.end_unix_ms,
        dropped_windows_before: w.dropped_windows_before,
        groups,
    }
}

/// How a range is read: whole minutes from rollups, the rest raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Minute numbers (Unix ms / 60 000) whose windows the rollups answer.
    pub minutes: RangeInclusive<i64>,
    /// Window-end ranges read raw: the ragged edges.
    pub raw: Vec<RangeInclusive<i64>>,
}

/// The plan for windows ending in `end_range`, with nothing readable before
/// `floor` (retention) and nothing stored after `now` but what raw reads
/// find; `None` when the range has too few whole minutes to be worth it.
pub fn plan(end_range: &RangeInclusive<i64>, floor: i64, now: i64) -> Option<Plan> {
    let from = (*end_range.start()).max(floor).max(0);
    let to = *end_range.end();
    // The minute still filling is read raw like any edge: cheaper than
    // asking the rollups for a minute with a handful of windows.
    let last_full_to = to.min(now);
    let first = from.checked_add(MINUTE_MS - 1)?.div_euclid(MINUTE_MS);
    let last = last_full_to.checked_add(1)?.div_euclid(MINUTE_MS) - 1;
    if last - first + 1 < MIN_ROLLUP_MINUTES {
        return None;
    }
    let mut raw = Vec::new();
    if first * MINUTE_MS > *end_range.start() {
        raw.push(*end_range.start()..=first * MINUTE_MS - 1);
    }
    if (last + 1) * MINUTE_MS <= to {
        raw.push((last + 1) * MINUTE_MS..=to);
    }
    Some(Plan {
        minutes: first..=last,
        raw,
    })
}

/// A node's windows in the rollups' clean minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupNode {
    pub node: String,
    pub windows: u64,
    pub latest_end: i64,
    pub dropped_windows: u64,
}

/// One (node, workload, remote) over the rollups' clean minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupGroup {
    pub node: String,
    pub workload: Vec<u8>,
    pub remote: Vec<u8>,
    pub connects_ok: u64,
    pub connects_failed: u64,
    pub latency: MergedHistogram,
    /// End of the latest window with this group, and its open sockets.
    pub open_at: i64,
    pub open: u64,
    pub latest: FlowAt,
    pub drops: Option<(FlowAt, Vec<u8>)>,
}

/// What the rollups answer for a range of minutes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupAnswer {
    pub nodes: Vec<RollupNode>,
    pub groups: Vec<RollupGroup>,
    /// (minute, node) pairs the rollups cannot answer exactly (a window
    /// rolled up twice, or stored but not rolled up): left out of `nodes`
    /// and `groups`, to be read raw.
    pub dirty: Vec<(i64, String)>,
    /// Rollup rows (one per minute and group) the store read.
    pub rows_read: u64,
}

impl TopBuilder {
    /// Adds what the rollups answered; returns the groups whose encoded
    /// workload or remote could not be decoded (skipped).
    pub fn add_rollup(&mut self, ans: &RollupAnswer, filter: &Filter) -> u64 {
        for n in ans.nodes.iter().filter(|n| filter.matches_node(&n.node)) {
            self.windows = self.windows.saturating_add(n.windows);
            self.dropped_windows = self.dropped_windows.saturating_add(n.dropped_windows);
            let latest = self
                .node_latest_end
                .entry(n.node.clone())
                .or_insert(n.latest_end);
            *latest = (*latest).max(n.latest_end);
        }
        let mut corrupt = 0;
        for g in ans.groups.iter().filter(|g| filter.matches_node(&g.node)) {
            let (Ok(workload), Ok(remote)) = (
                decode_opt::<pb::Workload>(&g.workload),
                decode_opt::<pb::Endpoint>(&g.remote),
            ) else {
                corrupt += 1;
                continue;
            };
            if !filter.matches_workload(workload.as_ref())
                || !filter.matches_endpoint(remote.as_ref())
            {
                continue;
            }
            let drops = match &g.drops {
                Some((at, b)) => match decode_opt::<pb::Drops>(b) {
                    Ok(d) => d.map(|d| (at.clone(), d)),
                    Err(_) => {
                        corrupt += 1;
                        continue;
                    }
                },
                None => None,
            };
            let remote = remote.unwrap_or_default();
            let key = RowKey {
                workload: WorkloadId::of(workload.as_ref(), &g.node, Grain::Container),
                ip: canonical_ip(&remote.ip),
                port: remote.port,
            };
            let row = self.rows.entry(key).or_default();
            row.connects_ok = row.connects_ok.saturating_add(g.connects_ok);
            row.connects_failed = row.connects_failed.saturating_add(g.connects_failed);
            row.latency.merge(&g.latency);
            row.note(
                &g.node,
                &g.latest,
                workload.as_ref(),
                (g.open_at, g.open),
                drops,
            );
        }
        corrupt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_whole_minutes_and_ragged_edges() {
        let m = MINUTE_MS;
        let p = plan(&(10 * m + 5..=100 * m + 7), 0, i64::MAX).unwrap();
        assert_eq!(p.minutes, 11..=99);
        assert_eq!(p.raw, vec![10 * m + 5..=11 * m - 1, 100 * m..=100 * m + 7]);
        // Aligned: no edges.
        let p = plan(&(10 * m..=100 * m - 1), 0, i64::MAX).unwrap();
        assert_eq!((p.minutes, p.raw), (10..=99, vec![]));
        // Short ranges stay raw.
        assert_eq!(plan(&(0..=30 * m), 0, i64::MAX), None);
        // Retention and the clock bound the minutes; the raw edges still
        // cover the whole range asked for.
        let p = plan(&(0..=i64::MAX), 5 * m + 1, 200 * m + 30).unwrap();
        assert_eq!(p.minutes, 6..=199);
        assert_eq!(p.raw, vec![0..=6 * m - 1, 200 * m..=i64::MAX]);
    }

    #[test]
    fn groups_a_windows_flows_by_workload_and_remote() {
        let wl = pb::Workload {
            namespace: "prod".into(),
            pod: "api".into(),
            ..Default::default()
        };
        let flow = |port, ok, open, drops: Option<u64>| pb::TcpFlow {
            workload: Some(wl.clone()),
            direction: pb::Direction::Outbound as i32,
            remote: Some(pb::Endpoint {
                ip: "10.0.0.1".into(),
                port,
            }),
            connects_ok: ok,
            open,
            drops: drops.map(|t| pb::Drops {
                total: t,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut inbound = flow(80, 100, 1, None);
        inbound.direction = pb::Direction::Inbound as i32;
        let w = pb::Window {
            agent_id: "a".into(),
            seq: 7,
            end_unix_ms: 3 * MINUTE_MS + 1,
            aggregates: Some(pb::Aggregates {
                tcp_flows: vec![
                    flow(6379, 2, 1, None),
                    inbound,
                    flow(6379, 3, 2, Some(4)),
                    flow(5432, 1, 0, Some(9)),
                    flow(6379, 0, 0, Some(5)),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = window_rollup(&w);
        assert_eq!(r.minute, 3);
        assert_eq!(r.groups.len(), 2, "inbound flows are not ranked");
        let g = &r.groups[0];
        assert_eq!((g.connects_ok, g.open), (5, 3));
        assert_eq!(g.latest.3, 4, "the last flow of the group");
        let (at, d) = g.drops.clone().unwrap();
        assert_eq!(at.3, 2, "the first flow with drops");
        assert_eq!(decode_opt::<pb::Drops>(&d).unwrap().unwrap().total, 4);
        assert_eq!(
            decode_opt::<pb::Workload>(&g.workload).unwrap(),
            Some(wl.clone())
        );
        assert_eq!(decode_opt::<pb::Workload>(&[]).unwrap(), None);
        assert!(decode_opt::<pb::Workload>(&[7, 1]).is_err());
    }
}
