//! Kubernetes names of a container: namespace, pod, container, owning
//! workload. Filled from the runtime's own records and from the API.

use std::collections::BTreeMap;

/// The controller that owns a pod, as people name it (a Deployment rather
/// than its current ReplicaSet).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct WorkloadRef {
    /// "Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet", ...
    pub kind: String,
    pub name: String,
}

/// Where a [`PodMeta`] came from: its names always come from the first
/// source that had them, labels and owner only from the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaSource {
    /// The container runtime's OCI spec annotations on this node.
    RuntimeRecord,
    /// The Kubernetes API (pods of this node).
    KubeApi,
}

/// A container's (or a pod's) Kubernetes identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodMeta {
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    pub uid: Option<String>,
    /// None for the pod's sandbox ("pause") container and for the pod's own
    /// cgroup: traffic there belongs to the pod as a whole.
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub source: MetaSource,
}

impl PodMeta {
    /// "namespace/pod/container", or "namespace/pod" for the pod itself.
    pub fn label(&self) -> String {
        match &self.container {
            Some(c) => format!("{}/{}/{c}", self.namespace, self.name),
            None => format!("{}/{}", self.namespace, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let mut m = PodMeta {
            namespace: "shop".into(),
            name: "web-7d9f-abcde".into(),
            uid: None,
            container: Some("nginx".into()),
            workload: None,
            labels: BTreeMap::new(),
            source: MetaSource::RuntimeRecord,
        };
        assert_eq!(m.label(), "shop/web-7d9f-abcde/nginx");
        m.container = None;
        assert_eq!(m.label(), "shop/web-7d9f-abcde");
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["source"], "runtime_record");
        assert!(json.get("labels").is_none() && json.get("workload").is_none());
    }
}
