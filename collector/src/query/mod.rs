//! Cluster-wide queries: QueryTop over a time range and GetClusterSnapshot.
//!
//! QueryTop ranks outbound TCP destinations. Rows are keyed by (workload,
//! destination): a pod is (namespace, pod, container), a container outside
//! Kubernetes is its container id, anything else (the host, unknown cgroups)
//! is its label on its node. Counts are summed over the windows that end in
//! the range on every node; latency percentiles come from the merged
//! histograms; `open` is the gauge of each node's latest window in the range,
//! summed over nodes (0 for a node whose latest window no longer has the
//! flow).

use std::{collections::HashMap, net::IpAddr, ops::RangeInclusive};

pub use sockeye_proto::top::RankBy;
use sockeye_proto::v1 as pb;

mod rollup;

pub use rollup::{
    decode_opt, plan, window_rollup, FlowAt, FlowGroup, Plan, RollupAnswer, RollupGroup,
    RollupNode, WindowRollup, MINUTE_MS, MIN_ROLLUP_MINUTES,
};

use crate::{
    filter::{has_no_rows, Destination, Filter, FilterError},
    histogram::MergedHistogram,
    identity::{Grain, WorkloadId},
    store::{Store, StoreError},
};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 1000;
/// Windows read from the store per page: bounds the memory of a query to
/// one page plus the rows being merged.
const PAGE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("by {by:?} is not a ranking; use {}", RankBy::NAMES)]
    UnknownBy { by: String },
    #[error("{field} is {value}; times are Unix milliseconds, 0 meaning unbounded")]
    NegativeTime { field: &'static str, value: i64 },
    #[error("from_unix_ms {from} is after to_unix_ms {to}")]
    EmptyRange { from: i64, to: i64 },
    #[error("limit {limit} is above the maximum of {MAX_LIMIT}")]
    Limit { limit: u32 },
    #[error("filter.destination {value:?} is a DNS name; QueryTop ranks TCP destinations: use an IP, IP:port or :port")]
    NameDestination { value: String },
}

/// A validated QueryTop request.
#[derive(Debug, Clone)]
pub struct TopQuery {
    pub filter: Filter,
    /// Windows count when their end lies in this range.
    pub end_range: RangeInclusive<i64>,
    pub by: RankBy,
    pub limit: usize,
}

impl TopQuery {
    pub fn parse(req: &pb::QueryTopRequest) -> Result<Self, QueryError> {
        let filter = Filter::parse(req.filter.as_ref())?;
        if let Destination::Name(value) = filter.destination() {
            return Err(QueryError::NameDestination {
                value: value.clone(),
            });
        }
        for (field, value) in [
            ("from_unix_ms", req.from_unix_ms),
            ("to_unix_ms", req.to_unix_ms),
        ] {
            if value < 0 {
                return Err(QueryError::NegativeTime { field, value });
            }
        }
        let to = if req.to_unix_ms == 0 {
            i64::MAX
        } else {
            req.to_unix_ms
        };
        if req.from_unix_ms > to {
            return Err(QueryError::EmptyRange {
                from: req.from_unix_ms,
                to: req.to_unix_ms,
            });
        }
        if req.limit > MAX_LIMIT {
            return Err(QueryError::Limit { limit: req.limit });
        }
        let limit = if req.limit == 0 {
            DEFAULT_LIMIT
        } else {
            req.limit
        };
        Ok(Self {
            filter,
            end_range: req.from_unix_ms..=to,
            by: RankBy::parse(&req.by)
                .ok_or_else(|| QueryError::UnknownBy { by: req.by.clone() })?,
            limit: limit as usize,
        })
    }
}

/// A flow's failed connects, all causes together.
fn failed_connects(f: &pb::TcpFlow) -> u64 {
    f.connects_failed
        .values()
        .fold(0u64, |n, &c| n.saturating_add(c))
}

