//! Restarts: the instances (cgroups) of one workload over time. A pod's
//! container restarted, or a Deployment's pod replaced, is a new cgroup
//! with the same identity (namespace, workload, container). Pod restart
//! counts alone are what dashboards show; relating each instance to the
//! connections it left behind is what the findings need.

use std::collections::VecDeque;

use ahash::HashMap;

use super::Workload;

/// Instances remembered per identity, and identities.
const PER_IDENTITY: usize = 64;
const IDENTITIES: usize = 4096;

/// What stays the same across a workload's restarts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub namespace: String,
    /// The owning workload's name, else the pod's name without the
    /// suffixes its controller adds ("otp-service" for
    /// "otp-service-5f8d7c9b6-x2x4q").
    pub app: String,
    pub container: String,
}

impl Identity {
    /// Only Kubernetes workloads have one: elsewhere nothing says that two
    /// cgroups are the same service.
    pub fn of(w: &Workload) -> Option<Self> {
        let p = w.pod.as_ref()?;
        Some(Self {
            namespace: p.namespace.clone(),
            app: p
                .workload
                .as_ref()
                .map_or_else(|| app_of_pod(&p.name).to_string(), |o| o.name.clone()),
            container: p.container.clone().unwrap_or_default(),
        })
    }

    /// "auth/otp-service/app".
    pub fn label(&self) -> String {
        if self.container.is_empty() {
            format!("{}/{}", self.namespace, self.app)
        } else {
            format!("{}/{}/{}", self.namespace, self.app, self.container)
        }
    }
}

/// One instance of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub cgroup_id: u64,
    /// "auth/otp-service-5f8d7c9b6-x2x4q/app".
    pub label: String,
    pub first_seen_ns: u64,
}

#[derive(Debug, Default)]
pub struct Instances {
    by_identity: HashMap<Identity, VecDeque<Instance>>,
    by_cgroup: HashMap<u64, Identity>,
    /// Identities not followed because the bound was reached.
    pub identities_not_kept: u64,
}

impl Instances {
    /// Notes a workload seen (for the first time, or again).
    pub fn saw(&mut self, w: &Workload, now_ns: u64) {
        if self.by_cgroup.contains_key(&w.cgroup_id) {
            return;
        }
        let Some(id) = Identity::of(w) else { return };
        if !self.by_identity.contains_key(&id) && self.by_identity.len() >= IDENTITIES {
            self.identities_not_kept += 1;
            return;
        }
        let list = self.by_identity.entry(id.clone()).or_default();
        if list.len() == PER_IDENTITY {
            if let Some(old) = list.pop_front() {
                self.by_cgroup.remove(&old.cgroup_id);
            }
        }
        list.push_back(Instance {
            cgroup_id: w.cgroup_id,
            label: w.label(),
            first_seen_ns: now_ns,
        });
        self.by_cgroup.insert(w.cgroup_id, id);
    }

    pub fn identity(&self, cgroup_id: u64) -> Option<&Identity> {
        self.by_cgroup.get(&cgroup_id)
    }

    /// The instances of `id`, oldest first.
    pub fn of(&self, id: &Identity) -> impl Iterator<Item = &Instance> {
        self.by_identity.get(id).into_iter().flatten()
    }

    /// Restarts of `id` since `since_ns`: instances first seen then, after
    /// an earlier one (the first instance is a start, not a restart).
    pub fn restarts_since(&self, id: &Identity, since_ns: u64) -> Vec<&Instance> {
        let list: Vec<&Instance> = self.of(id).collect();
        list.iter()
            .enumerate()
            .filter(|(i, inst)| *i > 0 && inst.first_seen_ns >= since_ns)
            .map(|(_, inst)| *inst)
            .collect()
    }
}

/// The name a controller's pods share: "web" for "web-7d9f8b6c5-x2x4q"
/// (Deployment: ReplicaSet hash and random suffix) and "agent" for
/// "agent-x2x4q" (DaemonSet, Job); a StatefulSet's "redis-0" keeps its
/// ordinal, which stays across restarts.
pub fn app_of_pod(name: &str) -> &str {
    let random = |s: &str| {
        s.len() == 5
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let hash = |s: &str| {
        (6..=10).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let Some((rest, last)) = name.rsplit_once('-') else {
        return name;
    };
    if !random(last) || rest.is_empty() {
        return name;
    }
    match rest.rsplit_once('-') {
        Some((app, h)) if hash(h) && !app.is_empty() => app,
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::pod_meta::{MetaSource, PodMeta};

    fn pod(cgroup_id: u64, name: &str) -> Workload {
        Workload {
            cgroup_id,
            cgroup_path: None,
            owner: None,
            pod: Some(PodMeta {
                namespace: "auth".into(),
                name: name.into(),
                uid: None,
                container: Some("app".into()),
                workload: None,
                labels: Default::default(),
                source: MetaSource::RuntimeRecord,
            }),
        }
    }

    #[test]
    fn controller_suffixes_are_stripped_ordinals_kept() {
        assert_eq!(app_of_pod("otp-service-5f8d7c9b6-x2x4q"), "otp-service");
        assert_eq!(app_of_pod("node-agent-x2x4q"), "node-agent");
        assert_eq!(app_of_pod("redis-0"), "redis-0");
        assert_eq!(app_of_pod("payments"), "payments");
        assert_eq!(app_of_pod("a-Bad12"), "a-Bad12");
    }

    #[test]
    fn new_cgroups_of_one_identity_are_restarts() {
        let mut i = Instances::default();
        i.saw(&pod(1, "otp-service-5f8d7c9b6-aaaaa"), 10);
        i.saw(&pod(1, "otp-service-5f8d7c9b6-aaaaa"), 11);
        i.saw(&pod(2, "otp-service-5f8d7c9b6-bbbbb"), 20);
        i.saw(&pod(3, "otp-service-7c9b6d8f4-ccccc"), 30);
        i.saw(&pod(4, "cart-5f8d7c9b6-ddddd"), 30);
        let id = i.identity(2).cloned().unwrap();
        assert_eq!(id.label(), "auth/otp-service/app");
        assert_eq!(i.of(&id).count(), 3);
        let r: Vec<u64> = i
            .restarts_since(&id, 0)
            .iter()
            .map(|x| x.cgroup_id)
            .collect();
        assert_eq!(r, [2, 3]);
        assert_eq!(i.restarts_since(&id, 25).len(), 1);
        assert!(i.identity(4).is_some_and(|c| c.app == "cart"));
    }
}
