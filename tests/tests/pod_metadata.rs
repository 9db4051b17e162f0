//! Kubernetes names from the runtime's records, with real podman containers
//! that carry the annotations a kubelet's CRI runtime writes: their traffic
//! appears under the right namespace, pod and container.

use std::{net::IpAddr, path::Path, time::Duration};

use sockeye_agent::{
    aggregate::flows::Direction, attribution::filter::WorkloadFilter, snapshot::FlowView,
};
use sockeye_tests::{
    agent::{start, wait_for},
    container::{podman_available, Container, Rootfs},
    net::TestNet,
    require_root,
};

/// What CRI-O (and the kubelet's labels) put into a container's spec.
fn crio(
    ns: &'static str,
    pod: &'static str,
    uid: &'static str,
    ctr: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("io.kubernetes.pod.namespace", ns),
        ("io.kubernetes.pod.name", pod),
        ("io.kubernetes.pod.uid", uid),
        ("io.kubernetes.container.name", ctr),
        ("io.kubernetes.cri-o.ContainerType", "container"),
    ]
}

fn setup(name: &str, pods: &[&str]) -> Option<(Rootfs, TestNet)> {
    if !require_root() {
        return None;
    }
    assert!(
        podman_available(),
        "podman is missing: run scripts/bootstrap.sh --test"
    );
    Some((Rootfs::build(name), TestNet::with_pods(name, pods)))
}

fn named<'a>(flows: &'a [FlowView], label: &str, dir: Direction) -> Option<&'a FlowView> {
    flows
        .iter()
        .find(|f| f.workload.label() == label && f.direction == dir)
}

#[test]
fn traffic_is_shown_under_namespace_pod_and_container() {
    let Some((rootfs, net)) = setup("k8snames", &["web", "redis", "pause"]) else {
        return;
    };
    let (web_pod, redis_pod, pause_pod) = (net.pod(0), net.pod(1), net.pod(2));
    let mut agent = start();

    // containerd's CRI annotations on the server...
    let redis_addr = format!("{}:6379", redis_pod.ip4);
    let redis = Container::run_annotated(
        &rootfs,
        redis_pod,
        &[
            ("io.kubernetes.cri.sandbox-namespace", "data"),
            ("io.kubernetes.cri.sandbox-name", "redis-0"),
            (
                "io.kubernetes.cri.sandbox-uid",
                "0b5e1c2d-1111-4222-8333-444455556666",
            ),
            ("io.kubernetes.cri.container-name", "redis"),
            ("io.kubernetes.cri.container-type", "container"),
        ],
        &["listen", &redis_addr, "hold"],
    );
    redis.wait_for_log("ready", Duration::from_secs(20));
    // ...CRI-O's on a client...
    let web = Container::run_annotated(
        &rootfs,
        web_pod,
        &crio(
            "shop",
            "web-7d9f8b6c5-x2x4q",
            "5f2b1c3d-aaaa-4bbb-8ccc-0123456789ab",
            "nginx",
        ),
        &["connect", &redis_addr, "3", "hold", "2000"],
    );
    // ...and a pod sandbox ("pause") container, which is named as the pod.
    let mut sandbox = crio(
        "shop",
        "cron-29061",
        "9d1e2f3a-bbbb-4ccc-8ddd-0123456789ab",
        "POD",
    );
    sandbox.push(("io.kubernetes.cri-o.ContainerType", "sandbox"));
    let pause = Container::run_annotated(
        &rootfs,
        pause_pod,
        &sandbox,
        &["connect", &redis_addr, "1", "hold", "2000"],
    );
    web.wait_for_log("done", Duration::from_secs(20));
    pause.wait_for_log("done", Duration::from_secs(20));

    let redis_ip = IpAddr::V4(redis_pod.ip4);
    let snap = wait_for(&mut agent, &[], Duration::from_secs(15), |s| {
        named(
            &s.flows,
            "shop/web-7d9f8b6c5-x2x4q/nginx",
            Direction::Outbound,
        )
        .is_some_and(|f| f.connects_ok == 3)
            && served(&s.flows, "data/redis-0/redis") == 4
            && named(&s.flows, "shop/cron-29061", Direction::Outbound)
                .is_some_and(|f| f.connects_ok == 1)
    });
    let out = named(
        &snap.flows,
        "shop/web-7d9f8b6c5-x2x4q/nginx",
        Direction::Outbound,
    )
    .unwrap();
    assert_eq!(
        (out.remote, out.port, out.last_pid),
        (redis_ip, 6379, web.pid)
    );
    let meta = out.workload.pod.as_ref().expect("pod metadata");
    assert_eq!(
        meta.uid.as_deref(),
        Some("5f2b1c3d-aaaa-4bbb-8ccc-0123456789ab")
    );
    // The container id is still there for whoever needs it.
    assert_eq!(
        out.workload.owner.as_ref().and_then(|o| o.container_id()),
        Some(web.id.as_str())
    );
    // JSON readers filter on these fields.
    let json = serde_json_value(out);
    assert_eq!(json["workload"]["pod"]["namespace"], "shop");
    assert_eq!(json["workload"]["pod"]["container"], "nginx");
    assert_eq!(json["workload"]["pod"]["source"], "runtime_record");
    let sb = named(&snap.flows, "shop/cron-29061", Direction::Outbound).unwrap();
    assert_eq!(sb.workload.pod.as_ref().unwrap().container, None);

    // Listeners and their changes carry the names too.
    assert!(snap
        .listeners
        .iter()
        .any(|l| l.port == 6379 && l.workload.label() == "data/redis-0/redis"));
    let started = snap
        .listener_changes
        .iter()
        .find(|c| c.listener.port == 6379)
        .expect("the redis listener's start");
    let json = serde_json::to_value(started).expect("serialises");
    assert_eq!(json["workload"]["pod"]["name"], "redis-0");
    assert_eq!(json["change"], "started");

    // --container matches a namespace and a pod name.
    let shop = agent.snapshot(Some("shop"));
    assert!(!shop.flows.is_empty());
    assert!(shop.flows.iter().all(|f| f
        .workload
        .pod
        .as_ref()
        .is_some_and(|p| p.namespace == "shop")));
    let redis_only = agent.snapshot(Some("redis-0"));
    assert!(redis_only
        .flows
        .iter()
        .all(|f| f.workload.label() == "data/redis-0/redis"));
    assert!(!redis_only.flows.is_empty());

    // --namespace and --pod (a Deployment's pods by the prefix it gives them).
    let data = agent.snapshot_filtered(&WorkloadFilter {
        namespace: Some("data".into()),
        ..WorkloadFilter::default()
    });
    assert!(!data.flows.is_empty());
    assert!(data
        .flows
        .iter()
        .all(|f| f.workload.label() == "data/redis-0/redis"));
    let web_pods = agent.snapshot_filtered(&WorkloadFilter {
        namespace: Some("shop".into()),
        pod: Some("web".into()),
        ..WorkloadFilter::default()
    });
    assert_eq!(web_pods.flows.len(), 1, "{:#?}", web_pods.flows);
    assert_eq!(
        web_pods.flows[0].workload.label(),
        "shop/web-7d9f8b6c5-x2x4q/nginx"
    );

    let records = agent.health().metadata.runtime_records;
    assert!(records.read >= 3, "{records:?}");
    assert_eq!(
        (records.read_errors, records.parse_errors),
        (0, 0),
        "{records:?}"
    );
}

