//! One problem, one root cause: verdicts that are consequences of another
//! are folded into it, with their facts and the workloads they hurt. A
//! server at its connection limit because one client leaks (or because it
//! holds its dead clients' connections) is evidence of that leak (or of
//! those stale connections), and the clients it refuses are affected by it.

use super::{About, Fact, Kind, Verdict};

/// Folds consequences into their causes; returns what remains.
pub fn relate(verdicts: Vec<Verdict>) -> Vec<Verdict> {
    let verdicts = fold_refused_clients(verdicts);
    let verdicts = fold_limits(verdicts);
    fold_probes(verdicts)
}

/// Probes of a pod that timed out while the pod's own connects to a
/// dependency failed, and that dependency has a finding: the probes wait
/// on it. They go under that finding, with the pod as affected.
fn fold_probes(mut verdicts: Vec<Verdict>) -> Vec<Verdict> {
    let causes = [
        Kind::DependencyRestart,
        Kind::ServerAtLimit,
        Kind::StaleConnections,
        Kind::PoolExhaustion,
        Kind::ConnectionLeak,
    ];
    let mut folded = Vec::new();
    for i in 0..verdicts.len() {
        if verdicts[i].kind != Kind::ProbeFailures {
            continue;
        }
        let deps: Vec<std::net::SocketAddr> = verdicts[i]
            .facts_of("dependency_failures")
            .filter_map(|f| match f.about {
                Some(About::Endpoint(e)) => Some(e),
                _ => None,
            })
            .collect();
        let cause = verdicts.iter().position(|v| {
            causes.contains(&v.kind)
                && v.destination
                    .as_ref()
                    .is_some_and(|d| deps.contains(&std::net::SocketAddr::new(d.addr, d.port)))
        });
        let Some(c) = cause else { continue };
        let probe = verdicts[i].clone();
        let pod = About::Workload(probe.subject);
        let cause = &mut verdicts[c];
        for f in &probe.facts {
            let key = match f.key {
                "probe_failures" => "probed_failures",
                "probe_timeout_s" => "probed_timeout_s",
                "failure_threshold" => "probed_failure_threshold",
                "restarts_the_pod" => "probed_restarts",
                "probe_kind" => "probed_kind",
                _ => continue,
            };
            cause.facts.push(Fact {
                key,
                about: Some(pod.clone()),
                ..f.clone()
            });
        }
        cause.signals.push("probes_failed");
        if !cause.affected.contains(&probe.subject) && probe.subject != cause.subject {
            cause.affected.push(probe.subject);
        }
        folded.push(i);
    }
    let mut i = 0;
    verdicts.retain(|v| {
        // Probes not folded stand on their own when there are enough.
        let keep = !folded.contains(&i)
            && (v.kind != Kind::ProbeFailures
                || v.value("probe_failures") >= v.value("failures_needed"));
        i += 1;
        keep
    });
    verdicts
}

/// A client refused by a server that is itself found at its limit here is
/// one of that server's refused clients, not a problem of its own.
fn fold_refused_clients(mut verdicts: Vec<Verdict>) -> Vec<Verdict> {
    let limits: Vec<(Option<super::Destination>, u64)> = verdicts
        .iter()
        .filter(|v| v.kind == Kind::ServerAtLimit)
        .map(|v| (v.destination.clone(), v.subject))
        .collect();
    let mut clients = Vec::new();
    verdicts.retain(|v| {
        let at = (v.kind == Kind::SessionsRefused)
            .then(|| {
                limits
                    .iter()
                    .find(|(d, _)| d.is_some() && *d == v.destination)
            })
            .flatten();
        if let Some((_, server)) = at {
            clients.push((*server, v.subject));
        }
        at.is_none()
    });
    for (server, client) in clients {
        if let Some(l) = verdicts
            .iter_mut()
            .find(|v| v.kind == Kind::ServerAtLimit && v.subject == server)
        {
            if !l.affected.contains(&client) {
                l.affected.push(client);
            }
        }
    }
    verdicts
}

fn fold_limits(mut verdicts: Vec<Verdict>) -> Vec<Verdict> {
    let limits: Vec<usize> = (0..verdicts.len())
        .filter(|i| verdicts[*i].kind == Kind::ServerAtLimit)
        .collect();
    let mut folded = Vec::new();
    for i in limits {
        if let Some(cause) = cause_of_limit(&verdicts, i) {
            let limit = verdicts[i].clone();
            fold_limit(&mut verdicts[cause], &limit);
            folded.push(i);
        }
    }
    let mut i = 0;
    verdicts.retain(|_| {
        let keep = !folded.contains(&i);
        i += 1;
        keep
    });
    verdicts
}

