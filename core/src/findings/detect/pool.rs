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
        config::ns, series::Series, About, Destination, Fact, Kind, Severity, Unit, Verdict,
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
    ) -> Vec<Verdict> {
        let mut out = clients(cx, flows, series, &mut self.probe_failures);
        out.extend(self.servers(cx));
        out
    }

    /// Servers on this node whose namespace counts listen overflows.
    fn servers(&mut self, cx: &mut Context<'_, '_>) -> Vec<Verdict> {
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
            out.push(server_verdict(
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

/// Facts about a listener's accept queue (waiting, limit, about the
/// listening process); true when it is full.
fn queue_facts(
    cx: &mut Context<'_, '_>,
    l: &Listener,
    probe_failures: &mut u64,
) -> Option<(Vec<Fact>, bool)> {
    match cx.probe.accept_queue(l.tgid, l.port) {
        Ok(Some((waiting, limit))) => {
            let now = cx.now();
            let who = About::Process {
                pid: l.tgid,
                comm: Some(l.comm.clone()),
            };
            Some((
                vec![
                    Fact::count(
                        "accept_queue_waiting",
                        u64::from(waiting),
                        Unit::Connections,
                        now,
                    )
                    .about(who.clone()),
                    Fact::count(
                        "accept_queue_limit",
                        u64::from(limit),
                        Unit::Connections,
                        now,
                    )
                    .about(who),
                    Fact::count("accept_queue_port", u64::from(l.port), Unit::Ports, now),
                ],
                waiting > limit,
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

fn server_verdict(
    cx: &mut Context<'_, '_>,
    ls: &[&Listener],
    listeners: &Listeners,
    rose: u64,
    from_ns: u64,
    since: u64,
    probe_failures: &mut u64,
) -> Verdict {
    let now = cx.now();
    // The listener whose queue is full now names it; else the first.
    let mut chosen = ls[0];
    let mut queue = None;
    for l in ls {
        if let Some((facts, full)) = queue_facts(cx, l, probe_failures) {
            if full || queue.is_none() {
                chosen = l;
                queue = Some((facts, full));
            }
            if full {
                break;
            }
        }
    }
    // A wildcard listener is reached on its namespace's address.
    let addr = if chosen.addr.is_unspecified() {
        listeners
            .netns_addr(chosen.netns_cookie)
            .unwrap_or(chosen.addr)
    } else {
        chosen.addr
    };
    let mut facts = vec![
        Fact::count("listen_overflows", rose, Unit::Connections, since),
        Fact::seconds("overflow_window_s", now.saturating_sub(from_ns), from_ns),
        Fact::count("listener_pid", u64::from(chosen.tgid), Unit::Pid, now).about(About::Process {
            pid: chosen.tgid,
            comm: Some(chosen.comm.clone()),
        }),
    ];
    let mut signals = vec!["listen_overflows"];
    if let Some((q, full)) = queue {
        facts.extend(q);
        if full {
            signals.push("accept_queue_full");
        }
    }
    Verdict {
        kind: Kind::PoolExhaustion,
        key_subject: chosen.cgroup_id,
        subject: chosen.cgroup_id,
        destination: Some(Destination {
            addr,
            port: chosen.port,
            dns_name: None,
        }),
        since_ns: since,
        ended_ns: None,
        severity: Severity::Critical,
        signals,
        facts,
        affected: Vec::new(),
    }
}

/// Clients on this node whose connects to a destination stall at a ceiling.
fn clients(
    cx: &mut Context<'_, '_>,
    flows: &[FlowNow<'_>],
    series: &Series<FlowKey, TcpSample>,
    probe_failures: &mut u64,
) -> Vec<Verdict> {
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
        let oldest = (f.counts().connecting > 0)
            .then(|| f.sockets().oldest_connecting_since_ns)
            .flatten();
        let waiting_now = match oldest {
            Some(t) if now.saturating_sub(t) >= slow_ns => f.counts().connecting,
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
            .and_then(|l| queue_facts(cx, l, probe_failures));
        out.push(client_verdict(
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

fn client_verdict(
    cx: &mut Context<'_, '_>,
    f: &FlowNow<'_>,
    server: Option<(Vec<Fact>, bool)>,
    t: Trouble,
) -> Verdict {
    let now = cx.now();
    let failed = t.timed_out + t.aborted;
    let mut facts = vec![
        Fact::count("established", f.sample.established(), Unit::Sockets, now),
        Fact::count("ceiling", t.ceiling, Unit::Sockets, t.flat_since),
        Fact::count("connects_failed", failed, Unit::Connects, t.since),
        Fact::count("timed_out", t.timed_out, Unit::Connects, t.since),
        Fact::count("aborted", t.aborted, Unit::Connects, t.since),
        Fact::count("slow_connects", t.slow, Unit::Connects, t.since),
        Fact::seconds("slow_connect_s", t.slow_ns, now),
        Fact::seconds("window_s", t.window_ns, t.since),
    ];
    if t.waiting_now > 0 {
        facts.push(Fact::count(
            "connects_waiting",
            t.waiting_now,
            Unit::Connects,
            now,
        ));
    }
    if t.retransmits > 0 {
        facts.push(Fact::count(
            "syn_retransmits",
            t.retransmits,
            Unit::Retransmits,
            t.since,
        ));
    }
    if let Some(p) = f.stats.latency.percentiles() {
        facts.push(Fact::seconds("connect_p50_s", p.p50_ns, now));
        facts.push(Fact::seconds("connect_p99_s", p.p99_ns, now));
        facts.push(Fact::seconds("connect_max_s", p.max_ns, now));
    }
    let mut signals = vec!["ceiling", "failed_or_slow"];
    if t.retransmits > 0 {
        signals.push("syn_retransmits");
    }
    if let Some((q, full)) = server {
        facts.extend(q);
        if full {
            signals.push("server_queue_full");
        }
    }
    let severity = if failed >= CRITICAL_FAILURES {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Verdict {
        kind: Kind::PoolExhaustion,
        key_subject: f.key.cgroup_id,
        subject: f.key.cgroup_id,
        destination: Some(Destination::of_flow(&f.key)),
        since_ns: t.since,
        ended_ns: None,
        severity,
        signals,
        facts,
        affected: Vec::new(),
    }
}
