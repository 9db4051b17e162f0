//! What a detector concludes, before any wording: the kind, who and where,
//! since when, how bad, the named signals that agree, and the evidence as
//! facts with stable keys and units. The API, the JSON lines, the metrics
//! and a web page read numbers from these keys; [`super::words`] turns a
//! verdict into sentences for people, as a separate step.

use std::net::SocketAddr;

use super::{Destination, Kind, Severity};

/// The unit of a fact's value. The names are part of the API (proto and
/// JSON): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Unit {
    Sockets,
    SocketsPerMin,
    Seconds,
    Connects,
    Connections,
    Retransmits,
    Ratio,
    Queries,
    Answers,
    Names,
    Workloads,
    Failures,
    Ports,
    Files,
    Restarts,
    Probes,
    Bytes,
    /// A process id (the fact names a process).
    Pid,
    /// A number that names something: an errno.
    Code,
    /// A yes/no fact: 1 or 0.
    Flag,
}

impl Unit {
    pub const fn name(self) -> &'static str {
        match self {
            Unit::Sockets => "sockets",
            Unit::SocketsPerMin => "sockets/min",
            Unit::Seconds => "s",
            Unit::Connects => "connects",
            Unit::Connections => "connections",
            Unit::Retransmits => "retransmits",
            Unit::Ratio => "ratio",
            Unit::Queries => "queries",
            Unit::Answers => "answers",
            Unit::Names => "names",
            Unit::Workloads => "workloads",
            Unit::Failures => "failures",
            Unit::Ports => "ports",
            Unit::Files => "files",
            Unit::Restarts => "restarts",
            Unit::Probes => "probes",
            Unit::Bytes => "bytes",
            Unit::Pid => "pid",
            Unit::Code => "code",
            Unit::Flag => "flag",
        }
    }
}

/// What a fact's number is about, when not the finding as a whole.
#[derive(Debug, Clone, PartialEq)]
pub enum About {
    /// A workload, by cgroup id: named when the verdict is worded.
    Workload(u64),
    /// A process, by pid, with its command name when it was known.
    Process {
        pid: u32,
        comm: Option<String>,
    },
    /// A DNS name, a syscall and errno, a listener's address: anything the
    /// detector names with text.
    Name(String),
    Endpoint(SocketAddr),
}

/// One measured fact.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    /// Stable, snake_case: `open_sockets`, `oldest_age_s`, `refused`,
    /// `gap_s`. The README lists every key per kind.
    pub key: &'static str,
    pub value: f64,
    pub unit: Unit,
    /// Monotonic ns when it was measured (or the start of what it describes).
    pub at_ns: u64,
    pub about: Option<About>,
}

impl Fact {
    pub fn new(key: &'static str, value: f64, unit: Unit, at_ns: u64) -> Self {
        Self {
            key,
            value,
            unit,
            at_ns,
            about: None,
        }
    }

    pub fn count(key: &'static str, n: u64, unit: Unit, at_ns: u64) -> Self {
        Self::new(key, n as f64, unit, at_ns)
    }

    /// A span in seconds, rounded to the millisecond.
    pub fn seconds(key: &'static str, ns: u64, at_ns: u64) -> Self {
        Self::new(key, secs(ns), Unit::Seconds, at_ns)
    }

    pub fn flag(key: &'static str, yes: bool, at_ns: u64) -> Self {
        Self::new(key, f64::from(u8::from(yes)), Unit::Flag, at_ns)
    }

    pub fn about(mut self, about: About) -> Self {
        self.about = Some(about);
        self
    }

    /// The value as a count (facts of counts hold whole numbers).
    pub fn n(&self) -> u64 {
        self.value.max(0.0).round() as u64
    }

    /// The value of a span fact, in ns.
    pub fn ns(&self) -> u64 {
        (self.value.max(0.0) * 1e9).round() as u64
    }
}

/// Seconds as a float, rounded to the millisecond.
pub fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e9 * 1000.0).round() / 1000.0
}

/// A detector's report that a problem holds now (or, with `ended_ns`, that
/// an episode has ended and when).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub kind: Kind,
    /// The identity of the problem's subject: a cgroup id, or 0 for a
    /// destination's problem whoever felt it (a restart, a DNS server).
    pub key_subject: u64,
    /// The workload shown as the subject (cgroup id).
    pub subject: u64,
    pub destination: Option<Destination>,
    pub since_ns: u64,
    /// The problem is over since then: the finding is updated with this
    /// report and resolved at once, and the same episode (same key and
    /// since) is not opened again.
    pub ended_ns: Option<u64>,
    pub severity: Severity,
    /// The independent signals that agree, by stable name (`growth`,
    /// `few_closes`, ...); the confidence follows from how many.
    pub signals: Vec<&'static str>,
    pub facts: Vec<Fact>,
    /// cgroup ids of other workloads that felt it.
    pub affected: Vec<u64>,
}

impl Verdict {
    /// The first fact with `key`.
    pub fn fact(&self, key: &str) -> Option<&Fact> {
        self.facts.iter().find(|f| f.key == key)
    }

    /// The value of the first fact with `key`, 0 if there is none.
    pub fn value(&self, key: &str) -> f64 {
        self.fact(key).map_or(0.0, |f| f.value)
    }

    /// Every fact with `key`, in order.
    pub fn facts_of<'v>(&'v self, key: &'v str) -> impl Iterator<Item = &'v Fact> + 'v {
        self.facts.iter().filter(move |f| f.key == key)
    }
}
