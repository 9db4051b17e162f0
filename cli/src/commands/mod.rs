//! The commands. Each has a pure `render` (proto messages in, text out)
//! that the golden tests check, and a small `fetch` that asks the server.

pub mod conns;
pub mod diagnose;
pub mod dns;
pub mod top;
pub mod watch;

use sockeye_proto::connect::AuthChannel as Channel;
use sockeye_proto::v1::{
    self as pb, agent_service_client::AgentServiceClient,
    collector_service_client::CollectorServiceClient,
};

use crate::{
    args::Output,
    error::{CliError, Role},
    format,
    table::Width,
};

/// Snapshots of a busy node can be large; tonic's 4 MiB default would
/// refuse them.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// How to render, and the facts a renderer needs besides the data.
#[derive(Debug, Clone)]
pub struct View {
    pub output: Output,
    pub role: Role,
    /// "namespace=shop pod=web", for "nothing found" lines.
    pub filter: Option<String>,
    /// For the age of the collector's windows and of findings.
    pub now_unix_ms: i64,
    /// The reader's time zone, for the times of findings (the system's;
    /// fixed in tests).
    pub tz: jiff::tz::TimeZone,
    /// The terminal's width, which narrow tables fit (`All` on a pipe).
    pub width: Width,
}

impl View {
    pub fn wide(&self) -> bool {
        self.output == Output::Wide
    }

    /// What a table fits: every column with `-o wide`, else the terminal.
    pub fn fit(&self) -> Width {
        if self.wide() {
            Width::All
        } else {
            self.width
        }
    }

    /// Wrapped text fits the terminal too, and `max` at most (prose is
    /// hard to read in wider lines).
    pub fn text_width(&self, max: usize) -> usize {
        match self.fit() {
            Width::Fit(w) => w.min(max),
            Width::All => max,
        }
    }

    /// " (namespace=shop)" or "".
    fn for_filter(&self) -> String {
        self.filter
            .as_ref()
            .map(|f| format!(" for {f}"))
            .unwrap_or_default()
    }
}

/// A connected client of either kind.
pub enum Client {
    Agent(AgentServiceClient<Channel>),
    Collector(CollectorServiceClient<Channel>),
}

impl Client {
    pub fn new(role: Role, channel: Channel) -> Self {
        match role {
            Role::Agent => Self::Agent(
                AgentServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
            ),
            Role::Collector => Self::Collector(
                CollectorServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES),
            ),
        }
    }

    /// The agent's snapshot, or the latest window of every node from the
    /// collector.
    pub async fn snapshots(
        &mut self,
        target: &str,
        filter: pb::Filter,
    ) -> Result<Vec<pb::Snapshot>, CliError> {
        match self {
            Self::Agent(c) => c
                .get_snapshot(pb::GetSnapshotRequest {
                    filter: Some(filter),
                })
                .await
                .map(|r| vec![r.into_inner()])
                .map_err(|s| CliError::from_status(Role::Agent, target, &s)),
            Self::Collector(c) => c
                .get_cluster_snapshot(pb::GetClusterSnapshotRequest {
                    filter: Some(filter),
                })
                .await
                .map(|r| r.into_inner().nodes)
                .map_err(|s| CliError::from_status(Role::Collector, target, &s)),
        }
    }
}

/// The name a table shows for a workload: the agent's label
/// ("shop/checkout-7d9f8b6c5-x2x4q/app", "podman:4f2a9c1e0b7d", "host"),
/// else its cgroup.
pub fn workload_name(w: Option<&pb::Workload>) -> String {
    match w {
        Some(w) if !w.label.is_empty() => w.label.clone(),
        Some(w) if !w.cgroup_path.is_empty() => w.cgroup_path.clone(),
        Some(w) => format!("cgroup:{}", w.cgroup_id),
        None => "-".to_string(),
    }
}

/// "-" when the pod uid is unknown.
pub fn pod_uid(w: Option<&pb::Workload>) -> String {
    w.map(|w| w.pod_uid.as_str())
        .filter(|u| !u.is_empty())
        .unwrap_or("-")
        .to_string()
}

