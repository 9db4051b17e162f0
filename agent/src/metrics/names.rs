//! The sample names `/metrics` can hold, derived from the families
//! themselves: what dashboards and alert rules may query.

use std::{collections::BTreeSet, sync::Arc};

use super::{families, findings::FindingsCounts, process::Process, MetricsState};
use crate::snapshot::{Health, PushHealth};

/// Every sample name a scrape can hold (`_total`, `_bucket`, `_sum`,
/// `_count` and `_info` included): the families rendered from a state in
/// which every optional part (health, pushing, findings, process figures)
/// is present, read from their `# TYPE` lines.
pub fn exported() -> BTreeSet<String> {
    let state = MetricsState {
        health: Some(Health {
            push: Some(PushHealth::default()),
            ..Default::default()
        }),
        findings_counts: Some(FindingsCounts::default()),
        ..Default::default()
    };
    let process = Process {
        resident_bytes: Some(0),
        cpu_seconds: Some(0.0),
    };
    let text = families::render(Arc::new(state), process).unwrap_or_default();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let Some((name, kind)) = rest.split_once(' ') else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}
