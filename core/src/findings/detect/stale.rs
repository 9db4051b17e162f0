//! Stale connections at a server: connections it still holds whose client
//! is gone without a FIN. The client's socket on this node closed long ago
//! while the server's is still established, or the client's pod (its
//! cgroup) no longer exists. A client restarted this way leaves its whole
//! pool behind; restarts multiply it until the server's limit (the
//! incident that had no name for two hours).
//!
//! One finding per listener (server workload and port), with the clients
//! the connections came from, their restarts, and how many each left.

use ahash::{HashMap, HashSet};

use super::{Context, FlowNow};
use crate::{
    aggregate::flows::Direction,
    findings::{config::ns, About, Destination, Fact, Kind, Severity, Unit, Verdict},
    workload::instances::Identity,
};

/// Client instances named in the evidence.
const TOP_CLIENTS: usize = 5;
/// Stale connections past this share of what the server holds, and this
/// many, are critical: most of its capacity is spent on the dead.
const CRITICAL_SHARE: f64 = 0.5;
const CRITICAL_STALE: u64 = 20;

/// State kept between evaluations.
#[derive(Debug, Default)]
pub struct Stale {
    /// Client cgroups first seen gone, and when.
    gone_since: HashMap<u64, u64>,
}

/// One dead client instance's connections at one listener.
struct Dead {
    cgroup_id: u64,
    sockets: u64,
    since_ns: u64,
}

/// What one listener holds.
#[derive(Default)]
struct Listener {
    held: u64,
    dead: Vec<Dead>,
}

