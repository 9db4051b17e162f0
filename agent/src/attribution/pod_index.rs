//! The pods of this node as the Kubernetes API reports them: labels, the
//! owning workload, and container ids -> container names. Filled by
//! [`super::kube_watch`], read by the attributor.
//!
//! Deleted pods are kept for [`RETENTION`] so the events a short-lived Job
//! produced are still named when they are shown; the index is bounded.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;

use sockeye_core::workload::probes::{ProbeAction, ProbeKind, ProbeSpec};

use super::pod_meta::{MetaSource, PodMeta, WorkloadRef};

/// How long a deleted pod stays named (as long as an idle flow is kept).
pub const RETENTION: Duration = Duration::from_secs(15 * 60);
/// Pods kept at once. A node runs at most a few hundred; the rest is churn.
const MAX_PODS: usize = 4096;
/// Container ids remembered per pod (restarts add new ones).
const MAX_IDS_PER_POD: usize = 32;

/// One pod, reduced to what attribution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub workload: Option<WorkloadRef>,
    /// Container id (without the `containerd://` scheme) -> container name.
    pub containers: Vec<(String, String)>,
    /// Probes by container name, from the pod spec.
    pub probes: Vec<(String, ProbeSpec)>,
}

impl PodInfo {
    /// None for a pod without uid, name or namespace (never sent by a real API server).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let m = &pod.metadata;
        let labels: BTreeMap<String, String> = m.labels.clone().unwrap_or_default();
        let mut containers = Vec::new();
        if let Some(status) = &pod.status {
            let all = [
                &status.init_container_statuses,
                &status.container_statuses,
                &status.ephemeral_container_statuses,
            ];
            for s in all.into_iter().flatten().flatten() {
                if let Some(id) = s.container_id.as_deref().and_then(strip_scheme) {
                    containers.push((id.to_string(), s.name.clone()));
                }
            }
        }
        let probes = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().flat_map(container_probes).collect())
            .unwrap_or_default();
        Some(Self {
            namespace: m.namespace.clone()?,
            name: m.name.clone()?,
            uid: m.uid.clone()?,
            workload: owner_workload(m, &labels),
            labels,
            containers,
            probes,
        })
    }

    /// The probes of the container with id `id`.
    pub fn probes_of(&self, id: &str) -> Vec<ProbeSpec> {
        let Some((_, name)) = self.containers.iter().find(|(c, _)| c == id) else {
            return Vec::new();
        };
        self.probes
            .iter()
            .filter(|(c, _)| c == name)
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn meta(&self, container: Option<String>) -> PodMeta {
        PodMeta {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: Some(self.uid.clone()),
            container,
            workload: self.workload.clone(),
            labels: self.labels.clone(),
            source: MetaSource::KubeApi,
        }
    }
}

/// A container's liveness, readiness and startup probes that connect to a
/// port (exec probes are invisible to the network and left out); a named
/// port is looked up among the container's ports.
fn container_probes(c: &k8s_openapi::api::core::v1::Container) -> Vec<(String, ProbeSpec)> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let port_of = |p: &IntOrString| -> Option<u16> {
        match p {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok()),
        }
    };
    let mut out = Vec::new();
    for (kind, probe) in [
        (ProbeKind::Liveness, &c.liveness_probe),
        (ProbeKind::Readiness, &c.readiness_probe),
        (ProbeKind::Startup, &c.startup_probe),
    ] {
        let Some(p) = probe else { continue };
        let (action, port) = if let Some(h) = &p.http_get {
            (
                ProbeAction::Http {
                    path: h.path.clone().unwrap_or_else(|| "/".into()),
                },
                port_of(&h.port),
            )
        } else if let Some(t) = &p.tcp_socket {
            (ProbeAction::Tcp, port_of(&t.port))
        } else if let Some(g) = &p.grpc {
            (ProbeAction::Grpc, u16::try_from(g.port).ok())
        } else {
            continue;
        };
        let Some(port) = port else { continue };
        // Kubernetes' defaults when a field is left out.
        out.push((
            c.name.clone(),
            ProbeSpec {
                kind,
                action,
                port,
                timeout_s: u32::try_from(p.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1),
                period_s: u32::try_from(p.period_seconds.unwrap_or(10).max(1)).unwrap_or(10),
                failure_threshold: u32::try_from(p.failure_threshold.unwrap_or(3).max(1))
                    .unwrap_or(3),
            },
        ));
    }
    out
}

