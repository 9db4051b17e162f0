//! Findings: what is wrong, with the numbers that show it. Detectors read
//! the aggregates (and short histories of them) every evaluation and
//! return typed [`Verdict`]s; [`words`] turns each into sentences; this
//! module keeps each finding's life: opened when a detector first reports
//! it, updated while it holds, resolved with its end time when it stops.

pub mod config;
pub mod detect;
pub mod facts;
pub mod model;
pub mod probe;
pub mod series;
pub mod text;
pub mod verdict;
pub mod words;

#[cfg(test)]
mod listing_tests;

use std::collections::VecDeque;

use ahash::HashMap;

use crate::{aggregate::Aggregator, dns::aggregate::DnsAggregates, workload::Workloads};
pub use config::FindingsConfig;
pub use model::{Confidence, Destination, Evidence, Finding, Kind, Severity};
use probe::Probe;
pub use verdict::{About, Fact, Unit, Verdict};

/// What the detectors read.
pub struct Inputs<'a> {
    pub tcp: &'a Aggregator,
    pub dns: &'a DnsAggregates,
    pub now_ns: u64,
}

/// Identity of one problem: a new finding opens when a detector reports a
/// key that is not open.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub kind: Kind,
    /// A cgroup id, or 0 for problems of a destination whoever felt them.
    pub subject: u64,
    pub destination: Option<Destination>,
}

impl Key {
    pub fn of(v: &Verdict) -> Self {
        Self {
            kind: v.kind,
            subject: v.key_subject,
            destination: v.destination.clone(),
        }
    }
}

/// Counts of the findings machinery, for /metrics and health.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FindingsStats {
    pub evaluations: u64,
    /// Findings opened and resolved since start, by kind (as [`Kind::ALL`]).
    pub opened: [u64; Kind::ALL.len()],
    pub resolved: [u64; Kind::ALL.len()],
    /// Resolved findings forgotten to stay within `resolved_kept`.
    pub resolved_forgotten: u64,
    /// Flows and DNS servers without a history because `max_series` was
    /// reached: problems there may go undetected.
    pub series_skipped: u64,
    /// Questions to the kernel for evidence (idle times, accept queues,
    /// listen overflows) that failed: those findings lack that evidence.
    pub probe_failures: u64,
}

struct OpenFinding {
    finding: Finding,
    /// The last evaluation at which a detector reported it.
    last_held_ns: u64,
}

pub struct Findings {
    config: FindingsConfig,
    enabled: bool,
    open: HashMap<Key, OpenFinding>,
    /// Newest last.
    resolved: VecDeque<Finding>,
    /// Findings opened, changed or resolved since `take_changes`.
    changes: Vec<Finding>,
    /// Episodes reported as ended: (key, since) of the latest per key, so a
    /// detector that keeps reporting a finished episode does not reopen it.
    ended: HashMap<Key, u64>,
    detectors: detect::Detectors,
    pub stats: FindingsStats,
}

impl Findings {
    pub fn new(config: FindingsConfig) -> Self {
        Self {
            detectors: detect::Detectors::new(&config),
            config,
            enabled: true,
            open: HashMap::default(),
            resolved: VecDeque::new(),
            changes: Vec::new(),
            ended: HashMap::default(),
            stats: FindingsStats::default(),
        }
    }

    /// Detection off (`--no-findings`): lists stay empty.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::new(FindingsConfig::default())
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn config(&self) -> &FindingsConfig {
        &self.config
    }

    /// Runs every detector and updates the findings' lives.
    pub fn evaluate(
        &mut self,
        inputs: &Inputs<'_>,
        attributor: &mut dyn Workloads,
        probe: &mut dyn Probe,
    ) {
        if !self.enabled {
            return;
        }
        self.stats.evaluations += 1;
        let mut cx = detect::Context {
            inputs,
            config: &self.config,
            attributor,
            probe,
        };
        let verdicts = self.detectors.run(&mut cx);
        self.stats.series_skipped = self.detectors.series_skipped();
        self.stats.probe_failures = self.detectors.probe_failures();
        self.apply(verdicts, inputs.now_ns, attributor);
    }

