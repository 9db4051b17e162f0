//! A server at its connection limit: it accepts new connections and closes
//! them itself within moments, having sent a line at most ("-ERR max number
//! of clients reached", "FATAL: sorry, too many clients already"), while
//! the count it holds has flattened. At the TCP level that is a healthy
//! short connection; what tells it apart is that it repeats for clients
//! that used to be served (they hold connections, or their earlier
//! sessions were real ones), or fast.
//!
//! Seen from a client whose server is elsewhere, the same shape (sessions
//! the peer closes at once, again and again) is how a server refuses
//! sessions it will not serve: at its limit, or on bad credentials.

use ahash::HashMap;

use super::{sample_at, stale::listener_addr, Context, FlowNow, TcpSample};
use crate::{
    aggregate::flows::{Direction, FlowKey},
    findings::{
        config::ns,
        series::{Series, Timed},
        About, Destination, Fact, Kind, Severity, Unit, Verdict,
    },
};

/// Clients and holders named in the evidence.
const TOP: usize = 5;

/// A listener's established connections at one time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldSample {
    pub t_ns: u64,
    pub held: u64,
}

impl Timed for HeldSample {
    fn t_ns(&self) -> u64 {
        self.t_ns
    }
}

/// State kept between evaluations: what each listener held over time.
pub struct Limits {
    held: Series<(u64, u16), HeldSample>,
    /// Clients refused by a server elsewhere, since when: the episode
    /// lasts while refusals come and nothing is served.
    refused_clients: HashMap<FlowKey, u64>,
}

impl Limits {
    pub fn new(max_keys: usize, keep_ns: u64) -> Self {
        Self {
            held: Series::new(max_keys, keep_ns),
            refused_clients: HashMap::default(),
        }
    }

    pub fn skipped(&self) -> u64 {
        self.held.skipped
    }

    pub fn detect(
        &mut self,
        cx: &mut Context<'_, '_>,
        flows: &[FlowNow<'_>],
        series: &Series<FlowKey, TcpSample>,
    ) -> Vec<Verdict> {
        let cfg = cx.config.limit.clone();
        let now = cx.now();
        let window_start = now.saturating_sub(ns(cfg.window_s));
        // Per listener: what it holds now, and its clients' refused sessions.
        let mut listeners: HashMap<(u64, u16), Vec<(&FlowNow<'_>, u64)>> = HashMap::default();
        let mut held_now: HashMap<(u64, u16), u64> = HashMap::default();
        let mut out = Vec::new();
        for f in flows {
            let refused = in_window(f, series, window_start, refusals);
            match f.key.direction {
                Direction::Inbound => {
                    let key = (f.key.cgroup_id, f.key.port);
                    *held_now.entry(key).or_default() += f.counts().established;
                    if let Some(n) = counted(f, series, window_start, refused, cfg.window_s) {
                        listeners.entry(key).or_default().push((f, n));
                    }
                }
                Direction::Outbound => {
                    if server_here(f) {
                        continue;
                    }
                    let ongoing =
                        self.refused_clients.get(&f.key).copied().filter(|_| {
                            refused > 0 && served_in_window(f, series, window_start) == 0
                        });
                    let since = match ongoing {
                        Some(since) => Some(since),
                        None if refused >= cfg.min_refused
                            && counted(f, series, window_start, refused, cfg.window_s)
                                .is_some() =>
                        {
                            Some(refusals_since(f, series, window_start))
                        }
                        None => None,
                    };
                    match since {
                        Some(since) => {
                            self.refused_clients.insert(f.key, since);
                            out.push(client_verdict(cx, f, refused, window_start, since));
                        }
                        None => {
                            self.refused_clients.remove(&f.key);
                        }
                    }
                }
            }
        }
        for (key, held) in &held_now {
            self.held.record(
                *key,
                HeldSample {
                    t_ns: now,
                    held: *held,
                },
            );
        }
        self.held.end_round();
        for (key, mut refused) in listeners {
            let total: u64 = refused.iter().map(|(_, n)| n).sum();
            let held = held_now.get(&key).copied().unwrap_or(0);
            if total < cfg.min_refused {
                continue;
            }
            let samples = self.held.samples(&key);
            let Some(level) = plateau(samples.clone(), held, now, ns(cfg.plateau_s)) else {
                continue;
            };
            if level < cfg.min_held {
                continue;
            }
            let flat_since = samples
                .filter(|s| s.held >= level)
                .map(|s| s.t_ns)
                .next()
                .unwrap_or(now);
            refused.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.key.cmp(&b.0.key)));
            out.push(server_verdict(
                cx,
                key,
                level,
                flat_since,
                &refused,
                flows,
                window_start,
            ));
        }
        out
    }
}