/// "containerd://0123..." -> "0123...".
fn strip_scheme(id: &str) -> Option<&str> {
    let (_, id) = id.split_once("://")?;
    (!id.is_empty()).then_some(id)
}

/// The workload people know a pod by. A Deployment's pods are owned by a
/// ReplicaSet named `<deployment>-<pod-template-hash>`, and the pod carries
/// that hash as a label; only the Deployment controller sets it, so the
/// name can be derived without reading ReplicaSets (no RBAC on them).
pub fn owner_workload(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    labels: &BTreeMap<String, String>,
) -> Option<WorkloadRef> {
    let refs = meta.owner_references.as_ref()?;
    let owner = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())?;
    if owner.kind == "ReplicaSet" {
        if let Some(deployment) = labels
            .get("pod-template-hash")
            .and_then(|h| owner.name.strip_suffix(h.as_str()))
            .and_then(|rest| rest.strip_suffix('-'))
            .filter(|d| !d.is_empty())
        {
            return Some(WorkloadRef {
                kind: "Deployment".into(),
                name: deployment.into(),
            });
        }
    }
    Some(WorkloadRef {
        kind: owner.kind.clone(),
        name: owner.name.clone(),
    })
}

/// State of the API watch, for `stats` and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchState {
    /// Switched off by `--no-kube-api`.
    Disabled,
    /// No in-cluster configuration (not running in a pod).
    NotInCluster,
    /// Connected, waiting for the first full list.
    Starting,
    /// Listed, following changes.
    Watching,
    /// The last attempt failed; retrying with backoff.
    Retrying,
}

/// Counters of the index and its watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PodIndexStats {
    pub state: WatchState,
    pub pods: u64,
    /// Pod additions, changes and deletions applied.
    pub events: u64,
    /// Failed list/watch attempts (each is retried).
    pub watch_errors: u64,
    /// Pods dropped because the index was full.
    pub evicted: u64,
}

struct Inner {
    pods: HashMap<String, PodInfo>,
    /// Container id -> pod uid.
    by_container: HashMap<String, String>,
    /// Deleted pods, oldest first, with when they were deleted.
    deleted: VecDeque<(Instant, String)>,
    /// Uids seen since the watch (re)started listing.
    relisted: Option<Vec<String>>,
    stats: PodIndexStats,
}

/// Shared between the watch task and the attributor.
#[derive(Clone)]
pub struct PodIndex {
    inner: Arc<Mutex<Inner>>,
}

impl PodIndex {
    pub fn new(state: WatchState) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                pods: HashMap::new(),
                by_container: HashMap::new(),
                deleted: VecDeque::new(),
                relisted: None,
                stats: PodIndexStats {
                    state,
                    pods: 0,
                    events: 0,
                    watch_errors: 0,
                    evicted: 0,
                },
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters more than losing the names: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> PodIndexStats {
        let inner = self.lock();
        PodIndexStats {
            pods: inner.pods.len() as u64,
            ..inner.stats
        }
    }

    pub fn set_state(&self, state: WatchState) {
        self.lock().stats.state = state;
    }

    pub fn watch_error(&self) {
        let mut inner = self.lock();
        inner.stats.watch_errors += 1;
        inner.stats.state = WatchState::Retrying;
    }

