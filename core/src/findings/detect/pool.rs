//! Pool exhaustion: open connections to a destination stay at a ceiling
//! while further connects fail or wait. When a server's accept queue is
//! full, the kernel drops new SYNs: clients see SYN retransmits, slow
//! connects and timeouts while their established count stops growing.
//!
//! Seen from both sides: a client on this node whose connects stall (with
//! the server's queue as evidence when the server is here too), and a
//! server on this node whose namespace counts listen overflows, whoever its
//! clients are.

use std::{collections::VecDeque, net::IpAddr};

use ahash::HashMap;

use super::{sample_at, Context, FlowNow, TcpSample};
use crate::{
    aggregate::{
        cause::FailureCause,
        flows::Direction,
        flows::FlowKey,
        listeners::{Listener, Listeners},
    },
    findings::{
        config::ns, series::Series, text, Candidate, Destination, Evidence, Key, Kind, Severity,
    },
};

/// Listen overflow counters are read at most this often per namespace.
const OVERFLOWS_EVERY_NS: u64 = 5_000_000_000;

/// The count must not have grown over this long to be a ceiling.
const PLATEAU_NS: u64 = 10_000_000_000;
const CRITICAL_FAILURES: u64 = 10;

/// State of the pool detector: listen overflow counts per namespace.
#[derive(Debug, Default)]
pub struct Pools {
    /// (time, ListenOverflows) per listener namespace, oldest first.
    overflows: HashMap<u64, VecDeque<(u64, u64)>>,
    last_read_ns: u64,
    /// Kernel questions that failed (evidence missing, or a namespace's
    /// overflows not read).
    pub probe_failures: u64,
}

