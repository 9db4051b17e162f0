//! Who a workload message names across nodes: the one reading of a
//! `pb::Workload` that QueryTop's rows and the findings merge both group by.
//!
//! A pod is named by namespace and pod, a container outside Kubernetes by
//! its id; anything else (a host process, a cgroup without a container) is
//! only itself on its own node, so the node is part of its name.

use sockeye_proto::v1 as pb;

/// How finely workloads are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// One row per container of a pod (QueryTop).
    Container,
    /// The pod's controller when it has one, else the pod: the replicas of
    /// a Deployment are one problem (findings).
    Owner,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WorkloadId {
    Owner {
        namespace: String,
        kind: String,
        name: String,
    },
    Pod {
        namespace: String,
        pod: String,
        /// Empty at [`Grain::Owner`].
        container: String,
    },
    Container {
        id: String,
    },
    Local {
        node: String,
        label: String,
    },
}

impl WorkloadId {
    pub fn of(w: Option<&pb::Workload>, node: &str, grain: Grain) -> Self {
        let empty = pb::Workload::default();
        let w = w.unwrap_or(&empty);
        if grain == Grain::Owner && !w.owner_name.is_empty() {
            Self::Owner {
                namespace: w.namespace.clone(),
                kind: w.owner_kind.clone(),
                name: w.owner_name.clone(),
            }
        } else if !w.pod.is_empty() {
            Self::Pod {
                namespace: w.namespace.clone(),
                pod: w.pod.clone(),
                container: match grain {
                    Grain::Container => w.container.clone(),
                    Grain::Owner => String::new(),
                },
            }
        } else if !w.container_id.is_empty() {
            Self::Container {
                id: w.container_id.clone(),
            }
        } else {
            let label = if w.label.is_empty() {
                &w.cgroup_path
            } else {
                &w.label
            };
            Self::Local {
                node: node.to_string(),
                label: label.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_containers_are_apart_in_rows_and_one_owner_in_findings() {
        let w = |pod: &str, container: &str| pb::Workload {
            namespace: "shop".into(),
            pod: pod.into(),
            container: container.into(),
            owner_kind: "Deployment".into(),
            owner_name: "api".into(),
            ..Default::default()
        };
        let (a, b) = (w("api-1", "app"), w("api-2", "sidecar"));
        let row = |w| WorkloadId::of(Some(w), "n", Grain::Container);
        let problem = |w| WorkloadId::of(Some(w), "n", Grain::Owner);
        assert_ne!(row(&a), row(&b));
        assert_eq!(problem(&a), problem(&b));
        let host = pb::Workload {
            cgroup_path: "/system.slice/redis.service".into(),
            ..Default::default()
        };
        assert_ne!(
            WorkloadId::of(Some(&host), "n1", Grain::Owner),
            WorkloadId::of(Some(&host), "n2", Grain::Owner),
            "a host service is itself on its own node only"
        );
    }
}