/// The count a listener has held flat for `plateau_ns` up to `now`, if it
/// has: a limit is a count reached, not growing and not falling. A server
/// accepts the sessions it refuses before it closes them, so an evaluation
/// can catch a few of them open above the ceiling (more on a slow node,
/// where a refusal takes longer), never below it. So the level is the
/// lowest count since the sample `plateau_ns` back; it must not be above
/// that sample's (growth: a pool still filling), and may be below it only
/// by what that sample could have caught in flight.
fn plateau<'a>(
    samples: impl DoubleEndedIterator<Item = &'a HeldSample> + Clone,
    held: u64,
    now: u64,
    plateau_ns: u64,
) -> Option<u64> {
    let before = samples.clone().rev().find(|s| s.t_ns + plateau_ns <= now)?;
    let level = samples
        .filter(|s| s.t_ns > before.t_ns)
        .map(|s| s.held)
        .min()
        .unwrap_or(held)
        .min(held);
    (level <= before.held && before.held - level <= in_flight(level)).then_some(level)
}

/// How far above its level a full server's count may be seen while it
/// refuses: the refused sessions in flight, two or a tenth of the level.
fn in_flight(level: u64) -> u64 {
    (level / 10).max(2)
}

/// A count of `of` (see [`refusals`], [`terse`]) within the window.
fn in_window(
    f: &FlowNow<'_>,
    series: &Series<FlowKey, TcpSample>,
    window_start: u64,
    of: fn(&FlowNow<'_>, &TcpSample) -> u64,
) -> u64 {
    let start = sample_at(series.samples(&f.key), window_start).map_or(0, |s| of(f, s));
    of(f, &f.sample).saturating_sub(start)
}

/// A flow's refused sessions in the window, `refused` of them closed by
/// the server, if they are refusals rather than its way of working (a
/// health check, an HTTP/1.0 client of a terse server): it holds
/// connections besides (a pool asking for one more), or its sessions turned
/// from served to refused. At a server, where the plateau guards too,
/// refusals that come fast (a client retrying, more than one a second)
/// count as well. Once its sessions have turned, those its client closed
/// first on the terse answer count too: the server's close proves the
/// refusing, the turn says what the others were.
fn counted(
    f: &FlowNow<'_>,
    series: &Series<FlowKey, TcpSample>,
    window_start: u64,
    refused: u64,
    window_s: f64,
) -> Option<u64> {
    if refused == 0 {
        return None;
    }
    if turned_refused(f, series, window_start) {
        return Some(in_window(f, series, window_start, terse).max(refused));
    }
    let fast = f.key.direction == Direction::Inbound && refused as f64 >= window_s;
    (f.counts().established > 0 || fast).then_some(refused)
}

/// Short sessions of the refusing side: closed by us at a server, by the
/// peer at a client.
fn refusals(f: &FlowNow<'_>, s: &TcpSample) -> u64 {
    match f.key.direction {
        Direction::Inbound => s.short_here,
        Direction::Outbound => s.short_by_peer,
    }
}

/// Short sessions that ended on a terse answer from the server, whoever
/// closed them: at a server, its refusals and those its client closed
/// first once it had read the answer (a race the client often wins between
/// pods of one node); at a client, its refusals.
fn terse(f: &FlowNow<'_>, s: &TcpSample) -> u64 {
    match f.key.direction {
        Direction::Inbound => s.short_here + s.answered_by_peer,
        Direction::Outbound => s.short_by_peer,
    }
}

/// Before its refusals began (as far back as the window and the flow's
/// history go) its closed sessions were mostly served; since, most ended
/// on a terse answer (histories are sampled every few seconds, so "since"
/// includes a few served ones). Terse answers, not refusals alone, are
/// compared: a refused client that closes first is no served one. A terse
/// server's clients, refused-looking all along, never turn.
fn turned_refused(f: &FlowNow<'_>, series: &Series<FlowKey, TcpSample>, window_start: u64) -> bool {
    let samples = series.samples(&f.key);
    let Some(start) = sample_at(samples.clone(), window_start) else {
        return false;
    };
    // The last sample before the terse answers rose above the window's start.
    let pivot = samples
        .rev()
        .find(|s| s.t_ns >= start.t_ns && terse(f, s) == terse(f, start))
        .unwrap_or(start);
    let before_terse = terse(f, pivot);
    let served_before = pivot.closed.saturating_sub(before_terse);
    let terse_since = terse(f, &f.sample).saturating_sub(before_terse);
    let closed_since = f.sample.closed.saturating_sub(pivot.closed);
    served_before >= 1 && before_terse * 2 <= pivot.closed && terse_since * 2 > closed_since
}

/// Sessions closed in the window that were served, not refused.
fn served_in_window(
    f: &FlowNow<'_>,
    series: &Series<FlowKey, TcpSample>,
    window_start: u64,
) -> u64 {
    let Some(start) = sample_at(series.samples(&f.key), window_start) else {
        return 0;
    };
    let closed = f.sample.closed.saturating_sub(start.closed);
    closed.saturating_sub(refusals(f, &f.sample).saturating_sub(refusals(f, start)))
}

/// The server of an outbound flow is seen on this node: the flow's
/// connections were linked to the server's accepted ones, so the server
/// is judged there, with this client among the affected. (A listener that
/// is merely there, its accepts unseen, proves nothing; a verdict from
/// both ends is folded by `relate`.)
fn server_here(f: &FlowNow<'_>) -> bool {
    f.stats.peer_cgroup != 0
}

/// Who a flow's other end is: the workload when it is on this node, else
/// its address.
fn peer_of(f: &FlowNow<'_>) -> About {
    match f.sockets().peers.first().map(|p| p.cgroup_id) {
        Some(id) if id != 0 => About::Workload(id),
        _ if f.stats.peer_cgroup != 0 => About::Workload(f.stats.peer_cgroup),
        _ => About::Endpoint(std::net::SocketAddr::new(f.key.remote, 0)),
    }
}

fn server_verdict(
    cx: &mut Context<'_, '_>,
    (server, port): (u64, u16),
    held: u64,
    flat_since: u64,
    refused: &[(&FlowNow<'_>, u64)],
    flows: &[FlowNow<'_>],
    window_start: u64,
) -> Verdict {
    let now = cx.now();
    let total: u64 = refused.iter().map(|(_, n)| n).sum();
    let window = now.saturating_sub(window_start);
    let mut facts = vec![
        Fact::count("held_connections", held, Unit::Connections, flat_since),
        Fact::seconds("flat_for_s", now.saturating_sub(flat_since), flat_since),
        Fact::count("refused_sessions", total, Unit::Connections, window_start),
        Fact::new(
            "refused_per_s",
            (total as f64 / (window as f64 / 1e9).max(1.0) * 10.0).round() / 10.0,
            Unit::Connections,
            window_start,
        ),
        Fact::seconds("window_s", window, window_start),
    ];
    let mut affected = Vec::new();
    for (f, n) in refused.iter().take(TOP) {
        let who = peer_of(f);
        if let About::Workload(id) = who {
            affected.push(id);
        }
        facts.push(Fact::count("refused_from", *n, Unit::Connections, window_start).about(who));
    }
    // Who holds the slots: the workloads (or addresses) of its
    // established connections, most first.
    let mut holders: HashMap<String, (About, u64)> = HashMap::default();
    for f in flows.iter().filter(|f| {
        f.key.direction == Direction::Inbound && f.key.cgroup_id == server && f.key.port == port
    }) {
        for p in &f.sockets().peers {
            let e = holders
                .entry(format!("w{}", p.cgroup_id))
                .or_insert((About::Workload(p.cgroup_id), 0));
            e.1 += p.sockets;
        }
        let unlinked = f.counts().established.saturating_sub(f.counts().linked);
        if unlinked > 0 {
            let e = holders.entry(format!("a{}", f.key.remote)).or_insert((
                About::Endpoint(std::net::SocketAddr::new(f.key.remote, 0)),
                0,
            ));
            e.1 += unlinked;
        }
    }
    let mut holders: Vec<(String, (About, u64))> = holders.into_iter().collect();
    holders.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    for (_, (who, n)) in holders.into_iter().take(TOP) {
        facts.push(Fact::count("held_by", n, Unit::Connections, now).about(who));
    }
    Verdict {
        kind: Kind::ServerAtLimit,
        key_subject: server,
        subject: server,
        destination: Some(Destination::endpoint(listener_addr(cx, server, port), port)),
        since_ns: flat_since.max(window_start),
        ended_ns: None,
        severity: Severity::Critical,
        signals: vec!["refused_sessions", "plateau"],
        facts,
        affected: super::dedup(affected),
    }
}

/// When a flow's refusals began: the first sample in the window with more
/// than at its start.
fn refusals_since(f: &FlowNow<'_>, series: &Series<FlowKey, TcpSample>, window_start: u64) -> u64 {
    let samples = series.samples(&f.key);
    let start = sample_at(samples.clone(), window_start).map_or(0, |s| s.short_by_peer);
    samples
        .filter(|s| s.t_ns >= window_start && s.short_by_peer > start)
        .map(|s| s.t_ns)
        .next()
        .unwrap_or(f.sample.t_ns)
}

fn client_verdict(
    cx: &mut Context<'_, '_>,
    f: &FlowNow<'_>,
    refused: u64,
    window_start: u64,
    since: u64,
) -> Verdict {
    let now = cx.now();
    let window = now.saturating_sub(window_start);
    let facts = vec![
        Fact::count("refused_sessions", refused, Unit::Connections, window_start),
        Fact::new(
            "refused_per_s",
            (refused as f64 / (window as f64 / 1e9).max(1.0) * 10.0).round() / 10.0,
            Unit::Connections,
            window_start,
        ),
        Fact::seconds("window_s", window, window_start),
        Fact::count(
            "established",
            f.counts().established,
            Unit::Connections,
            now,
        ),
        Fact::count("connects_ok", f.stats.connects_ok, Unit::Connects, now),
    ];
    let mut signals = vec!["refused_sessions"];
    if f.counts().established > 0 {
        signals.push("holds_others");
    }
    Verdict {
        kind: Kind::SessionsRefused,
        key_subject: f.key.cgroup_id,
        subject: f.key.cgroup_id,
        destination: Some(Destination::of_flow(&f.key)),
        since_ns: since,
        ended_ns: None,
        severity: Severity::Warning,
        signals,
        facts,
        affected: Vec::new(),
    }
}