impl Pools {
    pub fn detect(
        &mut self,
        cx: &mut Context<'_, '_>,
        flows: &[FlowNow<'_>],
        series: &Series<FlowKey, TcpSample>,
    ) -> Vec<Candidate> {
        let mut out = clients(cx, flows, series, &mut self.probe_failures);
        out.extend(self.servers(cx));
        out
    }

    /// Servers on this node whose namespace counts listen overflows.
    fn servers(&mut self, cx: &mut Context<'_, '_>) -> Vec<Candidate> {
        let now = cx.now();
        let listeners = &cx.inputs.tcp.listeners;
        let probe = &mut *cx.probe;
        // One listener per namespace names it (its pid's /proc/<pid>/net).
        let mut by_netns: HashMap<u64, Vec<&Listener>> = HashMap::default();
        for l in listeners.active.values().filter(|l| l.netns_cookie != 0) {
            by_netns.entry(l.netns_cookie).or_default().push(l);
        }
        self.overflows
            .retain(|netns, _| by_netns.contains_key(netns));
        if now.saturating_sub(self.last_read_ns) >= OVERFLOWS_EVERY_NS {
            self.last_read_ns = now;
            let keep = ns(cx.config.pool.window_s) + OVERFLOWS_EVERY_NS;
            for (netns, ls) in &by_netns {
                match probe.listen_overflows(ls[0].tgid) {
                    Ok(overflows) => {
                        let v = self.overflows.entry(*netns).or_default();
                        v.push_back((now, overflows));
                        while v
                            .front()
                            .is_some_and(|(t, _)| now.saturating_sub(*t) > keep)
                        {
                            v.pop_front();
                        }
                    }
                    Err(e) => {
                        self.probe_failures += 1;
                        log::debug!("listen overflows of pid {}: {e}", ls[0].tgid);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (netns, samples) in &self.overflows {
            let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
                continue;
            };
            let rose = last.1.saturating_sub(first.1);
            if rose < cx.config.pool.min_failed_or_slow {
                continue;
            }
            let since = samples
                .iter()
                .find(|(_, n)| *n > first.1)
                .map_or(now, |(t, _)| *t);
            let ls = &by_netns[netns];
            out.push(server_candidate(
                cx,
                ls,
                listeners,
                rose,
                first.0,
                since,
                &mut self.probe_failures,
            ));
        }
        out
    }
}

/// The listener of `addr`:`port` on this node, if any.
fn listener_of(listeners: &Listeners, addr: IpAddr, port: u16) -> Option<&Listener> {
    listeners.active.values().find(|l| {
        l.port == port
            && (l.addr == addr
                || (l.addr.is_unspecified() && listeners.netns_has(l.netns_cookie, addr)))
    })
}

/// Evidence about a listener's accept queue; true when it is full.
fn queue_fact(
    cx: &mut Context<'_, '_>,
    l: &Listener,
    probe_failures: &mut u64,
) -> Option<(Evidence, bool)> {
    match cx.probe.accept_queue(l.tgid, l.port) {
        Ok(Some((waiting, limit))) => {
            let full = waiting > limit;
            let label = cx.label(l.cgroup_id);
            Some((
                Evidence::new(
                    format!(
                        "accept queue of {} (pid {}, {label}) on port {}: {waiting} waiting, limit {limit}{}",
                        l.comm,
                        l.tgid,
                        l.port,
                        if full { ": full" } else { "" }
                    ),
                    f64::from(waiting),
                    "connections",
                    cx.now(),
                ),
                full,
            ))
        }
        Ok(None) => None,
        Err(e) => {
            *probe_failures += 1;
            log::debug!("accept queue of pid {}: {e}", l.tgid);
            None
        }
    }
}

fn server_candidate(
    cx: &mut Context<'_, '_>,
    ls: &[&Listener],
    listeners: &Listeners,
    rose: u64,
    from_ns: u64,
    since: u64,
    probe_failures: &mut u64,
) -> Candidate {
    let now = cx.now();
    // The listener whose queue is full now names it; else the first.
    let mut chosen = ls[0];
    let mut queue = None;
    for l in ls {
        if let Some((ev, full)) = queue_fact(cx, l, probe_failures) {
            if full || queue.is_none() {
                chosen = l;
                queue = Some((ev, full));
            }
            if full {
                break;
            }
        }
    }
    let label = cx.label(chosen.cgroup_id);
    // A wildcard listener is reached on its namespace's address.
    let addr = if chosen.addr.is_unspecified() {
        listeners
            .netns_addr(chosen.netns_cookie)
            .unwrap_or(chosen.addr)
    } else {
        chosen.addr
    };
    let dest = Destination {
        addr,
        port: chosen.port,
        dns_name: None,
    };
    let mut evidence = vec![Evidence::new(
        format!(
            "{rose} connections dropped by a full accept queue (ListenOverflows) in {label}'s network namespace in the last {}",
            text::span(now.saturating_sub(from_ns))
        ),
        rose as f64,
        "connections",
        since,
    )];
    let mut signals = 1;
    if let Some((ev, full)) = queue {
        evidence.push(ev);
        signals += u32::from(full);
    }
    Candidate {
        key: Key {
            kind: Kind::PoolExhaustion,
            subject: chosen.cgroup_id,
            destination: Some(dest),
        },
        subject: chosen.cgroup_id,
        since_ns: since,
        ended_ns: None,
        severity: Severity::Critical,
        signals,
        summary: format!(
            "{label} ({}, pid {}) cannot accept connections on port {} as fast as they arrive: {rose} dropped",
            chosen.comm, chosen.tgid, chosen.port
        ),
        evidence,
        next_step: format!(
            "{label} accepts too slowly or its backlog is too small: check its worker/thread pool, what blocks its accept loop, and its listen backlog (net.core.somaxconn)"
        ),
        affected: Vec::new(),
    }
}

/// Clients on this node whose connects to a destination stall at a ceiling.
fn clients(
    cx: &mut Context<'_, '_>,
    flows: &[FlowNow<'_>],
    series: &Series<FlowKey, TcpSample>,
    probe_failures: &mut u64,
) -> Vec<Candidate> {
    let cfg = cx.config.pool.clone();
    let now = cx.now();
    let slow_ns = (cfg.slow_connect_ms * 1e6) as u64;
    let mut out = Vec::new();
    for f in flows {
        if f.key.direction != Direction::Outbound || f.sample.established() < cfg.min_open {
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
            .map(|s| s.established())
            .max()
            .unwrap_or(0)
            .max(f.sample.established());
        if f.sample.established() > before.established() || f.sample.established() < ceiling {
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
        let server = listener_of(&cx.inputs.tcp.listeners, f.key.remote, f.key.port)
            .and_then(|l| queue_fact(cx, l, probe_failures));
        out.push(candidate(
            cx,
            f,
            server,
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

fn candidate(
    cx: &mut Context<'_, '_>,
    f: &FlowNow<'_>,
    server: Option<(Evidence, bool)>,
    t: Trouble,
) -> Candidate {
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
                f.sample.established(),
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
    let mut signals = 2 + u32::from(t.retransmits > 0);
    if let Some((ev, full)) = server {
        evidence.push(ev);
        signals += u32::from(full);
    }
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
            f.sample.established(),
            failed + t.slow + t.waiting_now
        ),
        evidence,
        next_step: format!(
            "check {dest}'s connection limit and accept backlog (is it accepting? ss -lnt shows its queue), and whether {label} returns connections to its pool"
        ),
        affected: Vec::new(),
    }
}