/// The agent already writes IPv4-mapped addresses as IPv4; normalise again
/// so two spellings of one address are one row.
pub(crate) fn canonical_ip(ip: &str) -> String {
    ip.parse::<IpAddr>()
        .map_or_else(|_| ip.to_string(), |a| a.to_canonical().to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RowKey {
    workload: WorkloadId,
    ip: String,
    port: u32,
}

#[derive(Debug, Default)]
struct RowAcc {
    /// The workload as reported by the latest flow (in scan order) that
    /// had this row.
    workload: pb::Workload,
    workload_at: Option<FlowAt>,
    connects_ok: u64,
    connects_failed: u64,
    latency: MergedHistogram,
    /// node -> (end of the latest window with this row, open there).
    open_by_node: HashMap<String, (i64, u64)>,
    /// node -> (the first flow with drop counters in the latest window
    /// that had some, its drop counters).
    drops_by_node: HashMap<String, (FlowAt, pb::Drops)>,
}

impl RowAcc {
    /// Notes the gauges and the identity of flows of this row: the latest
    /// flow at `at` (its `workload`), `open` sockets in the window that
    /// ended at `open_end` on `node`, and drop counters first seen at
    /// `drops.0`. Raw windows and rollups both come through here, so the
    /// order that decides ties is the same: raw scan order.
    fn note(
        &mut self,
        node: &str,
        at: &FlowAt,
        workload: Option<&pb::Workload>,
        (open_end, open): (i64, u64),
        drops: Option<(FlowAt, pb::Drops)>,
    ) {
        if self.workload_at.as_ref().is_none_or(|w| at >= w) {
            self.workload = workload.cloned().unwrap_or_default();
            self.workload_at = Some(at.clone());
        }
        if let Some((at, d)) = drops {
            match self.drops_by_node.get_mut(node) {
                // The latest end wins; at one end, the first in scan order.
                Some(cur) if at.0 > cur.0 .0 || (at.0 == cur.0 .0 && at < cur.0) => {
                    *cur = (at, d);
                }
                Some(_) => {}
                None => {
                    self.drops_by_node.insert(node.to_string(), (at, d));
                }
            }
        }
        let cur = self
            .open_by_node
            .entry(node.to_string())
            .or_insert((open_end, 0));
        if open_end > cur.0 {
            *cur = (open_end, open);
        } else if open_end == cur.0 {
            // Two flows of one window in one row (a restarted container
            // still has sockets in its old cgroup): both are open.
            cur.1 = cur.1.saturating_add(open);
        }
    }
}

/// Accumulates windows into ranked rows.
#[derive(Debug, Default)]
pub struct TopBuilder {
    rows: HashMap<RowKey, RowAcc>,
    /// End of each node's latest window seen.
    node_latest_end: HashMap<String, i64>,
    windows: u64,
    dropped_windows: u64,
}

impl TopBuilder {
    /// Adds one window; it must already have passed the node filter.
    pub fn add_window(&mut self, w: &pb::Window, filter: &Filter) {
        self.windows += 1;
        self.dropped_windows = self
            .dropped_windows
            .saturating_add(w.dropped_windows_before);
        let latest = self
            .node_latest_end
            .entry(w.node.clone())
            .or_insert(w.end_unix_ms);
        *latest = (*latest).max(w.end_unix_ms);
        let Some(agg) = &w.aggregates else {
            return;
        };
        for (i, f) in agg.tcp_flows.iter().enumerate() {
            if f.direction != pb::Direction::Outbound as i32
                || !filter.matches_workload(f.workload.as_ref())
                || !filter.matches_endpoint(f.remote.as_ref())
            {
                continue;
            }
            let remote = f.remote.clone().unwrap_or_default();
            let key = RowKey {
                workload: WorkloadId::of(f.workload.as_ref(), &w.node, Grain::Container),
                ip: canonical_ip(&remote.ip),
                port: remote.port,
            };
            let row = self.rows.entry(key).or_default();
            row.connects_ok = row.connects_ok.saturating_add(f.connects_ok);
            row.connects_failed = row.connects_failed.saturating_add(failed_connects(f));
            if let Some(h) = &f.connect_latency {
                row.latency.add(h);
            }
            let at: FlowAt = (
                w.end_unix_ms,
                w.agent_id.clone(),
                w.seq,
                u32::try_from(i).unwrap_or(u32::MAX),
            );
            let drops = f.drops.clone().map(|d| (at.clone(), d));
            row.note(
                &w.node,
                &at,
                f.workload.as_ref(),
                (w.end_unix_ms, f.open),
                drops,
            );
        }
    }

    pub fn finish(self, by: RankBy, limit: usize) -> pb::QueryTopResponse {
        let node_latest_end = self.node_latest_end;
        let mut rows: Vec<pb::TopRow> = self
            .rows
            .into_iter()
            .map(|(key, acc)| {
                let open = acc
                    .open_by_node
                    .iter()
                    .filter(|(node, (end, _))| node_latest_end.get(*node) == Some(end))
                    .fold(0u64, |n, (_, (_, o))| n.saturating_add(*o));
                let mut nodes: Vec<String> = acc.open_by_node.into_keys().collect();
                nodes.sort();
                let mut drops = pb::Drops::default();
                for (_, d) in acc.drops_by_node.into_values() {
                    for (name, n) in d.counters {
                        let c = drops.counters.entry(name).or_default();
                        *c = c.saturating_add(n);
                    }
                    drops.total = drops.total.saturating_add(d.total);
                }
                pb::TopRow {
                    workload: Some(acc.workload),
                    destination: Some(pb::Endpoint {
                        ip: key.ip,
                        port: key.port,
                    }),
                    connects_ok: acc.connects_ok,
                    connects_failed: acc.connects_failed,
                    connect_percentiles: acc.latency.percentiles(),
                    open,
                    nodes,
                    drops: Some(drops),
                }
            })
            .collect();
        sockeye_proto::top::rank(&mut rows, by, limit);
        pb::QueryTopResponse {
            rows,
            windows: self.windows,
            dropped_windows: self.dropped_windows,
        }
    }
}

/// What a query read besides its answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanCounts {
    pub corrupt: u64,
    /// Stored windows read (the query's cost, whatever the filter kept).
    pub read: u64,
    /// Rollup rows read (a minute of one group each), when the query read
    /// rollups; their windows are not in `read`.
    pub rollup_rows: u64,
}

/// Why a scan stopped before the end of its range.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the range holds more than {max} stored windows, the most one query may read (--max-query-windows); ask for a shorter range")]
    TooManyWindows { max: u64 },
}

