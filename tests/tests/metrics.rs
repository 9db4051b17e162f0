//! The Prometheus endpoint of the real agent: real connections and DNS
//! queries between pods, scraped over HTTP, parsed as Prometheus text,
//! and counted exactly.

use std::time::{Duration, Instant};

use prometheus_parse::Scrape;
use sockeye_agent::{
    dns::DnsConfig,
    findings::Kind,
    metrics::{labels::WorkloadLabels, MetricsConfig},
    Config,
};
use sockeye_tests::{
    dns::{dig, responder_on},
    metrics::{bucket, labels_of, parse, sample, MetricsAgent},
    net::TestNet,
    peer, require_root,
};

const WAIT: Duration = Duration::from_secs(20);

/// `w`'s labels followed by `more`.
fn series(w: &WorkloadLabels, more: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    [
        ("namespace", w.namespace.as_str()),
        ("workload", &w.workload),
        ("container", &w.container),
    ]
    .iter()
    .chain(more)
    .map(|(k, v)| (*k, v.to_string()))
    .collect()
}

/// Scrapes until `done` holds; panics with the last answer if it does not.
fn scrape_until(agent: &MetricsAgent, done: impl Fn(&Scrape) -> bool) -> (String, Scrape) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (head, body) = agent.scrape();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let scrape = parse(&body);
        if done(&scrape) {
            return (body, scrape);
        }
        assert!(Instant::now() < deadline, "not counted in time:\n{body}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn metrics_count_real_connections_and_dns_answers() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("metrics", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    // Ports of this run only: other test processes on this machine may use
    // the same 10.77.N.x addresses, and the agent sees every cgroup.
    let base = 20_000 + (std::process::id() % 5_000) as u16 * 4;
    let (open_port, refused_port, dns_port) = (base, base + 1, base + 2);
    let _dns = responder_on(server, dns_port);
    let config = Config {
        dns_ports: vec![dns_port],
        dns: DnsConfig {
            timeout: Duration::from_secs(1),
            ..DnsConfig::default()
        },
        ..Config::default()
    };
    let agent = MetricsAgent::start(config, MetricsConfig::default());
    let (head, _) = agent.scrape();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );

    let _srv = peer::listen(server, &format!("{}:{open_port}", server.ip4), "hold");
    let target = format!("{}:{open_port}", server.ip4);
    let (held, results) = peer::connect(client, &target, 5, true, 2000);
    assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");
    let nobody = format!("{}:{refused_port}", server.ip4);
    let (_, results) = peer::connect(client, &nobody, 2, false, 2000);
    assert!(results.iter().all(|r| r == "err 111"), "{results:?}");
    let at = format!("@{}", server.ip4);
    let port = dns_port.to_string();
    for (name, want) in [
        ("ok.test", "NOERROR"),
        ("nxdomain.test", "NXDOMAIN"),
        ("servfail.test", "SERVFAIL"),
        ("silent.test", "timed out"),
    ] {
        let (_, out) = dig(client, &[&at, "-p", &port, name, "+tries=1", "+time=1"]);
        assert!(out.contains(want), "{name}: {out}");
    }

    let (c, s) = (labels_of(client), labels_of(server));
    let connect = series(&c, &[("destination", &target)]);
    let refused = series(&c, &[("destination", &nobody), ("cause", "refused")]);
    let outbound = series(&c, &[("direction", "outbound"), ("destination", &target)]);
    let listening = format!(":{open_port}");
    let inbound = series(&s, &[("direction", "inbound"), ("destination", &listening)]);
    let established = |l: &[(&'static str, String)]| {
        let mut l = l.to_vec();
        l.push(("state", "ESTABLISHED".into()));
        l
    };
    let dns_server = format!("{}:{dns_port}", server.ip4);
    let dns = series(&c, &[("server", &dns_server)]);
    let rcode = |r: &str| {
        let mut l = dns.clone();
        l.push(("rcode", r.into()));
        l
    };
    let get = |scrape: &Scrape, name: &str, l: &[(&'static str, String)]| {
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sample(scrape, name, &l)
    };
    let hist = |scrape: &Scrape, name: &str, l: &[(&'static str, String)], le: f64| {
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        bucket(scrape, name, &l, le)
    };
    let counted = |m: &Scrape| {
        get(m, "sockeye_tcp_connect_duration_seconds_count", &connect) == Some(5.0)
            && get(m, "sockeye_tcp_connect_failures_total", &refused) == Some(2.0)
            && get(m, "sockeye_tcp_open_sockets", &established(&inbound)) == Some(5.0)
            && get(m, "sockeye_dns_timeouts_total", &dns) == Some(1.0)
            && get(m, "sockeye_dns_request_duration_seconds_count", &dns) == Some(3.0)
    };
    let (body, m) = scrape_until(&agent, counted);

    // Exact counts, every way they are shown.
    let d = "sockeye_tcp_connect_duration_seconds";
    assert_eq!(hist(&m, d, &connect, f64::INFINITY), Some(5.0), "{body}");
    let sum = get(&m, &format!("{d}_sum"), &connect).expect("sum");
    assert!(
        sum > 0.0 && sum < 5.0 * 2.0,
        "5 connects on a bridge: {sum} s"
    );
    assert_eq!(
        get(&m, "sockeye_tcp_connections_total", &outbound),
        Some(5.0)
    );
    assert_eq!(
        get(&m, "sockeye_tcp_connections_total", &inbound),
        Some(5.0)
    );
    assert_eq!(
        get(&m, "sockeye_tcp_open_sockets", &established(&outbound)),
        Some(5.0),
        "held open by the client"
    );
    for cause in ["timed_out", "unreachable", "aborted", "other"] {
        let mut l = refused.clone();
        l.pop();
        l.push(("cause", cause.into()));
        assert_eq!(get(&m, "sockeye_tcp_connect_failures_total", &l), Some(0.0));
    }
    assert_eq!(get(&m, "sockeye_dns_queries_total", &dns), Some(4.0));
    for (r, n) in [
        ("NOERROR", 1.0),
        ("NXDOMAIN", 1.0),
        ("SERVFAIL", 1.0),
        ("REFUSED", 0.0),
    ] {
        assert_eq!(
            get(&m, "sockeye_dns_responses_total", &rcode(r)),
            Some(n),
            "{r}"
        );
    }
    let dd = "sockeye_dns_request_duration_seconds";
    assert_eq!(hist(&m, dd, &dns, f64::INFINITY), Some(3.0));

    // The agent's own health.
    let one = |name: &str, k: &'static str, v: &str| sample(&m, name, &[(k, v)]);
    assert!(one("sockeye_events_received_total", "ring", "tcp").is_some_and(|n| n >= 12.0));
    assert!(
        one("sockeye_events_received_total", "ring", "dns").is_some_and(|n| n >= 7.0),
        "4 queries and 3 answers on our DNS port"
    );
    for counter in [
        "kernel_ringbuf_full",
        "kernel_sockets_map_full",
        "kernel_dns_ringbuf_full",
        "user_decode_errors",
        "user_socket_table_full",
        "user_flows_evicted",
        "user_dns_pending_full",
        "user_metrics_flows_lost",
    ] {
        assert!(
            one("sockeye_dropped_events_total", "counter", counter).is_some(),
            "{counter} missing"
        );
    }
    assert_eq!(
        one("sockeye_table_capacity", "table", "sockets"),
        Some(65_536.0)
    );
    assert!(one("sockeye_table_entries", "table", "sockets").is_some_and(|n| n >= 10.0));
    assert!(sample(&m, "sockeye_process_resident_memory_bytes", &[]).is_some_and(|b| b > 1e6));
    assert_eq!(
        one("sockeye_build_info", "version", env!("CARGO_PKG_VERSION")),
        Some(1.0)
    );
    // The detectors run every second in the loop; every kind has its
    // counters (the findings themselves: tests/tests/findings_api.rs).
    assert!(
        sample(&m, "sockeye_findings_evaluations_total", &[]).is_some_and(|n| n >= 1.0),
        "{body}"
    );
    for kind in Kind::ALL {
        for family in [
            "sockeye_findings_opened_total",
            "sockeye_findings_resolved_total",
        ] {
            assert!(
                one(family, "kind", kind.name()).is_some(),
                "{family} {kind:?}"
            );
        }
    }
    assert_eq!(
        one(
            "sockeye_table_capacity",
            "table",
            "metrics_findings_label_sets"
        ),
        Some(200.0)
    );
    assert_eq!(
        sample(&m, "sockeye_findings_watch_missed_total", &[]),
        Some(0.0)
    );

    // Counters only grow: after the client lets go, connections and the
    // histogram stay, open sockets fall.
    drop(held);
    let (_, later) = scrape_until(&agent, |m| {
        get(m, "sockeye_tcp_open_sockets", &established(&outbound)).is_none()
    });
    assert_eq!(
        get(
            &later,
            "sockeye_tcp_connect_duration_seconds_count",
            &connect
        ),
        Some(5.0)
    );
    assert_eq!(
        get(&later, "sockeye_tcp_connections_total", &outbound),
        Some(5.0)
    );
    assert_eq!(
        get(&later, "sockeye_dns_responses_total", &rcode("NOERROR")),
        Some(1.0)
    );
}
