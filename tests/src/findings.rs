//! Findings as an incident shows them: the real agent, driven the way its
//! run loop drives it, and the findings it opens about the test's own pods
//! (other tests' agents and pods may be running at the same time).

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use sockeye_agent::{
    clock::monotonic_ns,
    findings::{Evidence, Finding, FindingsConfig, Kind},
    run::FINDINGS_EVERY,
    Agent, Config,
};

use crate::agent::start_with;

/// The agent's default output interval: housekeeping and the end of a
/// window happen this often in `sockeye-agent`.
const WINDOW_EVERY: Duration = Duration::from_secs(2);
/// Events are drained, and peers' lines read, this often.
const TICK: Duration = Duration::from_millis(100);
/// Every scenario's finding must come within this of its fault.
pub const FAULT_TO_FINDING_MAX_S: f64 = 60.0;

pub struct Watch {
    pub agent: Agent,
    cgroups: Vec<u64>,
    next_eval: Instant,
    next_window: Instant,
    /// Monotonic ns when each finding about the test's pods was first seen,
    /// by id.
    first_seen: HashMap<String, u64>,
}

impl Watch {
    /// Starts the agent with these thresholds, watching findings about
    /// `cgroups` (as subject or as affected).
    pub fn start(findings: FindingsConfig, cgroups: &[u64]) -> Self {
        let agent = start_with(&Config {
            findings: Some(findings),
            ..Config::default()
        });
        let now = Instant::now();
        Self {
            agent,
            cgroups: cgroups.to_vec(),
            next_eval: now + FINDINGS_EVERY,
            next_window: now + WINDOW_EVERY,
            first_seen: HashMap::new(),
        }
    }

    /// One turn of the agent's loop: drain; every second evaluate the
    /// findings; every interval housekeeping and a new window; then a short
    /// sleep.
    pub fn tick(&mut self) {
        self.agent.drain();
        if Instant::now() >= self.next_window {
            self.agent.housekeeping();
            self.agent.end_window();
            self.next_window = next(self.next_window, WINDOW_EVERY);
        }
        if Instant::now() >= self.next_eval {
            self.agent.evaluate_findings();
            self.next_eval = next(self.next_eval, FINDINGS_EVERY);
            // As the run loop does: every change is taken once. A finding
            // opened and resolved in one evaluation is among them too.
            let now = monotonic_ns();
            for f in self.agent.findings.take_changes() {
                if self.concerns(&f) {
                    self.first_seen.entry(f.id).or_insert(now);
                }
            }
        }
        std::thread::sleep(TICK);
    }

    /// Runs the loop for `d`, calling `each` after every tick.
    pub fn run_for(&mut self, d: Duration, mut each: impl FnMut(&mut Self)) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.tick();
            each(self);
        }
    }

    /// Evaluates like the run loop until `done` holds; panics with `what`
    /// and the findings if it does not within `limit`.
    pub fn run_until(
        &mut self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&mut Self) -> bool,
    ) {
        let end = Instant::now() + limit;
        loop {
            self.tick();
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < end,
                "not within {limit:?}: {what}\n{}",
                self.describe()
            );
        }
    }

    /// Whether `f` is about one of the test's pods.
    pub fn concerns(&self, f: &Finding) -> bool {
        self.cgroups.contains(&f.subject.cgroup_id)
            || f.affected
                .iter()
                .any(|w| self.cgroups.contains(&w.cgroup_id))
    }

    /// Open findings about the test's pods.
    pub fn open(&self) -> Vec<Finding> {
        self.agent
            .findings
            .open()
            .into_iter()
            .filter(|f| self.concerns(f))
            .cloned()
            .collect()
    }

    /// Resolved findings about the test's pods, newest first.
    pub fn resolved(&self) -> Vec<Finding> {
        self.agent
            .findings
            .resolved()
            .filter(|f| self.concerns(f))
            .cloned()
            .collect()
    }

    /// The finding with this id as it is now, open or resolved.
    pub fn get(&self, id: &str) -> Option<Finding> {
        self.agent
            .findings
            .list(true)
            .into_iter()
            .find(|f| f.id == id)
    }

    /// Monotonic ns when the finding was first seen.
    pub fn first_seen(&self, id: &str) -> u64 {
        *self
            .first_seen
            .get(id)
            .unwrap_or_else(|| panic!("finding {id} was never seen"))
    }

    /// Every finding about the test's pods, for failure messages.
    pub fn describe(&self) -> String {
        let all: Vec<Finding> = self.open().into_iter().chain(self.resolved()).collect();
        if all.is_empty() {
            return format!(
                "no finding about the test's pods (evaluations: {})",
                self.agent.findings.stats.evaluations
            );
        }
        format!("findings about the test's pods: {all:#?}")
    }

    /// Runs the loop until an open finding of `kind` about the test's pods
    /// satisfies `want`, calling `each` after every tick; panics with what
    /// was found after `timeout`.
    pub fn wait_open(
        &mut self,
        kind: Kind,
        timeout: Duration,
        want: impl Fn(&Finding) -> bool,
        each: impl FnMut(&mut Self),
    ) -> Finding {
        self.wait_for(kind, timeout, false, want, each)
    }

    /// Like [`Self::wait_open`], but a finding already resolved counts too
    /// (an episode the agent saw only once it was over).
    pub fn wait_found(
        &mut self,
        kind: Kind,
        timeout: Duration,
        want: impl Fn(&Finding) -> bool,
        each: impl FnMut(&mut Self),
    ) -> Finding {
        self.wait_for(kind, timeout, true, want, each)
    }

    fn wait_for(
        &mut self,
        kind: Kind,
        timeout: Duration,
        or_resolved: bool,
        want: impl Fn(&Finding) -> bool,
        mut each: impl FnMut(&mut Self),
    ) -> Finding {
        let end = Instant::now() + timeout;
        loop {
            self.tick();
            each(self);
            let mut candidates = self.open();
            if or_resolved {
                candidates.extend(self.resolved());
            }
            if let Some(f) = candidates.into_iter().find(|f| f.kind == kind && want(f)) {
                return f;
            }
            assert!(
                Instant::now() < end,
                "no {} finding within {timeout:?}; {}",
                kind.name(),
                self.describe()
            );
        }
    }

    /// Runs the loop until the finding `id` is resolved; returns it and the
    /// monotonic ns when the test saw it resolved.
    pub fn wait_resolved(
        &mut self,
        id: &str,
        timeout: Duration,
        mut each: impl FnMut(&mut Self),
    ) -> (Finding, u64) {
        let end = Instant::now() + timeout;
        loop {
            self.tick();
            each(self);
            if let Some(f) = self.resolved().into_iter().find(|f| f.id == id) {
                return (f, monotonic_ns());
            }
            assert!(
                Instant::now() < end,
                "finding {id} not resolved within {timeout:?}; {}",
                self.describe()
            );
        }
    }
}