    /// Opens, updates and resolves findings from this evaluation's verdicts.
    fn apply(&mut self, verdicts: Vec<Verdict>, now_ns: u64, attributor: &mut dyn Workloads) {
        let mut ended = Vec::new();
        for v in verdicts {
            let key = Key::of(&v);
            if let Some(end) = v.ended_ns {
                if self.ended.get(&key) == Some(&v.since_ns) {
                    continue;
                }
                ended.push((key.clone(), v.since_ns, end));
            }
            let affected = v
                .affected
                .iter()
                .filter(|id| **id != v.subject)
                .map(|id| attributor.workload(*id))
                .collect();
            let subject = attributor.workload(v.subject);
            let w = words::word(&v, attributor);
            let evidence = words::evidence(&v, w.facts, attributor);
            match self.open.get_mut(&key) {
                Some(open) => {
                    open.last_held_ns = v.ended_ns.unwrap_or(now_ns);
                    let f = &mut open.finding;
                    let changed = f.severity != v.severity || f.signals != v.signals;
                    f.severity = v.severity;
                    f.confidence = Confidence::from_signals(v.signals.len());
                    f.signals = v.signals;
                    f.since_ns = f.since_ns.min(v.since_ns);
                    f.summary = w.summary;
                    f.evidence = evidence;
                    f.next_step = w.next_step;
                    f.subject = subject;
                    f.affected = affected;
                    f.updated_ns = now_ns;
                    if changed {
                        self.changes.push(f.clone());
                    }
                }
                None => {
                    let finding = Finding {
                        id: finding_id(&key, v.since_ns),
                        kind: v.kind,
                        subject,
                        destination: v.destination.clone(),
                        since_ns: v.since_ns,
                        resolved_ns: None,
                        updated_ns: now_ns,
                        severity: v.severity,
                        confidence: Confidence::from_signals(v.signals.len()),
                        signals: v.signals,
                        summary: w.summary,
                        evidence,
                        next_step: w.next_step,
                        affected,
                    };
                    self.stats.opened[kind_index(v.kind)] += 1;
                    log::info!("finding opened: {}", finding.summary);
                    self.changes.push(finding.clone());
                    self.open.insert(
                        key,
                        OpenFinding {
                            finding,
                            last_held_ns: v.ended_ns.unwrap_or(now_ns),
                        },
                    );
                }
            }
        }
        let mut gone: Vec<Key> = self
            .open
            .iter()
            .filter(|(k, o)| now_ns.saturating_sub(o.last_held_ns) >= self.grace_ns(k.kind))
            .map(|(k, _)| k.clone())
            .collect();
        for (key, since, _) in ended {
            if !gone.contains(&key) {
                gone.push(key.clone());
            }
            self.ended.insert(key, since);
        }
        // Bounded like the resolved list: only the latest episode per key
        // matters, and keys of long-gone destinations can go.
        if self.ended.len() > self.config.resolved_kept {
            let keep: ahash::HashSet<&Key> = self.open.keys().collect();
            self.ended.retain(|k, _| keep.contains(k));
        }
        for k in gone {
            let Some(o) = self.open.remove(&k) else {
                continue;
            };
            let mut f = o.finding;
            // It ended when it last held, not when we noticed.
            f.resolved_ns = Some(o.last_held_ns);
            f.updated_ns = now_ns;
            self.stats.resolved[kind_index(k.kind)] += 1;
            log::info!("finding resolved: {}", f.summary);
            self.changes.push(f.clone());
            if self.resolved.len() >= self.config.resolved_kept {
                self.resolved.pop_front();
                self.stats.resolved_forgotten += 1;
            }
            self.resolved.push_back(f);
        }
    }

    /// How long a finding may go unreported before it is resolved: the
    /// detectors of sustained conditions report every evaluation, those
    /// of episodes (a restart, a burst of timeouts) stop once it is over.
    fn grace_ns(&self, kind: Kind) -> u64 {
        let c = &self.config;
        match kind {
            // The leak detector decides itself when growth has stopped.
            Kind::ConnectionLeak => 1,
            // A few seconds, so a count hovering at the threshold does not flap.
            Kind::CloseWait => config::ns(10.0),
            Kind::PoolExhaustion => config::ns(c.pool.resolve_after_s),
            // It reports its own end (the listener is back, connects succeed).
            Kind::DependencyRestart => config::ns(10.0),
            Kind::DnsDegradation => config::ns(c.dns.resolve_after_s),
            Kind::ConnectResourceExhaustion => config::ns(c.resources.resolve_after_s),
        }
    }

    /// Findings that hold now, worst first.
    pub fn open(&self) -> Vec<&Finding> {
        let mut v: Vec<&Finding> = self.open.values().map(|o| &o.finding).collect();
        v.sort_by(|a, b| {
            (b.severity, b.confidence, a.since_ns, &a.id).cmp(&(
                a.severity,
                a.confidence,
                b.since_ns,
                &b.id,
            ))
        });
        v
    }

    /// Resolved findings still remembered, newest first.
    pub fn resolved(&self) -> impl Iterator<Item = &Finding> {
        self.resolved.iter().rev()
    }

    /// Findings resolved after `since_ns` (noticed then: their `updated_ns`),
    /// newest first. A pushed window carries those resolved since the
    /// previous one; more than `resolved_kept` in between are forgotten
    /// (counted in `stats.resolved_forgotten`).
    pub fn resolved_since(&self, since_ns: u64) -> impl Iterator<Item = &Finding> {
        self.resolved().take_while(move |f| f.updated_ns > since_ns)
    }

    /// Open findings (worst first), then resolved ones if asked (newest first).
    pub fn list(&self, include_resolved: bool) -> Vec<Finding> {
        let mut v: Vec<Finding> = self.open().into_iter().cloned().collect();
        if include_resolved {
            v.extend(self.resolved().cloned());
        }
        v
    }

    /// Findings opened, changed (severity, confidence) or resolved since the
    /// last call, in that order.
    pub fn take_changes(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.changes)
    }
}

pub fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// Readable and unique per occurrence: kind, subject, destination, start.
fn finding_id(key: &Key, since_ns: u64) -> String {
    let dest = match &key.destination {
        Some(d) => match &d.dns_name {
            Some(n) => format!("{d}/{n}"),
            None => d.to_string(),
        },
        None => "-".into(),
    };
    format!(
        "{}/{}/{}/{}",
        key.kind.name(),
        key.subject,
        dest,
        since_ns / 1_000_000
    )
}

#[cfg(test)]
mod tests;
