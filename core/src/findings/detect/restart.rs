//! Dependency restart: connects to one destination refused (nothing
//! listening) from one or more containers, explained, when the destination
//! runs on this node, by its listener stopping and listening again. The
//! gap is measured from the listener's own stop and start when we saw them,
//! else from the clients' first refusal to their next success.

use std::net::IpAddr;

use ahash::HashMap;

use super::{dedup, Context, FlowNow};
use crate::{
    aggregate::{
        flows::Direction,
        listeners::{Change, Listener, ListenerChange, Listeners},
        outage::Outage,
    },
    findings::{config::ns, About, Destination, Fact, Kind, Severity, Unit, Verdict},
};

/// Outages that ended longer ago than this are history, not findings.
const RECENT_NS: u64 = 60_000_000_000;
/// A listener that stopped up to this long before the first refusal can
/// explain it (clients notice a dead dependency at their next connect).
const STOP_BEFORE_NS: u64 = 120_000_000_000;

/// The clients' outages towards one destination, together.
#[derive(Default)]
struct Group {
    first_failure_ns: u64,
    last_failure_ns: u64,
    failures: u64,
    refused: u64,
    /// The latest recovery, when every client has recovered.
    recovered_ns: Option<u64>,
    /// Some client had connected to it before its failures began.
    accepted_before: bool,
    all_recovered: bool,
    clients: Vec<u64>,
}

pub fn detect(cx: &mut Context<'_, '_>, flows: &[FlowNow<'_>]) -> Vec<Verdict> {
    let now = cx.now();
    let mut groups: HashMap<(IpAddr, u16), Group> = HashMap::default();
    for f in flows {
        if f.key.direction != Direction::Outbound {
            continue;
        }
        let Some(o) = f.stats.outage.latest() else {
            continue;
        };
        if o.refused == 0
            || o.recovered_ns
                .is_some_and(|r| now.saturating_sub(r) > RECENT_NS)
        {
            continue;
        }
        let g = groups.entry((f.key.remote, f.key.port)).or_insert(Group {
            first_failure_ns: u64::MAX,
            all_recovered: true,
            ..Group::default()
        });
        add(g, o, f.key.cgroup_id);
    }
    let mut out = Vec::new();
    for ((addr, port), g) in groups {
        if g.refused < cx.config.restart.min_refused {
            continue;
        }
        let listener = find_listener(&cx.inputs.tcp.listeners, addr, port, g.first_failure_ns);
        // A restart needs something that was up: a listener seen stopping,
        // or a destination these clients had connected to. Refusals from a
        // port that never accepted (a health check of a closed port, a
        // typo) stay what they are, failed connects in the flows.
        if listener.is_none() && !g.accepted_before {
            continue;
        }
        out.push(verdict(cx, addr, port, &g, listener));
    }
    out
}

fn add(g: &mut Group, o: &Outage, client: u64) {
    g.first_failure_ns = g.first_failure_ns.min(o.first_failure_ns);
    g.last_failure_ns = g.last_failure_ns.max(o.last_failure_ns);
    g.failures += o.failures;
    g.refused += o.refused;
    g.accepted_before |= o.accepted_before;
    match o.recovered_ns {
        Some(r) => g.recovered_ns = Some(g.recovered_ns.unwrap_or(0).max(r)),
        None => g.all_recovered = false,
    }
    g.clients.push(client);
}

/// The listener's side of it: when it stopped and, if it did, when it
/// listened again.
struct ListenerGap<'a> {
    stopped: &'a ListenerChange,
    started: Option<&'a ListenerChange>,
    /// Matched by address (not only by port).
    by_address: bool,
}

fn owns(l: &Listener, listeners: &Listeners, addr: IpAddr) -> bool {
    l.addr == addr || (l.addr.is_unspecified() && listeners.netns_has(l.netns_cookie, addr))
}

