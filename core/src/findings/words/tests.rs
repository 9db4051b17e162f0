//! What each kind says, from verdicts built by hand: the wording is tested
//! here once per kind, apart from the judgement that made the verdict.

use super::*;
use crate::{
    findings::{Destination, Severity, Unit},
    workload::{
        container::Owner,
        pod_meta::{MetaSource, PodMeta},
        Table, Workload,
    },
};

const S: u64 = 1_000_000_000;

fn names() -> Table {
    let mut t = Table::default();
    for (id, pod) in [(1, "web-1"), (2, "redis-0"), (3, "api-1")] {
        t.known.insert(
            id,
            Workload {
                cgroup_id: id,
                cgroup_path: None,
                owner: Some(Owner::Host),
                pod: Some(PodMeta {
                    namespace: "shop".into(),
                    name: pod.into(),
                    uid: None,
                    container: Some("app".into()),
                    workload: None,
                    labels: Default::default(),
                    source: MetaSource::RuntimeRecord,
                }),
            },
        );
    }
    t
}

fn verdict(kind: Kind, facts: Vec<Fact>) -> Verdict {
    Verdict {
        kind,
        key_subject: 1,
        subject: 1,
        destination: Some(Destination {
            addr: "10.0.0.9".parse().unwrap(),
            port: 6379,
            dns_name: None,
        }),
        since_ns: 10 * S,
        ended_ns: None,
        severity: Severity::Warning,
        signals: vec!["growth"],
        facts,
        affected: vec![],
    }
}

fn shown(w: &Words) -> Vec<&str> {
    w.facts
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect()
}

fn pid(pid: u32, comm: &str) -> About {
    About::Process {
        pid,
        comm: Some(comm.into()),
    }
}

#[test]
fn a_leak_names_the_client_the_rate_and_the_owner() {
    let v = verdict(
        Kind::ConnectionLeak,
        vec![
            Fact::count("open_sockets", 40, Unit::Sockets, 40 * S),
            Fact::count("baseline_sockets", 3, Unit::Sockets, 10 * S),
            Fact::new("growth_per_min", 74.0, Unit::SocketsPerMin, 10 * S),
            Fact::seconds("growth_span_s", 30 * S, 10 * S),
            Fact::count("opened", 37, Unit::Connections, 10 * S),
            Fact::count("closed", 0, Unit::Connections, 10 * S),
            Fact::seconds("oldest_age_s", 30 * S, 40 * S),
            Fact::count("open_older_than_1m", 0, Unit::Sockets, 40 * S),
            Fact::flag("accepted", false, 40 * S),
            Fact::count("held_by", 40, Unit::Sockets, 40 * S).about(pid(4411, "php-fpm")),
        ],
    );
    let w = word(&v, &mut names());
    assert_eq!(
        w.summary,
        "shop/web-1/app is leaking connections to 10.0.0.9:6379"
    );
    let facts = shown(&w);
    assert!(
        facts[0].starts_with("40 sockets open (was 3 at "),
        "{facts:?}"
    );
    assert_eq!(facts[1], "+74/min over 30.00s");
    assert!(
        facts[2].starts_with("37 opened and 0 closed since "),
        "{facts:?}"
    );
    assert_eq!(facts[3], "oldest open 30.00s; 0 open longer than 1m");
    assert_eq!(facts[4], "all opened by pid 4411 (php-fpm)");
    assert_eq!(facts.len(), 5, "the rest is said with these: {facts:?}");
    assert_eq!(
        w.next_step,
        "check the Redis client's pool release path in shop/web-1/app: connections to 10.0.0.9:6379 are opened and not closed"
    );
}

#[test]
fn close_wait_says_how_many_how_long_and_who_holds_them() {
    let v = verdict(
        Kind::CloseWait,
        vec![
            Fact::count("close_wait_sockets", 8, Unit::Sockets, 40 * S),
            Fact::seconds("min_wait_s", 30 * S, 40 * S),
            Fact::count("close_wait_total", 9, Unit::Sockets, 40 * S),
            Fact::count("open_sockets", 12, Unit::Sockets, 40 * S),
            Fact::seconds("longest_wait_s", 120 * S, 10 * S),
            Fact::flag("accepted", true, 40 * S),
            Fact::count("held_by", 5, Unit::Sockets, 40 * S).about(pid(1, "php-fpm")),
            Fact::count("held_by", 3, Unit::Sockets, 40 * S).about(pid(2, "php-fpm")),
            Fact::count("other_owners", 1, Unit::Sockets, 40 * S),
        ],
    );
    let w = word(&v, &mut names());
    assert_eq!(
        w.summary,
        "shop/web-1/app does not close 8 connections from 10.0.0.9 on port 6379 that the peer has closed (CLOSE_WAIT)"
    );
    let facts = shown(&w);
    assert_eq!(
        facts[0],
        "8 sockets from 10.0.0.9 on port 6379 in CLOSE_WAIT for more than 30.00s (9 in CLOSE_WAIT in all, 12 open)"
    );
    assert!(
        facts[1].starts_with("the oldest has waited 2m (since "),
        "{facts:?}"
    );
    assert_eq!(
        &facts[2..],
        [
            "5 held by pid 1 (php-fpm)",
            "3 held by pid 2 (php-fpm)",
            "1 held by other processes"
        ]
    );
}

