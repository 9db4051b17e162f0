//! Which workloads a user asked to see: `--container` (a substring of any
//! name or id), `--namespace` and `--pod`.

use super::{Workload, WorkloadNames};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadFilter {
    /// Substring of the label, container id, pod uid, cgroup path, or
    /// namespace, pod or container name.
    pub text: Option<String>,
    /// The Kubernetes namespace, exactly.
    pub namespace: Option<String>,
    /// A pod name, or the name its controller gives its pods ("web" selects
    /// "web-7d9f8b6c5-x2x4q"), or the owning workload's name.
    pub pod: Option<String>,
}

impl From<Option<&str>> for WorkloadFilter {
    fn from(text: Option<&str>) -> Self {
        Self {
            text: text.map(str::to_string),
            ..Self::default()
        }
    }
}

impl WorkloadFilter {
    pub fn matches(&self, w: &Workload) -> bool {
        // Every row of every snapshot passes here, most often with no
        // filter at all: build the names (the label is a new string) only
        // when something reads them.
        *self == Self::default() || self.matches_names(&w.names())
    }

    pub fn matches_names(&self, w: &WorkloadNames<'_>) -> bool {
        self.text.as_deref().is_none_or(|t| w.contains(t))
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| w.namespace == Some(ns))
            && self.pod.as_deref().is_none_or(|want| {
                w.pod.is_some_and(|p| {
                    p == want
                        || p.strip_prefix(want)
                            .is_some_and(|rest| rest.starts_with('-'))
                }) || w.owner == Some(want)
            })
    }

    /// For the table header: "'text' namespace=shop pod=web", or None.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [
            self.text.as_ref().map(|t| format!("'{t}'")),
            self.namespace.as_ref().map(|n| format!("namespace={n}")),
            self.pod.as_ref().map(|p| format!("pod={p}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::pod_meta::{MetaSource, PodMeta, WorkloadRef};

    fn workload(ns: &str, pod: &str, owner: Option<&str>) -> Workload {
        Workload {
            cgroup_id: 7,
            cgroup_path: Some("/kubepods/x".into()),
            owner: None,
            pod: Some(PodMeta {
                namespace: ns.into(),
                name: pod.into(),
                uid: None,
                container: Some("main".into()),
                workload: owner.map(|o| WorkloadRef {
                    kind: "StatefulSet".into(),
                    name: o.into(),
                }),
                labels: Default::default(),
                source: MetaSource::RuntimeRecord,
            }),
        }
    }

    #[test]
    fn namespace_pod_and_text() {
        let web = workload("shop", "web-7d9f8b6c5-x2x4q", None);
        let db = workload("data", "pg-0", Some("pg"));
        let host = Workload {
            cgroup_id: 1,
            cgroup_path: Some("/".into()),
            owner: None,
            pod: None,
        };
        let f = |text: Option<&str>, ns: Option<&str>, pod: Option<&str>| WorkloadFilter {
            text: text.map(Into::into),
            namespace: ns.map(Into::into),
            pod: pod.map(Into::into),
        };
        let all = WorkloadFilter::default();
        assert!(all.matches(&web) && all.matches(&host));
        assert_eq!(all.describe(), None);
        let shop = f(None, Some("shop"), None);
        assert!(shop.matches(&web) && !shop.matches(&db) && !shop.matches(&host));
        // Exact namespaces: "sho" is not "shop".
        assert!(!f(None, Some("sho"), None).matches(&web));
        // A pod by name, by its controller's prefix, or by its owner.
        for want in ["web-7d9f8b6c5-x2x4q", "web", "web-7d9f8b6c5"] {
            assert!(f(None, None, Some(want)).matches(&web), "{want}");
        }
        assert!(!f(None, None, Some("we")).matches(&web));
        assert!(f(None, None, Some("pg")).matches(&db));
        // All given parts must hold.
        assert!(!f(Some("main"), Some("data"), Some("web")).matches(&web));
        assert!(f(Some("main"), Some("shop"), Some("web")).matches(&web));
        assert_eq!(
            f(Some("main"), Some("shop"), Some("web"))
                .describe()
                .as_deref(),
            Some("'main' namespace=shop pod=web")
        );
    }
}
