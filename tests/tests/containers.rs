//! End to end with real podman containers: two containers talk, and each
//! side's connections are attributed to the right container id.

use std::{net::IpAddr, time::Duration};

use sockeye_agent::{
    aggregate::flows::Direction,
    attribution::container::{Owner, Runtime},
};
use sockeye_tests::{
    agent::{flow, start, wait_for},
    container::{podman_available, Container, Rootfs},
    net::TestNet,
    require_root,
};

/// A root filesystem for containers and a network with two pods, or None
/// (the test is skipped) without root.
fn podman_pods(name: &str, pods: [&str; 2]) -> Option<(Rootfs, TestNet)> {
    if !require_root() {
        return None;
    }
    assert!(
        podman_available(),
        "podman is missing: run scripts/bootstrap.sh --test"
    );
    Some((Rootfs::build(name), TestNet::with_pods(name, &pods)))
}

#[test]
fn podman_containers_are_attributed_by_container_id() {
    let Some((rootfs, net)) = podman_pods("podman", ["web", "redis"]) else {
        return;
    };
    let (web_pod, redis_pod) = (net.pod(0), net.pod(1));
    let mut agent = start();

    let redis_addr = format!("{}:6379", redis_pod.ip4);
    let redis = Container::run(&rootfs, redis_pod, &["listen", &redis_addr, "hold"]);
    redis.wait_for_log("ready", Duration::from_secs(20));
    let web = Container::run(
        &rootfs,
        web_pod,
        &["connect", &redis_addr, "3", "hold", "2000"],
    );
    web.wait_for_log("done", Duration::from_secs(20));

    let (web_ip, redis_ip) = (IpAddr::V4(web_pod.ip4), IpAddr::V4(redis_pod.ip4));
    let is = |owner: &Option<Owner>, id: &str| matches!(owner, Some(Owner::Container { runtime: Runtime::Podman, id: cid, .. }) if cid == id);
    let snap = wait_for(&mut agent, &[], Duration::from_secs(15), |s| {
        s.flows.iter().any(|f| {
            is(&f.workload.owner, &web.id)
                && f.direction == Direction::Outbound
                && f.remote == redis_ip
                && f.connects_ok == 3
        }) && s.flows.iter().any(|f| {
            is(&f.workload.owner, &redis.id)
                && f.direction == Direction::Inbound
                && f.connects_ok == 3
        })
    });
    let out = snap
        .flows
        .iter()
        .find(|f| is(&f.workload.owner, &web.id) && f.remote == redis_ip)
        .unwrap();
    assert_eq!((out.port, out.open, out.last_pid), (6379, 3, web.pid));
    assert_eq!(out.workload.label(), format!("podman:{}", &web.id[..12]));
    let inb = flow(
        &snap,
        out.workload.cgroup_id,
        Direction::Outbound,
        redis_ip,
        6379,
    )
    .unwrap();
    assert_eq!(inb.connects_ok, 3);
    let served = snap
        .flows
        .iter()
        .find(|f| is(&f.workload.owner, &redis.id) && f.remote == web_ip)
        .unwrap();
    assert_eq!(
        (served.port, served.open, served.last_pid),
        (6379, 3, redis.pid)
    );
    // The --container filter selects by container id prefix.
    let only_web = agent.snapshot(Some(&web.id[..12]));
    assert!(!only_web.flows.is_empty());
    assert!(only_web
        .flows
        .iter()
        .all(|f| is(&f.workload.owner, &web.id)));
}

#[test]
fn a_container_that_connects_and_exits_keeps_its_name() {
    let Some((rootfs, net)) = podman_pods("shortlived", ["job", "db"]) else {
        return;
    };
    let (job_pod, db_pod) = (net.pod(0), net.pod(1));
    let mut agent = start();

    // A Job-like container: two connects to a port nobody listens on, then
    // it exits and podman removes its cgroup.
    let dst = format!("{}:5432", db_pod.ip4);
    let job = Container::run(&rootfs, job_pod, &["connect", &dst, "2", "close", "1000"]);
    let db_ip = IpAddr::V4(db_pod.ip4);
    let snap = wait_for(&mut agent, &[], Duration::from_secs(15), |s| {
        s.flows
            .iter()
            .any(|f| f.remote == db_ip && f.port == 5432 && f.failed_total() == 2)
    });
    let f = snap
        .flows
        .iter()
        .find(|f| f.remote == db_ip && f.port == 5432)
        .unwrap();
    assert_eq!(f.connects_failed["refused"], 2);
    assert_eq!(
        f.workload.label(),
        format!("podman:{}", &job.id[..12]),
        "{f:?}"
    );
    // Still named after the container is gone.
    drop(job);
    let later = agent.snapshot(None);
    let f = later
        .flows
        .iter()
        .find(|f| f.remote == db_ip && f.port == 5432)
        .unwrap();
    assert_eq!(
        f.workload.label(),
        format!("podman:{}", &later_id(&snap, db_ip)[..12])
    );
}

/// The container id a flow to `remote` was attributed to.
fn later_id(snap: &sockeye_agent::snapshot::Snapshot, remote: IpAddr) -> String {
    snap.flows
        .iter()
        .find(|f| f.remote == remote)
        .and_then(|f| f.workload.owner.as_ref())
        .and_then(|o| o.container_id())
        .map(str::to_string)
        .expect("attributed to a container")
}
