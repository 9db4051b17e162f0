use super::*;

/// A pod as the API server sends it (trimmed to the fields we read).
fn pod(uid: &str, name: &str, owner: Option<(&str, &str)>, containers: &[(&str, &str)]) -> Pod {
    let owners: Vec<serde_json::Value> = owner
        .into_iter()
        .map(|(kind, name)| {
            serde_json::json!({"apiVersion": "apps/v1", "kind": kind, "name": name,
                "uid": "o-1", "controller": true})
        })
        .collect();
    let statuses: Vec<serde_json::Value> = containers
        .iter()
        .map(|(id, name)| {
            serde_json::json!({"name": name, "containerID": format!("containerd://{id}"),
                "image": "x", "imageID": "y", "ready": true, "restartCount": 0})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "shop", "uid": uid,
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5"},
            "ownerReferences": owners},
        "spec": {"nodeName": "node-a", "containers": []},
        "status": {"containerStatuses": statuses}
    }))
    .expect("valid Pod JSON")
}

fn workload(kind: &str, name: &str) -> Option<WorkloadRef> {
    Some(WorkloadRef {
        kind: kind.into(),
        name: name.into(),
    })
}

#[test]
fn owners_people_know() {
    let info = |owner| {
        PodInfo::from_pod(&pod("u", "p", owner, &[]))
            .unwrap()
            .workload
    };
    // The ReplicaSet's name ends with the pod's template hash: a Deployment.
    assert_eq!(
        info(Some(("ReplicaSet", "web-7d9f8b6c5"))),
        workload("Deployment", "web")
    );
    // A ReplicaSet whose name does not carry the hash is shown as it is.
    assert_eq!(
        info(Some(("ReplicaSet", "legacy"))),
        workload("ReplicaSet", "legacy")
    );
    for kind in ["StatefulSet", "DaemonSet", "Job"] {
        assert_eq!(info(Some((kind, "x"))), workload(kind, "x"));
    }
    assert_eq!(info(None), None);
}

#[test]
fn containers_by_id_and_pods_by_uid() {
    let idx = PodIndex::new(WatchState::Starting);
    let now = Instant::now();
    let p = PodInfo::from_pod(&pod(
        "u1",
        "web-1",
        None,
        &[("c1", "nginx"), ("c2", "envoy")],
    ))
    .unwrap();
    assert_eq!(
        p.containers,
        vec![("c1".into(), "nginx".into()), ("c2".into(), "envoy".into())]
    );
    idx.apply(p, now);
    let m = idx.lookup(Some("c2"), None).unwrap();
    assert_eq!(
        (m.label(), m.source),
        ("shop/web-1/envoy".into(), MetaSource::KubeApi)
    );
    assert_eq!(m.labels["app"], "web");
    // Unknown container but known pod: the pod itself.
    assert_eq!(
        idx.lookup(Some("zz"), Some("u1")).unwrap().label(),
        "shop/web-1"
    );
    assert_eq!(idx.lookup(Some("zz"), Some("u9")), None);
    assert_eq!(idx.pod(None, "shop", "web-1").unwrap().uid, "u1");

    // A restart: the new status lists only the new id; the old one still maps.
    idx.apply(
        PodInfo::from_pod(&pod("u1", "web-1", None, &[("c3", "nginx")])).unwrap(),
        now,
    );
    assert_eq!(
        idx.lookup(Some("c1"), None).unwrap().label(),
        "shop/web-1/nginx"
    );
    assert_eq!(
        idx.lookup(Some("c3"), None).unwrap().label(),
        "shop/web-1/nginx"
    );
}

#[test]
fn deleted_pods_are_kept_for_a_while() {
    let idx = PodIndex::new(WatchState::Starting);
    let t0 = Instant::now();
    idx.apply(
        PodInfo::from_pod(&pod(
            "job",
            "migrate-x",
            Some(("Job", "migrate")),
            &[("j1", "m")],
        ))
        .unwrap(),
        t0,
    );
    idx.delete("job", t0);
    idx.sweep(t0 + RETENTION / 2);
    assert_eq!(
        idx.lookup(Some("j1"), None).unwrap().workload,
        workload("Job", "migrate")
    );
    idx.sweep(t0 + RETENTION);
    assert_eq!(idx.lookup(Some("j1"), None), None);
    assert_eq!(idx.stats().pods, 0);
    assert_eq!(idx.stats().events, 2);
}

