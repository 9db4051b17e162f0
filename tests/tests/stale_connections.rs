//! The flagship outage, replayed: every restart of a client pod leaves its
//! pool of connections held at redis (the pod's network went before its
//! process, so no FIN reached the server), restarts multiply, and redis
//! fills up until `maxclients`. Real redis-server in a pod, the client as
//! real podman containers carrying a Kubernetes pod's names, cut off and
//! killed as a node or a CNI teardown does it.

use std::{net::SocketAddr, time::Duration};

use sockeye_agent::findings::{Finding, FindingsConfig, Kind};
use sockeye_tests::{
    container::{podman_available, Container, Rootfs},
    findings::{report_fault_to_finding, Watch},
    net::TestNet,
    redis::RedisServer,
    require_root,
};

const POOL: u64 = 10;
const FIND_WITHIN: Duration = Duration::from_secs(30);

/// One instance of the otp-service Deployment's pod: a container in its
/// own pod network, holding a pool of connections to redis.
struct Instance {
    container: Container,
    pod_index: usize,
    cgroup_id: u64,
}

/// A Kubernetes pod's names, in the namespace `ns` (one per test: the
/// agent of a test running beside sees these containers too).
fn annotations(ns: &str, pod_name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("io.kubernetes.pod.namespace", ns.to_string()),
        ("io.kubernetes.pod.name", pod_name.to_string()),
        (
            "io.kubernetes.pod.uid",
            format!("0b5e1c2d-1111-4222-8333-{:012}", pod_name.len()),
        ),
        ("io.kubernetes.container.name", "app".to_string()),
        ("io.kubernetes.cri-o.ContainerType", "container".to_string()),
    ]
}

/// Starts instance `n`: a new pod (network namespace, address) and a
/// container in it whose pool is open once this returns.
fn start_instance(net: &mut TestNet, rootfs: &Rootfs, redis: SocketAddr, n: usize) -> Instance {
    start_pool(net, rootfs, redis, n, POOL)
}

fn start_pool(
    net: &mut TestNet,
    rootfs: &Rootfs,
    redis: SocketAddr,
    n: usize,
    size: u64,
) -> Instance {
    let pod_index = net.pods.len();
    let ns = net.name.clone();
    let pod = net.add_pod(&format!("otp{n}"));
    let pod_name = format!("otp-service-5f8d7c9b6-q{n:04}");
    let ann = annotations(&ns, &pod_name);
    let ann: Vec<(&str, &str)> = ann.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let container = Container::run_annotated(
        rootfs,
        pod,
        &ann,
        &["redis-pool", &redis.to_string(), &size.to_string(), "500"],
    );
    container.wait_for_log("ready", Duration::from_secs(30));
    let cgroup_id = container.cgroup_id();
    Instance {
        container,
        pod_index,
        cgroup_id,
    }
}

/// The restart as the outage had it: the pod's network is gone first, then
/// its process; returns the monotonic ns of the cut.
fn kill_without_fin(net: &TestNet, i: Instance) -> u64 {
    // A pod runs a little before it dies; in that time the agent's loop
    // (driven by the test between its steps) has drained its events.
    let at = sockeye_agent::clock::monotonic_ns();
    net.cut(i.pod_index);
    i.container.remove();
    at
}