/// Calls `each` with every window that ends in `end_range` and passes the
/// node filter, in (end, agent, seq) order, reading the store one page at a
/// time: a query holds one page plus what it accumulates. Stops with
/// [`ScanError::TooManyWindows`] once it has read more than `max_windows`.
pub async fn scan_range(
    store: &dyn Store,
    end_range: RangeInclusive<i64>,
    filter: &Filter,
    max_windows: u64,
    mut each: impl FnMut(&pb::Window),
) -> Result<ScanCounts, ScanError> {
    let mut counts = ScanCounts::default();
    let mut after = None;
    loop {
        let page = store.scan(end_range.clone(), after, PAGE).await?;
        counts.corrupt += page.corrupt;
        counts.read += page.windows.len() as u64 + page.corrupt;
        if counts.read > max_windows {
            return Err(ScanError::TooManyWindows { max: max_windows });
        }
        for w in page.windows.iter().filter(|w| filter.matches_node(&w.node)) {
            each(w);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(counts),
        }
    }
}

/// Runs a QueryTop over the store, reading at most `max_windows` raw
/// windows: from the store's rollups for the whole minutes of a long range
/// when it has them (the answer is the same), else from raw windows.
pub async fn query_top(
    store: &dyn Store,
    q: &TopQuery,
    max_windows: u64,
) -> Result<(pb::QueryTopResponse, ScanCounts), ScanError> {
    let now = crate::collector::unix_ms_now();
    match store
        .rollups()
        .and_then(|r| Some((r, plan(&q.end_range, r.floor_unix_ms(), now)?)))
    {
        Some((rollups, plan)) => query_top_planned(store, rollups, &plan, q, max_windows).await,
        None => query_top_raw(store, q, max_windows).await,
    }
}

