//! Pod names without an API call: the container runtimes keep each
//! container's OCI spec (`config.json`) on the node, and the CRI puts the
//! pod's namespace, name and uid and the container's name into its
//! annotations.
//!
//! Where the records are (defaults; each root is a flag):
//! - containerd: `/run/containerd/io.containerd.runtime.v2.task/<ns>/<id>/config.json`,
//!   `<ns>` is `k8s.io` for Kubernetes (annotations `io.kubernetes.cri.*`,
//!   containerd `pkg/cri/annotations/annotations.go`).
//! - CRI-O: `/run/containers/storage/overlay-containers/<id>/userdata/config.json`
//!   (annotations `io.kubernetes.pod.*`, `io.kubernetes.container.name`,
//!   `io.kubernetes.cri-o.ContainerType`).
//! - podman: `/var/lib/containers/storage/overlay-containers/<id>/userdata/config.json`,
//!   with whatever `--annotation` set (checked on podman 4.3).
//!
//! Records are read once per container id, when it is first seen (the
//! cgroup_mkdir event, so a short-lived container is read while it exists).

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
};

use super::{
    container::Runtime,
    pod_meta::{MetaSource, PodMeta},
};

/// Default roots, as the runtimes install them.
pub const CONTAINERD_ROOT: &str = "/run/containerd";
pub const CONTAINERS_STORAGE_ROOTS: [&str; 2] =
    ["/run/containers/storage", "/var/lib/containers/storage"];

/// containerd's task directory under its state root, and the namespace the
/// CRI plugin uses (tried first).
const CONTAINERD_TASKS: &str = "io.containerd.runtime.v2.task";
const CONTAINERD_K8S_NS: &str = "k8s.io";

/// Bounds the id cache; cleared when full (entries are cheap to re-read
/// while the container exists, and the attributor keeps what it resolved).
const MAX_CACHED: usize = 8192;

/// Where to look for runtime records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRoots {
    /// containerd's state directory (holds `io.containerd.runtime.v2.task`).
    pub containerd: Vec<PathBuf>,
    /// containers/storage run and graph roots (CRI-O and podman).
    pub containers_storage: Vec<PathBuf>,
}

impl Default for RecordRoots {
    fn default() -> Self {
        Self {
            containerd: vec![PathBuf::from(CONTAINERD_ROOT)],
            containers_storage: CONTAINERS_STORAGE_ROOTS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// What a record says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The runtime that wrote it (refines what the cgroup path suggests).
    pub runtime: Runtime,
    /// None when the container carries no Kubernetes annotations.
    pub pod: Option<PodMeta>,
}

/// Counters of what reading records cost and what failed, for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordStats {
    /// Records read and parsed.
    pub read: u64,
    /// Containers with no record under any root (not a container of these
    /// runtimes, the root is not mounted, or the container was gone).
    pub missing: u64,
    /// Records that exist but could not be read (permissions, I/O).
    pub read_errors: u64,
    /// Records that are not valid JSON OCI specs.
    pub parse_errors: u64,
}

/// Reads and caches records by container id.
pub struct RecordReader {
    roots: RecordRoots,
    cache: HashMap<String, Option<Record>>,
    stats: RecordStats,
}

impl RecordReader {
    pub fn new(roots: RecordRoots) -> Self {
        Self {
            roots,
            cache: HashMap::new(),
            stats: RecordStats::default(),
        }
    }

    pub fn stats(&self) -> RecordStats {
        self.stats
    }

    /// The record of container `id`, read on first use. Never fails: what
    /// goes wrong is counted and logged at debug level.
    pub fn lookup(&mut self, id: &str) -> Option<Record> {
        if let Some(hit) = self.cache.get(id) {
            return hit.clone();
        }
        let record = self.read(id);
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(id.to_string(), record.clone());
        record
    }

