//! Pool exhaustion: open connections to a destination stay at a ceiling
//! while further connects fail or wait. When a server's accept queue is
//! full, the kernel drops new SYNs: clients see SYN retransmits, slow
//! connects and timeouts while their established count stops growing.

use super::{sample_at, Context, FlowNow, TcpSample};
use crate::{
    aggregate::{cause::FailureCause, flows::Direction, flows::FlowKey},
    findings::{
        config::ns, series::Series, text, Candidate, Destination, Evidence, Key, Kind, Severity,
    },
};

/// The count must not have grown over this long to be a ceiling.
const PLATEAU_NS: u64 = 10_000_000_000;
const CRITICAL_FAILURES: u64 = 10;

pub fn detect(
    cx: &mut Context<'_, '_>,
    flows: &[FlowNow<'_>],
    series: &Series<FlowKey, TcpSample>,
) -> Vec<Candidate> {
    let cfg = cx.config.pool.clone();
    let now = cx.now();
    let slow_ns = (cfg.slow_connect_ms * 1e6) as u64;
    let mut out = Vec::new();
    for f in flows {
        if f.key.direction != Direction::Outbound || f.sample.open < cfg.min_open {
            continue;
        }
        let samples = series.samples(&f.key);
        let Some(start) = sample_at(samples.clone(), now.saturating_sub(ns(cfg.window_s))) else {
            continue;
        };
        // A ceiling: no growth over the last PLATEAU_NS (and a history that
        // long), and no sample in the window above the count now.
        let Some(before) = samples.clone().rev().find(|s| s.t_ns + PLATEAU_NS <= now) else {
            continue;
        };
        let ceiling = samples
            .clone()
            .filter(|s| s.t_ns >= start.t_ns)
            .map(|s| s.open)
            .max()
            .unwrap_or(0)
            .max(f.sample.open);
        if f.sample.open > before.open || f.sample.open < ceiling {
            continue;
        }
        let d = |c: FailureCause| f.sample.failed_by(c).saturating_sub(start.failed_by(c));
        let timed_out = d(FailureCause::TimedOut);
        let aborted = d(FailureCause::Aborted);
        let slow = f.sample.slow.saturating_sub(start.slow);
        // Connects in progress that have already waited that long.
        let waiting_now = match f.sockets.oldest_connecting_since_ns {
            Some(t) if now.saturating_sub(t) >= slow_ns => f.sockets.connecting,
            _ => 0,
        };
        let trouble = timed_out + aborted + slow + waiting_now;

        if trouble < cfg.min_failed_or_slow {
            continue;
        }
        let retransmits = f
            .sample
            .syn_retransmits
            .saturating_sub(start.syn_retransmits);
        // When the trouble began: the first sample in the window that had
        // more of it than the window's start.
        let troubled = |s: &TcpSample| {
            s.failed_by(FailureCause::TimedOut) + s.failed_by(FailureCause::Aborted) + s.slow
                > start.failed_by(FailureCause::TimedOut)
                    + start.failed_by(FailureCause::Aborted)
                    + start.slow
        };
        let since = samples
            .clone()
            .filter(|s| s.t_ns >= start.t_ns)
            .find(|s| troubled(s))
            .map_or(now, |s| s.t_ns);
        out.push(candidate(
            cx,
            f,
            Trouble {
                ceiling,
                flat_since: before.t_ns,
                timed_out,
                aborted,
                slow,
                waiting_now,
                retransmits,
                since,
                window_ns: now.saturating_sub(start.t_ns),
                slow_ns,
            },
        ));
    }
    out
}

struct Trouble {
    ceiling: u64,
    flat_since: u64,
    timed_out: u64,
    aborted: u64,
    slow: u64,
    waiting_now: u64,
    retransmits: u64,
    since: u64,
    window_ns: u64,
    slow_ns: u64,
}

fn candidate(cx: &mut Context<'_, '_>, f: &FlowNow<'_>, t: Trouble) -> Candidate {
    let now = cx.now();
    let dest = Destination {
        addr: f.key.remote,
        port: f.key.port,
        dns_name: None,
    };
    let label = cx.label(f.key.cgroup_id);
    let failed = t.timed_out + t.aborted;
    let mut evidence = vec![
        Evidence::new(
            format!(
                "{} connections open to {dest}, flat at that ceiling since {}",
                f.sample.open,
                text::clock_time(t.flat_since)
            ),
            t.ceiling as f64,
            "sockets",
            t.flat_since,
        ),
        Evidence::new(
            format!(
                "{failed} connects failed in the last {} ({} timed out, {} given up by the application){}",
                text::span(t.window_ns),
                t.timed_out,
                t.aborted,
                if t.slow > 0 {
                    format!(" and {} took longer than {}", t.slow, text::span(t.slow_ns))
                } else {
                    String::new()
                }
            ),
            (failed + t.slow) as f64,
            "connects",
            t.since,
        ),
    ];
    if t.waiting_now > 0 {
        evidence.push(Evidence::new(
            format!("{} connects waiting for an answer now", t.waiting_now),
            t.waiting_now as f64,
            "connects",
            now,
        ));
    }
    if t.retransmits > 0 {
        evidence.push(Evidence::new(
            format!(
                "{} SYN retransmissions: the server is dropping new connections",
                t.retransmits
            ),
            t.retransmits as f64,
            "retransmits",
            t.since,
        ));
    }
    if let Some(p) = f.stats.latency.percentiles() {
        evidence.push(Evidence::new(
            format!(
                "connect latency p50 {} p99 {} max {}",
                text::span(p.p50_ns),
                text::span(p.p99_ns),
                text::span(p.max_ns)
            ),
            text::secs(p.p99_ns),
            "s",
            now,
        ));
    }
    let signals = 2 + u32::from(t.retransmits > 0);
    let severity = if failed >= CRITICAL_FAILURES {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Candidate {
        key: Key {
            kind: Kind::PoolExhaustion,
            subject: f.key.cgroup_id,
            destination: Some(dest.clone()),
        },
        subject: f.key.cgroup_id,
        since_ns: t.since,
        ended_ns: None,
        severity,
        signals,
        summary: format!(
            "{dest} accepts no more connections from {label}: {} open at a ceiling, {} connects failed or waited",
            f.sample.open,
            failed + t.slow + t.waiting_now
        ),
        evidence,
        next_step: format!(
            "check {dest}'s connection limit and accept backlog (is it accepting? ss -lnt shows its queue), and whether {label} returns connections to its pool"
        ),
        affected: Vec::new(),
    }
}