#[test]
fn pool_exhaustion_from_a_client_and_at_a_server() {
    let mut client = verdict(
        Kind::PoolExhaustion,
        vec![
            Fact::count("established", 5, Unit::Sockets, 40 * S),
            Fact::count("ceiling", 5, Unit::Sockets, 20 * S),
            Fact::count("connects_failed", 4, Unit::Connects, 25 * S),
            Fact::count("timed_out", 1, Unit::Connects, 25 * S),
            Fact::count("aborted", 3, Unit::Connects, 25 * S),
            Fact::count("slow_connects", 0, Unit::Connects, 25 * S),
            Fact::seconds("slow_connect_s", 900_000_000, 40 * S),
            Fact::seconds("window_s", 30 * S, 25 * S),
            Fact::count("syn_retransmits", 6, Unit::Retransmits, 25 * S),
            Fact::count("accept_queue_waiting", 3, Unit::Connections, 40 * S)
                .about(pid(77, "slowserver")),
            Fact::count("accept_queue_limit", 2, Unit::Connections, 40 * S),
            Fact::count("accept_queue_port", 6379, Unit::Ports, 40 * S),
        ],
    );
    let w = word(&client, &mut names());
    assert_eq!(
        w.summary,
        "10.0.0.9:6379 accepts no more connections from shop/web-1/app: 5 open at a ceiling, 4 connects failed or waited"
    );
    let facts = shown(&w);
    assert!(
        facts[0].starts_with("5 connections open to 10.0.0.9:6379, flat at that ceiling since ")
    );
    assert_eq!(
        facts[1],
        "4 connects failed in the last 30.00s (1 timed out, 3 given up by the application)"
    );
    assert_eq!(
        facts[2],
        "6 SYN retransmissions: the server is dropping new connections"
    );
    assert_eq!(
        facts[3],
        "accept queue of pid 77 (slowserver) on port 6379: 3 waiting, limit 2: full"
    );
    assert_eq!(facts.len(), 4);

    client.facts = vec![
        Fact::count("listen_overflows", 12, Unit::Connections, 30 * S),
        Fact::seconds("overflow_window_s", 60 * S, 10 * S),
        Fact::count("listener_pid", 77, Unit::Pid, 40 * S).about(pid(77, "slowserver")),
    ];
    let w = word(&client, &mut names());
    assert_eq!(
        w.summary,
        "shop/web-1/app (pid 77 (slowserver)) cannot accept connections on port 6379 as fast as they arrive: 12 dropped"
    );
    assert_eq!(
        shown(&w),
        ["12 connections dropped by a full accept queue (ListenOverflows) in shop/web-1/app's network namespace in the last 1m"]
    );
}

#[test]
fn a_restart_with_its_listener_and_without() {
    let mut v = verdict(
        Kind::DependencyRestart,
        vec![
            Fact::count("listener_pid", 4411, Unit::Pid, 10 * S).about(pid(4411, "redis-server")),
            Fact::seconds("gap_s", 3_060_000_000, 10 * S).about(pid(4411, "redis-server")),
            Fact::count("refused", 15, Unit::Connects, 10 * S),
            Fact::count("connects_failed", 15, Unit::Connects, 10 * S),
            Fact::seconds("failing_for_s", 3 * S, 10 * S),
            Fact::count("clients", 1, Unit::Workloads, 10 * S),
            Fact::seconds("not_accepting_s", 3_060_000_000, 10 * S),
        ],
    );
    v.subject = 2;
    v.affected = vec![1];
    v.ended_ns = Some(13 * S);
    let w = word(&v, &mut names());
    assert_eq!(
        w.summary,
        "10.0.0.9:6379 restarted (pid 4411 (redis-server), shop/redis-0/app): not accepting for 3.06s; 15 connects from 1 workload(s) refused"
    );
    let facts = shown(&w);
    assert!(facts[0].starts_with(
        "pid 4411 (redis-server), shop/redis-0/app stopped listening on port 6379 at "
    ));
    assert!(facts[0].ends_with(": not accepting for 3.06s"), "{facts:?}");
    assert!(
        facts[1].starts_with("15 connects refused (15 failed in all) from 1 workload(s) between ")
    );
    assert_eq!(facts[2], "clients: shop/web-1/app");
    assert!(
        w.next_step.starts_with("it was down 3.06s: "),
        "{}",
        w.next_step
    );

    // No listener on this node, still down.
    v.facts
        .retain(|f| f.key != "listener_pid" && f.key != "gap_s");
    v.ended_ns = None;
    let w = word(&v, &mut names());
    assert_eq!(
        w.summary,
        "10.0.0.9:6379 refused 15 connects from 1 workload(s), not accepting for 3.06s so far: the dependency restarted or went away (its listener is not on this node)"
    );
    assert!(w.next_step.starts_with("check why 10.0.0.9:6379 is down"));
}