    fn read(&mut self, id: &str) -> Option<Record> {
        // An id is hex (the cgroup classifier checks it); refuse anything
        // that could walk out of the state directories.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            self.stats.missing += 1;
            return None;
        }
        for (path, runtime) in self.candidates(id) {
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.stats.read_errors += 1;
                    log::debug!("cannot read runtime record {}: {e}", path.display());
                    continue;
                }
            };
            match parse(&text, runtime) {
                Ok(record) => {
                    self.stats.read += 1;
                    return Some(record);
                }
                Err(e) => {
                    self.stats.parse_errors += 1;
                    log::debug!("cannot parse runtime record {}: {e}", path.display());
                }
            }
        }
        self.stats.missing += 1;
        None
    }

    /// Every path a record of `id` may have, with the runtime each implies
    /// (containers/storage is shared by CRI-O and podman: the annotations
    /// tell them apart).
    fn candidates(&self, id: &str) -> Vec<(PathBuf, Runtime)> {
        let mut out = Vec::new();
        for root in &self.roots.containerd {
            let tasks = root.join(CONTAINERD_TASKS);
            out.push((
                tasks.join(CONTAINERD_K8S_NS).join(id).join("config.json"),
                Runtime::Containerd,
            ));
            // Other namespaces (docker's "moby", ...) after the CRI one.
            for ns in subdirs(&tasks)
                .into_iter()
                .filter(|n| n != CONTAINERD_K8S_NS)
            {
                let runtime = if ns == "moby" {
                    Runtime::Docker
                } else {
                    Runtime::Containerd
                };
                out.push((tasks.join(ns).join(id).join("config.json"), runtime));
            }
        }
        for root in &self.roots.containers_storage {
            out.push((
                root.join("overlay-containers")
                    .join(id)
                    .join("userdata/config.json"),
                Runtime::Crio,
            ));
        }
        out
    }
}

fn subdirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not a JSON OCI spec")]
    Json(#[from] serde_json::Error),
}

/// The part of an OCI runtime spec we read.
#[derive(serde::Deserialize)]
struct Spec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Parses a `config.json`; `runtime` is the one whose directory it was in.
pub fn parse(json: &[u8], runtime: Runtime) -> Result<Record, ParseError> {
    let spec: Spec = serde_json::from_slice(json)?;
    let a = &spec.annotations;
    let runtime = match (runtime, a.get("io.container.manager").map(String::as_str)) {
        (Runtime::Crio, Some("libpod")) => Runtime::Podman,
        (r, _) => r,
    };
    Ok(Record {
        runtime,
        pod: pod_from_annotations(a),
    })
}

/// Kubernetes identity from CRI annotations: containerd's
/// `io.kubernetes.cri.*` first, then the kubelet label names that CRI-O
/// (and podman, when asked) put into the spec.
pub fn pod_from_annotations(a: &HashMap<String, String>) -> Option<PodMeta> {
    let get = |k: &str| a.get(k).filter(|v| !v.is_empty()).cloned();
    let (namespace, name, uid, container, kind) = if let (Some(ns), Some(name)) = (
        get("io.kubernetes.cri.sandbox-namespace"),
        get("io.kubernetes.cri.sandbox-name"),
    ) {
        (
            ns,
            name,
            get("io.kubernetes.cri.sandbox-uid"),
            get("io.kubernetes.cri.container-name"),
            get("io.kubernetes.cri.container-type"),
        )
    } else {
        (
            get("io.kubernetes.pod.namespace")?,
            get("io.kubernetes.pod.name")?,
            get("io.kubernetes.pod.uid"),
            get("io.kubernetes.container.name"),
            get("io.kubernetes.cri-o.ContainerType")
                .or_else(|| get("io.kubernetes.docker.type"))
                .map(|t| {
                    // dockershim spelled the sandbox "podsandbox".
                    if t == "podsandbox" {
                        "sandbox".into()
                    } else {
                        t
                    }
                }),
        )
    };
    // The sandbox ("pause") container holds the pod's network namespace:
    // its traffic is the pod's. The kubelet named it "POD" in dockershim days.
    let sandbox = kind.as_deref() == Some("sandbox") || container.as_deref() == Some("POD");
    Some(PodMeta {
        namespace,
        name,
        uid,
        container: if sandbox { None } else { container },
        workload: None,
        labels: Default::default(),
        source: MetaSource::RuntimeRecord,
    })
}

#[cfg(test)]
mod tests {
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
}