impl Stale {
    pub fn detect(&mut self, cx: &mut Context<'_, '_>, flows: &[FlowNow<'_>]) -> Vec<Verdict> {
        let cfg = cx.config.stale.clone();
        let now = cx.now();
        let mut alive: HashMap<u64, bool> = HashMap::default();
        let mut seen_gone = HashSet::default();
        let mut listeners: HashMap<(u64, u16), Listener> = HashMap::default();
        for f in flows
            .iter()
            .filter(|f| f.key.direction == Direction::Inbound)
        {
            let l = listeners.entry((f.key.cgroup_id, f.key.port)).or_default();
            l.held += f.counts().established;
            // Only linked sockets have a peer here.
            if f.counts().linked == 0 {
                continue;
            }
            for p in &f.sockets().peers {
                let gone = !*alive
                    .entry(p.cgroup_id)
                    .or_insert_with(|| cx.probe.cgroup_alive(p.cgroup_id) != Some(false));
                let stale = if gone { p.sockets } else { p.peer_closed };
                if stale == 0 {
                    continue;
                }
                let since = if gone {
                    seen_gone.insert(p.cgroup_id);
                    *self.gone_since.entry(p.cgroup_id).or_insert(now)
                } else {
                    now
                };
                l.dead.push(Dead {
                    cgroup_id: p.cgroup_id,
                    sockets: stale,
                    since_ns: since,
                });
            }
        }
        self.gone_since.retain(|id, _| seen_gone.contains(id));
        let mut out = Vec::new();
        for ((server, port), mut l) in listeners {
            let stale: u64 = l.dead.iter().map(|d| d.sockets).sum();
            if stale < cfg.min_stale {
                continue;
            }
            l.dead.sort_by(|a, b| {
                b.sockets
                    .cmp(&a.sockets)
                    .then(a.cgroup_id.cmp(&b.cgroup_id))
            });
            out.push(verdict(
                cx,
                server,
                port,
                &l,
                stale,
                ns(cfg.restart_window_s),
            ));
        }
        out
    }
}

fn verdict(
    cx: &mut Context<'_, '_>,
    server: u64,
    port: u16,
    l: &Listener,
    stale: u64,
    restart_window_ns: u64,
) -> Verdict {
    let now = cx.now();
    let since = l.dead.iter().map(|d| d.since_ns).min().unwrap_or(now);
    let ratio = stale as f64 / l.held.max(stale).max(1) as f64;
    let mut facts = vec![
        Fact::count("stale_connections", stale, Unit::Sockets, since),
        Fact::count("held_connections", l.held.max(stale), Unit::Sockets, now),
        Fact::new(
            "stale_ratio",
            (ratio * 1000.0).round() / 1000.0,
            Unit::Ratio,
            now,
        ),
    ];
    for d in l.dead.iter().take(TOP_CLIENTS) {
        facts.push(
            Fact::count("stale_from", d.sockets, Unit::Sockets, d.since_ns)
                .about(About::Workload(d.cgroup_id)),
        );
    }
    let others: u64 = l.dead.iter().skip(TOP_CLIENTS).map(|d| d.sockets).sum();
    if others > 0 {
        facts.push(Fact::count("stale_from_others", others, Unit::Sockets, now));
    }
    // The clients' restarts: instances of one workload, each leaving its
    // connections here.
    let mut by_identity: HashMap<Identity, (u64, u64)> = HashMap::default();
    let mut affected = Vec::new();
    for d in &l.dead {
        affected.push(d.cgroup_id);
        let w = cx.attributor.workload(d.cgroup_id);
        cx.instances.saw(&w, now);
        if let Some(id) = cx.instances.identity(d.cgroup_id).cloned() {
            let e = by_identity.entry(id).or_default();
            e.0 += 1;
            e.1 += d.sockets;
        }
    }
    let mut restarted = false;
    let mut identities: Vec<(Identity, (u64, u64))> = by_identity.into_iter().collect();
    identities.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    for (id, (instances, sockets)) in identities {
        let restarts = cx
            .instances
            .restarts_since(&id, now.saturating_sub(restart_window_ns))
            .len() as u64;
        // The live instance now, when there is one, felt it too.
        if let Some(current) = cx.instances.of(&id).last() {
            affected.push(current.cgroup_id);
        }
        let about = About::Name(id.label());
        facts.push(
            Fact::count("dead_instances", instances, Unit::Workloads, now).about(about.clone()),
        );
        facts.push(
            Fact::count("client_restarts", restarts, Unit::Restarts, now).about(about.clone()),
        );
        facts.push(
            Fact::new(
                "left_per_instance",
                (sockets as f64 / instances as f64 * 10.0).round() / 10.0,
                Unit::Sockets,
                now,
            )
            .about(about),
        );
        restarted |= restarts > 0;
    }
    facts.push(Fact::seconds("restart_window_s", restart_window_ns, now));
    facts.push(Fact::seconds(
        "oldest_stale_s",
        now.saturating_sub(since),
        since,
    ));
    let mut signals = vec!["peers_gone"];
    if restarted {
        signals.push("restarts");
    }
    if ratio >= CRITICAL_SHARE {
        signals.push("most_held");
    }
    let severity = if ratio >= CRITICAL_SHARE && stale >= CRITICAL_STALE {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Verdict {
        kind: Kind::StaleConnections,
        key_subject: server,
        subject: server,
        destination: Some(Destination::endpoint(listener_addr(cx, server, port), port)),
        since_ns: since,
        ended_ns: None,
        severity,
        signals,
        facts,
        affected: super::dedup(affected),
    }
}

/// The address clients reach the listener on: its own, or for a wildcard
/// one the address seen on its accepted connections.
pub fn listener_addr(cx: &Context<'_, '_>, server: u64, port: u16) -> std::net::IpAddr {
    let listeners = &cx.inputs.tcp.listeners;
    let known = listeners
        .active
        .values()
        .find(|x| x.cgroup_id == server && x.port == port);
    match known {
        Some(x) if !x.addr.is_unspecified() => x.addr,
        Some(x) => listeners.netns_addr(x.netns_cookie).unwrap_or(x.addr),
        None => std::net::IpAddr::from([0u8, 0, 0, 0]),
    }
}
