//! Connection leak: open sockets from one container to one destination
//! grow steadily while they are not being closed.
//!
//! Growth alone is not enough: a pool that fills at start grows too. So
//! the growth must last (`min_span_s`), be fast enough (`min_rate_per_min`),
//! and continue: both halves of the span must each add a share of it,
//! which a pool that filled at once and then stayed flat does not.

use ahash::HashMap;

use super::{owner_facts, sample_at, Context, FlowNow, TcpSample};
use crate::{
    aggregate::flows::{Direction, FlowKey},
    findings::{
        config::ns, probe::Idle, series::Series, About, Destination, Fact, Kind, Severity, Unit,
        Verdict,
    },
};

/// Each half of the span must add at least this share of the growth.
const HALF_SHARE: f64 = 0.25;
/// Growth at or past this is critical: the pool or the server's limit is
/// near for most setups.
const CRITICAL_GROWTH: u64 = 100;

/// A leak being reported: where it started and how far it went.
#[derive(Debug, Clone, Copy)]
struct Episode {
    baseline: u64,
    baseline_ns: u64,
    opened_at_baseline: u64,
    closed_at_baseline: u64,
    peak: u64,
    peak_ns: u64,
}

/// Idle times are asked of the kernel at most this often per leak.
const IDLE_EVERY_NS: u64 = 5_000_000_000;

#[derive(Debug, Default)]
pub struct Leaks {
    episodes: HashMap<FlowKey, Episode>,
    /// The last idle answer per leaking flow, and when it was asked.
    idle: HashMap<FlowKey, (u64, Option<Idle>)>,
    /// Kernel questions that failed (the process gone, no permission):
    /// that leak's evidence then lacks idle times.
    pub probe_failures: u64,
}

impl Leaks {
    pub fn detect(
        &mut self,
        cx: &mut Context<'_, '_>,
        flows: &[FlowNow<'_>],
        series: &Series<FlowKey, TcpSample>,
    ) -> Vec<Verdict> {
        let cfg = cx.config.leak.clone();
        let now = cx.now();
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for f in flows {
            // Both ends on this node are one relation: connections a server
            // accepted from clients here are judged at the client (it is
            // the one that does not release), or as stale connections when
            // the client is gone. Never a second "leak" at the victim.
            if f.key.direction == Direction::Inbound && f.counts().linked * 2 > f.counts().open {
                continue;
            }
            let open = f.sample.open;
            let episode = match self.episodes.get(&f.key).copied() {
                Some(mut e) => {
                    if open > e.peak {
                        e.peak = open;
                        e.peak_ns = now;
                    }
                    let released = open < e.baseline + cfg.min_growth.div_ceil(2);
                    let flat = now.saturating_sub(e.peak_ns) >= ns(cfg.resolve_after_flat_s);
                    if released || flat {
                        continue;
                    }
                    e
                }
                None => match start(&cfg, now, &f.sample, series.samples(&f.key)) {
                    Some(e) => e,
                    None => continue,
                },
            };
            self.episodes.insert(f.key, episode);
            seen.push(f.key);
            let idle = self.idle_of(cx, f);
            out.push(verdict(cx, f, &episode, idle));
        }
        self.episodes.retain(|k, _| seen.contains(k));
        self.idle.retain(|k, _| seen.contains(k));
        out
    }

    /// How idle the flow's sockets are, asked of the kernel in the
    /// namespace of the process that opened most of them.
    fn idle_of(&mut self, cx: &mut Context<'_, '_>, f: &FlowNow<'_>) -> Option<Idle> {
        let now = cx.now();
        if let Some((at, idle)) = self.idle.get(&f.key) {
            if now.saturating_sub(*at) < IDLE_EVERY_NS {
                return *idle;
            }
        }
        let pid = f.sockets().owners.first()?.0;
        let idle_after_ms = (cx.config.leak.idle_after_s * 1000.0) as u64;
        let answer = match cx.probe.idle(pid, f.key.remote, f.key.port, idle_after_ms) {
            Ok(i) => Some(i),
            Err(e) => {
                self.probe_failures += 1;
                log::debug!("idle times of {:?}: {e}", f.key);
                None
            }
        };
        self.idle.insert(f.key, (now, answer));
        answer
    }
}

/// Whether the samples (oldest first) and the live sample show a leak
/// starting now; its baseline if so.
fn start<'s>(
    cfg: &crate::findings::config::LeakConfig,
    now: u64,
    live: &TcpSample,
    samples: impl DoubleEndedIterator<Item = &'s TcpSample> + Clone,
) -> Option<Episode> {
    let window_start = now.saturating_sub(ns(cfg.window_s));
    // The baseline is the lowest count in the window, the latest such: a
    // flat stretch before the growth is not part of it (it would lower the
    // rate and date the leak too early).
    let base = samples
        .clone()
        .filter(|s| s.t_ns >= window_start)
        .min_by_key(|s| (s.open, std::cmp::Reverse(s.t_ns)))?;
    let growth = live.open.checked_sub(base.open)?;
    let span = now.saturating_sub(base.t_ns);

    if growth < cfg.min_growth || span < ns(cfg.min_span_s) {
        return None;
    }
    let rate = growth as f64 / (span as f64 / 60e9);
    if rate < cfg.min_rate_per_min {
        return None;
    }
    // Both halves of the span add to it: still growing, not a pool that
    // filled once.
    let mid = sample_at(samples, base.t_ns + span / 2)?;
    let first = mid.open.saturating_sub(base.open) as f64;
    let second = live.open.saturating_sub(mid.open) as f64;
    let share = HALF_SHARE * growth as f64;
    if first < share || second < share {
        return None;
    }
    Some(Episode {
        baseline: base.open,
        baseline_ns: base.t_ns,
        opened_at_baseline: base.opened,
        closed_at_baseline: base.closed,
        peak: live.open,
        peak_ns: now,
    })
}

