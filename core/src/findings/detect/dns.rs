//! DNS degradation: for one server, queries time out, answers are slow or
//! SERVFAIL, over a recent window, for the containers on this node that
//! ask it. "p90 above X" is judged as "more than 10% of the answers slower
//! than X", which needs only a count per sample, not a histogram.

use std::net::SocketAddr;

use ahash::HashMap;

use super::{dedup, Context};
use crate::{
    dns::aggregate::{DnsStats, OTHER_NAME},
    findings::{
        config::ns,
        series::{Series, Timed},
        About, Destination, Fact, Kind, Severity, Unit, Verdict,
    },
};

/// (container, server).
pub type DnsKey = (u64, SocketAddr);

/// SERVFAIL's index in the RCODE counts (see dns::aggregate::RCODES).
const SERVFAIL: usize = 2;
/// Share of answers slower than the threshold that means p90 is above it.
const SLOW_SHARE: f64 = 0.10;
/// Names named in the evidence.
const TOP_NAMES: usize = 3;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsSample {
    pub t_ns: u64,
    pub queries: u64,
    pub answers: u64,
    pub timeouts: u64,
    pub servfail: u64,
    pub slow: u64,
}

impl Timed for DnsSample {
    fn t_ns(&self) -> u64 {
        self.t_ns
    }
}

impl DnsSample {
    fn add(&mut self, s: &DnsStats, slow_ns: u64) {
        self.queries += s.queries;
        self.answers += s.answers();
        self.timeouts += s.timeouts;
        self.servfail += s.rcodes[SERVFAIL];
        self.slow += s.latency.count_at_least(slow_ns);
    }

    fn minus(&self, o: &DnsSample) -> DnsSample {
        DnsSample {
            t_ns: self.t_ns,
            queries: self.queries.saturating_sub(o.queries),
            answers: self.answers.saturating_sub(o.answers),
            timeouts: self.timeouts.saturating_sub(o.timeouts),
            servfail: self.servfail.saturating_sub(o.servfail),
            slow: self.slow.saturating_sub(o.slow),
        }
    }

    fn trouble(&self) -> u64 {
        self.timeouts + self.servfail + self.slow
    }
}

/// One server's window, all its clients together.
#[derive(Default)]
struct ServerWindow {
    d: DnsSample,
    /// The oldest sample the deltas start from.
    from_ns: u64,
    since_ns: u64,
    /// (client, its trouble in the window).
    clients: Vec<(u64, u64)>,
}

