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
/// A record not found is looked for again, 50 ms later, then twice as
/// long each time up to a second: a container's cgroup can appear before
/// its runtime has written the record, and a short-lived pod's must be
/// read while it runs.
fn retry_after(tries: u8) -> std::time::Duration {
    std::time::Duration::from_millis((50u64 << tries.min(5)).min(1000))
}
/// ... this many times at most (a cgroup that no runtime made never has one).
const MAX_RETRIES: u8 = 30;

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
    cache: HashMap<String, Cached>,
    stats: RecordStats,
}

/// A lookup's answer; a miss remembers when it was asked and how often.
#[derive(Debug, Clone)]
enum Cached {
    Found(Record),
    Missing { at: std::time::Instant, tries: u8 },
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
        let tries = match self.cache.get(id) {
            Some(Cached::Found(r)) => return Some(r.clone()),
            Some(Cached::Missing { at, tries })
                if *tries >= MAX_RETRIES || at.elapsed() < retry_after(*tries) =>
            {
                return None
            }
            Some(Cached::Missing { tries, .. }) => *tries,
            None => 0,
        };
        let record = self.read(id);
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        let cached = match &record {
            Some(r) => Cached::Found(r.clone()),
            None => Cached::Missing {
                at: std::time::Instant::now(),
                tries: tries + 1,
            },
        };
        self.cache.insert(id.to_string(), cached);
        record
    }

    /// Whether a record of `id`, not found so far, is still looked for.
    pub fn may_appear(&self, id: &str) -> bool {
        match self.cache.get(id) {
            Some(Cached::Missing { tries, .. }) => *tries < MAX_RETRIES,
            Some(Cached::Found(_)) => false,
            None => true,
        }
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
#[path = "runtime_records_tests.rs"]
mod tests;