fn verdict(cx: &mut Context<'_, '_>, f: &FlowNow<'_>, e: &Episode, idle: Option<Idle>) -> Verdict {
    let now = cx.now();
    let s = f.sockets();
    let open = f.sample.open;
    let growth = open.saturating_sub(e.baseline);
    let span = now.saturating_sub(e.baseline_ns).max(1);
    let rate = growth as f64 / (span as f64 / 60e9);
    let opened = f.sample.opened.saturating_sub(e.opened_at_baseline);
    let closed = f.sample.closed.saturating_sub(e.closed_at_baseline);
    let oldest = s.oldest_open_since_ns.map_or(0, |t| now.saturating_sub(t));
    let mut facts = vec![
        Fact::count("open_sockets", open, Unit::Sockets, now),
        Fact::count("baseline_sockets", e.baseline, Unit::Sockets, e.baseline_ns),
        Fact::new(
            "growth_per_min",
            (rate * 10.0).round() / 10.0,
            Unit::SocketsPerMin,
            e.baseline_ns,
        ),
        Fact::seconds("growth_span_s", span, e.baseline_ns),
        Fact::count("opened", opened, Unit::Connections, e.baseline_ns),
        Fact::count("closed", closed, Unit::Connections, e.baseline_ns),
        Fact::seconds("oldest_age_s", oldest, now),
        Fact::count("open_older_than_1m", s.older_than, Unit::Sockets, now),
        Fact::flag("accepted", f.key.direction == Direction::Inbound, now),
    ];
    let mostly_idle = match idle {
        Some(i) if i.sockets > 0 => {
            facts.push(Fact::count("idle_sockets", i.idle, Unit::Sockets, now));
            facts.push(Fact::count(
                "described_sockets",
                i.sockets,
                Unit::Sockets,
                now,
            ));
            facts.push(Fact::seconds(
                "idle_after_s",
                ns(cx.config.leak.idle_after_s),
                now,
            ));
            facts.push(Fact::seconds(
                "idle_median_s",
                u64::from(i.median_ms) * 1_000_000,
                now,
            ));
            facts.push(Fact::seconds(
                "idle_longest_s",
                u64::from(i.longest_ms) * 1_000_000,
                now,
            ));
            i.idle * 2 >= i.sockets
        }
        _ => false,
    };
    owner_facts(cx, s, now, &mut facts);
    // The server's side of it, when the server is on this node: the
    // destination holds these connections (it is evidence, not a cause).
    for p in s.peers.iter().filter(|p| p.cgroup_id != 0) {
        facts.push(
            Fact::count("held_at_server", p.sockets, Unit::Sockets, now)
                .about(About::Workload(p.cgroup_id)),
        );
    }
    let single_owner = s.owners.len() == 1 && s.other_owners == 0;
    // Growth is the first signal; sockets not being closed, one process
    // holding them all, and their being idle corroborate it.
    let few_closes = closed.saturating_mul(10) <= opened;
    let mut signals = vec!["growth"];
    for (yes, name) in [
        (few_closes, "few_closes"),
        (single_owner, "single_owner"),
        (mostly_idle, "mostly_idle"),
    ] {
        if yes {
            signals.push(name);
        }
    }
    let severity = if growth >= CRITICAL_GROWTH {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Verdict {
        kind: Kind::ConnectionLeak,
        key_subject: f.key.cgroup_id,
        subject: f.key.cgroup_id,
        destination: Some(Destination::of_flow(&f.key)),
        since_ns: e.baseline_ns,
        ended_ns: None,
        severity,
        signals,
        facts,
        affected: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::config::LeakConfig;

    const SEC: u64 = 1_000_000_000;

    fn s(t: u64, open: u64) -> TcpSample {
        TcpSample {
            t_ns: t * SEC,
            open,
            opened: open,
            ..Default::default()
        }
    }

    fn run(points: &[(u64, u64)]) -> Option<Episode> {
        let samples: Vec<TcpSample> = points.iter().map(|&(t, o)| s(t, o)).collect();
        let (last, rest) = samples.split_last().unwrap();
        start(&LeakConfig::default(), last.t_ns, last, rest.iter())
    }

    #[test]
    fn steady_growth_is_a_leak() {
        // One more socket a second, sampled every 5 s, for 25 s.
        let pts: Vec<(u64, u64)> = (0..=5).map(|i| (i * 5, 3 + i * 5)).collect();
        let e = run(&pts).expect("a leak");
        assert_eq!((e.baseline, e.baseline_ns), (3, 0));
    }

    #[test]
    fn growth_after_a_flat_stretch_dates_from_its_start() {
        // A pool of 3 used for 10 s, then one more socket a second.
        let mut pts = vec![(0, 3), (5, 3), (10, 3)];
        pts.extend((1..=5).map(|i| (10 + i * 5, 3 + i * 5)));
        let e = run(&pts).expect("a leak");
        assert_eq!((e.baseline, e.baseline_ns), (3, 10 * SEC));
    }

    #[test]
    fn a_pool_that_filled_at_once_is_not() {
        assert!(run(&[(0, 0), (5, 40), (10, 40), (15, 40), (20, 40), (25, 40)]).is_none());
    }

    #[test]
    fn too_short_too_slow_or_too_small_is_not() {
        // 10 s of growth.
        assert!(run(&[(0, 0), (5, 10), (10, 20)]).is_none());
        // 9 sockets in 25 s: below min_growth.
        assert!(run(&[(0, 0), (5, 2), (10, 4), (15, 6), (20, 8), (25, 9)]).is_none());
        // Churn: up and down.
        assert!(run(&[(0, 5), (5, 30), (10, 4), (15, 31), (20, 5), (25, 16)]).is_none());
    }
}
