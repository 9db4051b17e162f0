//! Search-list walks as glibc makes them under `ndots:5`: A and AAAA of each
//! candidate at once from one socket (with the same id or not), lookups of
//! one pod running at once, names that never resolve, and the counts that
//! must come out exact whatever the interleaving.

use std::time::Duration;

use super::{
    testing::{answer, message},
    tests::record_as,
    DnsConfig, DnsTracer,
};

const MS: u64 = 1_000_000;
const SERVER: &str = "10.77.0.1:53";
const A: u16 = 1;
const AAAA: u16 = 28;
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;
const REFUSED: u8 = 5;
const SEARCH: [&str; 3] = [
    "prod.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];

fn tracer(max_pending: usize) -> DnsTracer {
    DnsTracer::new(DnsConfig {
        timeout: Duration::from_secs(5),
        max_pending,
        max_names: 1024,
        max_tcp_streams: 4,
    })
}

/// One process's resolver: its pid, its socket, the ids it gives queries.
struct Resolver {
    tgid: u32,
    client: String,
    next_id: u16,
    /// Give A and AAAA of one step the same id (the server tells them
    /// apart by the question).
    same_id: bool,
}

impl Resolver {
    fn new(tgid: u32, port: u16, same_id: bool) -> Self {
        Self {
            tgid,
            client: format!("10.77.0.2:{port}"),
            next_id: tgid as u16 * 100,
            same_id,
        }
    }

    /// Sends A and AAAA of `name` at `ts_ms`; returns the queries.
    fn ask(&mut self, t: &mut DnsTracer, ts_ms: u64, name: &str) -> [Vec<u8>; 2] {
        let id_a = self.next_id;
        let id_aaaa = if self.same_id { id_a } else { id_a + 1 };
        self.next_id += 2;
        let qs = [message(id_a, name, A), message(id_aaaa, name, AAAA)];
        for q in &qs {
            t.handle_record(&record_as(
                self.tgid,
                ts_ms * MS,
                true,
                17,
                &self.client,
                SERVER,
                (0, 0),
                q,
            ));
        }
        qs
    }

    /// The answers to `qs` at `ts_ms`, AAAA first (as often as not).
    fn answered(&self, t: &mut DnsTracer, ts_ms: u64, qs: [Vec<u8>; 2], rcodes: (u8, u8)) {
        let [qa, qaaaa] = qs;
        let records =
            |rcode: u8, qtype_has_records: bool| u16::from(rcode == NOERROR && qtype_has_records);
        for (q, rcode, has) in [(qaaaa, rcodes.1, false), (qa, rcodes.0, true)] {
            let a = answer(q, rcode, records(rcode, has), false);
            t.handle_record(&record_as(
                0,
                ts_ms * MS,
                false,
                17,
                SERVER,
                &self.client,
                (0, 0),
                &a,
            ));
        }
    }

    /// One step of a walk: ask, then get both answers.
    fn step(&mut self, t: &mut DnsTracer, ts_ms: u64, name: &str, rcodes: (u8, u8)) {
        let qs = self.ask(t, ts_ms, name);
        self.answered(t, ts_ms + 1, qs, rcodes);
    }
}

/// The candidates glibc tries for `name` under `ndots:5` (fewer dots than
/// ndots: the search list first, then the name as it is).
fn candidates(name: &str) -> Vec<String> {
    let mut v: Vec<String> = SEARCH.iter().map(|s| format!("{name}.{s}")).collect();
    v.push(name.to_string());
    v
}

/// A whole lookup of `name` that exists only as it is.
fn lookup(t: &mut DnsTracer, r: &mut Resolver, ts_ms: u64, name: &str) {
    for (i, c) in candidates(name).iter().enumerate() {
        let rcode = if c == name { NOERROR } else { NXDOMAIN };
        r.step(t, ts_ms + 2 * i as u64, c, (rcode, rcode));
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Totals {
    queries: u64,
    answers: u64,
    nxdomain: u64,
    retries: u64,
    lookups: u64,
    wasted: u64,
}

fn totals(t: &DnsTracer) -> Totals {
    let rows = t.aggregates.rows.values();
    let sum = |f: fn(&super::aggregate::DnsStats) -> u64| rows.clone().map(f).sum();
    Totals {
        queries: sum(|s| s.queries),
        answers: sum(|s| s.answers()),
        nxdomain: sum(|s| s.rcodes[3]),
        retries: sum(|s| s.retries),
        lookups: sum(|s| s.fanout_lookups),
        wasted: sum(|s| s.fanout_wasted),
    }
}

fn wasted_of(t: &DnsTracer, name: &str, qtype: u16) -> u64 {
    t.aggregates
        .rows
        .iter()
        .filter(|(k, _)| &*k.name == name && k.qtype == qtype)
        .map(|(_, s)| s.fanout_wasted)
        .sum()
}

#[test]
fn parallel_a_and_aaaa_with_one_id_are_two_queries_and_two_walks() {
    for same_id in [true, false] {
        let mut t = tracer(100);
        let mut r = Resolver::new(7, 40000, same_id);
        lookup(&mut t, &mut r, 0, "api.example.com");
        assert_eq!(
            totals(&t),
            Totals {
                queries: 8,
                answers: 8,
                nxdomain: 6,
                retries: 0,
                lookups: 2,
                wasted: 6,
            },
            "same id: {same_id}"
        );
        assert_eq!(wasted_of(&t, "api.example.com", A), 3);
        assert_eq!(wasted_of(&t, "api.example.com", AAAA), 3);
        assert_eq!(t.health().tracker.unmatched_answers, 0);
    }
}

#[test]
fn a_resent_query_is_a_retry_and_its_twin_of_the_other_type_is_not() {
    let mut t = tracer(100);
    let mut r = Resolver::new(7, 40000, true);
    let first = r.ask(&mut t, 0, "x.test");
    // glibc resends both after its timeout, same socket, same ids.
    let again = [message(700, "x.test", A), message(700, "x.test", AAAA)];
    for q in &again {
        t.handle_record(&record_as(
            7,
            2000 * MS,
            true,
            17,
            &r.client,
            SERVER,
            (0, 0),
            q,
        ));
    }
    r.answered(&mut t, 2001, first, (NOERROR, NOERROR));
    let tot = totals(&t);
    assert_eq!(
        (tot.queries, tot.retries, tot.answers),
        (4, 2, 2),
        "{tot:?}"
    );
}

#[test]
fn lookups_of_one_pod_at_once_are_neither_retries_nor_one_walk() {
    let mut t = tracer(100);
    // Three processes of one pod (one address, a socket each) look up the
    // same name at once: their steps interleave.
    let mut rs: Vec<Resolver> = (0..3)
        .map(|i| Resolver::new(10 + i, 41000 + i as u16, false))
        .collect();
    let name = "api.example.com";
    for (step, c) in candidates(name).iter().enumerate() {
        let ts = 10 * step as u64;
        let asked: Vec<[Vec<u8>; 2]> = rs.iter_mut().map(|r| r.ask(&mut t, ts, c)).collect();
        let rcode = if c == name { NOERROR } else { NXDOMAIN };
        for (r, qs) in rs.iter().zip(asked).rev() {
            r.answered(&mut t, ts + 1, qs, (rcode, rcode));
        }
    }
    assert_eq!(
        totals(&t),
        Totals {
            queries: 24,
            answers: 24,
            nxdomain: 18,
            retries: 0,
            lookups: 6,
            wasted: 18,
        }
    );
}

#[test]
fn lookups_of_one_process_at_once_waste_exactly_what_they_asked() {
    let mut t = tracer(100);
    // Two threads of one process, one name, steps interleaved so that one
    // lookup ends while the other is still walking.
    let mut r1 = Resolver::new(20, 42000, false);
    let mut r2 = Resolver::new(20, 42001, false);
    let name = "db.example.com";
    let c = candidates(name);
    r1.step(&mut t, 0, &c[0], (NXDOMAIN, NXDOMAIN));
    r1.step(&mut t, 2, &c[1], (NXDOMAIN, NXDOMAIN));
    r2.step(&mut t, 3, &c[0], (NXDOMAIN, NXDOMAIN));
    r1.step(&mut t, 4, &c[2], (NXDOMAIN, NXDOMAIN));
    r1.step(&mut t, 6, &c[3], (NOERROR, NOERROR));
    r2.step(&mut t, 7, &c[1], (NXDOMAIN, NXDOMAIN));
    r2.step(&mut t, 9, &c[2], (NXDOMAIN, NXDOMAIN));
    r2.step(&mut t, 11, &c[3], (NOERROR, NOERROR));
    let tot = totals(&t);
    assert_eq!(
        (tot.nxdomain, tot.wasted, tot.retries),
        (12, 12, 0),
        "{tot:?}"
    );
}

#[test]
fn a_name_that_never_resolves_wastes_all_but_its_own_queries() {
    let mut t = tracer(100);
    let mut r1 = Resolver::new(30, 43000, false);
    let mut r2 = Resolver::new(30, 43001, false);
    // Two lookups of one missing name in one process, interleaved, each
    // ending on the name itself (NXDOMAIN too): 16 NXDOMAINs, of which the
    // 4 for the name itself were what the client needed asked.
    let c = candidates("typo.example.com");
    for (i, name) in c.iter().enumerate() {
        let ts = 10 * i as u64;
        let q1 = r1.ask(&mut t, ts, name);
        let q2 = r2.ask(&mut t, ts + 1, name);
        r2.answered(&mut t, ts + 2, q2, (NXDOMAIN, NXDOMAIN));
        r1.answered(&mut t, ts + 3, q1, (NXDOMAIN, NXDOMAIN));
    }
    assert_eq!(totals(&t).wasted, 0, "not over until the window passes");
    t.tick(6_000 * MS);
    let tot = totals(&t);
    assert_eq!(
        (tot.nxdomain, tot.wasted, tot.lookups),
        (16, 12, 2),
        "{tot:?}"
    );
    assert_eq!(wasted_of(&t, "typo.example.com", A), 6);
}

#[test]
fn a_walk_ended_by_another_error_still_counts_every_nxdomain() {
    let mut t = tracer(100);
    let mut r = Resolver::new(40, 44000, false);
    // A server that refuses AAAA for the name itself (dnsmasq without an
    // upstream): the A walk ends at once, the AAAA walk when its window
    // passes, each with its 3 NXDOMAINs.
    let name = "api.example.com";
    for (i, c) in candidates(name).iter().enumerate() {
        let rcodes = if c == name {
            (NOERROR, REFUSED)
        } else {
            (NXDOMAIN, NXDOMAIN)
        };
        r.step(&mut t, 2 * i as u64, c, rcodes);
    }
    assert_eq!(wasted_of(&t, name, A), 3);
    t.tick(6_000 * MS);
    assert_eq!(wasted_of(&t, name, AAAA), 3);
    // The next lookup by a new process is a walk of its own.
    let mut r2 = Resolver::new(41, 44001, false);
    lookup(&mut t, &mut r2, 7_000, name);
    assert_eq!(totals(&t).wasted, 12);
}

#[test]
fn a_short_name_found_at_the_second_suffix_wastes_the_first() {
    let mut t = tracer(100);
    let mut r = Resolver::new(50, 45000, false);
    r.step(
        &mut t,
        0,
        "redis.prod.svc.cluster.local",
        (NXDOMAIN, NXDOMAIN),
    );
    r.step(&mut t, 2, "redis.svc.cluster.local", (NOERROR, NOERROR));
    assert_eq!(wasted_of(&t, "redis.svc.cluster.local", A), 1);
    assert_eq!(totals(&t).wasted, 2);
}

#[test]
fn absolute_names_and_first_suffix_hits_waste_nothing() {
    let mut t = tracer(100);
    let mut r = Resolver::new(60, 46000, false);
    r.step(&mut t, 0, "api.example.com", (NOERROR, NOERROR));
    r.step(
        &mut t,
        2,
        "redis.prod.svc.cluster.local",
        (NOERROR, NOERROR),
    );
    // A name that does not exist, asked once as it is: needed, not wasted.
    r.step(&mut t, 4, "gone.example.com", (NXDOMAIN, NXDOMAIN));
    t.tick(10_000 * MS);
    let tot = totals(&t);
    assert_eq!((tot.wasted, tot.lookups), (0, 0), "{tot:?}");
}

#[test]
fn walks_past_the_bound_are_counted() {
    use std::sync::Arc;

    use super::{packet::Transport, tracker::QueryInfo, walk::Walks};
    // The tracker's tables fill first (every walk holds a query's entry),
    // so the walks' own bound is tried on its own.
    let mut w = Walks::new(4, 5_000 * MS);
    let mut out = Vec::new();
    for tgid in 0..6u32 {
        let q = Arc::new(QueryInfo {
            ts_ns: 0,
            cgroup_id: 42,
            tgid: 100 + tgid,
            comm: [0; 16],
            transport: Transport::Udp,
            client: "10.77.0.2:40000".parse().unwrap(),
            server: SERVER.parse().unwrap(),
            id: 1,
            name: Arc::from("x.test.cluster.local"),
            qtype: A,
        });
        w.answer(&q, u16::from(NXDOMAIN), MS, &mut out);
    }
    assert_eq!((w.len(), w.full), (4, 2));
}
