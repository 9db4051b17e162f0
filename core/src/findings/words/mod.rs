//! Wording: a verdict's summary, one sentence per fact, and the next step,
//! for people. It only reads the verdict (and names workloads), so what a
//! finding says is tested once per kind, apart from what it judged.

mod close_wait;
mod dns;
mod dns_search;
mod leak;
mod limit;
mod pool;
mod probes;
mod resources;
mod restart;
mod stale;

use super::{text, About, Evidence, Fact, Kind, Verdict};

/// A value as people read it (`sockeye_core::format`'s rule, the CLI's too).
pub use crate::format::number;
use crate::workload::Workloads;

/// What people read of a verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Words {
    pub summary: String,
    /// One per fact of the verdict, in its order.
    pub facts: Vec<String>,
    pub next_step: String,
}

pub fn word(v: &Verdict, names: &mut dyn Workloads) -> Words {
    let mut cx = Cx { v, names };
    let w = match v.kind {
        Kind::ConnectionLeak => leak::word(&mut cx),
        Kind::CloseWait => close_wait::word(&mut cx),
        Kind::PoolExhaustion => pool::word(&mut cx),
        Kind::DependencyRestart => restart::word(&mut cx),
        Kind::DnsDegradation => dns::word(&mut cx),
        Kind::ConnectResourceExhaustion => resources::word(&mut cx),
        Kind::StaleConnections => stale::word(&mut cx),
        Kind::ServerAtLimit | Kind::SessionsRefused => limit::word(&mut cx),
        Kind::ProbeFailures => probes::word(&mut cx),
        Kind::DnsSearchExpansion => dns_search::word(&mut cx),
    };
    debug_assert_eq!(w.facts.len(), v.facts.len(), "one sentence per fact");
    w
}

/// The verdict's facts with their sentences, as findings carry them.
pub fn evidence(v: &Verdict, sentences: Vec<String>, names: &mut dyn Workloads) -> Vec<Evidence> {
    v.facts
        .iter()
        .zip(sentences)
        .map(|(f, fact)| Evidence {
            key: f.key,
            fact,
            value: f.value,
            unit: f.unit.name(),
            at_ns: f.at_ns,
            about: f.about.as_ref().map(|a| about(a, names)),
        })
        .collect()
}

/// A fact's subject, named.
pub fn about(a: &About, names: &mut dyn Workloads) -> String {
    match a {
        About::Workload(id) => names.label(*id),
        About::Process { pid, comm } => text::process(*pid, comm.as_deref()),
        About::Name(n) => n.clone(),
        About::Endpoint(e) => e.to_string(),
    }
}

/// What the wording of one verdict reads.
pub(crate) struct Cx<'a, 'n> {
    pub v: &'a Verdict,
    pub names: &'n mut dyn Workloads,
}

impl Cx<'_, '_> {
    pub fn subject(&mut self) -> String {
        self.names.label(self.v.subject)
    }

    /// "10.0.0.9:6379", or "-" for a verdict without one.
    pub fn dest(&self) -> String {
        self.v
            .destination
            .as_ref()
            .map_or_else(|| "-".to_string(), ToString::to_string)
    }

    pub fn n(&self, key: &str) -> u64 {
        self.v.fact(key).map_or(0, Fact::n)
    }

    pub fn value(&self, key: &str) -> f64 {
        self.v.value(key)
    }

    /// A span fact, for people ("3.21s", "7m").
    pub fn span(&self, key: &str) -> String {
        text::span(self.v.fact(key).map_or(0, Fact::ns))
    }

    pub fn has(&self, key: &str) -> bool {
        self.v.fact(key).is_some()
    }

    pub fn yes(&self, key: &str) -> bool {
        self.value(key) != 0.0
    }

    /// When a fact was measured, "HH:MM:SS UTC".
    pub fn at(&self, key: &str) -> String {
        text::clock_time(self.v.fact(key).map_or(0, |f| f.at_ns))
    }

    /// The named subject of a fact.
    pub fn about_of(&mut self, f: &Fact) -> String {
        match &f.about {
            Some(a) => about(a, self.names),
            None => String::new(),
        }
    }

    /// The named subjects of every fact with `key`, in order.
    pub fn abouts_of(&mut self, key: &str) -> Vec<String> {
        let facts: Vec<Fact> = self.v.facts_of(key).cloned().collect();
        facts.iter().map(|f| self.about_of(f)).collect()
    }

