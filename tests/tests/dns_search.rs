//! Search-list expansion for real: glibc (`getent ahosts`: A and AAAA of
//! every candidate at once) in pods whose resolv.conf is what the kubelet
//! writes (`ndots:5`, three search domains), many lookups at once, against
//! dnsmasq, whose own log of queries and replies is the count to match.
//! Then the finding it gives, and none for absolute names or `ndots:1`.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use sockeye_agent::{
    clock::monotonic_ns,
    dns::view::DnsNameView,
    findings::{Finding, FindingsConfig, Kind, Severity},
};
use sockeye_tests::{
    agent::start,
    dns::{total, wait_for_dns, Dnsmasq, PodScript, QueryLog},
    findings::Watch,
    net::{Pod, TestNet},
    require_root,
};

const SEARCH: [&str; 3] = [
    "prod.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];
/// The finding must come within this of the first lookup.
const DETECT_WITHIN: Duration = Duration::from_secs(30);

/// dnsmasq as a cluster DNS: nothing under cluster.local, two names under
/// example.com (one with an IPv6 address too), the rest of example.com
/// unknown (NXDOMAIN).
fn cluster_dns(server: &Pod) -> Dnsmasq {
    Dnsmasq::start_logged(
        server,
        &[
            "--local=/cluster.local/",
            "--local=/example.com/",
            "--address=/api.example.com/10.1.2.4",
            "--address=/api.example.com/fd00::4",
            "--address=/db.example.com/10.1.2.5",
        ],
    )
}

/// What the kubelet writes into a pod, with `ndots`.
fn kubelet_resolv_conf(pod: &Pod, server: &Pod, ndots: u32) {
    pod.set_resolv_conf(&format!(
        "nameserver {}\nsearch {}\noptions ndots:{ndots}\n",
        server.ip4,
        SEARCH.join(" ")
    ));
}

/// `rounds` times each of `names`, by 8 getent processes at once, each
/// resolving 2 names one after the other.
fn lookups(names: &[&str], rounds: usize) -> String {
    format!(
        "for i in $(seq {rounds}); do echo {}; done | xargs -P 8 -n 2 getent ahosts >/dev/null; true",
        names.join(" ")
    )
}

fn rows(rows: &[DnsNameView], cgroup: u64) -> impl Iterator<Item = &DnsNameView> {
    rows.iter().filter(move |r| r.workload.cgroup_id == cgroup)
}

#[test]
fn parallel_lookups_are_counted_as_dnsmasq_counts_them() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnsxcount", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let dns = cluster_dns(server);
    kubelet_resolv_conf(client, server, 5);
    let mut agent = start();
    // 40 getaddrinfo calls: api (found, A and AAAA), db (A only: dnsmasq
    // says NXDOMAIN to its AAAA) and typo (nowhere: every candidate is
    // NXDOMAIN, the walk ends when its window passes).
    let script = PodScript::start(
        client,
        &lookups(
            &[
                "api.example.com",
                "db.example.com",
                "typo.example.com",
                "api.example.com",
            ],
            10,
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !script.done() {
        agent.drain();
        assert!(Instant::now() < deadline, "the lookups did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = dns.log(IpAddr::V4(client.ip4));
    assert_eq!(log.dropped_lines, 0, "dnsmasq's log is short: {log:?}");
    assert_eq!(log.queries, 320, "8 queries per lookup: {log:?}");
    let (suffixed, as_asked) = log.nxdomains_split(&SEARCH);
    // The walks that end without a NOERROR are counted once their window
    // (the 5 s DNS timeout) has passed.
    let snap = wait_for_dns(&mut agent, client.cgroup_id, Duration::from_secs(20), |s| {
        total(s, client.cgroup_id)
            .is_some_and(|t| t.counts.answers == log.replies && t.counts.fanout_wasted == suffixed)
    });
    let t = &total(&snap, client.cgroup_id).unwrap().counts;
    eprintln!(
        "dnsmasq: {} queries, {} replies, {} NXDOMAIN ({suffixed} for search-list candidates, {as_asked} for names as asked); agent: {} queries, {} answers, {} NXDOMAIN, {} wasted in {} walks, {} retries",
        log.queries,
        log.replies,
        log.nxdomains(),
        t.queries,
        t.answers,
        t.rcodes.get("NXDOMAIN").copied().unwrap_or(0),
        t.fanout_wasted,
        t.fanout_lookups,
        t.retries
    );
    assert_eq!(t.queries, log.queries, "{t:#?}");
    assert_eq!(t.answers, log.replies, "{t:#?}");
    assert_eq!(
        t.rcodes.get("NXDOMAIN").copied(),
        Some(log.nxdomains()),
        "{t:#?}"
    );
    assert_eq!((t.retries, t.timeouts), (0, 0), "{t:#?}");
    assert_eq!(t.fanout_wasted, suffixed, "{t:#?}");
    // Every lookup walked, once per type.
    assert_eq!(t.fanout_lookups, 80, "{t:#?}");
    // Each name's waste, A and AAAA apart, as dnsmasq answered them.
    for (name, lookups) in [
        ("api.example.com", 20),
        ("db.example.com", 10),
        ("typo.example.com", 10),
    ] {
        for qtype in ["A", "AAAA"] {
            let r = rows(&snap.dns_names, client.cgroup_id)
                .find(|r| r.name == name && r.qtype == qtype)
                .unwrap_or_else(|| panic!("no row for {name} {qtype}"));
            let nx: u64 = SEARCH
                .iter()
                .map(|s| {
                    log.nxdomain
                        .get(&format!("{name}.{s}"))
                        .copied()
                        .unwrap_or(0)
                })
                .sum();
            assert_eq!(nx, 3 * 2 * lookups, "dnsmasq's NXDOMAINs under {name}");
            assert_eq!(
                (r.counts.fanout_lookups, r.counts.fanout_wasted),
                (lookups, 3 * lookups),
                "{r:#?}"
            );
        }
    }
}

fn is_expansion_of(f: &Finding, client: &Pod, server: SocketAddr) -> bool {
    f.kind == Kind::DnsSearchExpansion
        && f.subject.cgroup_id == client.cgroup_id
        && f.destination
            .as_ref()
            .is_some_and(|d| SocketAddr::new(d.addr, d.port) == server)
}

fn value(f: &Finding, key: &str) -> f64 {
    f.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {:#?}", f.evidence))
        .value
}

#[test]
fn ndots_5_wasting_most_queries_is_a_finding_with_the_fix() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnsxfind", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let dns = cluster_dns(server);
    kubelet_resolv_conf(client, server, 5);
    let server53 = SocketAddr::new(IpAddr::V4(server.ip4), 53);
    let mut watch = Watch::start(
        FindingsConfig::default(),
        &[client.cgroup_id, server.cgroup_id],
    );
    // 24 getaddrinfo calls of two external names: 192 queries, of which
    // 144 are NXDOMAIN for search-list candidates.
    let fault = monotonic_ns();
    let script = PodScript::start(client, &lookups(&["api.example.com", "db.example.com"], 12));
    let opened = watch.wait_open(
        Kind::DnsSearchExpansion,
        DETECT_WITHIN,
        |f| is_expansion_of(f, client, server53),
        |_| {},
    );
    let took = watch.first_seen(&opened.id).saturating_sub(fault) as f64 / 1e9;
    eprintln!("ndots:5: time from the first lookup to the finding: {took:.1} s");
    // Once the lookups are done and their last walks counted, the finding's
    // numbers are dnsmasq's.
    let mut log = QueryLog::default();
    watch.run_until(
        Duration::from_secs(30),
        "the finding's counts reach dnsmasq's",
        |w| {
            log = dns.log(IpAddr::V4(client.ip4));
            script.done()
                && w.open()
                    .iter()
                    .find(|f| f.id == opened.id)
                    .is_some_and(|f| value(f, "wasted") as u64 == log.nxdomains_split(&SEARCH).0)
        },
    );
    let f = watch.get(&opened.id).expect("the finding");
    eprintln!(
        "ndots:5 finding:\n  {}\n  {}\n  NEXT: {}",
        f.summary,
        f.evidence
            .iter()
            .filter(|e| !e.fact.is_empty())
            .map(|e| e.fact.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        f.next_step
    );
    let (suffixed, as_asked) = log.nxdomains_split(&SEARCH);
    assert_eq!((log.queries, suffixed, as_asked), (192, 144, 12), "{log:?}");
    assert_eq!(value(&f, "queries") as u64, log.queries, "{f:#?}");
    assert_eq!(value(&f, "wasted") as u64, suffixed, "{f:#?}");
    assert!((value(&f, "wasted_ratio") - 0.75).abs() < 1e-9, "{f:#?}");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.signals, ["mostly_wasted", "resolv_conf"], "{f:#?}");
    // The pod's resolv.conf (only the pod's mount namespace has it: the
    // host's says neither ndots:5 nor a search list), read through one of
    // its processes: the getent that asked last while it runs, else the
    // script that stays.
    assert_eq!(value(&f, "ndots"), 5.0);
    assert_eq!(value(&f, "search_domains"), 3.0);
    let ndots = f.evidence.iter().find(|e| e.key == "ndots").unwrap();
    let about = ndots.about.as_deref().unwrap_or("");
    assert!(
        about == format!("pid {} (sleep)", script.pid())
            || about == format!("pid {} (sh)", script.pid())
            || about.ends_with(" (getent)")
            || about.ends_with(" (xargs)"),
        "{ndots:#?}"
    );
    let names: Vec<(&str, u64)> = f
        .evidence
        .iter()
        .filter(|e| e.key == "name_wasted")
        .map(|e| (e.about.as_deref().unwrap_or(""), e.value as u64))
        .collect();
    assert_eq!(
        names,
        [("api.example.com", 72), ("db.example.com", 72)],
        "{f:#?}"
    );
    assert_eq!(value(&f, "suggested_ndots"), 2.0);
    assert!(
        f.next_step.contains("\"api.example.com.\"")
            && f.next_step.contains("{name: ndots, value: \"2\"}"),
        "{}",
        f.next_step
    );
    assert!(took <= DETECT_WITHIN.as_secs_f64(), "took {took:.1} s");
    // Nothing else about the pod, or the server.
    let others: Vec<Finding> = watch
        .open()
        .into_iter()
        .chain(watch.resolved())
        .filter(|g| g.id != f.id)
        .collect();
    assert!(others.is_empty(), "other findings: {others:#?}");
}

#[test]
fn absolute_names_or_ndots_1_give_no_finding() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("dnsxok", &["dotted", "ndots1", "server"]);
    let (dotted, ndots1, server) = (net.pod(0), net.pod(1), net.pod(2));
    let _dns = cluster_dns(server);
    kubelet_resolv_conf(dotted, server, 5);
    kubelet_resolv_conf(ndots1, server, 1);
    let mut watch = Watch::start(
        FindingsConfig::default(),
        &[dotted.cgroup_id, ndots1.cgroup_id, server.cgroup_id],
    );
    // The same lookups as the finding's test, made absolute (a trailing
    // dot) in one pod, and with ndots:1 (names of 1 dot or more are asked
    // as they are first) in the other: 2 queries per lookup.
    let scripts = [
        PodScript::start(
            dotted,
            &lookups(&["api.example.com.", "db.example.com."], 12),
        ),
        PodScript::start(ndots1, &lookups(&["api.example.com", "db.example.com"], 12)),
    ];
    watch.run_until(Duration::from_secs(60), "the lookups finish", |_| {
        scripts.iter().all(PodScript::done)
    });
    // Longer than such a finding takes to open (and than a walk's window).
    watch.run_for(Duration::from_secs(10), |_| {});
    let snap = watch.agent.snapshot(None);
    for pod in [dotted, ndots1] {
        let t = &total(&snap, pod.cgroup_id)
            .unwrap_or_else(|| panic!("no DNS seen from {}", pod.netns))
            .counts;
        assert_eq!((t.queries, t.fanout_wasted), (48, 0), "{t:#?}");
    }
    assert!(
        watch.open().is_empty() && watch.resolved().is_empty(),
        "{}",
        watch.describe()
    );
}
