//! The resource failures in a snapshot: one row per (container, errno,
//! syscall, destination), printed as `resource_failure` JSON lines.

use std::net::SocketAddr;

use serde::Serialize;

use super::{errno_meaning, errno_name, Limit, ResourceFailures, Syscall};
use crate::{
    event::comm_string,
    workload::{filter::WorkloadFilter, Workload, Workloads},
};

#[derive(Debug, Clone, Serialize)]
pub struct ResourceFailureView {
    pub workload: Workload,
    pub syscall: Syscall,
    /// "EADDRNOTAVAIL", "EMFILE", ...
    pub errno: &'static str,
    /// What ran out: "no free local port", ...
    pub meaning: &'static str,
    /// connect()'s destination; null for socket(), or when unknown.
    pub destination: Option<SocketAddr>,
    pub failures_total: u64,
    /// Failures in the current episode (none more than `window_s` apart).
    pub episode_failures: u64,
    /// Failures within the last `window_s`.
    pub recent_failures: u64,
    pub window_s: f64,
    pub first_failure_ago_s: f64,
    pub last_failure_ago_s: f64,
    pub last_pid: u32,
    pub last_comm: String,
    /// The limit read when the episode began, if it could be.
    pub limit: Option<Limit>,
}

/// Rows of the workloads `filter` keeps, sorted by workload and key.
pub fn views(
    failures: &ResourceFailures,
    attributor: &mut impl Workloads,
    now_ns: u64,
    filter: &WorkloadFilter,
) -> Vec<ResourceFailureView> {
    let ago = |ns: u64| now_ns.saturating_sub(ns) as f64 / 1e9;
    let mut rows: Vec<ResourceFailureView> = failures
        .iter()
        .filter_map(|(k, s)| {
            let workload = attributor.workload(k.cgroup_id);
            filter.matches(&workload).then(|| ResourceFailureView {
                workload,
                syscall: k.syscall,
                errno: errno_name(k.errno),
                meaning: errno_meaning(k.errno),
                destination: k.destination,
                failures_total: s.total,
                episode_failures: s.episode_failures,
                recent_failures: s.recent(now_ns),
                window_s: failures.window_ns() as f64 / 1e9,
                first_failure_ago_s: ago(s.first_ns),
                last_failure_ago_s: ago(s.last_ns),
                last_pid: s.last_tgid,
                last_comm: comm_string(&s.last_comm),
                limit: s.limit,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.workload.label(), a.syscall, a.errno, a.destination).cmp(&(
            b.workload.label(),
            b.syscall,
            b.errno,
            b.destination,
        ))
    });
    rows
}
