//! The search-expansion detector through the findings engine: DNS events
//! as the tracker makes them (queries, answers, walks) into the aggregates,
//! the pod's resolv.conf from a table, evaluations at chosen times.

use std::{net::SocketAddr, sync::Arc};

use crate::{
    aggregate::{Aggregator, Limits},
    dns::{
        aggregate::DnsAggregates,
        packet::Transport,
        tracker::{DnsEvent, QueryInfo},
    },
    findings::{probe::Answers, Finding, Findings, FindingsConfig, Inputs, Kind, Severity},
    workload::Table,
};

const S: u64 = 1_000_000_000;
const POD: u64 = 42;
const PID: u32 = 4411;
const A: u16 = 1;
const AAAA: u16 = 28;
const SEARCH: [&str; 3] = [
    "prod.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];
const KUBELET_RESOLV_CONF: &str = "search prod.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";

fn server() -> SocketAddr {
    "10.96.0.10:53".parse().unwrap()
}

struct Bench {
    tcp: Aggregator,
    dns: DnsAggregates,
    names: Table,
    probe: Answers,
    findings: Findings,
}

impl Bench {
    fn new() -> Self {
        let mut probe = Answers::default();
        probe.resolv_confs.insert(PID, KUBELET_RESOLV_CONF.into());
        probe.names.insert(PID, "java".into());
        Self {
            tcp: Aggregator::new(Limits::default()),
            dns: DnsAggregates::new(1024),
            names: Table::default(),
            probe,
            findings: Findings::new(FindingsConfig::default()),
        }
    }

    fn query(&self, name: &str, qtype: u16, ts_ns: u64) -> Arc<QueryInfo> {
        Arc::new(QueryInfo {
            ts_ns,
            cgroup_id: POD,
            tgid: PID,
            comm: [0; 16],
            transport: Transport::Udp,
            client: "10.77.0.2:40000".parse().unwrap(),
            server: server(),
            id: 1,
            name: Arc::from(name),
            qtype,
        })
    }

    /// One query and its answer (None: it timed out).
    fn ask(&mut self, name: &str, qtype: u16, ts_ns: u64, rcode: Option<u16>) -> Arc<QueryInfo> {
        let query = self.query(name, qtype, ts_ns);
        self.dns.record(&DnsEvent::Query {
            query: query.clone(),
            retry: false,
            after_truncation: false,
        });
        let e = match rcode {
            Some(rcode) => DnsEvent::Answer {
                query: query.clone(),
                latency_ns: 1_000_000,
                rcode,
                answers: u16::from(rcode == 0),
                truncated: false,
            },
            None => DnsEvent::Timeout {
                query: query.clone(),
            },
        };
        self.dns.record(&e);
        query
    }

    /// A glibc lookup of `name` under ndots:5, A and AAAA: the search
    /// domains first (NXDOMAIN), then the name itself.
    fn walk(&mut self, name: &str, ts_ns: u64) {
        for qtype in [A, AAAA] {
            for s in SEARCH {
                self.ask(&format!("{name}.{s}"), qtype, ts_ns, Some(3));
            }
            let q = self.ask(name, qtype, ts_ns, Some(0));
            self.dns.record(&DnsEvent::FanOut {
                query: q,
                wasted: 3,
                answered: true,
            });
        }
    }

    fn evaluate(&mut self, now_ns: u64) {
        let inputs = Inputs {
            tcp: &self.tcp,
            dns: &self.dns,
            now_ns,
        };
        self.findings
            .evaluate(&inputs, &mut self.names, &mut self.probe);
    }

    fn found(&self, kind: Kind) -> Vec<Finding> {
        self.findings
            .list(true)
            .into_iter()
            .filter(|f| f.kind == kind)
            .collect()
    }
}

fn value(f: &Finding, key: &str) -> f64 {
    f.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {:#?}", f.evidence))
        .value
}

#[test]
fn walks_that_waste_most_queries_open_a_finding_with_the_fix() {
    let mut b = Bench::new();
    b.evaluate(S);
    for i in 0..10 {
        b.walk("api.example.com", 2 * S + i);
    }
    b.walk("db.example.com", 2 * S);
    b.evaluate(2 * S + S / 2);
    let found = b.found(Kind::DnsSearchExpansion);
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f.subject.cgroup_id, POD);
    let d = f.destination.as_ref().unwrap();
    assert_eq!(SocketAddr::new(d.addr, d.port), server());
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.signals, ["mostly_wasted", "resolv_conf"]);
    assert_eq!(value(f, "queries"), 88.0);
    assert_eq!(value(f, "wasted"), 66.0);
    assert_eq!(value(f, "wasted_ratio"), 0.75);
    assert_eq!(value(f, "names"), 2.0);
    let names: Vec<(&str, f64)> = f
        .evidence
        .iter()
        .filter(|e| e.key == "name_wasted")
        .map(|e| (e.about.as_deref().unwrap(), e.value))
        .collect();
    assert_eq!(names, [("api.example.com", 60.0), ("db.example.com", 6.0)]);
    assert_eq!(value(f, "ndots"), 5.0);
    assert_eq!(value(f, "search_domains"), 3.0);
    assert_eq!(value(f, "suggested_ndots"), 2.0);
    let ndots = f.evidence.iter().find(|e| e.key == "ndots").unwrap();
    assert_eq!(ndots.about.as_deref(), Some("pid 4411 (java)"));
    assert!(
        f.next_step.contains("\"api.example.com.\"")
            && f.next_step.contains("{name: ndots, value: \"2\"}"),
        "{}",
        f.next_step
    );
    assert_eq!(
        f.summary,
        "cgroup:42 wastes 75% of its DNS queries to 10.96.0.10:53 on search-list expansion (ndots:5, 3 search domain(s))"
    );
    assert!(b.found(Kind::DnsDegradation).is_empty());
}

