//! The attributor joins the cgroup path, the runtime's record and the API's
//! view of the pod.

use std::{fs, path::PathBuf, time::Instant};

use super::{
    container::{Owner, Runtime},
    pod_index::{PodIndex, PodInfo, WatchState},
    pod_meta::{MetaSource, WorkloadRef},
    runtime_records::RecordRoots,
    Attributor,
};

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
const UID: &str = "5f2b1c3d-aaaa-4bbb-8ccc-0123456789ab";
const UID_SD: &str = "5f2b1c3d_aaaa_4bbb_8ccc_0123456789ab";

/// Removes the tree even when an assertion fails.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn setup(name: &str) -> (Temp, Attributor) {
    let dir = std::env::temp_dir().join(format!("sockeye-attr-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let record = dir.join(format!(
        "containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"
    ));
    fs::create_dir_all(record.parent().unwrap()).unwrap();
    let annotations = serde_json::json!({"annotations": {
        "io.kubernetes.cri.sandbox-namespace": "shop",
        "io.kubernetes.cri.sandbox-name": "web-7d9f8b6c5-x2x4q",
        "io.kubernetes.cri.sandbox-uid": UID,
        "io.kubernetes.cri.container-name": "nginx",
    }});
    fs::write(&record, annotations.to_string()).unwrap();
    // A CRI-O record for a bare-id (cgroupfs driver) container.
    let crio = dir.join(format!(
        "storage/overlay-containers/{ID2}/userdata/config.json"
    ));
    fs::create_dir_all(crio.parent().unwrap()).unwrap();
    fs::write(
        &crio,
        r#"{"annotations": {"io.container.manager": "cri-o"}}"#,
    )
    .unwrap();
    fs::create_dir_all(dir.join("cgroup")).unwrap();
    let attributor = Attributor::with_records(
        dir.join("cgroup"),
        RecordRoots {
            containerd: vec![dir.join("containerd")],
            containers_storage: vec![dir.join("storage")],
        },
    );
    (Temp(dir), attributor)
}

fn pod_slice() -> String {
    format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SD}.slice")
}

#[test]
fn record_names_api_labels_and_owner() {
    let (_tmp, mut a) = setup("join");
    a.learn(10, format!("{}/cri-containerd-{ID}.scope", pod_slice()));
    a.learn(11, pod_slice());
    let w = a.workload(10);
    assert_eq!(w.label(), "shop/web-7d9f8b6c5-x2x4q/nginx");
    assert_eq!(w.pod.as_ref().unwrap().source, MetaSource::RuntimeRecord);
    // The pod's own cgroup has no record and no API yet: only its uid.
    assert_eq!(a.workload(11).label(), format!("pod:{UID}"));

    // The API watch adds labels and the owner; names stay the record's.
    let index = PodIndex::new(WatchState::Watching);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-7d9f8b6c5-x2x4q", "namespace": "shop", "uid": UID,
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-7d9f8b6c5", "uid": "r", "controller": true}]},
        "status": {"containerStatuses": [{"name": "sidecar", "containerID": "containerd://aaaa1111bbbb2222",
            "image": "i", "imageID": "i", "ready": true, "restartCount": 0}]}
    }))
    .unwrap();
    index.apply(PodInfo::from_pod(&pod).unwrap(), Instant::now());
    a.set_pod_index(index);
    let p = a.workload(10).pod.unwrap();
    assert_eq!(p.source, MetaSource::RuntimeRecord);
    assert_eq!(
        p.workload,
        Some(WorkloadRef {
            kind: "Deployment".into(),
            name: "web".into()
        })
    );
    assert_eq!(p.labels["app"], "web");
    // Pod cgroup: named by the API now.
    assert_eq!(a.workload(11).label(), "shop/web-7d9f8b6c5-x2x4q");
    // A container without a record that the API knows by id.
    a.learn(
        12,
        format!("{}/cri-containerd-aaaa1111bbbb2222.scope", pod_slice()),
    );
    let side = a.workload(12).pod.unwrap();
    assert_eq!(
        (side.label(), side.source),
        (
            "shop/web-7d9f8b6c5-x2x4q/sidecar".into(),
            MetaSource::KubeApi
        )
    );

    let stats = a.metadata_stats();
    assert_eq!(stats.runtime_records.read, 1);
    assert_eq!(
        stats.runtime_records.missing, 1,
        "the sidecar has no record"
    );
    assert_eq!(stats.kube_api.unwrap().pods, 1);
}

#[test]
fn the_record_tells_the_runtime_the_path_cannot() {
    let (_tmp, mut a) = setup("runtime");
    // cgroupfs driver: a bare id, which the path alone calls containerd.
    a.learn(20, format!("/kubepods/besteffort/pod{UID}/{ID2}"));
    match a.workload(20).owner {
        Some(Owner::Container { runtime, .. }) => assert_eq!(runtime, Runtime::Crio),
        other => panic!("{other:?}"),
    }
}
