//! ListFindings: the findings agents carry in their windows over a time
//! range, each node's latest version of each (`latest`), filtered, then
//! merged across nodes when they are about the same problem (`merge`).
//!
//! A window carries the findings open at its end plus those resolved since
//! the node's previous window, so a finding's versions are spread over a
//! node's windows and its latest one says whether it still holds.
//!
//! Nodes whose agent stopped pushing are findings of the collector itself
//! (`silent`), each about its own node.

mod latest;
mod merge;
pub mod silent;

use sockeye_proto::v1 as pb;

pub use latest::Latest;
pub use merge::merge;
pub use silent::SilenceConfig;

use crate::{
    filter::{Filter, FilterError},
    query::{scan_range, ScanCounts, ScanError},
    store::Store,
};

/// The range read when the request leaves `since_unix_ms` at 0.
pub const DEFAULT_RANGE_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindingsQueryError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("{field} is {value}; times are Unix milliseconds, 0 meaning the default (since: 15 minutes before until; until: now)")]
    NegativeTime { field: &'static str, value: i64 },
    #[error("since_unix_ms {since} is not before until_unix_ms {until}{}", if *until_is_now { " (now)" } else { "" })]
    EmptyRange {
        since: i64,
        until: i64,
        until_is_now: bool,
    },
}

/// A validated ListFindings request.
#[derive(Debug, Clone)]
pub struct FindingsQuery {
    pub filter: Filter,
    /// Windows are read when their end lies in `[since, until]`.
    pub since_unix_ms: i64,
    pub until_unix_ms: i64,
    /// The range reaches now: nodes silent now are judged.
    pub until_is_now: bool,
    pub include_resolved: bool,
}

impl FindingsQuery {
    /// Fills the defaults (until: `now_unix_ms`; since: 15 minutes before
    /// until) and refuses a range that holds no time.
    pub fn parse(
        req: &pb::ClusterFindingsRequest,
        now_unix_ms: i64,
    ) -> Result<Self, FindingsQueryError> {
        let filter = Filter::parse(req.filter.as_ref())?;
        for (field, value) in [
            ("since_unix_ms", req.since_unix_ms),
            ("until_unix_ms", req.until_unix_ms),
        ] {
            if value < 0 {
                return Err(FindingsQueryError::NegativeTime { field, value });
            }
        }
        let until_is_now = req.until_unix_ms == 0;
        let until = if until_is_now {
            now_unix_ms
        } else {
            req.until_unix_ms
        };
        let since = if req.since_unix_ms == 0 {
            until.saturating_sub(DEFAULT_RANGE_MS).max(0)
        } else {
            req.since_unix_ms
        };
        if since >= until {
            return Err(FindingsQueryError::EmptyRange {
                since,
                until,
                until_is_now,
            });
        }
        Ok(Self {
            filter,
            since_unix_ms: since,
            until_unix_ms: until,
            until_is_now,
            include_resolved: req.include_resolved,
        })
    }
}

/// What judging silent nodes needs besides the windows.
#[derive(Debug, Clone, Copy)]
pub struct Silences {
    pub cfg: SilenceConfig,
    pub now_unix_ms: i64,
    /// When this collector began to accept pushes: its own downtime is not
    /// a node's silence.
    pub listening_since_unix_ms: i64,
}

/// Runs a ListFindings over the store, reading at most `max_windows`.
pub async fn list(
    store: &dyn Store,
    q: &FindingsQuery,
    max_windows: u64,
    silences: &Silences,
) -> Result<(pb::ClusterFindingsReply, ScanCounts), ScanError> {
    let mut latest = Latest::default();
    let mut gaps = silent::Gaps::new(silences.cfg);
    let mut counts = scan_range(
        store,
        q.since_unix_ms..=q.until_unix_ms,
        &q.filter,
        max_windows,
        |w| {
            latest.add_window(w);
            gaps.add_window(w);
        },
    )
    .await?;
    let (windows, dropped_windows) = (latest.windows, latest.dropped_windows);
    let mut findings = latest.finish(&q.filter, q.include_resolved);
    let mut silent = Vec::new();
    if q.until_is_now {
        let page = store.latest_per_node().await?;
        counts.corrupt += page.corrupt;
        counts.read += page.windows.len() as u64 + page.corrupt;
        let nodes: Vec<pb::Window> = page
            .windows
            .into_iter()
            .filter(|w| q.filter.matches_node(&w.node))
            .collect();
        silent.extend(silent::silent_now(
            &nodes,
            &gaps,
            silences.now_unix_ms,
            silences.listening_since_unix_ms,
            &silences.cfg,
        ));
    }
    if q.include_resolved {
        silent.extend(gaps.finish());
    }
    findings.extend(
        silent
            .iter()
            .map(|s| s.finding(silences.now_unix_ms, &silences.cfg))
            .filter(|f| q.filter.matches_finding(f)),
    );
    Ok((
        pb::ClusterFindingsReply {
            findings: merge(findings),
            windows,
            dropped_windows,
        },
        counts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_740_814_262_123;

    fn parse(since: i64, until: i64) -> Result<FindingsQuery, FindingsQueryError> {
        FindingsQuery::parse(
            &pb::ClusterFindingsRequest {
                since_unix_ms: since,
                until_unix_ms: until,
                ..Default::default()
            },
            NOW,
        )
    }

    #[test]
    fn defaults_are_the_last_15_minutes() {
        let q = parse(0, 0).unwrap();
        assert_eq!(
            (q.since_unix_ms, q.until_unix_ms),
            (NOW - DEFAULT_RANGE_MS, NOW)
        );
        let q = parse(0, 60_000).unwrap();
        assert_eq!((q.since_unix_ms, q.until_unix_ms), (0, 60_000));
        let q = parse(NOW - 1, 0).unwrap();
        assert_eq!((q.since_unix_ms, q.until_unix_ms), (NOW - 1, NOW));
    }

    #[test]
    fn ranges_without_time_are_refused() {
        assert_eq!(
            parse(5_000, 5_000).unwrap_err().to_string(),
            "since_unix_ms 5000 is not before until_unix_ms 5000"
        );
        assert_eq!(
            parse(NOW + 1, 0).unwrap_err().to_string(),
            format!(
                "since_unix_ms {} is not before until_unix_ms {NOW} (now)",
                NOW + 1
            )
        );
        assert!(parse(-1, 0)
            .unwrap_err()
            .to_string()
            .starts_with("since_unix_ms is -1; times are Unix milliseconds"));
        assert!(matches!(
            parse(0, -5),
            Err(FindingsQueryError::NegativeTime {
                field: "until_unix_ms",
                ..
            })
        ));
    }
}
