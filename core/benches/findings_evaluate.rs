//! One `Findings::evaluate` on full tables: 65,536 sockets over 16,384 flows
//! (the default `--max-sockets` and `--max-flows`) and 2,048 DNS rows (the
//! default `--dns-max-names`), histories filled to their longest window,
//! with leaks, CLOSE_WAIT pile-ups, refused connects and search-list walks
//! for the detectors to report. Prints milliseconds per evaluation
//! and the heap the findings keep; then, since keeping each flow's socket
//! counts is what makes an evaluation cheap, what the aggregator pays for
//! it: nanoseconds per connection through the full tables, and their heap.
//!
//! `cargo bench -p sockeye-core --bench findings_evaluate` (also run by
//! `cargo xtask bench-findings`). The kernel is not asked anything here:
//! the probe answers nothing (as for processes that are gone), so the
//! cost of the agent's sock_diag questions is measured by the agent
//! benchmark instead.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv4Addr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sockeye_common::{
    event::{EventKind, SockEvent, AF_INET},
    tcp_state,
};
use sockeye_core::{
    aggregate::{Aggregator, Limits},
    dns::{
        aggregate::DnsAggregates,
        packet::Transport,
        tracker::{DnsEvent, QueryInfo},
    },
    event::Event,
    findings::{kind_index, probe::Answers, Findings, FindingsConfig, Inputs, Kind},
    workload::Table as Names,
};