#[test]
fn a_finished_job_keeps_its_names_after_its_record_is_gone() {
    let Some((rootfs, net)) = setup("k8sjob", &["job", "db"]) else {
        return;
    };
    let (job_pod, db_pod) = (net.pod(0), net.pod(1));
    let mut agent = start();
    // Two refused connects, then the process exits.
    let dst = format!("{}:5432", db_pod.ip4);
    let job = Container::run_annotated(
        &rootfs,
        job_pod,
        &crio(
            "batch",
            "migrate-28a7c-9xk2p",
            "7a7a7a7a-cccc-4ddd-8eee-0123456789ab",
            "migrate",
        ),
        &["connect", &dst, "2", "close", "1000"],
    );
    let label = "batch/migrate-28a7c-9xk2p/migrate";
    wait_for(&mut agent, &[], Duration::from_secs(15), |s| {
        named(&s.flows, label, Direction::Outbound).is_some_and(|f| f.failed_total() == 2)
    });
    // podman rm deletes the container's record, as containerd and CRI-O do.
    let record = format!("/var/lib/containers/storage/overlay-containers/{}", job.id);
    assert!(
        Path::new(&record).exists(),
        "podman keeps records at {record}"
    );
    drop(job);
    assert!(!Path::new(&record).exists(), "{record} was removed");
    let later = agent.snapshot(None);
    let f = named(&later.flows, label, Direction::Outbound).expect("still named");
    assert_eq!(f.connects_failed["refused"], 2);
}

/// Connections accepted by `label`, over all its inbound flows (one per client).
fn served(flows: &[FlowView], label: &str) -> u64 {
    flows
        .iter()
        .filter(|f| f.workload.label() == label && f.direction == Direction::Inbound)
        .map(|f| f.connects_ok)
        .sum()
}

fn serde_json_value(f: &FlowView) -> serde_json::Value {
    serde_json::to_value(f).expect("flow serialises")
}