    /// The labels of the affected workloads, joined.
    pub fn affected(&mut self) -> String {
        let ids = self.v.affected.clone();
        ids.iter()
            .map(|id| self.names.label(*id))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One sentence per fact: `sentence` words it (by key), or returns
    /// None for a fact its sentence of another already says (its number
    /// is still carried, with an empty sentence).
    pub fn facts(
        &mut self,
        mut sentence: impl FnMut(&mut Self, &Fact) -> Option<String>,
    ) -> Vec<String> {
        let facts = self.v.facts.clone();
        facts
            .iter()
            .map(|f| sentence(self, f).unwrap_or_default())
            .collect()
    }
}

/// The facts of a server at its connection limit, when they come with a
/// finding of another kind (a leak or stale connections that hold the
/// slots): "redis is at its connection limit: it holds 10000 connections,
/// none more for 2m, and refused 40 new ones in the last 1m (0.7/s)", and
/// each refused client. None for the limit's other facts, said in that
/// sentence.
pub(crate) fn at_limit(cx: &mut Cx<'_, '_>, f: &Fact) -> Option<String> {
    Some(match f.key {
        "limit_held" => format!(
            "{} is at its connection limit: it holds {} connections, none more for {}, and refused {} new ones in the last {} ({}/s)",
            cx.v.fact("limit_server").cloned().map(|g| cx.about_of(&g)).unwrap_or_default(),
            f.n(),
            cx.span("limit_flat_for_s"),
            cx.n("limit_refused"),
            cx.span("limit_window_s"),
            number(cx.value("limit_refused_per_s"))
        ),
        "limit_refused_from" => format!("{} refused from {}", f.n(), cx.about_of(f)),
        _ => return None,
    })
}

/// The probes of a pod folded under the finding of what they wait on:
/// "the liveness probe of shop/payments-1/app (timeout 2.00s) failed 3
/// times while 10.0.0.9:6379 did not accept for 4.03s; the probe waits on
/// 10.0.0.9:6379; its timeout is shorter than that". `down_ns` is how long
/// the dependency was gone, when the finding knows it. None for the
/// probe's other facts, said in this sentence.
pub(crate) fn probed(cx: &mut Cx<'_, '_>, f: &Fact, down_ns: Option<u64>) -> Option<String> {
    if f.key != "probed_failures" {
        return None;
    }
    let of = |key: &str| {
        cx.v.facts
            .iter()
            .find(|g| g.key == key && g.about == f.about)
            .cloned()
    };
    let kind = of("probed_kind").map_or(crate::workload::probes::ProbeKind::Liveness, |k| {
        crate::workload::probes::ProbeKind::from_code(k.n())
    });
    let timeout = of("probed_timeout_s").map_or(0, |t| t.ns());
    let restarts = of("probed_restarts").is_some();
    let pod = cx.about_of(f);
    let dest = cx.dest();
    let while_ = match down_ns {
        Some(d) => format!("{dest} did not accept for {}", text::span(d)),
        None => format!("its own connects to {dest} failed"),
    };
    let mut s = format!(
        "the {} probe of {pod} (timeout {}) failed {} while {while_}; the probe waits on {dest}",
        kind.name(),
        text::span(timeout),
        times(f.n())
    );
    if restarts {
        s.push_str("; that many failures restart the pod");
    }
    if let Some(d) = down_ns.filter(|d| timeout < *d) {
        s.push_str(&format!(
            "; the probe's timeout ({}) is shorter than {dest}'s recovery ({})",
            text::span(timeout),
            text::span(d)
        ));
    }
    Some(s)
}

/// "once", "twice", "3 times".
pub(crate) fn times(n: u64) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

/// "key: value unit", for a fact no sentence is written for.
pub(crate) fn plain(f: &Fact) -> String {
    format!(
        "{}: {} {}",
        f.key.replace('_', " "),
        number(f.value),
        f.unit.name()
    )
}

/// "on port 6379 from 10.0.0.2" or "to 10.0.0.9:6379", by who accepted.
pub(crate) fn peer(cx: &Cx<'_, '_>) -> String {
    match &cx.v.destination {
        Some(d) if cx.yes("accepted") => format!("from {} on port {}", d.addr, d.port),
        Some(_) => format!("to {}", cx.dest()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