/// QueryTop from raw windows only, whatever the store keeps besides.
pub async fn query_top_raw(
    store: &dyn Store,
    q: &TopQuery,
    max_windows: u64,
) -> Result<(pb::QueryTopResponse, ScanCounts), ScanError> {
    let mut top = TopBuilder::default();
    let counts = scan_range(store, q.end_range.clone(), &q.filter, max_windows, |w| {
        top.add_window(w, &q.filter)
    })
    .await?;
    Ok((top.finish(q.by, q.limit), counts))
}

/// QueryTop as `plan` says: rollups for its minutes, raw windows for its
/// edges and for the (minute, node) pairs the rollups cannot answer.
pub async fn query_top_planned(
    store: &dyn Store,
    rollups: &dyn crate::store::Rollups,
    plan: &Plan,
    q: &TopQuery,
    max_windows: u64,
) -> Result<(pb::QueryTopResponse, ScanCounts), ScanError> {
    let mut top = TopBuilder::default();
    let ans = rollups.tcp_minutes(plan.minutes.clone()).await?;
    let mut counts = ScanCounts {
        rollup_rows: ans.rows_read,
        corrupt: top.add_rollup(&ans, &q.filter),
        read: 0,
    };
    // The dirty pairs, read in one scan per run of consecutive minutes,
    // keeping only their windows; the edges whole.
    let dirty: std::collections::HashSet<(i64, &str)> =
        ans.dirty.iter().map(|(m, n)| (*m, n.as_str())).collect();
    let mut minutes: Vec<i64> = ans.dirty.iter().map(|d| d.0).collect();
    minutes.dedup();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for m in minutes {
        match runs.last_mut() {
            Some(r) if r.1 + 1 == m => r.1 = m,
            _ => runs.push((m, m)),
        }
    }
    let scans = plan.raw.iter().map(|r| (r.clone(), false)).chain(
        runs.into_iter()
            .map(|(a, b)| (a * MINUTE_MS..=b * MINUTE_MS + MINUTE_MS - 1, true)),
    );
    for (range, only_dirty) in scans {
        let left = max_windows.saturating_sub(counts.read);
        let c = scan_range(store, range, &q.filter, left, |w| {
            if !only_dirty
                || dirty.contains(&(w.end_unix_ms.div_euclid(MINUTE_MS), w.node.as_str()))
            {
                top.add_window(w, &q.filter)
            }
        })
        .await
        .map_err(|e| match e {
            ScanError::TooManyWindows { .. } => ScanError::TooManyWindows { max: max_windows },
            e => e,
        })?;
        counts.read += c.read;
        counts.corrupt += c.corrupt;
    }
    Ok((top.finish(q.by, q.limit), counts))
}

/// The latest window of every node that passes the filter, filtered, as
/// snapshots ordered by node. A node filtered down to no rows is still
/// listed (its drop counters say whether "nothing" is trustworthy) unless
/// the filter asks for rows it does not have.
pub fn cluster_snapshot(filter: &Filter, latest: Vec<pb::Window>) -> pb::ClusterSnapshot {
    let mut nodes: Vec<pb::Snapshot> = latest
        .into_iter()
        .filter(|w| filter.matches_node(&w.node))
        .filter_map(|w| {
            let agg = filter.apply(&w.aggregates.unwrap_or_default());
            if !filter.selects_all_rows() && has_no_rows(&agg) {
                return None;
            }
            Some(pb::Snapshot {
                node: w.node,
                taken_unix_ms: w.end_unix_ms,
                aggregates: Some(agg),
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    pb::ClusterSnapshot { nodes }
}
