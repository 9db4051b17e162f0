//! Probes that time out: the kubelet connects to a container's probe port,
//! asks, and gives up after `timeoutSeconds` without an answer (it closes
//! the connection before the container has sent a byte). After
//! `failureThreshold` of them a liveness probe restarts a healthy pod that
//! was only waiting on a dependency. The verdict names the pod's own
//! failing dependencies, so `relate` can put the probes under the
//! dependency's finding: one root cause, the probed pods affected.

use std::net::SocketAddr;

use ahash::HashMap;

use super::{Context, FlowNow};
use crate::{
    aggregate::flows::Direction,
    findings::{config::ns, About, Destination, Fact, Kind, Severity, Unit, Verdict},
    workload::probes::{ProbeKind, ProbeSpec},
};

/// A wait this close to the probe's timeout (or longer) is the probe
/// giving up; the kubelet's own timer is not exact.
const TIMEOUT_SHARE: f64 = 0.8;
/// ... up to this much past it.
const TIMEOUT_SLACK_NS: u64 = 1_000_000_000;

/// One probe of one pod, and its timeouts in the window.
struct Timeouts {
    probe: ProbeSpec,
    cgroup_id: u64,
    times: Vec<(u64, u64)>,
}

pub fn detect(cx: &mut Context<'_, '_>, flows: &[FlowNow<'_>]) -> Vec<Verdict> {
    let cfg = cx.config.probes.clone();
    let now = cx.now();
    let since = now.saturating_sub(ns(cfg.window_s));
    let mut probes: HashMap<u64, Vec<ProbeSpec>> = HashMap::default();
    let mut found: HashMap<(u64, ProbeKind, u16), Timeouts> = HashMap::default();
    for f in flows
        .iter()
        .filter(|f| f.key.direction == Direction::Inbound)
    {
        if f.stats.unanswered.is_empty() {
            continue;
        }
        let specs = probes
            .entry(f.key.cgroup_id)
            .or_insert_with(|| cx.attributor.probes(f.key.cgroup_id));
        for p in specs.iter().filter(|p| p.port == f.key.port) {
            let timeout = ns(f64::from(p.timeout_s));
            let waits = f.stats.unanswered.iter().filter(|(at, waited)| {
                *at >= since
                    && *waited as f64 >= TIMEOUT_SHARE * timeout as f64
                    && *waited <= timeout + TIMEOUT_SLACK_NS
            });
            let e = found
                .entry((f.key.cgroup_id, p.kind, p.port))
                .or_insert(Timeouts {
                    probe: p.clone(),
                    cgroup_id: f.key.cgroup_id,
                    times: Vec::new(),
                });
            e.times.extend(waits);
        }
    }
    let mut out = Vec::new();
    for (_, t) in found {
        if t.times.is_empty() {
            continue;
        }
        // One timeout is worth saying under the finding of what the probe
        // waited on; on its own a finding needs more (`relate` decides).
        let needed = u64::from(t.probe.failure_threshold)
            .min(cfg.min_failures)
            .max(1);
        out.push(verdict(cx, &t, flows, since, needed));
    }
    out
}

fn verdict(
    cx: &mut Context<'_, '_>,
    t: &Timeouts,
    flows: &[FlowNow<'_>],
    since: u64,
    needed: u64,
) -> Verdict {
    let now = cx.now();
    let first = t.times.iter().map(|(at, _)| *at).min().unwrap_or(now);
    let longest = t.times.iter().map(|(_, w)| *w).max().unwrap_or(0);
    let mut facts = vec![
        Fact::count("probe_failures", t.times.len() as u64, Unit::Probes, first),
        // Which probe: 0 liveness, 1 readiness, 2 startup (named in `about`).
        Fact::count("probe_kind", t.probe.kind as u64, Unit::Code, now)
            .about(About::Name(t.probe.kind.name().to_string())),
        Fact::new(
            "probe_timeout_s",
            f64::from(t.probe.timeout_s),
            Unit::Seconds,
            now,
        ),
        Fact::new(
            "probe_period_s",
            f64::from(t.probe.period_s),
            Unit::Seconds,
            now,
        ),
        Fact::count(
            "failure_threshold",
            u64::from(t.probe.failure_threshold),
            Unit::Probes,
            now,
        ),
        Fact::seconds("longest_wait_s", longest, now),
        Fact::count("failures_needed", needed, Unit::Probes, now),
    ];
    // What the pod itself waited on meanwhile: its connects that failed.
    let mut signals = vec!["probe_timeouts"];
    for f in flows.iter().filter(|f| {
        f.key.direction == Direction::Outbound
            && f.key.cgroup_id == t.cgroup_id
            && f.stats
                .outage
                .latest()
                .is_some_and(|o| o.last_failure_ns >= since && o.failures > 0)
    }) {
        let failures = f.stats.outage.latest().map_or(0, |o| o.failures);
        facts.push(
            Fact::count("dependency_failures", failures, Unit::Connects, now)
                .about(About::Endpoint(SocketAddr::new(f.key.remote, f.key.port))),
        );
        if signals.len() == 1 {
            signals.push("dependency_failing");
        }
    }
    let restarts =
        t.probe.kind == ProbeKind::Liveness && t.times.len() as u32 >= t.probe.failure_threshold;
    if restarts {
        facts.push(Fact::flag("restarts_the_pod", true, now));
    }
    Verdict {
        kind: Kind::ProbeFailures,
        key_subject: t.cgroup_id,
        subject: t.cgroup_id,
        destination: Some(Destination::endpoint(
            super::stale::listener_addr(cx, t.cgroup_id, t.probe.port),
            t.probe.port,
        )),
        since_ns: first,
        ended_ns: None,
        severity: if restarts {
            Severity::Critical
        } else {
            Severity::Warning
        },
        signals,
        facts,
        affected: Vec::new(),
    }
}
