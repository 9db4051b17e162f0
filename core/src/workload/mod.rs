//! What a cgroup stands for, as shown to people: a container, a pod or a
//! host service, with its Kubernetes names; and the filter that selects
//! workloads, with one meaning for the agent, the collector and the CLI.

pub mod container;
pub mod filter;
pub mod instances;
pub mod pod_meta;
pub mod probes;

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

    /// The Kubernetes probes of the container in `cgroup_id`, when its pod
    /// spec is known.
    fn probes(&mut self, _cgroup_id: u64) -> Vec<probes::ProbeSpec> {
        Vec::new()
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

    /// The names a filter reads ([`filter::WorkloadFilter`]).
    pub fn names(&self) -> WorkloadNames<'_> {
        let pod = self.pod.as_ref();
        WorkloadNames {
            label: self.label().into(),
            container_id: self.owner.as_ref().and_then(|o| o.container_id()),
            pod_uid: self.owner.as_ref().and_then(|o| o.pod_uid()),
            cgroup_path: self.cgroup_path.as_deref(),
            namespace: pod.map(|p| p.namespace.as_str()),
            pod: pod.map(|p| p.name.as_str()),
            container: pod.and_then(|p| p.container.as_deref()),
            owner: pod
                .and_then(|p| p.workload.as_ref())
                .map(|o| o.name.as_str()),
        }
    }

    /// Whether a user's `--container` filter selects this workload.
    pub fn matches(&self, filter: &str) -> bool {
        self.names().contains(filter)
    }
}

/// A workload's names as a filter reads them, from the agent's
/// [`Workload`] or from the API's message of it, so that both are matched
/// by the same rules.
#[derive(Debug, Clone, Default)]
pub struct WorkloadNames<'a> {
    pub label: std::borrow::Cow<'a, str>,
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
    pub cgroup_path: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub pod: Option<&'a str>,
    pub container: Option<&'a str>,
    /// The owning controller's name ("payments" of a Deployment).
    pub owner: Option<&'a str>,
}

impl WorkloadNames<'_> {
    /// A `--container` filter: a substring of the label, the container id,
    /// the pod uid, the cgroup path, or the namespace, pod or container
    /// name.
    pub fn contains(&self, text: &str) -> bool {
        self.label.contains(text)
            || [
                self.container_id,
                self.pod_uid,
                self.cgroup_path,
                self.namespace,
                self.pod,
                self.container,
            ]
            .into_iter()
            .flatten()
            .any(|s| s.contains(text))
    }
}

/// Workloads from a table; ids not in it are named like a cgroup that is
/// gone (`cgroup:<id>`). For tests, and for callers that know the names.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub known: std::collections::HashMap<u64, Workload>,
    pub probes: std::collections::HashMap<u64, Vec<probes::ProbeSpec>>,
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

    fn probes(&mut self, cgroup_id: u64) -> Vec<probes::ProbeSpec> {
        self.probes.get(&cgroup_id).cloned().unwrap_or_default()
    }
}
