//! DNS search-list expansion: most of a workload's queries to one server
//! are the NXDOMAIN answers of search-list walks (`ndots:5` asks
//! `api.example.com.prod.svc.cluster.local` and two more before the name
//! itself). The waste is counted by the DNS tracker ([`crate::dns::walk`]);
//! this judges it over a window and reads the pod's resolv.conf (its
//! `ndots` and search list) to say why and what to change.

use std::net::SocketAddr;

use ahash::{HashMap, HashSet};

use super::Context;
use crate::{
    dns::{
        aggregate::is_other,
        resolv_conf::{dots, ResolvConf},
    },
    findings::{
        config::ns,
        series::{Series, Timed},
        About, Destination, Fact, Kind, Severity, Unit, Verdict,
    },
};

/// (container, server).
type Key = (u64, SocketAddr);
/// (container, server, hash of a name).
type NameKey = (u64, SocketAddr, u64);

/// Names named in the evidence.
const TOP_NAMES: usize = 3;
/// A resolv.conf read is used this long; a failed read is retried sooner.
const RESOLV_FRESH_NS: u64 = 60_000_000_000;
const RESOLV_RETRY_NS: u64 = 10_000_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub t_ns: u64,
    pub queries: u64,
    pub wasted: u64,
}

impl Timed for Sample {
    fn t_ns(&self) -> u64 {
        self.t_ns
    }
}

/// What one read of a pod's resolv.conf said.
struct Resolv {
    read_ns: u64,
    /// The process read through, its name, and the file; None if it could
    /// not be read.
    conf: Option<(u32, Option<String>, ResolvConf)>,
}

pub struct Expansion {
    series: Series<Key, Sample>,
    /// Wasted queries per name (all record types together).
    names: Series<NameKey, Sample>,
    hasher: ahash::RandomState,
    resolv: HashMap<u64, Resolv>,
    pub probe_failures: u64,
}

/// A workload's counts now, and the process that asked last.
#[derive(Default)]
struct Now {
    sample: Sample,
    pid: u32,
    pid_ns: u64,
}

impl Expansion {
    pub fn new(max_series: usize, keep_ns: u64) -> Self {
        Self {
            series: Series::new(max_series, keep_ns),
            names: Series::new(max_series, keep_ns),
            hasher: ahash::RandomState::new(),
            resolv: HashMap::default(),
            probe_failures: 0,
        }
    }

    /// Histories not kept because the bound was reached.
    pub fn skipped(&self) -> u64 {
        self.series.skipped + self.names.skipped
    }

