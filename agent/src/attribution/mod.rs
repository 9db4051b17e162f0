//! Who owns a socket: cgroup id -> cgroup path -> container, pod or host,
//! and the container's Kubernetes names (namespace, pod, container, owner).

pub mod cgroup_fs;
pub mod cgroup_handle;
pub mod kube_watch;
pub mod pod_index;
pub mod runtime_records;

// What a workload is, and the filter's meaning, live in the core (the
// collector and the CLI share them); this module finds them.
pub use sockeye_core::workload::{container, filter, pod_meta, Workload, Workloads};

use std::{collections::HashMap, path::PathBuf};

use cgroup_fs::CgroupResolver;
use container::Owner;
use pod_index::{PodIndex, PodIndexStats};
use runtime_records::{RecordReader, RecordRoots, RecordStats};

/// Counters of the metadata sources, for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetadataStats {
    pub runtime_records: RecordStats,
    pub kube_api: Option<PodIndexStats>,
}

/// Caches workloads by cgroup id. Bounded: it is cleared when it outgrows
/// `max` (entries are cheap to rebuild from the resolver).
pub struct Attributor {
    resolver: CgroupResolver,
    records: RecordReader,
    pods: Option<PodIndex>,
    cache: HashMap<u64, Workload>,
    max: usize,
}

impl Attributor {
    /// Reads runtime records from their default places.
    pub fn new(cgroup_root: PathBuf) -> Self {
        Self::with_records(cgroup_root, RecordRoots::default())
    }

    pub fn with_records(cgroup_root: PathBuf, roots: RecordRoots) -> Self {
        Self {
            resolver: CgroupResolver::new(cgroup_root),
            records: RecordReader::new(roots),
            pods: None,
            cache: HashMap::new(),
            max: 65_536,
        }
    }

    /// Adds the API's view of this node's pods (labels, owners, names of
    /// containers whose record is gone).
    pub fn set_pod_index(&mut self, index: PodIndex) {
        self.pods = Some(index);
    }

    pub fn workload(&mut self, cgroup_id: u64) -> Workload {
        let w = match self.cache.get(&cgroup_id) {
            Some(w) if w.cgroup_path.is_some() => w.clone(),
            _ => {
                let path = self.resolver.resolve(cgroup_id);
                self.remember(cgroup_id, path)
            }
        };
        self.with_api_names(w)
    }

    /// Records a cgroup's name as the kernel reported it at creation, so it
    /// can be named after it is gone. A container's runtime record is read
    /// now, while the container exists.
    pub fn learn(&mut self, cgroup_id: u64, path: String) {
        self.remember(cgroup_id, Some(path));
    }

    /// Classifies, reads the runtime record of a container, and caches; the
    /// cache is cleared when it outgrows `max`.
    fn remember(&mut self, cgroup_id: u64, path: Option<String>) -> Workload {
        let mut owner = path.as_deref().map(container::classify);
        let mut pod = None;
        if let Some(Owner::Container { runtime, id, .. }) = owner.as_mut() {
            if let Some(record) = self.records.lookup(id) {
                // The path cannot always tell the runtime (cgroupfs driver).
                *runtime = record.runtime;
                pod = record.pod;
            }
        }
        let w = Workload {
            cgroup_id,
            owner,
            cgroup_path: path,
            pod,
        };
        if self.cache.len() >= self.max {
            self.cache.clear();
        }
        self.cache.insert(cgroup_id, w.clone());
        w
    }

    /// Joins what the API knows: labels and owner for a named pod, names
    /// for a container or pod cgroup that has no record. Not cached, so
    /// pods the watch learns about later are named from then on.
    fn with_api_names(&self, mut w: Workload) -> Workload {
        let Some(index) = &self.pods else {
            return w;
        };
        let owner = w.owner.as_ref();
        match &mut w.pod {
            Some(p) => {
                if let Some(info) = index.pod(p.uid.as_deref(), &p.namespace, &p.name) {
                    p.workload = info.workload;
                    p.labels = info.labels;
                    p.uid.get_or_insert(info.uid);
                }
            }
            None => {
                w.pod = index.lookup(
                    owner.and_then(|o| o.container_id()),
                    owner.and_then(|o| o.pod_uid()),
                );
            }
        }
        w
    }

    /// Ids that could not be resolved to a path (cgroup already removed).
    pub fn unresolved(&self) -> u64 {
        self.resolver.unresolved()
    }

    pub fn metadata_stats(&self) -> MetadataStats {
        MetadataStats {
            runtime_records: self.records.stats(),
            kube_api: self.pods.as_ref().map(PodIndex::stats),
        }
    }
}

#[cfg(test)]
#[path = "attributor_tests.rs"]
mod tests;

impl Workloads for Attributor {
    fn workload(&mut self, cgroup_id: u64) -> Workload {
        Attributor::workload(self, cgroup_id)
    }
}