const SEC: u64 = 1_000_000_000;
const FLOWS: u64 = 16_384;
const SOCKETS: u64 = 65_536;
const CGROUPS: u64 = 64;
/// Flows gaining a socket every second for `LEAK_SECS`.
const LEAKS: u64 = 16;
const LEAK_SECS: u64 = 130;
/// Flows with this many sockets in CLOSE_WAIT (the default minimum is 5).
const CLOSE_WAITS: u64 = 64;
const CLOSE_WAIT_SOCKETS: u64 = 6;
/// Flows with refused connects (a dependency restarting elsewhere).
const REFUSED: u64 = 32;
/// DNS rows: every workload looks up names of its own under a three-domain
/// search list, one lookup a second; half of them walk the list first
/// (ndots:5 and names with dots), so their search-expansion finding opens.
const DNS_NAMES: u64 = 2048;
const SEARCH: [&str; 3] = [
    "prod.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];

/// One lookup by workload `cgroup` of its `n`th name at `ts_ns`.
fn lookup(dns: &mut DnsAggregates, cgroup: u64, n: u64, ts_ns: u64) {
    let name = format!("n{n}.w{cgroup}.example.com");
    let ask = |dns: &mut DnsAggregates, name: String, rcode: u16| {
        let query = Arc::new(QueryInfo {
            ts_ns,
            cgroup_id: cgroup,
            tgid: 100 + cgroup as u32,
            comm: [0; 16],
            transport: Transport::Udp,
            client: "10.0.0.2:40000".parse().unwrap(),
            server: "10.96.0.10:53".parse().unwrap(),
            id: 1,
            name: Arc::from(name),
            qtype: 1,
        });
        dns.record(&DnsEvent::Query {
            query: query.clone(),
            retry: false,
            after_truncation: false,
        });
        dns.record(&DnsEvent::Answer {
            query: query.clone(),
            latency_ns: 1_000_000,
            rcode,
            answers: u16::from(rcode == 0),
            truncated: false,
        });
        query
    };
    let walks = cgroup.is_multiple_of(2);
    if walks {
        for s in SEARCH {
            ask(dns, format!("{name}.{s}"), 3);
        }
    }
    let q = ask(dns, name, 0);
    if walks {
        dns.record(&DnsEvent::FanOut {
            query: q,
            wasted: 3,
            answered: true,
        });
    }
}

/// Evaluations, one per simulated second: past the longest window (125 s of
/// history), so the last ones run on full histories.
const EVALUATIONS: u64 = 160;
/// Short connections through the full tables after the evaluations.
const CHURN: u64 = 1_000_000;
/// The evaluations measured: the last ones.
const MEASURED: usize = 30;

/// Counts live heap bytes and their peak, for the findings' memory.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Flow `i`: one of `CGROUPS` workloads, a quarter inbound, each to its own
/// remote address.
fn event(kind: EventKind, flow: u64, cookie: u64, ts_ns: u64) -> Event {
    let remote = Ipv4Addr::new(
        10,
        (1 + flow / 65_536) as u8,
        (flow / 256) as u8,
        flow as u8,
    );
    let cgroup_id = 1000 + flow % CGROUPS;
    let (kind, local_port, remote_port) = match kind {
        EventKind::Established if flow.is_multiple_of(4) => (EventKind::Accepted, 8080, 40_000),
        other => (other, 40_000, 6379),
    };
    let mut remote_addr = [0u8; 16];
    remote_addr[..4].copy_from_slice(&remote.octets());
    Event {
        kind,
        local: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        remote: IpAddr::V4(remote),
        raw: SockEvent {
            ts_ns,
            cookie,
            cgroup_id,
            netns_cookie: 1,
            duration_ns: 200_000,
            old_state_ns: 0,
            bytes_acked: 0,
            bytes_received: 0,
            tgid: 100 + cgroup_id as u32,
            pid: 100 + cgroup_id as u32,
            kind: kind as u32,
            errno: 0,
            syn_retransmits: 0,
            flags: 0,
            family: AF_INET,
            local_port,
            remote_port,
            old_state: 0,
            new_state: 0,
            local_addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr,
            comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
        },
    }
}

struct Table {
    agg: Aggregator,
    next_cookie: u64,
}

impl Table {
    fn open(&mut self, flow: u64, ts_ns: u64) -> u64 {
        self.next_cookie += 1;
        let cookie = self.next_cookie;
        self.agg
            .handle(&event(EventKind::Established, flow, cookie, ts_ns));
        cookie
    }

    fn state(&mut self, flow: u64, cookie: u64, ts_ns: u64, old: u8, new: u8) {
        let mut e = event(EventKind::StateChange, flow, cookie, ts_ns);
        e.raw.old_state = old;
        e.raw.new_state = new;
        self.agg.handle(&e);
    }
}

fn main() {
    let t0 = 1000 * SEC;
    let base = SOCKETS - LEAKS * LEAK_SECS - CLOSE_WAITS * CLOSE_WAIT_SOCKETS;
    // (flow, cookie) of the sockets there from the start.
    let mut held: Vec<(u64, u64)> = Vec::with_capacity(base as usize);
    let heap_empty = LIVE.load(Ordering::Relaxed);
    let mut t = Table {
        agg: Aggregator::new(Limits::default()),
        next_cookie: 0,
    };
    // The leaks' sockets arrive during the run; the rest are there from
    // the start, so the table ends exactly full.
    held.extend((0..base).map(|i| (i % FLOWS, t.open(i % FLOWS, t0))));
    let table_heap = LIVE.load(Ordering::Relaxed) - heap_empty;
    for f in 0..CLOSE_WAITS {
        let flow = LEAKS + f;
        for _ in 0..CLOSE_WAIT_SOCKETS {
            let cookie = t.open(flow, t0);
            t.state(
                flow,
                cookie,
                t0 + SEC,
                tcp_state::ESTABLISHED,
                tcp_state::CLOSE_WAIT,
            );
        }
    }
    for f in 0..REFUSED {
        // Outbound ones: a failed connect of an inbound flow's key would
        // make a flow of its own, and a full table evicts a sixteenth.
        let flow = 4 * (LEAKS + CLOSE_WAITS + f) + 1;
        for _ in 0..3 {
            t.next_cookie += 1;
            let mut e = event(EventKind::Closed, flow, t.next_cookie, t0 + 2 * SEC);
            e.raw.old_state = tcp_state::SYN_SENT;
            e.raw.new_state = tcp_state::CLOSE;
            e.raw.errno = 111;
            t.agg.handle(&e);
        }
    }

    let mut dns = DnsAggregates::new(DNS_NAMES as usize);
    // Names per workload, so that its rows (4 per name when it walks: the
    // three candidates and the name) fill its share of the table.
    let rows_per_cgroup = DNS_NAMES / CGROUPS;
    let names_of = |c: u64| {
        if c.is_multiple_of(2) {
            rows_per_cgroup / 4
        } else {
            rows_per_cgroup
        }
    };
    // Every row there from the start (the heap kept by the findings is
    // measured from here), then one lookup per workload a second.
    for c in 0..CGROUPS {
        for n in 0..names_of(1000 + c) {
            lookup(&mut dns, 1000 + c, n, t0);
        }
    }
    let mut attributor = Names::default();
    let mut probe = Answers::default();
    let heap_before = LIVE.load(Ordering::Relaxed);
    let mut findings = Findings::new(FindingsConfig::default());
    let mut times = Vec::new();
    let mut transient = 0usize;
    for s in 0..EVALUATIONS {
        let now = t0 + s * SEC;
        if s < LEAK_SECS {
            for flow in 0..LEAKS {
                t.open(flow, now);
            }
        }
        for c in 0..CGROUPS {
            lookup(&mut dns, 1000 + c, s % names_of(1000 + c), now);
        }
        let inputs = Inputs {
            tcp: &t.agg,
            dns: &dns,
            now_ns: now,
        };
        let live = LIVE.load(Ordering::Relaxed);
        PEAK.store(live, Ordering::Relaxed);
        let start = Instant::now();
        findings.evaluate(&inputs, &mut attributor, &mut probe);
        times.push(start.elapsed());
        transient = transient.max(PEAK.load(Ordering::Relaxed) - live);
        findings.take_changes();
    }
    let kept = LIVE.load(Ordering::Relaxed).saturating_sub(heap_before);

    // What the aggregator pays per connection on these full tables: one
    // socket closes and another opens on its flow, so the table stays full.
    let churn_start = Instant::now();
    for i in 0..CHURN {
        let (flow, cookie) = &mut held[(i % base) as usize];
        let now = t0 + EVALUATIONS * SEC + i;
        let mut e = event(EventKind::Closed, *flow, *cookie, now);
        e.raw.old_state = tcp_state::ESTABLISHED;
        e.raw.new_state = tcp_state::CLOSE;
        t.agg.handle(&e);
        *cookie = t.open(*flow, now);
    }
    let churn = churn_start.elapsed();

    let drops = t.agg.drops();
    assert_eq!(
        (t.agg.sockets.len() as u64, t.agg.flows.len() as u64),
        (SOCKETS, FLOWS),
        "the synthetic table is not the intended size"
    );
    assert_eq!(drops.socket_table_full + drops.flows_evicted, 0);
    assert_eq!(dns.named(), DNS_NAMES as usize, "the DNS table is not full");

    let mut measured: Vec<Duration> = times[times.len() - MEASURED..].to_vec();
    measured.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut open = [0usize; Kind::ALL.len()];
    for f in findings.open() {
        open[kind_index(f.kind)] += 1;
    }
    println!(
        "findings evaluate: {SOCKETS} sockets over {FLOWS} flows, {DNS_NAMES} DNS rows, {} evaluations (1 per simulated second)",
        EVALUATIONS
    );
    println!(
        "  last {MEASURED} (histories full): median {:.2} ms, max {:.2} ms per evaluation; first {:.2} ms",
        ms(measured[MEASURED / 2]),
        ms(measured[MEASURED - 1]),
        ms(times[0])
    );
    println!(
        "  heap kept by the findings: {:.2} MiB; transient per evaluation: up to {:.2} MiB",
        kept as f64 / (1 << 20) as f64,
        transient as f64 / (1 << 20) as f64
    );
    println!(
        "  aggregator: {:.2} MiB of heap for the first {} sockets; {:.0} ns per connection (a close and an open) on the full tables",
        table_heap as f64 / (1 << 20) as f64,
        base,
        churn.as_secs_f64() * 1e9 / CHURN as f64
    );
    let by_kind: Vec<String> = Kind::ALL
        .iter()
        .zip(open)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    println!(
        "  open findings: {}; histories kept for {} flows (max_series), the rest skipped",
        by_kind.join(", "),
        findings.config().max_series
    );
}