fn value(f: &Finding, key: &str) -> f64 {
    f.evidence
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {f:#?}"))
        .value
}

fn setup(name: &str) -> Option<(Rootfs, TestNet)> {
    if !require_root() {
        return None;
    }
    assert!(
        podman_available(),
        "podman is missing: run scripts/bootstrap.sh --test"
    );
    Some((Rootfs::build(name), TestNet::with_pods(name, &["redis"])))
}

#[test]
fn each_restart_of_a_client_leaves_its_pool_at_redis() {
    let Some((rootfs, mut net)) = setup("stale") else {
        return;
    };
    let redis_pod = net.pod(0).cgroup_id;
    let redis = RedisServer::start(net.pod(0));
    let mut watch = Watch::start(FindingsConfig::default(), &[redis_pod]);

    // The first instance runs for a while: healthy, nothing to say.
    let mut instance = start_instance(&mut net, &rootfs, redis.addr, 1);
    let mut instances = vec![instance.cgroup_id];
    watch.watch_also(instance.cgroup_id);
    watch.run_for(Duration::from_secs(6), |_| {});
    assert!(watch.open().is_empty(), "healthy: {}", watch.describe());

    // Three restarts, each losing its network before its process.
    let mut first_fault = None;
    let mut found: Option<Finding> = None;
    for n in 2..=4 {
        let cut = kill_without_fin(&net, instance);
        first_fault.get_or_insert(cut);
        instance = start_instance(&mut net, &rootfs, redis.addr, n);
        instances.push(instance.cgroup_id);
        watch.watch_also(instance.cgroup_id);
        let f = watch.wait_open(
            Kind::StaleConnections,
            FIND_WITHIN,
            |f| {
                f.subject.cgroup_id == redis_pod
                    && value(f, "stale_connections") >= ((n - 1) as u64 * POOL) as f64
            },
            |_| {},
        );
        if found.is_none() {
            report_fault_to_finding(
                "stale connections (first restart)",
                cut,
                watch.first_seen(&f.id),
                &f,
            );
        }
        found = Some(f);
    }
    let f = found.expect("found");
    eprintln!("{}\n{:#?}", f.summary, f.evidence);
    // Exactly what the dead instances left: their whole pools.
    assert_eq!(value(&f, "stale_connections"), (3 * POOL) as f64, "{f:#?}");
    assert_eq!(value(&f, "held_connections"), (4 * POOL) as f64, "{f:#?}");
    assert_eq!(value(&f, "left_per_instance"), POOL as f64, "{f:#?}");
    assert_eq!(value(&f, "client_restarts"), 3.0, "{f:#?}");
    let d = f.destination.as_ref().expect("redis's address");
    assert_eq!((d.addr, d.port), (redis.addr.ip(), redis.addr.port()));
    assert!(
        f.summary
            .contains("each restart of stale/otp-service/app leaves 10 behind (3 restarts in"),
        "{}",
        f.summary
    );
    // The gone instances by their pod names, and the live one, are affected.
    let names: Vec<String> = f.affected.iter().map(|w| w.label()).collect();
    for n in 1..=4 {
        let pod = format!("stale/otp-service-5f8d7c9b6-q{n:04}/app");
        assert!(names.contains(&pod), "{pod} not in {names:?}");
    }
    // One root cause: no leak at either end, nothing else.
    let open: Vec<(Kind, u64)> = watch
        .open()
        .iter()
        .map(|f| (f.kind, f.subject.cgroup_id))
        .collect();
    assert_eq!(
        open,
        [(Kind::StaleConnections, redis_pod)],
        "{}",
        watch.describe()
    );
    drop(instance);
}

#[test]
fn dead_clients_fill_redis_to_maxclients_and_a_served_client_is_refused() {
    let Some((rootfs, mut net)) = setup("maxcl") else {
        return;
    };
    net.add_pod("api");
    let (redis_pod, api_pod) = (net.pod(0).cgroup_id, net.pod(1).cgroup_id);
    let redis = RedisServer::start_with(net.pod(0), &["--maxclients", "35"]);
    let mut watch = Watch::start(FindingsConfig::default(), &[redis_pod, api_pod]);
    // An api that connects per request, five times a second: served.
    let mut api = sockeye_tests::redis::ChurnClient::start(net.pod(1), redis.addr, 200, 1000);
    watch.run_until(Duration::from_secs(30), "the api served", |_| {
        api.read();
        api.ok.len() >= 10
    });
    // Two restarts leave two pools behind; the third instance and a worker
    // with a pool of five hold the rest: 20 dead + 10 + 5 = maxclients.
    let mut instance = start_instance(&mut net, &rootfs, redis.addr, 1);
    watch.watch_also(instance.cgroup_id);
    for n in 2..=3 {
        watch.run_for(Duration::from_secs(1), |_| api.read());
        kill_without_fin(&net, instance);
        instance = start_instance(&mut net, &rootfs, redis.addr, n);
        watch.watch_also(instance.cgroup_id);
    }
    let worker = start_pool(&mut net, &rootfs, redis.addr, 9, 5);
    watch.watch_also(worker.cgroup_id);
    // From now on redis says "max number of clients reached" to the api.
    let f = watch.wait_open(
        Kind::StaleConnections,
        FIND_WITHIN,
        |f| f.subject.cgroup_id == redis_pod && f.signals.contains(&"server_at_limit"),
        |_| api.read(),
    );
    // The fault: the api's first refused request.
    let full = api
        .failed_requests
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .min()
        .expect("the api was refused");
    let seen = sockeye_agent::clock::monotonic_ns();
    report_fault_to_finding("redis at maxclients", full, seen, &f);
    eprintln!("{}\n{:#?}", f.summary, f.evidence);
    assert!(
        api.failed_requests.len() >= 5,
        "the api was refused: {:?}",
        api.failed_requests
    );
    assert_eq!(value(&f, "stale_connections"), (2 * POOL) as f64, "{f:#?}");
    assert_eq!(value(&f, "limit_held"), 35.0, "{f:#?}");
    assert!(value(&f, "limit_refused") >= 5.0, "{f:#?}");
    assert!(
        f.summary
            .contains("is at its connection limit and refuses new ones"),
        "{}",
        f.summary
    );
    assert!(
        f.affected.iter().any(|w| w.cgroup_id == api_pod),
        "the refused api is affected: {f:#?}"
    );
    assert!(
        f.summary
            .contains("each restart of maxcl/otp-service/app leaves 10 behind"),
        "{}",
        f.summary
    );
    // One root cause: the limit is the dead clients', the refused api has
    // no finding of its own.
    let open: Vec<(Kind, u64)> = watch
        .open()
        .iter()
        .map(|f| (f.kind, f.subject.cgroup_id))
        .collect();
    assert_eq!(
        open,
        [(Kind::StaleConnections, redis_pod)],
        "{}",
        watch.describe()
    );
    drop((instance, worker));
}