#[test]
fn dns_degradation_says_what_and_which_names() {
    let mut v = verdict(
        Kind::DnsDegradation,
        vec![
            Fact::count("queries", 28, Unit::Queries, 10 * S),
            Fact::count("answers", 20, Unit::Answers, 10 * S),
            Fact::seconds("window_s", 60 * S, 10 * S),
            Fact::count("timeouts", 8, Unit::Queries, 10 * S),
            Fact::new("timeout_ratio", 8.0 / 28.0, Unit::Ratio, 10 * S),
            Fact::count("name_timeouts", 8, Unit::Queries, 10 * S)
                .about(About::Name("silent.test".into())),
            Fact::count("name_timeouts", 0, Unit::Queries, 10 * S)
                .about(About::Name("bad.test".into())),
            Fact::count("name_servfail", 2, Unit::Answers, 10 * S)
                .about(About::Name("bad.test".into())),
            Fact::count("clients", 2, Unit::Workloads, 10 * S),
        ],
    );
    v.destination.as_mut().unwrap().port = 53;
    v.affected = vec![1, 3];
    let w = word(&v, &mut names());
    assert_eq!(
        w.summary,
        "DNS server 10.0.0.9:53 is degraded for 2 container(s) on this node: 29% of queries time out"
    );
    assert_eq!(
        shown(&w),
        [
            "8 of 28 queries to 10.0.0.9:53 timed out in the last 1m (28.6%)",
            "names most affected: silent.test (8 timeouts), bad.test (2 SERVFAIL)",
            "containers affected: shop/web-1/app, shop/api-1/app",
        ]
    );
}

#[test]
fn resource_exhaustion_names_the_limit_and_the_process() {
    let mut v = verdict(
        Kind::ConnectResourceExhaustion,
        vec![
            Fact::count("errno", 24, Unit::Code, 10 * S).about(About::Name("EMFILE".into())),
            Fact::count("process", 4411, Unit::Pid, 10 * S).about(pid(4411, "php-fpm")),
            Fact::seconds("window_s", 60 * S, 10 * S),
            Fact::count("lead_failures", 12, Unit::Failures, 10 * S)
                .about(About::Name("socket() calls".into())),
            Fact::count("failures", 12, Unit::Failures, 10 * S).about(About::Name(
                "socket() calls failed with EMFILE (too many open files)".into(),
            )),
            Fact::seconds("failing_for_s", 11 * S, S),
            Fact::count("episode_failures", 12, Unit::Failures, S),
            Fact::count("total_failures", 12, Unit::Failures, S),
            Fact::new("nofile_soft", 32.0, Unit::Files, 10 * S).about(pid(4411, "php-fpm")),
            Fact::new("nofile_hard", 4096.0, Unit::Files, 10 * S),
            Fact::count("files_open", 32, Unit::Files, 10 * S),
        ],
    );
    v.destination = None;
    let w = word(&v, &mut names());
    assert_eq!(
        w.summary,
        "pid 4411 (php-fpm) hit its open-file limit: 12 socket() calls failed with EMFILE in the last 60 s"
    );
    assert_eq!(
        shown(&w),
        [
            "12 socket() calls failed with EMFILE (too many open files) in the last 60 s",
            "failing for 11 s (12 failures in this episode, 12 since the agent started)",
            "pid 4411 (php-fpm): RLIMIT_NOFILE 32 (hard 4096), 32 files open just after the failure",
        ]
    );
    assert!(w.next_step.contains("/proc/4411/fd"));
}

#[test]
fn every_fact_keeps_its_key_and_subject_in_the_evidence() {
    let v = verdict(
        Kind::ConnectionLeak,
        vec![
            Fact::count("open_sockets", 40, Unit::Sockets, 40 * S),
            Fact::count("held_by", 40, Unit::Sockets, 40 * S).about(pid(4411, "php-fpm")),
            Fact::count("mystery", 7, Unit::Sockets, 40 * S),
        ],
    );
    let mut n = names();
    let w = word(&v, &mut n);
    let e = evidence(&v, w.facts, &mut n);
    let keys: Vec<&str> = e.iter().map(|e| e.key).collect();
    assert_eq!(keys, ["open_sockets", "held_by", "mystery"]);
    assert_eq!(e[1].about.as_deref(), Some("pid 4411 (php-fpm)"));
    assert_eq!(e[1].unit, "sockets");
    // A fact without wording still reads as something.
    assert_eq!(e[2].fact, "mystery: 7 sockets");
}

