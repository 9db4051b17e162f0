//! Who owns a socket: cgroup id -> cgroup path -> container, pod or host.

pub mod cgroup_fs;
pub mod cgroup_handle;
pub mod container;

use std::{collections::HashMap, path::PathBuf};

use cgroup_fs::CgroupResolver;
use container::Owner;

/// What a cgroup id stands for, as shown to people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    pub cgroup_id: u64,
    /// Path under the cgroup v2 mount; None if the cgroup is gone or unknown.
    pub cgroup_path: Option<String>,
    /// None when the path is unknown.
    pub owner: Option<Owner>,
}

impl Workload {
    /// "host", "podman:0123456789ab", ..., or "cgroup:<id>" when unknown.
    pub fn label(&self) -> String {
        match &self.owner {
            Some(o) => o.label(),
            None => format!("cgroup:{}", self.cgroup_id),
        }
    }

    /// Whether a user's `--container` filter selects this workload: a
    /// substring of the label, the container id, the pod uid or the path.
    pub fn matches(&self, filter: &str) -> bool {
        let hit = |s: Option<&str>| s.is_some_and(|s| s.contains(filter));
        self.label().contains(filter)
            || hit(self.owner.as_ref().and_then(|o| o.container_id()))
            || hit(self.owner.as_ref().and_then(|o| o.pod_uid()))
            || hit(self.cgroup_path.as_deref())
    }
}

/// Caches workloads by cgroup id. Bounded: it is cleared when it outgrows
/// `max` (entries are cheap to rebuild from the resolver).
pub struct Attributor {
    resolver: CgroupResolver,
    cache: HashMap<u64, Workload>,
    max: usize,
}

impl Attributor {
    pub fn new(cgroup_root: PathBuf) -> Self {
        Self {
            resolver: CgroupResolver::new(cgroup_root),
            cache: HashMap::new(),
            max: 65_536,
        }
    }

    pub fn workload(&mut self, cgroup_id: u64) -> Workload {
        if let Some(w) = self.cache.get(&cgroup_id) {
            if w.cgroup_path.is_some() {
                return w.clone();
            }
        }
        let path = self.resolver.resolve(cgroup_id);
        self.remember(cgroup_id, path)
    }

    /// Records a cgroup's name as the kernel reported it at creation, so it
    /// can be named after it is gone.
    pub fn learn(&mut self, cgroup_id: u64, path: String) {
        self.remember(cgroup_id, Some(path));
    }

    /// Classifies and caches; the cache is cleared when it outgrows `max`.
    fn remember(&mut self, cgroup_id: u64, path: Option<String>) -> Workload {
        let w = Workload {
            cgroup_id,
            owner: path.as_deref().map(container::classify),
            cgroup_path: path,
        };
        if self.cache.len() >= self.max {
            self.cache.clear();
        }
        self.cache.insert(cgroup_id, w.clone());
        w
    }

    /// Ids that could not be resolved to a path (cgroup already removed).
    pub fn unresolved(&self) -> u64 {
        self.resolver.unresolved()
    }
}