pub fn detect(cx: &mut Context<'_, '_>, series: &mut Series<DnsKey, DnsSample>) -> Vec<Verdict> {
    let cfg = cx.config.dns.clone();
    let now = cx.now();
    let slow_ns = (cfg.slow_p90_ms * 1e6) as u64;
    let window_start = now.saturating_sub(ns(cfg.window_s));
    let mut current: HashMap<DnsKey, DnsSample> = HashMap::default();
    for (k, s) in &cx.inputs.dns.rows {
        let e = current.entry((k.cgroup_id, k.server)).or_insert(DnsSample {
            t_ns: now,
            ..DnsSample::default()
        });
        e.add(s, slow_ns);
    }
    let mut servers: HashMap<SocketAddr, ServerWindow> = HashMap::default();
    for (key, live) in &current {
        series.record(*key, *live);
        let samples = series.samples(key);
        let Some(start) = samples
            .clone()
            .find(|s| s.t_ns >= window_start)
            .or_else(|| samples.clone().last())
        else {
            continue;
        };
        let d = live.minus(start);
        let w = servers.entry(key.1).or_default();
        w.from_ns = if w.from_ns == 0 {
            start.t_ns
        } else {
            w.from_ns.min(start.t_ns)
        };
        let since = samples
            .clone()
            .filter(|s| s.t_ns >= start.t_ns)
            .find(|s| s.minus(start).trouble() > 0)
            .map_or(now, |s| s.t_ns);
        if d.trouble() > 0 {
            w.since_ns = if w.since_ns == 0 {
                since
            } else {
                w.since_ns.min(since)
            };
            w.clients.push((key.0, d.trouble()));
        }
        w.d.queries += d.queries;
        w.d.answers += d.answers;
        w.d.timeouts += d.timeouts;
        w.d.servfail += d.servfail;
        w.d.slow += d.slow;
    }
    series.end_round();
    let mut out = Vec::new();
    for (server, mut w) in servers {
        let d = w.d;
        if d.queries < cfg.min_queries {
            continue;
        }
        let timeout_ratio = d.timeouts as f64 / d.queries as f64;
        let slow_ratio = if d.answers > 0 {
            d.slow as f64 / d.answers as f64
        } else {
            0.0
        };
        let servfail_ratio = if d.answers > 0 {
            d.servfail as f64 / d.answers as f64
        } else {
            0.0
        };
        let timeouts = timeout_ratio >= cfg.timeout_ratio;
        let slow = slow_ratio > SLOW_SHARE;
        let servfail = servfail_ratio >= cfg.servfail_ratio;
        if !(timeouts || slow || servfail) {
            continue;
        }
        w.clients.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let clients = dedup(w.clients.iter().map(|c| c.0));
        let at = w.since_ns;
        let mut facts = vec![
            Fact::count("queries", d.queries, Unit::Queries, at),
            Fact::count("answers", d.answers, Unit::Answers, at),
            Fact::seconds("window_s", now.saturating_sub(w.from_ns), w.from_ns),
        ];
        let mut signals = Vec::new();
        if timeouts {
            signals.push("timeouts");
            facts.push(Fact::count("timeouts", d.timeouts, Unit::Queries, at));
            facts.push(Fact::new("timeout_ratio", timeout_ratio, Unit::Ratio, at));
        }
        if slow {
            signals.push("slow");
            facts.push(Fact::count("slow_answers", d.slow, Unit::Answers, at));
            facts.push(Fact::seconds("slow_threshold_s", slow_ns, at));
            facts.push(Fact::new("slow_ratio", slow_ratio, Unit::Ratio, at));
        }
        if servfail {
            signals.push("servfail");
            facts.push(Fact::count("servfail", d.servfail, Unit::Answers, at));
            facts.push(Fact::new("servfail_ratio", servfail_ratio, Unit::Ratio, at));
        }
        for (name, timeouts, servfails) in
            worst_names(cx, server, now.saturating_sub(ns(cfg.window_s)))
        {
            facts.push(
                Fact::count("name_timeouts", timeouts, Unit::Queries, at)
                    .about(About::Name(name.clone())),
            );
            if servfails > 0 {
                facts.push(
                    Fact::count("name_servfail", servfails, Unit::Answers, at)
                        .about(About::Name(name)),
                );
            }
        }
        facts.push(Fact::count(
            "clients",
            clients.len() as u64,
            Unit::Workloads,
            at,
        ));
        if clients.len() >= 2 {
            signals.push("several_clients");
        }
        let severity = if timeout_ratio >= 4.0 * cfg.timeout_ratio || servfail {
            Severity::Critical
        } else {
            Severity::Warning
        };
        out.push(Verdict {
            kind: Kind::DnsDegradation,
            key_subject: 0,
            subject: clients.first().copied().unwrap_or(0),
            destination: Some(Destination::endpoint(server.ip(), server.port())),
            since_ns: w.since_ns.max(1),
            ended_ns: None,
            severity,
            signals,
            facts,
            affected: clients,
        });
    }
    out
}

/// Names asked of `server` that timed out or failed most, among rows
/// active since `since_ns`: (name, timeouts, SERVFAIL answers).
fn worst_names(cx: &Context<'_, '_>, server: SocketAddr, since_ns: u64) -> Vec<(String, u64, u64)> {
    let mut by_name: HashMap<&str, (u64, u64)> = HashMap::default();
    for (k, s) in &cx.inputs.dns.rows {
        if k.server != server || s.last_ns < since_ns || &*k.name == OTHER_NAME {
            continue;
        }
        let e = by_name.entry(&k.name).or_default();
        e.0 += s.timeouts;
        e.1 += s.rcodes[SERVFAIL];
    }
    let mut v: Vec<(&str, (u64, u64))> = by_name
        .into_iter()
        .filter(|(_, (t, f))| t + f > 0)
        .collect();
    v.sort_by(|a, b| (b.1 .0 + b.1 .1).cmp(&(a.1 .0 + a.1 .1)).then(a.0.cmp(b.0)));
    v.into_iter()
        .take(TOP_NAMES)
        .map(|(n, (t, f))| (n.to_string(), t, f))
        .collect()
}
