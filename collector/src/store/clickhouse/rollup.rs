//! The per-minute TCP rollups on ClickHouse (schema versions 4 and 5): the
//! rows a stored window adds, and the one read that answers a range of
//! minutes. Which (minute, node) pairs are exact is decided here, in the
//! read, by comparing the rollups' own counts with `windows_minute`'s (see
//! the migrations' comments and `record_minute`); the rest is read raw by
//! the caller.

use std::ops::RangeInclusive;

use sockeye_proto::v1::Window;

use super::{
    ch, day_bounds,
    http::quote,
    rowbinary::{self, day_of, Reader},
    ClickHouseStore,
};
use crate::{
    histogram::{MergedHistogram, Parts},
    query::{FlowAt, RollupAnswer, RollupGroup, RollupNode, WindowRollup, MINUTE_MS},
    store::{Rollups, StoreError},
};

const COLUMNS: &str = "day, minute, node, agent_id, seq, row, workload, remote, w_end, w_dropped, \
    f_ok, f_failed, f_open, f_lows, f_highs, f_counts, f_sum, f_min, f_max, f_latest, f_drops_at, f_drops";

/// The key of "no drop counters": above every real one (`-end`), so
/// `argMin` picks a flow that had some.
const NO_DROPS: (i64, &str, u64, u32) = (i64::MAX, "", 0, 0);

fn put_at(out: &mut Vec<u8>, (end, agent, seq, i): (i64, &str, u64, u32)) {
    rowbinary::put_i64(out, end);
    rowbinary::put_bytes(out, agent.as_bytes());
    rowbinary::put_u64(out, seq);
    rowbinary::put_u32(out, i);
}

fn put_array(out: &mut Vec<u8>, v: impl ExactSizeIterator<Item = u64>) {
    rowbinary::put_len(out, v.len());
    for x in v {
        rowbinary::put_u64(out, x);
    }
}

/// The RowBinary rows of `r` (the rollup of `w`) for `tcp_minute_in`.
pub(super) fn rows(w: &Window, r: &WindowRollup) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * (r.groups.len() + 1));
    let head = |out: &mut Vec<u8>, row: u8, workload: &[u8], remote: &[u8]| {
        rowbinary::put_u16(out, day_of(w.end_unix_ms));
        rowbinary::put_i64(out, r.minute);
        rowbinary::put_bytes(out, w.node.as_bytes());
        rowbinary::put_bytes(out, w.agent_id.as_bytes());
        rowbinary::put_u64(out, w.seq);
        rowbinary::put_u8(out, row);
        rowbinary::put_bytes(out, workload);
        rowbinary::put_bytes(out, remote);
        rowbinary::put_i64(out, r.end_unix_ms);
    };
    // Row 0: the window itself.
    head(&mut out, 0, &[], &[]);
    rowbinary::put_u64(&mut out, r.dropped_windows_before);
    for _ in 0..3 {
        rowbinary::put_u64(&mut out, 0);
    }
    for _ in 0..3 {
        rowbinary::put_len(&mut out, 0);
    }
    rowbinary::put_u64(&mut out, 0);
    rowbinary::put_u64(&mut out, u64::MAX);
    rowbinary::put_u64(&mut out, 0);
    put_at(&mut out, (0, "", 0, 0));
    put_at(&mut out, NO_DROPS);
    rowbinary::put_bytes(&mut out, &[]);
    for g in &r.groups {
        head(&mut out, 1, &g.workload, &g.remote);
        rowbinary::put_u64(&mut out, 0);
        rowbinary::put_u64(&mut out, g.connects_ok);
        rowbinary::put_u64(&mut out, g.connects_failed);
        rowbinary::put_u64(&mut out, g.open);
        let h = g.latency.parts();
        put_array(&mut out, h.bins.iter().map(|b| b.0));
        put_array(&mut out, h.bins.iter().map(|b| b.1));
        put_array(&mut out, h.bins.iter().map(|b| b.2));
        rowbinary::put_u64(&mut out, h.sum_ns);
        // Without samples: neutral for min and max.
        rowbinary::put_u64(&mut out, h.min_ns.unwrap_or(u64::MAX));
        rowbinary::put_u64(&mut out, h.max_ns.unwrap_or(0));
        let (e, a, s, i) = &g.latest;
        put_at(&mut out, (*e, a, *s, *i));
        match &g.drops {
            Some(((e, a, s, i), d)) => {
                put_at(&mut out, (e.saturating_neg(), a, *s, *i));
                rowbinary::put_bytes(&mut out, d);
            }
            None => {
                put_at(&mut out, NO_DROPS);
                rowbinary::put_bytes(&mut out, &[]);
            }
        }
    }
    out
}

