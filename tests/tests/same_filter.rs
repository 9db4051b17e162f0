//! One filter, one meaning (issue 14): the same `Filter` sent to a real
//! agent (its API, over the unix socket) and to the real collector holding
//! that agent's windows gets the same rows, and the same refusal when it
//! is malformed. Both parse and match it with `sockeye_core::filter`; this
//! checks that nothing on either path (the agent's views, the collector's
//! windows) reads it another way.

use std::collections::BTreeMap;

use sockeye_proto::{connect::connect, v1 as pb, v1::agent_service_client::AgentServiceClient};
use sockeye_tests::{
    faults::{Rig, READER},
    peer,
    procs::{free_port, wait_for},
    require_root,
};
use tonic::Code;

/// (cgroup path, destination) -> (connects ok, connects failed), for the
/// rig's client pod only: the agent sees the whole machine, and traffic of
/// other processes may come and go between the two questions.
type Rows = BTreeMap<(String, String), (u64, u64)>;

fn key(w: Option<&pb::Workload>, e: Option<&pb::Endpoint>) -> (String, String) {
    let e = e.cloned().unwrap_or_default();
    (
        w.map(|w| w.cgroup_path.clone()).unwrap_or_default(),
        format!("{}:{}", e.ip, e.port),
    )
}

fn from_agent(rig: &Rig, filter: &pb::Filter) -> Result<Rows, tonic::Status> {
    let target = format!("unix://{}", rig.dir.join("agent.sock").display());
    rig.rt.block_on(async {
        let mut c = AgentServiceClient::new(connect(&target, None).await.expect("agent API"));
        let snap = c
            .get_snapshot(pb::GetSnapshotRequest {
                filter: Some(filter.clone()),
            })
            .await?
            .into_inner();
        let mut rows = Rows::new();
        for f in snap.aggregates.unwrap_or_default().tcp_flows {
            let ours = f
                .workload
                .as_ref()
                .is_some_and(|w| w.cgroup_path == rig.client_cgroup);
            if !ours || f.direction != pb::Direction::Outbound as i32 {
                continue;
            }
            let failed: u64 = f.connects_failed.values().sum();
            let row = rows
                .entry(key(f.workload.as_ref(), f.remote.as_ref()))
                .or_default();
            row.0 += f.connects_ok;
            row.1 += failed;
        }
        Ok(rows)
    })
}

fn from_collector(
    rig: &Rig,
    addr: std::net::SocketAddr,
    filter: &pb::Filter,
) -> Result<Rows, tonic::Status> {
    let mut c = rig.client(addr, Some(READER), None);
    let top = rig
        .rt
        .block_on(c.query_top(pb::QueryTopRequest {
            filter: Some(filter.clone()),
            from_unix_ms: 0,
            to_unix_ms: i64::MAX / 2,
            by: "failures".into(),
            limit: 1000,
        }))?
        .into_inner();
    Ok(top
        .rows
        .iter()
        .filter(|r| {
            r.workload
                .as_ref()
                .is_some_and(|w| w.cgroup_path == rig.client_cgroup)
        })
        .map(|r| {
            (
                key(r.workload.as_ref(), r.destination.as_ref()),
                (r.connects_ok, r.connects_failed),
            )
        })
        .collect())
}

#[test]
fn the_same_filter_gets_the_same_answer_from_an_agent_and_from_the_collector() {
    if !require_root() {
        return;
    }
    let rig = Rig::new("filter");
    let (port, data) = (free_port(), rig.dir.join("data"));
    let collector = rig.start_collector(port, &data, &[]);
    let agent = rig.start_agent(port, &[]);
    let server = rig.net.pod(1).ip4;
    // Two destinations of the client pod: the server's 8080 (accepted) and
    // its port 9 (nothing listens: refused).
    rig.connect(4);
    let (_p, refused) = peer::connect(rig.net.pod(0), &format!("{server}:9"), 2, false, 2000);
    assert_eq!(refused, ["err 111", "err 111"], "ECONNREFUSED");
    rig.expect_connects(&agent, collector.grpc, 4);
    let all = pb::Filter::default();
    let settled = wait_for(
        "the refused connects at the collector",
        std::time::Duration::from_secs(30),
        || {
            let rows = from_collector(&rig, collector.grpc, &all).expect("QueryTop");
            (rows.values().map(|r| r.1).sum::<u64>() == 2).then_some(rows)
        },
    );
    assert_eq!(settled.len(), 2, "two destinations: {settled:?}");

    let leaf = rig.client_cgroup.rsplit('/').next().unwrap().to_string();
    let f = |container: &str, destination: &str, node: &str| pb::Filter {
        container: container.into(),
        destination: destination.into(),
        node: node.into(),
        ..Default::default()
    };
    let cases = [
        (f("", "", ""), 2),
        (f(&leaf, "", ""), 2),
        (f(&rig.client_cgroup, "", &rig.node), 2),
        (f("", &server.to_string(), ""), 2),
        (f("", &format!("{server}:8080"), ""), 1),
        (f("", &format!("[::ffff:{server}]:8080"), ""), 1),
        (f("", ":9", ""), 1),
        (f("", &format!("{server}:9"), ""), 1),
        (f("", "10.255.255.1", ""), 0),
        (f(&leaf, ":8080", "another-node"), 0),
        (f("no-such-workload", "", ""), 0),
        (
            pb::Filter {
                namespace: "shop".into(),
                ..Default::default()
            },
            0,
        ),
    ];
    for (filter, rows) in &cases {
        let a = from_agent(&rig, filter).expect("the agent answers");
        let c = from_collector(&rig, collector.grpc, filter).expect("the collector answers");
        assert_eq!(a, c, "one answer for {filter:?}");
        assert_eq!(a.len(), *rows, "{filter:?}: {a:?}");
        eprintln!("{filter:?}: {} rows on both", a.len());
    }
    // Malformed: the same refusal, word for word.
    for bad in [
        f("", "10.0.1.12:99999", ""),
        f("", "bad name!", ""),
        f("php\u{1b}[2J", "", ""),
        pb::Filter {
            pod: "Payments".into(),
            ..Default::default()
        },
    ] {
        let a = from_agent(&rig, &bad).unwrap_err();
        let c = from_collector(&rig, collector.grpc, &bad).unwrap_err();
        assert_eq!(a.code(), Code::InvalidArgument, "{a:?}");
        assert_eq!(c.code(), Code::InvalidArgument, "{c:?}");
        assert_eq!(a.message(), c.message(), "one refusal for {bad:?}");
    }
    agent.proc.stop(std::time::Duration::from_secs(10));
    collector.proc.stop(std::time::Duration::from_secs(10));
}
