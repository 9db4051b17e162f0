//! The outage that took 47 minutes: redis restarts and takes about 4 s to
//! accept again, while the pods that wait on it have a liveness probe with
//! a 2 s timeout on a /healthz that checks redis. The probes time out, the
//! kubelet would restart healthy pods. Real redis-server in a pod, the app
//! as a real podman container whose pod spec (its probe) comes from a
//! stand-in API server through the agent's own watch, the kubelet's probe
//! from the host. One finding: the restart, with the probes under it.

use std::{net::SocketAddr, time::Duration};

use sockeye_agent::findings::{Finding, FindingsConfig, Kind};
use sockeye_tests::{
    container::{podman_available, Container, Rootfs},
    findings::{report_fault_to_finding, Watch},
    kube::StandInApi,
    net::TestNet,
    peer,
    redis::RedisServer,
    require_root,
};

const NODE: &str = "node-a";

fn value(f: &Finding, key: &str) -> f64 {
    f.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {f:#?}"))
        .value
}

/// The payments pod as the API server would show it: its container (by
/// the id podman gave it) with a liveness probe on /healthz.
fn pod_json(ns: &str, container_id: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "payments-7d9f8b6c5-x2x4q", "namespace": ns,
            "uid": "0b5e1c2d-2222-4222-8333-444455556666", "resourceVersion": "1"},
        "spec": {"nodeName": NODE, "containers": [{
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                "timeoutSeconds": 2, "periodSeconds": 1, "failureThreshold": 3}
        }]},
        "status": {"containerStatuses": [{"name": "app",
            "containerID": format!("cri-o://{container_id}"),
            "image": "payments", "imageID": "payments", "ready": true, "restartCount": 0}]}
    })
}

#[test]
fn probes_that_wait_on_a_restarting_redis_are_tied_to_it() {
    if !require_root() {
        return;
    }
    assert!(
        podman_available(),
        "podman is missing: run scripts/bootstrap.sh --test"
    );
    let rootfs = Rootfs::build("probes");
    let net = TestNet::with_pods("probes", &["payments", "redis"]);
    let (app_pod, redis_pod) = (net.pod(0), net.pod(1));
    let mut redis = RedisServer::start(redis_pod);
    let app_addr = SocketAddr::from((app_pod.ip4, 8080));
    let ns = net.name.clone();
    let app = Container::run_annotated(
        &rootfs,
        app_pod,
        &[
            ("io.kubernetes.pod.namespace", ns.as_str()),
            ("io.kubernetes.pod.name", "payments-7d9f8b6c5-x2x4q"),
            (
                "io.kubernetes.pod.uid",
                "0b5e1c2d-2222-4222-8333-444455556666",
            ),
            ("io.kubernetes.container.name", "app"),
            ("io.kubernetes.cri-o.ContainerType", "container"),
        ],
        &["health", &app_addr.to_string(), &redis.addr.to_string()],
    );
    app.wait_for_log("ready", Duration::from_secs(30));
    let api = StandInApi::start(vec![pod_json(&ns, &app.id)]);
    let mut watch = Watch::start(
        FindingsConfig::default(),
        &[app.cgroup_id(), redis_pod.cgroup_id],
    );
    api.watch_for(&mut watch.agent, NODE);

    // The kubelet, on the node: every second, GET /healthz, 2 s timeout.
    net.bridge_addr();
    let mut cmd = net.on_bridge(peer::netpeer_path().to_str().expect("utf-8"));
    cmd.args(["probe", &app_addr.to_string(), "/healthz", "2000", "1000"]);
    let mut kubelet = peer::spawn_command(cmd, "netpeer");
    let mut results: Vec<String> = Vec::new();
    fn read(k: &mut peer::Peer, results: &mut Vec<String>) {
        while let Some(l) = k.try_line() {
            results.push(l);
        }
    }
    watch.run_until(Duration::from_secs(30), "the probe passes", |_| {
        read(&mut kubelet, &mut results);
        results.iter().filter(|l| l.starts_with("ok ")).count() >= 3
    });
    assert!(watch.open().is_empty(), "healthy: {}", watch.describe());

    // redis goes away, and is back after about 4 s.
    let killed = redis.kill();
    watch.run_for(Duration::from_secs(4), |_| read(&mut kubelet, &mut results));
    let up = redis.start_again(redis_pod);
    let f = watch.wait_found(
        Kind::DependencyRestart,
        Duration::from_secs(30),
        |f| f.signals.contains(&"probes_failed"),
        |_| read(&mut kubelet, &mut results),
    );
    report_fault_to_finding(
        "probes waiting on redis",
        killed,
        watch.first_seen(&f.id),
        &f,
    );
    // Let it hold its final numbers.
    watch.run_for(Duration::from_secs(3), |_| read(&mut kubelet, &mut results));
    let f = watch.get(&f.id).expect("still known");
    eprintln!("{}\n{:#?}", f.summary, f.evidence);
    let timeouts = results.iter().filter(|l| l.starts_with("timeout ")).count();
    assert!(timeouts >= 1, "the kubelet's probes timed out: {results:?}");
    assert_eq!(f.subject.cgroup_id, redis_pod.cgroup_id, "{f:#?}");
    let stated = value(&f, "probed_failures");
    assert_eq!(
        stated, timeouts as f64,
        "probe failures stated, against the kubelet's own count: {f:#?}"
    );
    assert_eq!(value(&f, "probed_timeout_s"), 2.0);
    let said = f
        .evidence
        .iter()
        .find(|e| e.key == "probed_failures")
        .map(|e| e.fact.clone())
        .unwrap_or_default();
    let pod = format!("{ns}/payments-7d9f8b6c5-x2x4q/app");
    assert!(
        said.starts_with(&format!(
            "the liveness probe of {pod} (timeout 2.00s) failed"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("the probe waits on {}", redis.addr)),
        "{said}"
    );
    assert!(
        said.contains("the probe's timeout (2.00s) is shorter than"),
        "redis was gone {:.1} s: {said}",
        (up - killed) as f64 / 1e9
    );
    assert!(f.affected.iter().any(|w| w.label() == pod), "{f:#?}");
    // One root cause: the probes are not a finding of their own.
    let kinds: Vec<Kind> = watch
        .open()
        .iter()
        .chain(watch.resolved().iter())
        .map(|f| f.kind)
        .collect();
    assert!(
        kinds.iter().all(|k| *k == Kind::DependencyRestart),
        "{}",
        watch.describe()
    );
}