#[test]
fn dns_search_expansion_says_how_much_why_and_the_fix() {
    let pid = About::Process {
        pid: 4411,
        comm: Some("java".into()),
    };
    let mut v = verdict(
        Kind::DnsSearchExpansion,
        vec![
            Fact::count("queries", 320, Unit::Queries, 10 * S),
            Fact::count("wasted", 240, Unit::Queries, 10 * S),
            Fact::new("wasted_ratio", 0.75, Unit::Ratio, 10 * S),
            Fact::seconds("window_s", 30 * S, 10 * S),
            Fact::count("names", 2, Unit::Names, 10 * S),
            Fact::count("name_wasted", 180, Unit::Queries, 10 * S)
                .about(About::Name("api.example.com".into())),
            Fact::count("name_wasted", 60, Unit::Queries, 10 * S)
                .about(About::Name("db.example.com".into())),
            Fact::count("ndots", 5, Unit::Dots, 10 * S).about(pid),
            Fact::count("search_domains", 3, Unit::Names, 10 * S),
            Fact::count("suggested_ndots", 2, Unit::Dots, 10 * S),
            Fact::flag("server_degraded", true, 10 * S),
        ],
    );
    v.destination.as_mut().unwrap().port = 53;
    let w = word(&v, &mut names());
    assert_eq!(
        w.summary,
        "shop/web-1/app wastes 75% of its DNS queries to 10.0.0.9:53 on search-list expansion (ndots:5, 3 search domain(s))"
    );
    assert_eq!(
        shown(&w),
        [
            "240 of 320 queries to 10.0.0.9:53 in the last 30.00s were NXDOMAIN answers for search-list candidates (75%: 4.0 queries for each one needed)",
            "2 name(s) walked the search list, most: api.example.com (180 wasted), db.example.com (60 wasted)",
            "the resolv.conf of pid 4411 (java): ndots:5, 3 search domain(s): a name with fewer than 5 dots is tried with every search domain before it is asked as it is",
            "with ndots:2, names of 2 or more dots are asked as they are first",
            "the DNS server 10.0.0.9:53 is degraded too (its own dns_degradation finding): every wasted query is one more that can time out or wait there",
        ]
    );
    assert_eq!(
        w.next_step,
        "ask for absolute names, with a trailing dot (\"api.example.com.\", \"db.example.com.\"), so each is asked once; or lower ndots to 2 in the pod spec: dnsConfig: {options: [{name: ndots, value: \"2\"}]} (names of 2 or more dots are then asked as they are first)"
    );
}

#[test]
fn a_leak_holding_a_servers_slots_says_the_limit_once_and_who_was_refused() {
    let mut facts = vec![
        Fact::count("open_sockets", 30, Unit::Sockets, 40 * S),
        Fact::count("held_by", 30, Unit::Sockets, 40 * S).about(pid(4411, "php-fpm")),
    ];
    for v in [
        Fact::count("limit_held", 30, Unit::Connections, 20 * S),
        Fact::seconds("limit_flat_for_s", 120 * S, 20 * S),
        Fact::count("limit_refused", 42, Unit::Connections, 20 * S),
        Fact::new("limit_refused_per_s", 0.7, Unit::Connections, 20 * S),
        Fact::seconds("limit_window_s", 60 * S, 20 * S),
        Fact::count("limit_refused_from", 42, Unit::Connections, 20 * S).about(About::Workload(3)),
        Fact::count("limit_server", 2, Unit::Workloads, 20 * S).about(About::Workload(2)),
    ] {
        facts.push(v);
    }
    let w = word(&verdict(Kind::ConnectionLeak, facts), &mut names());
    let facts = shown(&w);
    let limit: Vec<_> = facts
        .iter()
        .filter(|f| f.contains("connection limit"))
        .collect();
    assert_eq!(
        limit,
        [&"shop/redis-0/app is at its connection limit: it holds 30 connections, none more for 2m, and refused 42 new ones in the last 1m (0.7/s)"],
        "{facts:?}"
    );
    assert!(
        facts.contains(&"42 refused from shop/api-1/app"),
        "{facts:?}"
    );
    assert!(
        !facts.iter().any(|f| f.contains("limit_")),
        "no fact shown by its key: {facts:?}"
    );
}
