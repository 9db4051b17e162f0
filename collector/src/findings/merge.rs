//! Merging the nodes' findings about one problem into one answer.
//!
//! Findings of the same kind about the same destination (address and port,
//! and for DNS the name) are one problem, whichever workloads and nodes
//! report it: five nodes' pods leaking connections to one Redis are one
//! Redis problem. Findings without a destination are one problem when
//! they are about the same subject: a pod's owner (namespace, kind, name),
//! else the pod, else the container; anything else (the host, a cgroup
//! without a container) only on its own node.

use std::{cmp::Reverse, collections::HashMap};

use sockeye_proto::{rank, v1 as pb};

use crate::{
    identity::{Grain, WorkloadId},
    query::canonical_ip,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum About {
    Destination {
        ip: String,
        port: u32,
        dns_name: String,
    },
    Subject(WorkloadId),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Problem {
    kind: String,
    about: About,
}

/// The DNS name as compared: lowercase, without the root's dot.
fn dns_key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn problem(f: &pb::Finding) -> Problem {
    let about = match f.destination.as_ref() {
        Some(d) if !d.ip.is_empty() || d.port != 0 => About::Destination {
            ip: canonical_ip(&d.ip),
            port: d.port,
            dns_name: dns_key(&f.dns_name),
        },
        _ => About::Subject(WorkloadId::of(f.subject.as_ref(), &f.node, Grain::Owner)),
    };
    Problem {
        kind: f.kind.clone(),
        about,
    }
}

/// Worst first: open, most severe, most certain, oldest; then a stable
/// order so the same findings always give the same answer.
fn worst_first(f: &pb::Finding) -> impl Ord + '_ {
    (
        f.resolved_unix_ms != 0,
        Reverse(rank::severity(&f.severity)),
        Reverse(rank::confidence(&f.confidence)),
        f.since_unix_ms,
        f.node.as_str(),
        f.id.as_str(),
    )
}

fn merged(mut findings: Vec<pb::Finding>) -> pb::MergedFinding {
    findings.sort_by(|a, b| worst_first(a).cmp(&worst_first(b)));
    let worst = &findings[0];
    let mut nodes: Vec<String> = findings.iter().map(|f| f.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let severity = findings
        .iter()
        .max_by_key(|f| rank::severity(&f.severity))
        .map(|f| f.severity.clone())
        .unwrap_or_default();
    let confidence = findings
        .iter()
        .max_by_key(|f| rank::confidence(&f.confidence))
        .map(|f| f.confidence.clone())
        .unwrap_or_default();
    let since = findings
        .iter()
        .map(|f| f.since_unix_ms)
        .filter(|s| *s > 0)
        .min()
        .unwrap_or(0);
    let resolved = if findings.iter().all(|f| f.resolved_unix_ms != 0) {
        findings
            .iter()
            .map(|f| f.resolved_unix_ms)
            .max()
            .unwrap_or(0)
    } else {
        0
    };
    let summary = if nodes.len() > 1 {
        format!("{} ({} nodes)", worst.summary, nodes.len())
    } else {
        worst.summary.clone()
    };
    let destination = worst.destination.as_ref().map(|d| pb::Endpoint {
        ip: canonical_ip(&d.ip),
        port: d.port,
    });
    pb::MergedFinding {
        kind: worst.kind.clone(),
        destination,
        dns_name: worst.dns_name.clone(),
        severity,
        confidence,
        since_unix_ms: since,
        resolved_unix_ms: resolved,
        nodes,
        // Each node's own findings, by node, then worst first.
        findings: {
            findings.sort_by(|a, b| (&a.node, worst_first(a)).cmp(&(&b.node, worst_first(b))));
            findings
        },
        summary,
    }
}

/// Groups findings by problem. Order: open before resolved, then most
/// severe first, then the oldest first (at 2 AM the first thing that broke
/// is the likeliest cause).
pub fn merge(findings: Vec<pb::Finding>) -> Vec<pb::MergedFinding> {
    let mut groups: HashMap<Problem, Vec<pb::Finding>> = HashMap::new();
    for f in findings {
        groups.entry(problem(&f)).or_default().push(f);
    }
    let mut out: Vec<pb::MergedFinding> = groups.into_values().map(merged).collect();
    out.sort_by(|a, b| {
        let key = |m: &pb::MergedFinding| {
            (
                m.resolved_unix_ms != 0,
                Reverse(rank::severity(&m.severity)),
                m.since_unix_ms,
                m.kind.clone(),
                m.summary.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, port: u32) -> Option<pb::Endpoint> {
        Some(pb::Endpoint {
            ip: ip.into(),
            port,
        })
    }

    fn f(node: &str, kind: &str, dest: Option<pb::Endpoint>, severity: &str) -> pb::Finding {
        pb::Finding {
            id: format!("{kind}/{node}"),
            kind: kind.into(),
            node: node.into(),
            destination: dest,
            severity: severity.into(),
            confidence: "low".into(),
            since_unix_ms: 1_000,
            summary: format!("{kind} on {node}"),
            ..Default::default()
        }
    }

    #[test]
    fn same_destination_merges_across_spellings_of_the_address() {
        let a = f("a", "connection_leak", ep("10.0.1.12", 6379), "warning");
        let b = pb::Finding {
            confidence: "high".into(),
            since_unix_ms: 500,
            ..f(
                "b",
                "connection_leak",
                ep("::ffff:10.0.1.12", 6379),
                "critical",
            )
        };
        let other_port = f("c", "connection_leak", ep("10.0.1.12", 6380), "info");
        let m = merge(vec![a, b, other_port]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].nodes, ["a", "b"]);
        assert_eq!(
            (
                m[0].severity.as_str(),
                m[0].confidence.as_str(),
                m[0].since_unix_ms
            ),
            ("critical", "high", 500)
        );
        assert_eq!(m[0].summary, "connection_leak on b (2 nodes)");
        assert_eq!(m[0].destination.as_ref().unwrap().ip, "10.0.1.12");
        assert_eq!(m[1].nodes, ["c"]);
    }

    #[test]
    fn dns_names_and_subjects_keep_problems_apart() {
        let dns = |node: &str, name: &str| pb::Finding {
            dns_name: name.into(),
            ..f(node, "dns_degradation", ep("10.96.0.10", 53), "warning")
        };
        let m = merge(vec![
            dns("a", "api.stripe.com"),
            dns("b", "API.stripe.com."),
            dns("c", "redis.prod"),
        ]);
        assert_eq!(m.len(), 2, "{m:?}");
        let pods = |node: &str, pod: &str, owner: &str| pb::Finding {
            subject: Some(pb::Workload {
                namespace: "prod".into(),
                pod: pod.into(),
                owner_kind: "Deployment".into(),
                owner_name: owner.into(),
                ..Default::default()
            }),
            ..f(node, "connect_resource_exhaustion", None, "critical")
        };
        let host = |node: &str| pb::Finding {
            subject: Some(pb::Workload {
                label: "host".into(),
                ..Default::default()
            }),
            ..f(node, "connect_resource_exhaustion", None, "critical")
        };
        let m = merge(vec![
            pods("a", "web-1", "web"),
            pods("b", "web-2", "web"),
            pods("b", "api-1", "api"),
            host("a"),
            host("b"),
        ]);
        let mut nodes: Vec<Vec<String>> = m.iter().map(|m| m.nodes.clone()).collect();
        nodes.sort();
        assert_eq!(nodes, [vec!["a"], vec!["a", "b"], vec!["b"], vec!["b"]]);
    }

    #[test]
    fn resolved_only_when_every_node_is_and_open_ones_first() {
        let open = f("a", "close_wait", ep("10.0.0.1", 80), "info");
        let done = pb::Finding {
            resolved_unix_ms: 9_000,
            ..f("b", "close_wait", ep("10.0.0.1", 80), "critical")
        };
        let m = merge(vec![open.clone(), done.clone()]);
        assert_eq!(m[0].resolved_unix_ms, 0);
        // The summary comes from the finding that still holds.
        assert_eq!(m[0].summary, "close_wait on a (2 nodes)");
        let later = pb::Finding {
            resolved_unix_ms: 12_000,
            ..open
        };
        let crit = f("c", "pool_exhaustion", ep("10.0.0.2", 80), "info");
        let m = merge(vec![later, done, crit]);
        assert_eq!(m[0].kind, "pool_exhaustion", "open before resolved");
        assert_eq!(m[1].resolved_unix_ms, 12_000, "the latest end");
    }
}