fn find_listener(
    listeners: &Listeners,
    addr: IpAddr,
    port: u16,
    first_failure_ns: u64,
) -> Option<ListenerGap<'_>> {
    let stops: Vec<&ListenerChange> = listeners
        .history
        .iter()
        .filter(|c| {
            c.change == Change::Stopped
                && c.listener.port == port
                && c.at_ns <= first_failure_ns
                && c.at_ns + STOP_BEFORE_NS >= first_failure_ns
        })
        .collect();
    let (stopped, by_address) = match stops
        .iter()
        .rev()
        .find(|c| owns(&c.listener, listeners, addr))
    {
        Some(c) => (*c, true),
        // One listener on that port stopped: most likely it, but say so.
        None if stops.len() == 1 => (stops[0], false),
        None => return None,
    };
    let same_place = |l: &Listener| {
        if stopped.listener.netns_cookie != 0 {
            l.netns_cookie == stopped.listener.netns_cookie
        } else {
            l.addr == stopped.listener.addr
        }
    };
    let started = listeners.history.iter().find(|c| {
        c.change == Change::Started
            && c.at_ns >= stopped.at_ns
            && c.listener.port == port
            && same_place(&c.listener)
    });
    Some(ListenerGap {
        stopped,
        started,
        by_address,
    })
}

fn verdict(
    cx: &mut Context<'_, '_>,
    addr: IpAddr,
    port: u16,
    g: &Group,
    listener: Option<ListenerGap<'_>>,
) -> Verdict {
    let now = cx.now();
    let listener_seen = listener.is_some();
    let clients = dedup(g.clients.iter().copied());
    let recovered = g.all_recovered.then_some(g.recovered_ns).flatten();
    let mut facts = Vec::new();
    let mut signals = vec!["refused"];
    let (since, ended, subject) = match &listener {
        Some(l) => {
            let stopped_at = l.stopped.at_ns;
            let ls = &l.stopped.listener;
            let who = About::Process {
                pid: ls.tgid,
                comm: Some(ls.comm.clone()),
            };
            signals.push("listener_stopped");
            facts.push(
                Fact::count("listener_pid", u64::from(ls.tgid), Unit::Pid, stopped_at)
                    .about(who.clone()),
            );
            let ended = match l.started {
                Some(s) => {
                    signals.push("listener_started");
                    facts.push(
                        Fact::seconds("gap_s", s.at_ns.saturating_sub(stopped_at), stopped_at)
                            .about(who),
                    );
                    Some(s.at_ns)
                }
                None => {
                    facts.push(
                        Fact::seconds("down_s", now.saturating_sub(stopped_at), stopped_at)
                            .about(who),
                    );
                    None
                }
            };
            if !l.by_address {
                facts.push(Fact::flag("matched_by_port_only", true, stopped_at));
            }
            // Subject: the dependency, in its new container if it has one.
            let subject = l.started.map_or(ls.cgroup_id, |s| s.listener.cgroup_id);
            (stopped_at, ended, subject)
        }
        None => {
            let quiet =
                now.saturating_sub(g.last_failure_ns) >= ns(cx.config.restart.quiet_after_s);
            let ended = recovered.or(quiet.then_some(g.last_failure_ns));
            if recovered.is_some() {
                signals.push("connects_recovered");
            }
            (g.first_failure_ns, ended, clients[0])
        }
    };
    facts.push(Fact::count(
        "refused",
        g.refused,
        Unit::Connects,
        g.first_failure_ns,
    ));
    facts.push(Fact::count(
        "connects_failed",
        g.failures,
        Unit::Connects,
        g.first_failure_ns,
    ));
    facts.push(Fact::seconds(
        "failing_for_s",
        g.last_failure_ns.saturating_sub(g.first_failure_ns),
        g.first_failure_ns,
    ));
    if let Some(r) = recovered {
        facts.push(Fact::seconds(
            "recovered_after_s",
            r.saturating_sub(g.first_failure_ns),
            r,
        ));
    }
    facts.push(Fact::count(
        "clients",
        clients.len() as u64,
        Unit::Workloads,
        g.first_failure_ns,
    ));
    facts.push(Fact::seconds(
        "not_accepting_s",
        ended.unwrap_or(now).saturating_sub(since),
        since,
    ));
    Verdict {
        kind: Kind::DependencyRestart,
        // One finding per destination, whoever felt it.
        key_subject: 0,
        subject,
        destination: Some(Destination {
            addr,
            port,
            dns_name: None,
        }),
        since_ns: since,
        ended_ns: ended,
        // Critical only while a dependency seen stopping on this node is
        // still down; what its clients alone report is a warning.
        severity: if ended.is_none() && listener_seen {
            Severity::Critical
        } else {
            Severity::Warning
        },
        signals,
        facts,
        affected: clients,
    }
}