    /// `degraded`: servers a `dns_degradation` verdict holds for now.
    pub fn detect(&mut self, cx: &mut Context<'_, '_>, degraded: &[SocketAddr]) -> Vec<Verdict> {
        let cfg = cx.config.dns_search.clone();
        let now = cx.now();
        let window_start = now.saturating_sub(ns(cfg.window_s));
        let mut current: HashMap<Key, Now> = HashMap::default();
        let mut names: HashMap<NameKey, (&str, Sample)> = HashMap::default();
        for (k, s) in &cx.inputs.dns.rows {
            let c = current.entry((k.cgroup_id, k.server)).or_default();
            c.sample.queries += s.queries;
            c.sample.wasted += s.fanout_wasted;
            if s.last_tgid != 0 && s.last_ns >= c.pid_ns {
                (c.pid, c.pid_ns) = (s.last_tgid, s.last_ns);
            }
            if s.fanout_wasted > 0 && !is_other(k) {
                let key = (k.cgroup_id, k.server, self.hasher.hash_one(&*k.name));
                names
                    .entry(key)
                    .or_insert((&k.name, Sample::default()))
                    .1
                    .wasted += s.fanout_wasted;
            }
        }
        for (key, c) in &current {
            record(&mut self.series, *key, c.sample, now);
        }
        for (key, (_, s)) in &names {
            record(&mut self.names, *key, *s, now);
        }
        self.series.end_round();
        self.names.end_round();

        let mut out = Vec::new();
        let mut firing = HashSet::default();
        for (key, c) in &current {
            let Some(start) = window_start_sample(self.series.samples(key), window_start) else {
                continue;
            };
            let queries = c.sample.queries.saturating_sub(start.queries);
            let wasted = c.sample.wasted.saturating_sub(start.wasted);
            if queries < cfg.min_queries || (wasted as f64) < cfg.min_wasted_ratio * queries as f64
            {
                continue;
            }
            let (cgroup, server) = *key;
            firing.insert(cgroup);
            // Since the last sample before the waste began in this window.
            let since = self
                .series
                .samples(key)
                .filter(|s| s.t_ns >= start.t_ns)
                .take_while(|s| s.wasted == start.wasted)
                .last()
                .map_or(start.t_ns, |s| s.t_ns);
            let span_ns = now.saturating_sub(start.t_ns);
            let mut top: Vec<(&str, u64)> = names
                .iter()
                .filter(|(k, _)| k.0 == cgroup && k.1 == server)
                .filter_map(|(k, (name, s))| {
                    let from = window_start_sample(self.names.samples(k), window_start)?;
                    let w = s.wasted.saturating_sub(from.wasted);
                    (w > 0).then_some((*name, w))
                })
                .collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let named = top.len() as u64;
            top.truncate(TOP_NAMES);

            let ratio = wasted as f64 / queries as f64;
            let mut signals = vec!["mostly_wasted"];
            let mut facts = vec![
                Fact::count("queries", queries, Unit::Queries, since),
                Fact::count("wasted", wasted, Unit::Queries, since),
                Fact::new("wasted_ratio", ratio, Unit::Ratio, since),
                Fact::seconds("window_s", span_ns, start.t_ns),
                Fact::count("names", named, Unit::Names, since),
            ];
            for (name, w) in &top {
                facts.push(
                    Fact::count("name_wasted", *w, Unit::Queries, since)
                        .about(About::Name((*name).to_string())),
                );
            }
            if let Some((pid, comm, conf)) = self.resolv_conf(cx, cgroup, c.pid, now) {
                let ndots = Fact::count("ndots", u64::from(conf.ndots), Unit::Dots, now).about(
                    About::Process {
                        pid,
                        comm: comm.clone(),
                    },
                );
                facts.push(ndots);
                facts.push(Fact::count(
                    "search_domains",
                    conf.search.len() as u64,
                    Unit::Names,
                    now,
                ));
                let explained = !conf.search.is_empty()
                    && top
                        .iter()
                        .all(|(n, _)| dots(n) < conf.ndots || conf.expanded(n));
                if explained {
                    signals.push("resolv_conf");
                }
                // The fewest dots of the names asked as they are (not a
                // search domain's): with ndots at that, they go first.
                let lowest = top
                    .iter()
                    .filter(|(n, _)| !conf.expanded(n))
                    .map(|(n, _)| dots(n))
                    .min();
                if let Some(d) = lowest.filter(|d| *d >= 1 && *d < conf.ndots) {
                    facts.push(Fact::count(
                        "suggested_ndots",
                        u64::from(d),
                        Unit::Dots,
                        now,
                    ));
                }
            }
            if degraded.contains(&server) {
                facts.push(Fact::flag("server_degraded", true, now));
            }
            let per_s = wasted as f64 / (span_ns as f64 / 1e9).max(1.0);
            let severity = if per_s >= cfg.warning_wasted_per_s {
                Severity::Warning
            } else {
                Severity::Info
            };
            out.push(Verdict {
                kind: Kind::DnsSearchExpansion,
                key_subject: cgroup,
                subject: cgroup,
                destination: Some(Destination::endpoint(server.ip(), server.port())),
                since_ns: since.max(1),
                ended_ns: None,
                severity,
                signals,
                facts,
                affected: Vec::new(),
            });
        }
        self.resolv.retain(|cgroup, _| firing.contains(cgroup));
        out
    }

    /// The workload's resolv.conf, read through `pid` (or another of its
    /// processes), at most once a minute while the finding holds.
    fn resolv_conf(
        &mut self,
        cx: &mut Context<'_, '_>,
        cgroup: u64,
        pid: u32,
        now: u64,
    ) -> Option<(u32, Option<String>, ResolvConf)> {
        let fresh = self.resolv.get(&cgroup).is_some_and(|r| {
            let ttl = if r.conf.is_some() {
                RESOLV_FRESH_NS
            } else {
                RESOLV_RETRY_NS
            };
            now.saturating_sub(r.read_ns) < ttl
        });
        if !fresh {
            let path = cx.attributor.workload(cgroup).cgroup_path;
            let conf = match cx.probe.resolv_conf(pid, path.as_deref()) {
                Ok(t) => Some((
                    t.pid,
                    cx.probe.process_name(t.pid),
                    ResolvConf::parse(&t.text),
                )),
                Err(e) => {
                    log::debug!("DNS search expansion of cgroup {cgroup}: {e}");
                    self.probe_failures += 1;
                    None
                }
            };
            self.resolv.insert(cgroup, Resolv { read_ns: now, conf });
        }
        self.resolv.get(&cgroup).and_then(|r| r.conf.clone())
    }
}

/// Records `sample` at `now`; a key seen for the first time starts from
/// zero, just before: its rows are new since the last evaluation (rows are
/// only ever folded, never dropped, and the tables start empty with the
/// agent), so everything they counted falls in the window.
fn record<K: std::hash::Hash + Eq + Copy>(
    series: &mut Series<K, Sample>,
    key: K,
    sample: Sample,
    now: u64,
) {
    if series.samples(&key).next().is_none() {
        series.record(
            key,
            Sample {
                t_ns: now,
                ..Sample::default()
            },
        );
    }
    series.record(
        key,
        Sample {
            t_ns: now,
            ..sample
        },
    );
}

/// The oldest sample within the window, or the newest if none is.
fn window_start_sample<'s>(
    samples: impl DoubleEndedIterator<Item = &'s Sample> + Clone,
    window_start: u64,
) -> Option<Sample> {
    samples
        .clone()
        .find(|s| s.t_ns >= window_start)
        .or_else(|| samples.last())
        .copied()
}

#[cfg(test)]
#[path = "dns_search_tests.rs"]
mod tests;
