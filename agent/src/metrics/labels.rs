//! Label sets of the metrics, and the bound on how many there are.
//!
//! A label set names a workload the way Kubernetes users group things
//! (namespace, owning workload, container), never by pod UID, PID,
//! container id of a Kubernetes container or ephemeral port, so replicas
//! and restarts share their series. Past the bound, new label sets are
//! counted under one "other" label set.

use std::{collections::HashMap, hash::Hash, net::SocketAddr};

use crate::{
    aggregate::flows::{Direction, FlowKey},
    attribution::{
        container::{self, Owner},
        Workload,
    },
};

/// The value of every identifying label of the overflow label set.
pub const OTHER: &str = "other";

/// Who a series belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadLabels {
    /// Kubernetes namespace; empty outside Kubernetes.
    pub namespace: String,
    /// The owning workload's name (a Deployment rather than its
    /// ReplicaSet), else the pod's name; outside Kubernetes
    /// "host/<systemd unit>" ("host" for any other host cgroup),
    /// "<runtime>:<short container id>", or "unknown".
    pub workload: String,
    /// Container name; empty for the pod's sandbox and outside Kubernetes.
    pub container: String,
}

impl WorkloadLabels {
    pub fn of(w: &Workload) -> Self {
        if let Some(p) = &w.pod {
            return Self {
                namespace: p.namespace.clone(),
                workload: p
                    .workload
                    .as_ref()
                    .map_or_else(|| p.name.clone(), |r| r.name.clone()),
                container: p.container.clone().unwrap_or_default(),
            };
        }
        let workload = match &w.owner {
            // The host's systemd unit, as the label names it.
            Some(Owner::Host) => match w.cgroup_path.as_deref().and_then(container::systemd_unit) {
                Some(unit) => format!("host/{unit}"),
                None => "host".to_string(),
            },
            // A container outside Kubernetes (podman, docker): its id is
            // all there is to tell it apart.
            Some(o @ Owner::Container { pod_uid: None, .. }) => o.label(),
            // A Kubernetes pod or container not named (yet): its UID is no
            // label, and its names come later.
            Some(Owner::Container { .. } | Owner::Pod { .. }) => "unnamed_pod".to_string(),
            // The cgroup was gone before it could be named.
            None => "unknown".to_string(),
        };
        Self {
            namespace: String::new(),
            workload,
            container: String::new(),
        }
    }

    fn other() -> Self {
        Self {
            namespace: OTHER.into(),
            workload: OTHER.into(),
            container: OTHER.into(),
        }
    }
}

/// Workload labels per cgroup, looked up once per fold.
pub struct LabelCache<'a> {
    lookup: &'a mut dyn FnMut(u64) -> WorkloadLabels,
    known: HashMap<u64, WorkloadLabels>,
}

impl<'a> LabelCache<'a> {
    pub fn new(lookup: &'a mut dyn FnMut(u64) -> WorkloadLabels) -> Self {
        Self {
            lookup,
            known: HashMap::new(),
        }
    }

    pub fn get(&mut self, cgroup_id: u64) -> WorkloadLabels {
        let lookup = &mut self.lookup;
        self.known
            .entry(cgroup_id)
            .or_insert_with(|| lookup(cgroup_id))
            .clone()
    }
}

/// A label set of the TCP families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpKey {
    pub workload: WorkloadLabels,
    pub direction: Direction,
    /// Outbound: "ip:port" of the remote service. Inbound: ":port", the
    /// workload's own listening port (the client's address and ephemeral
    /// port would make every client its own series).
    pub destination: String,
}

impl TcpKey {
    pub fn new(workload: WorkloadLabels, flow: &FlowKey) -> Self {
        let destination = match flow.direction {
            Direction::Outbound => SocketAddr::new(flow.remote, flow.port).to_string(),
            Direction::Inbound => format!(":{}", flow.port),
        };
        Self {
            workload,
            direction: flow.direction,
            destination,
        }
    }
}

/// A label set of the DNS families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsKey {
    pub workload: WorkloadLabels,
    /// "ip:port" of the DNS server asked.
    pub server: String,
}