fn read_at(r: &mut Reader<'_>) -> Result<FlowAt, super::ClickHouseError> {
    Ok((r.i64()?, r.string()?, r.u64()?, r.u32()?))
}

fn read_u64s(r: &mut Reader<'_>) -> Result<Vec<u64>, super::ClickHouseError> {
    let n = r.length()?;
    (0..n).map(|_| r.u64()).collect()
}

impl ClickHouseStore {
    /// Rolls up a window just stored. Called after the raw insert, so the
    /// rollups never hold a window the raw table lacks (see
    /// `record_minute`); a failure here leaves its minute to the raw path
    /// (the counts disagree), so it is logged and reported as `false`, not
    /// returned as an error: the window is stored.
    pub(super) async fn roll_up(&self, w: &Window) -> bool {
        let r = crate::query::window_rollup(w);
        let sql = format!(
            "INSERT INTO {}.tcp_minute_in ({COLUMNS}) FORMAT RowBinary",
            self.db
        );
        let Err(e) = self.http.run(&sql, Some(rows(w, &r))).await else {
            return true;
        };
        log::warn!(
            "store: window (agent {}, seq {}) was stored but not rolled up; queries read its minute raw: {e}",
            w.agent_id,
            w.seq
        );
        false
    }

    /// Records in `windows_minute` that `w` is being stored, before its
    /// raw insert, as the rollup is written after it. Whatever cuts a put
    /// short (ClickHouse killed while answering, a view that fails, a
    /// collector gone), every minute then has rollups ⊆ raw ⊆
    /// `windows_minute`, so rollups counting as many windows as
    /// `windows_minute` means they hold every window the raw table has. A
    /// window recorded here and never stored after it only makes its
    /// minute read raw. A set merge: recording a window twice (a retry,
    /// two replicas) counts it once.
    pub(super) async fn record_minute(&self, w: &Window) -> Result<(), super::ClickHouseError> {
        let db = &self.db;
        // The same expressions as `schema::BACKFILL_WINDOWS_MINUTE`, over one row.
        let sql = format!(
            "INSERT INTO {db}.windows_minute
            SELECT day, intDiv(end_unix_ms, 60000) AS minute, node,
                uniqExactState(agent_id, seq) AS stored
            FROM (SELECT toDate({day}) AS day, toInt64({end}) AS end_unix_ms,
                {node} AS node, {agent} AS agent_id, toUInt64({seq}) AS seq)
            GROUP BY day, minute, node",
            day = quote(&super::date(day_of(w.end_unix_ms))),
            end = w.end_unix_ms,
            node = quote(&w.node),
            agent = quote(&w.agent_id),
            seq = w.seq,
        );
        self.http.run(&sql, None).await.map(|_| ())
    }

