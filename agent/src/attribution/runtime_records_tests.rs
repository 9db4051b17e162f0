use std::fs;

use super::*;

fn spec(pairs: &[(&str, &str)]) -> String {
    let a: HashMap<&str, &str> = pairs.iter().copied().collect();
    serde_json::json!({ "ociVersion": "1.0.2", "annotations": a }).to_string()
}

#[test]
fn containerd_container_and_sandbox() {
    let base = [
        ("io.kubernetes.cri.sandbox-namespace", "shop"),
        ("io.kubernetes.cri.sandbox-name", "web-7d9f-x2x"),
        (
            "io.kubernetes.cri.sandbox-uid",
            "5f2b1c3d-aaaa-4bbb-8ccc-0123456789ab",
        ),
    ];
    let mut ctr = base.to_vec();
    ctr.extend([
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", "nginx"),
    ]);
    let r = parse(spec(&ctr).as_bytes(), Runtime::Containerd).unwrap();
    assert_eq!(r.runtime, Runtime::Containerd);
    let p = r.pod.unwrap();
    assert_eq!(p.label(), "shop/web-7d9f-x2x/nginx");
    assert_eq!(
        p.uid.as_deref(),
        Some("5f2b1c3d-aaaa-4bbb-8ccc-0123456789ab")
    );
    let mut sandbox = base.to_vec();
    sandbox.push(("io.kubernetes.cri.container-type", "sandbox"));
    let p = parse(spec(&sandbox).as_bytes(), Runtime::Containerd)
        .unwrap()
        .pod
        .unwrap();
    assert_eq!((p.label(), p.container), ("shop/web-7d9f-x2x".into(), None));
}

#[test]
fn crio_podman_and_plain_containers() {
    let crio = spec(&[
        ("io.container.manager", "cri-o"),
        ("io.kubernetes.pod.namespace", "kube-system"),
        ("io.kubernetes.pod.name", "coredns-abc"),
        ("io.kubernetes.pod.uid", "u1"),
        ("io.kubernetes.container.name", "coredns"),
        ("io.kubernetes.cri-o.ContainerType", "container"),
    ]);
    let r = parse(crio.as_bytes(), Runtime::Crio).unwrap();
    assert_eq!(r.runtime, Runtime::Crio);
    assert_eq!(r.pod.unwrap().label(), "kube-system/coredns-abc/coredns");
    let infra = spec(&[
        ("io.kubernetes.pod.namespace", "kube-system"),
        ("io.kubernetes.pod.name", "coredns-abc"),
        ("io.kubernetes.cri-o.ContainerType", "sandbox"),
    ]);
    let p = parse(infra.as_bytes(), Runtime::Crio).unwrap().pod.unwrap();
    assert_eq!(p.container, None);
    // podman writes the same layout; its manager annotation names it.
    let podman = spec(&[
        ("io.container.manager", "libpod"),
        ("io.kubernetes.pod.namespace", "shop"),
        ("io.kubernetes.pod.name", "db-0"),
        ("io.kubernetes.container.name", "POD"),
    ]);
    let r = parse(podman.as_bytes(), Runtime::Crio).unwrap();
    assert_eq!(r.runtime, Runtime::Podman);
    assert_eq!(r.pod.unwrap().container, None, "POD is the sandbox");
    // No Kubernetes annotations (or only half of them): no pod.
    for plain in [
        spec(&[("io.container.manager", "libpod")]),
        spec(&[("io.kubernetes.pod.name", "x")]),
        spec(&[
            ("io.kubernetes.pod.name", "x"),
            ("io.kubernetes.pod.namespace", ""),
        ]),
        r#"{"ociVersion":"1.0.2"}"#.to_string(),
    ] {
        assert_eq!(
            parse(plain.as_bytes(), Runtime::Crio).unwrap().pod,
            None,
            "{plain}"
        );
    }
    assert!(parse(b"{not json", Runtime::Crio).is_err());
    assert!(parse(br#"{"annotations": 7}"#, Runtime::Crio).is_err());
}

/// Removes the tree even when an assertion fails.
struct TempRoot(PathBuf);

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write(path: PathBuf, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn reader_finds_counts_and_caches() {
    let tmp =
        TempRoot(std::env::temp_dir().join(format!("sockeye-records-{}", std::process::id())));
    let _ = fs::remove_dir_all(&tmp.0);
    let containerd = tmp.0.join("containerd");
    let storage = tmp.0.join("storage");
    let pod = spec(&[
        ("io.kubernetes.cri.sandbox-namespace", "ns"),
        ("io.kubernetes.cri.sandbox-name", "p"),
        ("io.kubernetes.cri.container-name", "c"),
    ]);
    write(
        containerd.join("io.containerd.runtime.v2.task/k8s.io/aaaa/config.json"),
        &pod,
    );
    write(
        containerd.join("io.containerd.runtime.v2.task/moby/bbbb/config.json"),
        "{}",
    );
    write(
        storage.join("overlay-containers/cccc/userdata/config.json"),
        &pod,
    );
    write(
        storage.join("overlay-containers/dddd/userdata/config.json"),
        "garbage",
    );
    let mut r = RecordReader::new(RecordRoots {
        containerd: vec![containerd],
        containers_storage: vec![storage],
    });
    let a = r.lookup("aaaa").unwrap();
    assert_eq!(
        (a.runtime, a.pod.unwrap().label()),
        (Runtime::Containerd, "ns/p/c".into())
    );
    let b = r.lookup("bbbb").unwrap();
    assert_eq!((b.runtime, b.pod), (Runtime::Docker, None));
    assert_eq!(r.lookup("cccc").unwrap().runtime, Runtime::Crio);
    assert_eq!(r.lookup("dddd"), None);
    assert_eq!(r.lookup("eeee"), None);
    assert_eq!(r.lookup("../../etc"), None);
    // Cached: a second lookup reads nothing.
    r.lookup("aaaa");
    r.lookup("dddd");
    assert_eq!(
        r.stats(),
        RecordStats {
            read: 3,
            missing: 3,
            read_errors: 0,
            parse_errors: 1
        }
    );
}