/// The cgroup path, for wide tables: labels such as "host" cover every
/// cgroup outside a container.
pub fn cgroup_path(w: Option<&pb::Workload>) -> String {
    w.map(|w| w.cgroup_path.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("-")
        .to_string()
}

/// Orders endpoints as addresses (10.0.0.9 before 10.0.0.10); text that is
/// not an address sorts before them, by itself.
pub type EndpointKey = (Option<std::net::IpAddr>, String, u32);

pub fn endpoint_key(e: Option<&pb::Endpoint>) -> EndpointKey {
    let e = e.cloned().unwrap_or_default();
    (e.ip.parse().ok(), e.ip, e.port)
}

/// Wide columns are never cut; narrow ones are cut to fit a terminal.
pub fn cut(view: &View, s: &str, max: usize) -> String {
    if view.wide() {
        s.to_string()
    } else {
        format::truncate(s, max)
    }
}

/// Lines under a table that say what its numbers rest on: events each
/// node lost (so "nothing seen" is not read as "nothing happened"), and
/// from the collector, how old each node's window is.
pub fn notes(
    snaps: &[pb::Snapshot],
    view: &View,
    row_drops: fn(&pb::Aggregates) -> Option<&pb::Drops>,
) -> String {
    let mut out = String::new();
    for s in snaps {
        let Some(agg) = s.aggregates.as_ref() else {
            continue;
        };
        let Some(drops) = row_drops(agg).or(agg.drops.as_ref()) else {
            continue;
        };
        let lost: u64 = drops
            .counters
            .values()
            .fold(0u64, |n, v| n.saturating_add(*v));
        if lost > 0 {
            let since = match view.role {
                Role::Agent => " since the agent started",
                Role::Collector => "",
            };
            out.push_str(&format!(
                "note: {} lost {lost} events{since} ({}): counts may be low\n",
                node_name(&s.node),
                format::counters(&drops.counters)
            ));
        }
    }
    if view.role == Role::Collector && !snaps.is_empty() {
        let ages: Vec<String> = snaps
            .iter()
            .map(|s| {
                let age = (view.now_unix_ms - s.taken_unix_ms).max(0) as f64 / 1e3;
                format!("{} {} ago", node_name(&s.node), format::age_s(age))
            })
            .collect();
        out.push_str(&format!(
            "note: counts are each node's latest window, not totals ({})\n",
            ages.join(", ")
        ));
    }
    out
}

/// The line under a collector answer over a time range: how many windows
/// it rests on, and the windows agents dropped (`prefix` "note" or
/// "warning", and what the loss means for this answer).
pub fn range_note(
    since: std::time::Duration,
    windows: u64,
    dropped: u64,
    prefix: &str,
    consequence: &str,
) -> String {
    let range = humantime::format_duration(since);
    let noun = |n: u64| if n == 1 { "window" } else { "windows" };
    match (windows, dropped) {
        (0, _) => format!(
            "note: no windows over the last {range}: are agents pushing to this collector?\n"
        ),
        (w, 0) => format!("{w} {} over the last {range}, none dropped\n", noun(w)),
        (w, d) => format!(
            "{prefix}: {w} {} over the last {range}; agents dropped {d} more (the collector was away too long): {consequence}\n",
            noun(w)
        ),
    }
}

fn node_name(n: &str) -> &str {
    if n.is_empty() {
        "the node"
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn notes_name_lost_events_and_window_ages() {
        let snap = |node: &str, lost: u64, taken: i64| pb::Snapshot {
            node: node.into(),
            taken_unix_ms: taken,
            aggregates: Some(pb::Aggregates {
                drops: Some(pb::Drops {
                    counters: HashMap::from([
                        ("kernel_ringbuf_full".to_string(), lost),
                        ("user_flows_evicted".to_string(), 0),
                    ]),
                    total: lost,
                }),
                ..Default::default()
            }),
        };
        let view = View {
            output: Output::Table,
            role: Role::Agent,
            filter: None,
            now_unix_ms: 100_000,
            tz: jiff::tz::TimeZone::UTC,
            width: Width::All,
        };
        let agg_drops: fn(&pb::Aggregates) -> Option<&pb::Drops> = |a| a.drops.as_ref();
        assert_eq!(notes(&[snap("n1", 0, 0)], &view, agg_drops), "");
        assert_eq!(
            notes(&[snap("n1", 12, 0)], &view, agg_drops),
            "note: n1 lost 12 events since the agent started (kernel_ringbuf_full:12): counts may be low\n"
        );
        let view = View {
            role: Role::Collector,
            ..view
        };
        assert_eq!(
            notes(
                &[snap("n1", 0, 88_000), snap("n2", 3, 40_000)],
                &view,
                agg_drops
            ),
            "note: n2 lost 3 events (kernel_ringbuf_full:3): counts may be low\n\
             note: counts are each node's latest window, not totals (n1 12s ago, n2 1m ago)\n"
        );
    }

    #[test]
    fn workload_names_fall_back_to_the_cgroup() {
        let mut w = pb::Workload {
            cgroup_id: 42,
            cgroup_path: "/test/pod".into(),
            label: "shop/web/app".into(),
            ..Default::default()
        };
        assert_eq!(workload_name(Some(&w)), "shop/web/app");
        w.label.clear();
        assert_eq!(workload_name(Some(&w)), "/test/pod");
        w.cgroup_path.clear();
        assert_eq!(workload_name(Some(&w)), "cgroup:42");
        assert_eq!(workload_name(None), "-");
        assert_eq!(pod_uid(Some(&w)), "-");
    }
}