/// What fills the server's slots: its stale connections when they are the
/// larger part of what it holds, else a client leaking to it, else the
/// stale connections.
fn cause_of_limit(verdicts: &[Verdict], limit: usize) -> Option<usize> {
    let l = &verdicts[limit];
    let port = l.destination.as_ref().map(|d| d.port);
    let held = l.value("held_connections");
    let stale = verdicts.iter().position(|v| {
        v.kind == Kind::StaleConnections
            && v.subject == l.subject
            && v.destination.as_ref().map(|d| d.port) == port
    });
    if let Some(s) = stale {
        if verdicts[s].value("stale_connections") * 2.0 >= held {
            return Some(s);
        }
    }
    let holders: Vec<u64> = l
        .facts_of("held_by")
        .filter_map(|f| match f.about {
            Some(About::Workload(id)) => Some(id),
            _ => None,
        })
        .collect();
    let leak = holders.iter().find_map(|h| {
        verdicts.iter().position(|v| {
            v.kind == Kind::ConnectionLeak
                && v.subject == *h
                && v.destination.as_ref().map(|d| d.port) == port
        })
    });
    leak.or(stale)
}

/// The limit's facts, under keys that say they are the server's.
fn fold_limit(cause: &mut Verdict, limit: &Verdict) {
    let renamed = |key: &str| -> Option<&'static str> {
        Some(match key {
            "held_connections" => "limit_held",
            "flat_for_s" => "limit_flat_for_s",
            "refused_sessions" => "limit_refused",
            "refused_per_s" => "limit_refused_per_s",
            "window_s" => "limit_window_s",
            "refused_from" => "limit_refused_from",
            _ => return None,
        })
    };
    for f in &limit.facts {
        if let Some(key) = renamed(f.key) {
            cause.facts.push(Fact { key, ..f.clone() });
        }
    }
    // The server is named: the cause's own subject may be a client.
    cause.facts.push(
        Fact::count(
            "limit_server",
            limit.subject,
            super::Unit::Workloads,
            limit.since_ns,
        )
        .about(About::Workload(limit.subject)),
    );
    cause.signals.push("server_at_limit");
    cause.severity = cause.severity.max(limit.severity);
    for a in &limit.affected {
        if !cause.affected.contains(a) && *a != cause.subject {
            cause.affected.push(*a);
        }
    }
    if limit.subject != cause.subject && !cause.affected.contains(&limit.subject) {
        cause.affected.push(limit.subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{Destination, Severity, Unit};

    fn v(kind: Kind, subject: u64, port: u16, facts: Vec<Fact>) -> Verdict {
        Verdict {
            kind,
            key_subject: subject,
            subject,
            destination: Some(Destination {
                addr: "10.0.0.9".parse().unwrap(),
                port,
                dns_name: None,
            }),
            since_ns: 1,
            ended_ns: None,
            severity: Severity::Warning,
            signals: vec!["x"],
            facts,
            affected: vec![],
        }
    }

    fn limit(server: u64, holders: &[u64], refused: &[u64]) -> Verdict {
        let mut facts = vec![Fact::count("held_connections", 20, Unit::Connections, 1)];
        for h in holders {
            facts.push(Fact::count("held_by", 10, Unit::Connections, 1).about(About::Workload(*h)));
        }
        let mut l = v(Kind::ServerAtLimit, server, 5432, facts);
        l.severity = Severity::Critical;
        l.affected = refused.to_vec();
        l
    }

    #[test]
    fn a_limit_filled_by_a_leaking_client_is_that_leak() {
        let leak = v(Kind::ConnectionLeak, 7, 5432, vec![]);
        let out = relate(vec![leak, limit(1, &[7, 8], &[9])]);
        assert_eq!(out.len(), 1, "{out:#?}");
        let l = &out[0];
        assert_eq!((l.kind, l.subject), (Kind::ConnectionLeak, 7));
        assert_eq!(l.severity, Severity::Critical);
        assert!(l.signals.contains(&"server_at_limit"));
        assert_eq!(l.value("limit_held"), 20.0);
        assert_eq!(l.affected, [9, 1], "the refused client and the server");
    }

    #[test]
    fn a_limit_filled_by_dead_peers_is_the_stale_connections() {
        let stale = v(
            Kind::StaleConnections,
            1,
            5432,
            vec![Fact::count("stale_connections", 15, Unit::Sockets, 1)],
        );
        let leak = v(Kind::ConnectionLeak, 7, 5432, vec![]);
        let out = relate(vec![leak, stale, limit(1, &[7], &[9])]);
        assert_eq!(out.len(), 2);
        let s = out
            .iter()
            .find(|v| v.kind == Kind::StaleConnections)
            .unwrap();
        assert_eq!(s.value("limit_held"), 20.0);
        assert_eq!(s.affected, [9]);
    }

    #[test]
    fn a_limit_with_no_cause_here_stays() {
        let out = relate(vec![limit(1, &[7], &[9])]);
        assert_eq!(out[0].kind, Kind::ServerAtLimit);
        let other_port = v(Kind::ConnectionLeak, 7, 6379, vec![]);
        assert_eq!(relate(vec![other_port, limit(1, &[7], &[9])]).len(), 2);
    }
}