/// The next deadline of a fixed schedule; after a stall (a slow step in
/// the test) it restarts from now rather than firing in a burst.
fn next(deadline: Instant, every: Duration) -> Instant {
    let n = deadline + every;
    let now = Instant::now();
    if n < now {
        now + every
    } else {
        n
    }
}

/// Whether the finding is about `addr`:`port`.
pub fn is_about(f: &Finding, addr: IpAddr, port: u16) -> bool {
    f.destination
        .as_ref()
        .is_some_and(|d| d.addr == addr && d.port == port)
}

/// Whether `cgroup` is the finding's subject or among those affected.
pub fn names(f: &Finding, cgroup: u64) -> bool {
    f.subject.cgroup_id == cgroup || f.affected.iter().any(|w| w.cgroup_id == cgroup)
}

/// The evidence in `unit` whose fact mentions every one of `words`
/// (case-insensitive), if any.
pub fn find_evidence<'f>(f: &'f Finding, unit: &str, words: &[&str]) -> Option<&'f Evidence> {
    f.evidence.iter().find(|e| {
        let fact = e.fact.to_lowercase();
        e.unit == unit && words.iter().all(|w| fact.contains(&w.to_lowercase()))
    })
}

/// Like [`find_evidence`], panicking with the finding's evidence if absent.
pub fn evidence<'f>(f: &'f Finding, unit: &str, words: &[&str]) -> &'f Evidence {
    find_evidence(f, unit, words).unwrap_or_else(|| {
        panic!(
            "{} has no evidence in {unit:?} mentioning {words:?}; its evidence: {:#?}",
            f.id, f.evidence
        )
    })
}

/// Prints the time from the fault to the finding (the figure quoted for
/// each scenario) and checks it is within [`FAULT_TO_FINDING_MAX_S`].
pub fn report_fault_to_finding(scenario: &str, fault_ns: u64, seen_ns: u64, f: &Finding) -> f64 {
    let secs = seen_ns.saturating_sub(fault_ns) as f64 / 1e9;
    let since = (f.since_ns as f64 - fault_ns as f64) / 1e9;
    eprintln!("{scenario}: time from fault to finding: {secs:.1} s");
    eprintln!(
        "{scenario}: the finding dates the problem from {since:+.1} s after the fault; {}",
        f.summary
    );
    assert!(
        secs <= FAULT_TO_FINDING_MAX_S,
        "{scenario}: the finding came {secs:.1} s after the fault (at most {FAULT_TO_FINDING_MAX_S} s)"
    );
    secs
}

/// `a` within `tolerance` (absolute) of `b`.
pub fn near(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

/// An evidence value in a unit of time, in seconds (None for other units).
pub fn seconds(e: &Evidence) -> Option<f64> {
    let scale = match e.unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "min" => 60.0,
        _ => return None,
    };
    Some(e.value * scale)
}

/// The evidence in a unit of time whose fact mentions one of `words`.
pub fn duration_evidence<'f>(f: &'f Finding, words: &[&str]) -> &'f Evidence {
    f.evidence
        .iter()
        .find(|e| {
            let fact = e.fact.to_lowercase();
            seconds(e).is_some() && words.iter().any(|w| fact.contains(w))
        })
        .unwrap_or_else(|| {
            panic!(
                "{} has no duration mentioning any of {words:?}; its evidence: {:#?}",
                f.id, f.evidence
            )
        })
}

/// The largest count in `unit` among the evidence: the whole of what is
/// counted (counts of subsets, older-than or idle, are never larger).
pub fn largest(f: &Finding, unit: &str) -> f64 {
    f.evidence
        .iter()
        .filter(|e| e.unit == unit)
        .map(|e| e.value)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        .unwrap_or_else(|| {
            panic!(
                "{} has no evidence in {unit:?}; its evidence: {:#?}",
                f.id, f.evidence
            )
        })
}

/// Whether the evidence names the process: its command name and pid.
pub fn names_process(f: &Finding, pid: u32, comm: &str) -> bool {
    f.evidence.iter().any(|e| {
        e.fact.contains(comm) && (e.fact.contains(&pid.to_string()) || e.value == f64::from(pid))
    })
}