/// A label set of the open-findings gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FindingKey {
    /// `Kind::name` (6 values).
    pub kind: &'static str,
    /// `Severity::name` (3 values).
    pub severity: &'static str,
    /// The finding's subject.
    pub workload: WorkloadLabels,
}

/// A label set that has an overflow counterpart.
pub trait Bounded: Clone + Eq + Hash {
    /// The label set this one is counted under when the table is full.
    fn other(&self) -> Self;
}

impl Bounded for TcpKey {
    /// Every label reads "other" except the direction, which has two values.
    fn other(&self) -> Self {
        Self {
            workload: WorkloadLabels::other(),
            direction: self.direction,
            destination: OTHER.into(),
        }
    }
}

impl Bounded for DnsKey {
    fn other(&self) -> Self {
        Self {
            workload: WorkloadLabels::other(),
            server: OTHER.into(),
        }
    }
}

impl Bounded for FindingKey {
    /// The workload reads "other"; kind and severity have few values.
    fn other(&self) -> Self {
        Self {
            kind: self.kind,
            severity: self.severity,
            workload: WorkloadLabels::other(),
        }
    }
}

#[derive(Debug, Clone)]
struct Slot<V> {
    value: V,
    /// When something was last added (seconds on the caller's clock).
    touched_s: u64,
    overflow: bool,
}

/// Series by label set, at most `max` of them besides the overflow ones.
///
/// When full, a new label set is counted under its overflow label set
/// ([`Bounded::other`]), after first making room by dropping label sets
/// nothing was added to for `idle_s` (at most once per fold, so a full
/// table of busy label sets costs one scan per interval).
#[derive(Debug, Clone)]
pub struct LabelTable<K, V> {
    slots: HashMap<K, Slot<V>>,
    max: usize,
    idle_s: u64,
    regular: usize,
    tried_expiry: bool,
    /// Additions counted under an overflow label set because the table was full.
    pub overflowed: u64,
}

impl<K: Bounded, V: Default> LabelTable<K, V> {
    pub fn new(max: usize, idle_s: u64) -> Self {
        Self {
            slots: HashMap::new(),
            max,
            idle_s,
            regular: 0,
            tried_expiry: false,
            overflowed: 0,
        }
    }

    /// Label sets other than the overflow ones.
    pub fn regular(&self) -> usize {
        self.regular
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Starts a fold: lets `reset` clear what is recomputed every time
    /// (gauges), and allows one expiry scan.
    pub fn begin(&mut self, mut reset: impl FnMut(&mut V)) {
        self.tried_expiry = false;
        for s in self.slots.values_mut() {
            reset(&mut s.value);
        }
    }

    /// The series of `key` (or of its overflow label set), to add to.
    pub fn slot(&mut self, key: K, now_s: u64) -> &mut V {
        let (key, overflow) = if self.slots.contains_key(&key) || self.make_room(now_s) {
            (key, false)
        } else {
            self.overflowed += 1;
            (key.other(), true)
        };
        let regular = &mut self.regular;
        let slot = self.slots.entry(key).or_insert_with(|| {
            if !overflow {
                *regular += 1;
            }
            Slot {
                value: V::default(),
                touched_s: now_s,
                overflow,
            }
        });
        slot.touched_s = now_s;
        &mut slot.value
    }

    /// Whether a new regular label set fits, expiring idle ones if needed.
    fn make_room(&mut self, now_s: u64) -> bool {
        if self.regular < self.max {
            return true;
        }
        if self.tried_expiry {
            return false;
        }
        self.tried_expiry = true;
        let idle = self.idle_s;
        let before = self.slots.len();
        self.slots
            .retain(|_, s| s.overflow || now_s.saturating_sub(s.touched_s) < idle);
        self.regular -= before - self.slots.len();
        self.regular < self.max
    }

    /// Every series, sorted by label set.
    pub fn sorted(&self) -> Vec<(K, V)>
    where
        K: Ord,
        V: Clone,
    {
        let mut out: Vec<(K, V)> = self
            .slots
            .iter()
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
