//! Wording: a verdict's summary, one sentence per fact, and the next step,
//! for people. It only reads the verdict (and names workloads), so what a
//! finding says is tested once per kind, apart from what it judged.

mod close_wait;
mod dns;
mod leak;
mod pool;
mod resources;
mod restart;

use super::{text, About, Evidence, Fact, Kind, Verdict};
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

/// "key: value unit", for a fact no sentence is written for.
pub(crate) fn plain(f: &Fact) -> String {
    format!(
        "{}: {} {}",
        f.key.replace('_', " "),
        number(f.value),
        f.unit.name()
    )
}

/// A value as people read it: whole numbers without decimals.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
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