#[test]
fn absolute_names_and_first_suffix_hits_open_nothing() {
    let mut b = Bench::new();
    b.evaluate(S);
    for i in 0..40 {
        b.ask("api.example.com", A, 2 * S + i, Some(0));
        b.ask("redis.prod.svc.cluster.local", AAAA, 2 * S + i, Some(0));
    }
    // A name that does not exist, asked as it is: needed, not wasted.
    for i in 0..10 {
        b.ask("gone.example.com", A, 2 * S + i, Some(3));
    }
    for t in 2..70 {
        b.evaluate(t * S);
    }
    assert!(
        b.findings.list(true).is_empty(),
        "{:#?}",
        b.findings.list(true)
    );
}

#[test]
fn too_few_queries_or_half_not_wasted_open_nothing() {
    let mut b = Bench::new();
    b.evaluate(S);
    // Two lookups: 12 of 16 wasted, but only 16 queries.
    b.walk("api.example.com", 2 * S);
    b.walk("api.example.com", 2 * S);
    b.evaluate(3 * S);
    // Then enough queries, most of them useful: 18 of 40 wasted.
    b.walk("api.example.com", 4 * S);
    for i in 0..16 {
        b.ask("redis.prod.svc.cluster.local", A, 4 * S + i, Some(0));
    }
    b.evaluate(5 * S);
    assert!(b.found(Kind::DnsSearchExpansion).is_empty());
}

#[test]
fn waste_that_costs_little_is_info_and_it_resolves_after_the_fix() {
    let mut b = Bench::new();
    b.evaluate(S);
    // Three lookups spread over a minute: 18 of 24 wasted, 0.3 per second.
    for t in [2, 30, 60] {
        b.walk("api.example.com", t * S);
        b.evaluate(t * S + 1);
    }
    let f = b.found(Kind::DnsSearchExpansion);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Info);
    // Fixed (trailing dots): only the names themselves from now on.
    for t in 61..300 {
        b.ask("api.example.com", A, t * S, Some(0));
        b.evaluate(t * S + 1);
    }
    let f = &b.found(Kind::DnsSearchExpansion)[0];
    assert!(!f.is_open(), "{f:#?}");
}

#[test]
fn without_the_resolv_conf_the_finding_still_opens_and_says_so() {
    let mut b = Bench::new();
    b.probe.resolv_confs.clear();
    b.evaluate(S);
    for i in 0..5 {
        b.walk("api.example.com", 2 * S + i);
    }
    b.evaluate(3 * S);
    let f = &b.found(Kind::DnsSearchExpansion)[0];
    assert_eq!(f.signals, ["mostly_wasted"]);
    assert!(f.evidence.iter().all(|e| e.key != "ndots"));
    assert!(f.next_step.contains("could not be read"), "{}", f.next_step);
    assert_eq!(b.findings.stats.probe_failures, 1);
    // Not asked again at every evaluation.
    b.evaluate(4 * S);
    assert_eq!(b.findings.stats.probe_failures, 1);
}

#[test]
fn a_degraded_server_is_its_own_finding_and_the_expansion_says_so() {
    let mut b = Bench::new();
    // The degradation detector judges from its first sample on.
    b.ask("ok.test", A, S, Some(0));
    b.evaluate(S);
    for i in 0..10 {
        b.walk("api.example.com", 2 * S + i);
    }
    // 10 of 90 queries time out: the server is degraded too.
    for i in 0..10 {
        b.ask("api.example.com", A, 2 * S + i, None);
    }
    b.evaluate(3 * S);
    let expansion = &b.found(Kind::DnsSearchExpansion)[0];
    let degradation = &b.found(Kind::DnsDegradation)[0];
    assert_eq!(value(expansion, "server_degraded"), 1.0);
    assert_eq!(expansion.destination, degradation.destination);
    // Each says its own numbers: no timeouts in the one, no waste in the other.
    assert!(expansion
        .evidence
        .iter()
        .all(|e| !e.key.contains("timeout")));
    assert!(degradation
        .evidence
        .iter()
        .all(|e| !e.key.contains("wasted")));
}