#[test]
fn a_relist_marks_vanished_pods_deleted() {
    let idx = PodIndex::new(WatchState::Starting);
    let t0 = Instant::now();
    idx.relist_started();
    idx.apply(PodInfo::from_pod(&pod("a", "a", None, &[])).unwrap(), t0);
    idx.apply(PodInfo::from_pod(&pod("b", "b", None, &[])).unwrap(), t0);
    idx.relist_done(t0);
    assert_eq!(idx.stats().state, WatchState::Watching);
    // The watch was lost; "b" went away meanwhile.
    idx.watch_error();
    assert_eq!(idx.stats().state, WatchState::Retrying);
    idx.relist_started();
    idx.apply(PodInfo::from_pod(&pod("a", "a", None, &[])).unwrap(), t0);
    idx.relist_done(t0);
    idx.sweep(t0 + RETENTION);
    assert!(idx.lookup(None, Some("a")).is_some());
    assert!(idx.lookup(None, Some("b")).is_none());
    assert_eq!(idx.stats().watch_errors, 1);
}

#[test]
fn bounded() {
    let idx = PodIndex::new(WatchState::Watching);
    let t0 = Instant::now();
    for i in 0..MAX_PODS + 3 {
        let uid = format!("u{i}");
        idx.apply(PodInfo::from_pod(&pod(&uid, &uid, None, &[])).unwrap(), t0);
    }
    assert_eq!(idx.stats().pods, MAX_PODS as u64);
    assert_eq!(idx.stats().evicted, 3);
    // Deleted pods make room at once when the index is full.
    idx.delete("u0", t0);
    idx.apply(
        PodInfo::from_pod(&pod("new", "new", None, &[])).unwrap(),
        t0,
    );
    assert!(idx.lookup(None, Some("new")).is_some());
    assert!(idx.lookup(None, Some("u0")).is_none());
}

#[test]
fn probes_are_read_from_the_spec_with_named_ports_and_defaults() {
    let p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "payments-1", "namespace": "shop", "uid": "u1"},
        "spec": {"nodeName": "node-a", "containers": [{
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                "timeoutSeconds": 2, "failureThreshold": 3, "periodSeconds": 1},
            "readinessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"exec": {"command": ["true"]}}
        }, {"name": "sidecar"}]},
        "status": {"containerStatuses": [
            {"name": "app", "containerID": "cri-o://aaa", "image": "x", "imageID": "y",
             "ready": true, "restartCount": 0},
            {"name": "sidecar", "containerID": "cri-o://bbb", "image": "x", "imageID": "y",
             "ready": true, "restartCount": 0}]}
    }))
    .expect("valid Pod JSON");
    let info = PodInfo::from_pod(&p).unwrap();
    let probes = info.probes_of("aaa");
    assert_eq!(probes.len(), 2, "exec probes are left out: {probes:?}");
    assert_eq!(
        probes[0],
        ProbeSpec {
            kind: ProbeKind::Liveness,
            action: ProbeAction::Http {
                path: "/healthz".into()
            },
            port: 8080,
            timeout_s: 2,
            period_s: 1,
            failure_threshold: 3,
        }
    );
    assert_eq!(
        (
            probes[1].kind,
            probes[1].timeout_s,
            probes[1].period_s,
            probes[1].failure_threshold
        ),
        (ProbeKind::Readiness, 1, 10, 3),
        "Kubernetes' defaults"
    );
    assert!(info.probes_of("bbb").is_empty());
    let index = PodIndex::new(WatchState::Watching);
    index.apply(info, Instant::now());
    assert_eq!(index.probes("aaa").len(), 2);
}