    /// A pod was added or changed. Container ids of earlier versions are
    /// kept (a restarted container gets a new id; the old one's events
    /// still belong to this pod).
    pub fn apply(&self, mut pod: PodInfo, now: Instant) {
        let mut inner = self.lock();
        inner.stats.events += 1;
        if let Some(relisted) = inner.relisted.as_mut() {
            relisted.push(pod.uid.clone());
        }
        if let Some(old) = inner.pods.get(&pod.uid) {
            for c in &old.containers {
                if pod.containers.len() >= MAX_IDS_PER_POD {
                    break;
                }
                if !pod.containers.iter().any(|(id, _)| *id == c.0) {
                    pod.containers.push(c.clone());
                }
            }
        } else if inner.pods.len() >= MAX_PODS {
            inner.sweep(now, Duration::ZERO);
            if inner.pods.len() >= MAX_PODS {
                inner.stats.evicted += 1;
                return;
            }
        }
        for (id, _) in &pod.containers {
            inner.by_container.insert(id.clone(), pod.uid.clone());
        }
        inner.pods.insert(pod.uid.clone(), pod);
    }

    /// A pod was deleted: it stays known for [`RETENTION`].
    pub fn delete(&self, uid: &str, now: Instant) {
        let mut inner = self.lock();
        inner.stats.events += 1;
        if inner.pods.contains_key(uid) {
            inner.deleted.push_back((now, uid.to_string()));
        }
    }

    /// The watch is listing again (after start or a lost watch): pods that
    /// the new list lacks were deleted meanwhile.
    pub fn relist_started(&self) {
        self.lock().relisted = Some(Vec::new());
    }

    pub fn relist_done(&self, now: Instant) {
        let mut inner = self.lock();
        inner.stats.state = WatchState::Watching;
        let Some(seen) = inner.relisted.take() else {
            return;
        };
        let gone: Vec<String> = inner
            .pods
            .keys()
            .filter(|uid| !seen.contains(uid))
            .filter(|uid| !inner.deleted.iter().any(|(_, d)| d == *uid))
            .cloned()
            .collect();
        inner.deleted.extend(gone.into_iter().map(|uid| (now, uid)));
    }

    /// Forgets pods deleted more than [`RETENTION`] ago.
    pub fn sweep(&self, now: Instant) {
        self.lock().sweep(now, RETENTION);
    }

    /// Names for a container (by id) or, failing that, for its pod (by uid).
    pub fn lookup(&self, container_id: Option<&str>, pod_uid: Option<&str>) -> Option<PodMeta> {
        let inner = self.lock();
        if let Some(id) = container_id {
            if let Some(pod) = inner.by_container.get(id).and_then(|u| inner.pods.get(u)) {
                let name = pod
                    .containers
                    .iter()
                    .find(|(c, _)| c == id)
                    .map(|c| c.1.clone());
                return Some(pod.meta(name));
            }
        }
        inner.pods.get(pod_uid?).map(|p| p.meta(None))
    }

    /// The probes of the container with id `container_id`.
    pub fn probes(&self, container_id: &str) -> Vec<ProbeSpec> {
        let inner = self.lock();
        inner
            .by_container
            .get(container_id)
            .and_then(|u| inner.pods.get(u))
            .map(|p| p.probes_of(container_id))
            .unwrap_or_default()
    }

    /// Labels and owner of the pod `uid`, or of the pod named `namespace/name`.
    pub fn pod(&self, uid: Option<&str>, namespace: &str, name: &str) -> Option<PodInfo> {
        let inner = self.lock();
        if let Some(p) = uid.and_then(|u| inner.pods.get(u)) {
            return Some(p.clone());
        }
        inner
            .pods
            .values()
            .find(|p| p.namespace == namespace && p.name == name)
            .cloned()
    }
}

impl Inner {
    fn sweep(&mut self, now: Instant, keep: Duration) {
        while let Some((at, uid)) = self.deleted.front() {
            if now.saturating_duration_since(*at) < keep {
                break;
            }
            if let Some(pod) = self.pods.remove(uid) {
                for (id, _) in pod.containers {
                    self.by_container.remove(&id);
                }
            }
            self.deleted.pop_front();
        }
    }
}

#[cfg(test)]
#[path = "pod_index_tests.rs"]
mod tests;
