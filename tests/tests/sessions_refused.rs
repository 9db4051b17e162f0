//! A server elsewhere that refuses its clients' sessions: the queue
//! consumers that could not authenticate after a secret changed. The agent
//! watches only the client pods' cgroups (the server is another node's, as
//! far as it can see), so only the client's end is visible: sessions the
//! peer closes within milliseconds of opening, with a few bytes, again and
//! again, after it served them before.

use std::{net::SocketAddr, time::Duration};

use sockeye_agent::{
    findings::{Finding, FindingsConfig, Kind},
    Config,
};
use sockeye_tests::{
    findings::{report_fault_to_finding, Watch},
    net::TestNet,
    peer,
    redis::ChurnClient,
    require_root,
};

fn value(f: &Finding, key: &str) -> f64 {
    f.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {f:#?}"))
        .value
}

#[test]
fn a_server_that_starts_refusing_its_client_is_found_from_the_client() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("refuse", &["worker"]);
    let worker = net.pod(0);
    let ip = net.bridge_addr();
    let addr = SocketAddr::from((ip, 6380));
    let mut cmd = net.on_bridge(peer::netpeer_path().to_str().expect("utf-8"));
    cmd.args(["listen", &addr.to_string(), "redis"]);
    let mut server = peer::spawn_command(cmd, "netpeer");
    assert_eq!(server.expect_line(Duration::from_secs(30)), "ready");
    let mut watch = Watch::start_with(
        &Config {
            cgroup_root: Some(net.cgroup_parent().to_path_buf()),
            findings: Some(FindingsConfig::default()),
            ..Config::default()
        },
        &[worker.cgroup_id],
    );
    // Served: a session per request, five a second.
    let mut client = ChurnClient::start(worker, addr, 200, 1000);
    watch.run_until(Duration::from_secs(30), "served", |_| {
        client.read();
        client.ok.len() >= 25
    });
    watch.run_for(Duration::from_secs(6), |_| client.read());
    assert!(watch.open().is_empty(), "served: {}", watch.describe());
    assert!(
        client.failed_requests.is_empty(),
        "{:?}",
        client.failed_requests
    );

    // The secret changes: every new session is told no and closed.
    server.send("refuse");
    assert_eq!(server.expect_line(Duration::from_secs(10)), "refusing");
    let f = watch.wait_open(
        Kind::SessionsRefused,
        Duration::from_secs(30),
        |f| f.subject.cgroup_id == worker.cgroup_id,
        |_| client.read(),
    );
    let fault = client
        .failed_requests
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .min()
        .expect("the worker was refused");
    report_fault_to_finding("sessions refused", fault, watch.first_seen(&f.id), &f);
    eprintln!("{}\n{:#?}", f.summary, f.evidence);
    let d = f.destination.as_ref().expect("the server");
    assert_eq!((d.addr, d.port), (addr.ip(), addr.port()));
    assert!(value(&f, "refused_sessions") >= 5.0, "{f:#?}");
    let refused = client.failed_requests.len() as f64;
    assert!(
        value(&f, "refused_sessions") <= refused,
        "no more than the client saw ({refused}): {f:#?}"
    );
    // Nothing else: connects succeed, so no restart, no pool finding.
    let open: Vec<Kind> = watch.open().iter().map(|f| f.kind).collect();
    assert_eq!(open, [Kind::SessionsRefused], "{}", watch.describe());
}