    async fn dirty(
        &self,
        op: &'static str,
        where_: &str,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let db = &self.db;
        let sql = format!(
            "SELECT minute, node FROM (
                SELECT minute, node, countMerge(inserts) AS c, uniqExactMerge(stored) AS u, toUInt64(0) AS r
                FROM {db}.tcp_minute WHERE {where_} row = 0 GROUP BY minute, node
                UNION ALL
                SELECT minute, node, toUInt64(0) AS c, toUInt64(0) AS u, uniqExactMerge(stored) AS r
                FROM {db}.windows_minute WHERE {where_} 1 GROUP BY minute, node
            ) GROUP BY minute, node
            HAVING NOT (sum(c) = sum(u) AND sum(u) = sum(r))
            ORDER BY minute, node FORMAT RowBinary"
        );
        let bytes = self.http.run(&sql, None).await.map_err(ch(op))?;
        let mut r = Reader::new(&bytes);
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push((r.i64().map_err(ch(op))?, r.string().map_err(ch(op))?));
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl Rollups for ClickHouseStore {
    fn floor_unix_ms(&self) -> i64 {
        self.floor()
    }

    async fn tcp_minutes(&self, minutes: RangeInclusive<i64>) -> Result<RollupAnswer, StoreError> {
        const OP: &str = "read TCP rollups";
        self.check_open()?;
        let (first, last) = (*minutes.start(), *minutes.end());
        if first > last {
            return Ok(RollupAnswer::default());
        }
        let where_ = format!(
            "{days} minute >= {first} AND minute <= {last} AND",
            days = day_bounds(
                first.saturating_mul(MINUTE_MS),
                last.saturating_mul(MINUTE_MS).saturating_add(MINUTE_MS - 1)
            ),
        );
        let dirty = self.dirty(OP, &where_).await?;
        let clean = if dirty.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = dirty
                .iter()
                .map(|(m, n)| format!("({m}, {})", quote(n)))
                .collect();
            format!("(minute, node) NOT IN ({}) AND", list.join(", "))
        };
        // Per minute first, then over the range: the open gauge is the one
        // at each group's latest end, which a minute's small map of
        // end -> open still holds; the range's would not be small.
        let sql = format!(
            "SELECT node, row, workload, remote,
                sum(m_inserts), max(m_latest_end), sum(m_dropped),
                sum(m_ok), sum(m_failed),
                max(m_open_at), argMax(m_open, m_open_at),
                sumMap(m_lows, m_counts), groupUniqArrayArray(m_highs),
                sum(m_sum), min(m_min), max(m_max),
                max(m_latest), min(m_drops_at), argMin(m_drops, m_drops_at),
                count()
            FROM (
                SELECT minute, node, row, workload, remote,
                    countMerge(inserts) AS m_inserts, maxMerge(latest_end) AS m_latest_end,
                    sumMerge(dropped) AS m_dropped,
                    sumMerge(ok) AS m_ok, sumMerge(failed) AS m_failed,
                    maxMerge(latest) AS m_latest, tupleElement(m_latest, 1) AS m_open_at,
                    sumMapMerge(open) AS m_open_map,
                    tupleElement(m_open_map, 2)[indexOf(tupleElement(m_open_map, 1), m_open_at)] AS m_open,
                    sumMapMerge(bins) AS m_bins,
                    tupleElement(m_bins, 1) AS m_lows, tupleElement(m_bins, 2) AS m_counts,
                    groupUniqArrayArrayMerge(highs) AS m_highs,
                    sumMerge(sum_ns) AS m_sum, minMerge(min_ns) AS m_min, maxMerge(max_ns) AS m_max,
                    minMerge(drops_at) AS m_drops_at, argMinMerge(drops) AS m_drops
                FROM {db}.tcp_minute
                WHERE {where_} {clean} 1
                GROUP BY minute, node, row, workload, remote
            ) GROUP BY node, row, workload, remote FORMAT RowBinary",
            db = self.db,
        );
        let bytes = self.http.run(&sql, None).await.map_err(ch(OP))?;
        let mut ans = RollupAnswer {
            dirty,
            ..RollupAnswer::default()
        };
        let mut r = Reader::new(&bytes);
        while !r.is_empty() {
            read_row(&mut r, &mut ans).map_err(ch(OP))?;
        }
        Ok(ans)
    }
}

fn read_row(r: &mut Reader<'_>, ans: &mut RollupAnswer) -> Result<(), super::ClickHouseError> {
    let node = r.string()?;
    let row = r.u8()?;
    let workload = r.bytes()?.to_vec();
    let remote = r.bytes()?.to_vec();
    let (windows, latest_end, dropped_windows) = (r.u64()?, r.i64()?, r.u64()?);
    let (connects_ok, connects_failed) = (r.u64()?, r.u64()?);
    let (open_at, open) = (r.i64()?, r.u64()?);
    let lows = read_u64s(r)?;
    let counts = read_u64s(r)?;
    let mut highs = Vec::new();
    for _ in 0..r.length()? {
        highs.push((r.u64()?, r.u64()?));
    }
    let (sum, min, max) = (r.u64()?, r.u64()?, r.u64()?);
    let latest = read_at(r)?;
    let drops_at = read_at(r)?;
    let drops = r.bytes()?.to_vec();
    ans.rows_read = ans.rows_read.saturating_add(r.u64()?);
    if row == 0 {
        ans.nodes.push(RollupNode {
            node,
            windows,
            latest_end,
            dropped_windows,
        });
        return Ok(());
    }
    // Each bin's upper bound: the widest seen for its lower one.
    let bins = lows.iter().zip(&counts).map(|(&lo, &n)| {
        let hi = highs
            .iter()
            .filter(|h| h.0 == lo)
            .map(|h| h.1)
            .max()
            .unwrap_or(lo);
        (lo, hi, n)
    });
    let samples = counts.iter().fold(0u64, |a, &n| a.saturating_add(n));
    let latency = MergedHistogram::from_parts(Parts {
        bins: bins.collect(),
        sum_ns: sum,
        min_ns: (samples > 0).then_some(min),
        max_ns: (samples > 0).then_some(max),
    });
    let drops = (drops_at.0 != NO_DROPS.0).then(|| {
        let (e, a, s, i) = drops_at;
        ((e.saturating_neg(), a, s, i), drops)
    });
    ans.groups.push(RollupGroup {
        node,
        workload,
        remote,
        connects_ok,
        connects_failed,
        latency,
        open_at,
        open,
        latest,
        drops,
    });
    Ok(())
}
