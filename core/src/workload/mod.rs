//! What a cgroup stands for, as shown to people: a container, a pod or a
//! host service, with its Kubernetes names; and the filter that selects
//! workloads, with one meaning for the agent, the collector and the CLI.

pub mod container;
pub mod filter;
pub mod pod_meta;

use container::Owner;
use pod_meta::PodMeta;

/// Names workloads by cgroup id. The agent's attribution resolves cgroup
/// paths, runtime records and the Kubernetes API behind it; tests give a
/// table.
pub trait Workloads {
    fn workload(&mut self, cgroup_id: u64) -> Workload;

    fn label(&mut self, cgroup_id: u64) -> String {
        self.workload(cgroup_id).label()
    }
}

/// What a cgroup id stands for, as shown to people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    pub cgroup_id: u64,
    /// Path under the cgroup v2 mount; None if the cgroup is gone or unknown.
    pub cgroup_path: Option<String>,
    /// None when the path is unknown.
    pub owner: Option<Owner>,
    /// Kubernetes names, when the runtime's record or the API has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodMeta>,
}

impl Workload {
    /// "namespace/pod/container" when the names are known, else
    /// "host/<systemd unit or cgroup>" ("host" for the root cgroup),
    /// "podman:0123456789ab", ..., or "cgroup:<id>" when unknown.
    pub fn label(&self) -> String {
        match (&self.pod, &self.owner) {
            (Some(p), _) => p.label(),
            (None, Some(Owner::Host)) => {
                match self.cgroup_path.as_deref().and_then(container::host_name) {
                    Some(unit) => format!("host/{unit}"),
                    None => "host".to_string(),
                }
            }
            (None, Some(o)) => o.label(),
            (None, None) => format!("cgroup:{}", self.cgroup_id),
        }
    }

    /// Whether a user's `--container` filter selects this workload: a
    /// substring of the label, the container id, the pod uid, the cgroup
    /// path, or the namespace, pod or container name.
    pub fn matches(&self, filter: &str) -> bool {
        let hit = |s: Option<&str>| s.is_some_and(|s| s.contains(filter));
        let pod = self.pod.as_ref();
        self.label().contains(filter)
            || hit(self.owner.as_ref().and_then(|o| o.container_id()))
            || hit(self.owner.as_ref().and_then(|o| o.pod_uid()))
            || hit(self.cgroup_path.as_deref())
            || hit(pod.map(|p| p.namespace.as_str()))
            || hit(pod.map(|p| p.name.as_str()))
            || hit(pod.and_then(|p| p.container.as_deref()))
    }
}

/// Workloads from a table; ids not in it are named like a cgroup that is
/// gone (`cgroup:<id>`). For tests, and for callers that know the names.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub known: std::collections::HashMap<u64, Workload>,
}

impl Workloads for Table {
    fn workload(&mut self, cgroup_id: u64) -> Workload {
        self.known.get(&cgroup_id).cloned().unwrap_or(Workload {
            cgroup_id,
            cgroup_path: None,
            owner: None,
            pod: None,
        })
    }
}
