//! Nodes that go dark (issue 15, item 9): the real collector and two real
//! agents in two nodes' names; an agent killed without a word is a
//! `node_silent` finding of the collector naming the node and the
//! workloads it held; a second node going silent soon after makes both
//! critical and each names the other; an agent that comes back ends its
//! silence, with the gap. A collector restart is not the nodes' silence.

use std::time::{Duration, Instant};

use sockeye_proto::v1 as pb;
use sockeye_tests::{
    apiserver::TokenOwner,
    faults::{Rig, AUDIENCE, READER},
    procs::{free_port, wait_for},
    require_root,
};

const SILENT_AFTER_S: u64 = 5;

fn silent(rig: &Rig, addr: std::net::SocketAddr, include_resolved: bool) -> Vec<pb::MergedFinding> {
    let mut c = rig.client(addr, Some(READER), None);
    rig.rt
        .block_on(c.list_findings(pb::ClusterFindingsRequest {
            include_resolved,
            ..Default::default()
        }))
        .expect("ListFindings as the reader")
        .into_inner()
        .findings
}

/// The node's own `node_silent` findings.
fn of_kind<'a>(all: &'a [pb::MergedFinding], node: &str) -> Vec<&'a pb::Finding> {
    all.iter()
        .filter(|m| m.kind == "node_silent")
        .flat_map(|m| &m.findings)
        .filter(|f| f.node == node)
        .collect()
}

fn fact(f: &pb::Finding, key: &str) -> f64 {
    f.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {:?}", f.evidence))
        .value
}

#[test]
fn an_agent_that_stops_pushing_is_a_silent_node_and_two_together_are_critical() {
    if !require_root() {
        return;
    }
    let rig = Rig::new("dark");
    let other = format!("{}-b", rig.node);
    rig.api.add_token(
        "agent-token-b",
        TokenOwner::pod("sockeye", "sockeye-agent", &other, AUDIENCE),
    );
    let token_b = rig.dir.join("agent-b.token");
    std::fs::write(&token_b, "agent-token-b\n").unwrap();
    let (port, data) = (free_port(), rig.dir.join("data"));
    let after = format!("{SILENT_AFTER_S}s");
    let collector = rig.start_collector(port, &data, &["--node-silent-after", &after]);
    let start_b = || {
        rig.start_agent(
            port,
            &[
                "--node-name",
                &other,
                "--collector-token-file",
                &token_b.display().to_string(),
                "--api-socket",
                &rig.dir.join("agent-b.sock").display().to_string(),
            ],
        )
    };
    let a = rig.start_agent(port, &[]);
    let b = start_b();
    rig.connect(3);
    // Both agents see this machine's connects: count A's.
    rig.expect_connects_on(&a, collector.grpc, &rig.node, 3);
    // Both push: nothing is silent, well past the bound.
    std::thread::sleep(Duration::from_secs(SILENT_AFTER_S + 2));
    let all = silent(&rig, collector.grpc, true);
    assert!(
        all.iter().all(|f| f.kind != "node_silent"),
        "pushing nodes are not silent: {all:?}"
    );

    // A is killed: no goodbye, no last window.
    a.proc.signal(libc::SIGKILL);
    let killed = Instant::now();
    let f = wait_for("node A's silence", Duration::from_secs(60), || {
        of_kind(&silent(&rig, collector.grpc, false), &rig.node)
            .first()
            .map(|f| (*f).clone())
    });
    let detect = killed.elapsed();
    assert!(
        detect <= Duration::from_secs(SILENT_AFTER_S + 3),
        "found {detect:?} after the kill"
    );
    assert_eq!(f.severity, "warning", "{f:?}");
    assert_eq!(f.subject.as_ref().unwrap().node, rig.node);
    assert!(fact(&f, "silent_s") >= SILENT_AFTER_S as f64, "{f:?}");
    assert!((0.3..=1.5).contains(&fact(&f, "push_interval_s")), "{f:?}");
    assert!(
        f.affected
            .iter()
            .any(|w| w.cgroup_path.ends_with(&rig.client_cgroup) || w.label.contains("client")),
        "the client pod A held is named: {:?}",
        f.affected
    );
    let all = silent(&rig, collector.grpc, false);
    assert!(of_kind(&all, &other).is_empty(), "B still pushes: {all:?}");
    let roots: Vec<&str> = all.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(roots, vec!["node_silent"], "one finding, nothing else");
    eprintln!(
        "node A silent: found {detect:?} after the kill: {}",
        f.summary
    );

    // B goes too, soon after: two nodes together.
    b.proc.stop(Duration::from_secs(10));
    let stopped = Instant::now();
    let (fa, fb) = wait_for("both silences", Duration::from_secs(60), || {
        let all = silent(&rig, collector.grpc, false);
        let (fa, fb) = (of_kind(&all, &rig.node), of_kind(&all, &other));
        match (fa.first(), fb.first()) {
            (Some(fa), Some(fb)) => Some(((*fa).clone(), (*fb).clone())),
            _ => None,
        }
    });
    eprintln!(
        "node B silent: found {:?} after its stop",
        stopped.elapsed()
    );
    for (f, peer) in [(&fa, &other), (&fb, &rig.node)] {
        assert_eq!(f.severity, "critical", "{f:?}");
        assert_eq!(fact(f, "nodes_silent_with_it"), 1.0);
        assert!(
            f.evidence.iter().any(|e| e.fact.contains(peer.as_str())),
            "names {peer}: {:?}",
            f.evidence
        );
    }

    // A collector restart is not the nodes' silence: B comes back while
    // the collector is away, and is not silent once the collector is up.
    let b = start_b();
    collector.proc.stop(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(SILENT_AFTER_S + 1));
    let collector = rig.start_collector(port, &data, &["--node-silent-after", &after]);
    wait_for(
        "B's windows after the restart",
        Duration::from_secs(60),
        || (b.push("windows_buffered") <= 1 && b.push("windows_acked") > 0).then_some(()),
    );
    let all = silent(&rig, collector.grpc, false);
    assert!(of_kind(&all, &other).is_empty(), "{all:?}");
    // A is still dark: said once the bound has passed since the restart.
    wait_for(
        "A's silence after the restart",
        Duration::from_secs(30),
        || (of_kind(&silent(&rig, collector.grpc, false), &rig.node).len() == 1).then_some(()),
    );

    // A comes back: its silence ends, with the gap.
    let down_since = killed;
    let a = rig.start_agent(port, &[]);
    let back = down_since.elapsed();
    wait_for("A's silence to end", Duration::from_secs(60), || {
        of_kind(&silent(&rig, collector.grpc, false), &rig.node)
            .is_empty()
            .then_some(())
    });
    let all = silent(&rig, collector.grpc, true);
    let ended = of_kind(&all, &rig.node);
    assert_eq!(ended.len(), 1, "{all:?}");
    let gap = fact(ended[0], "silent_s");
    assert!(ended[0].resolved_unix_ms > 0, "{:?}", ended[0]);
    assert!(
        (gap - back.as_secs_f64()).abs() < 5.0,
        "the gap {gap} s against {back:?} between the kill and the restart"
    );
    eprintln!("node A back after {back:?}: the ended silence says {gap:.1} s");
    a.proc.stop(Duration::from_secs(10));
    b.proc.stop(Duration::from_secs(10));
    collector.proc.stop(Duration::from_secs(10));
}
