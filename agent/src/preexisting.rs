//! Sockets that existed before the agent started: found in /proc at start-up
//! and kept up to date by re-reading their namespaces' tables, because the
//! kernel programs only see sockets whose lifecycle starts after attach.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use sockeye_common::tcp_state;

use crate::{
    aggregate::{
        flows::{Direction, FlowKey},
        listeners::Listener,
        Aggregator,
    },
    attribution::cgroup_fs::cgroup_id_of,
    ebpf::listeners::ListenerSeed,
    netns,
    procfs_sockets::{self, ScanStats},
    sock_diag::{self, Query},
};

/// Pre-existing sockets live in their own id space (kernel cookies are small
/// counters; inodes tagged with the top bit cannot collide with them).
const PREEXISTING_TAG: u64 = crate::aggregate::listeners::PREEXISTING;

/// The pre-existing sockets still open, by namespace, for refreshing.
#[derive(Debug, Default)]
pub struct Preexisting {
    /// netns inode -> (a pid living in it, socket inodes still open there).
    namespaces: HashMap<u64, (u32, HashSet<u64>)>,
    proc_root: PathBuf,
    pub stats: ScanStats,
    /// Listeners found, to seed the kernel's listener map with.
    pub listeners: Vec<FoundListener>,
}

/// A pre-existing listener and a pid in its network namespace.
#[derive(Debug, Clone)]
pub struct FoundListener {
    pub netns_inode: u64,
    pub pid: u32,
    pub port: u16,
    pub cgroup_id: u64,
    pub comm: String,
}

impl Preexisting {
    /// Scans /proc and seeds the aggregator with every socket found.
    pub fn scan(proc_root: &Path, cgroup_root: &Path, agg: &mut Aggregator, now_ns: u64) -> Self {
        let (found, stats) = procfs_sockets::scan(proc_root);
        let mut out = Self {
            proc_root: proc_root.to_path_buf(),
            stats,
            ..Default::default()
        };
        // Listening ports per namespace tell inbound from outbound sockets.
        let listening: HashSet<(u64, u16)> = found
            .iter()
            .filter(|s| s.entry.state == tcp_state::LISTEN)
            .map(|s| (s.netns_inode, s.entry.local.port()))
            .collect();
        let mut cgroup_ids: HashMap<String, u64> = HashMap::new();
        // A listener's namespace cookie, once per namespace: it ties the
        // listener to the kernel's events (a restart listens again in the
        // same namespace, a close reports it).
        let mut netns_cookies: HashMap<u64, u64> = HashMap::new();
        // Listeners' socket cookies by inode, once per namespace: the kernel
        // reports the close of a listener it did not see start by cookie
        // alone (see `Listeners::stopped`).
        let mut listener_cookies: HashMap<u64, HashMap<u64, u64>> = HashMap::new();
        for s in found {
            let Some(owner) = &s.owner else { continue };
            let cgroup_id = *cgroup_ids
                .entry(owner.cgroup_path.clone())
                .or_insert_with(|| cgroup_id_of(cgroup_root, &owner.cgroup_path).unwrap_or(0));
            let id = PREEXISTING_TAG | s.entry.inode;
            if s.entry.state == tcp_state::LISTEN {
                let netns_cookie = *netns_cookies.entry(s.netns_inode).or_insert_with(|| {
                    netns::cookie_of_pid(proc_root, owner.pid).unwrap_or_else(|e| {
                        log::debug!("netns cookie of pid {}: {e}", owner.pid);
                        0
                    })
                });
                let cookies = listener_cookies
                    .entry(s.netns_inode)
                    .or_insert_with(|| listener_cookies_of(proc_root, owner.pid));
                let kernel_cookie = cookies.get(&s.entry.inode).copied();
                out.listeners.push(FoundListener {
                    netns_inode: s.netns_inode,
                    pid: owner.pid,
                    port: s.entry.local.port(),
                    cgroup_id,
                    comm: owner.comm.clone(),
                });
                agg.listeners.add_preexisting(
                    id,
                    kernel_cookie,
                    Listener {
                        cgroup_id,
                        addr: s.entry.local.ip(),
                        port: s.entry.local.port(),
                        tgid: owner.pid,
                        comm: owner.comm.clone(),
                        since_ns: now_ns,
                        netns_cookie,
                    },
                );
            } else {
                let inbound = listening.contains(&(s.netns_inode, s.entry.local.port()));
                let direction = if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                let (local, remote) = (s.entry.local, s.entry.remote);
                let flow = FlowKey::new(
                    cgroup_id,
                    direction,
                    remote.ip(),
                    local.port(),
                    remote.port(),
                );
                // The client's end: ours going out, the peer's coming in.
                let client = if inbound { remote } else { local };
                agg.add_preexisting(
                    id,
                    flow,
                    s.entry.state,
                    now_ns,
                    owner.pid,
                    &owner.comm,
                    Some(client),
                );
            }
            out.namespaces
                .entry(s.netns_inode)
                .or_insert_with(|| (owner.pid, HashSet::new()))
                .1
                .insert(s.entry.inode);
        }
        out
    }

    /// Resolves each listener's namespace to its cookie (once per namespace)
    /// for the kernel's listener map; namespaces that cannot be entered are
    /// logged and skipped (their accepted connections stay unattributed).
    pub fn listener_seeds(&self) -> Vec<ListenerSeed> {
        let mut cookies: HashMap<u64, Option<u64>> = HashMap::new();
        let mut seeds = Vec::new();
        for l in &self.listeners {
            let cookie = *cookies.entry(l.netns_inode).or_insert_with(|| {
                netns::cookie_of_pid(&self.proc_root, l.pid)
                    .map_err(|e| {
                        log::warn!(
                            "cannot read the netns cookie of pid {} (netns {}): {e}; connections accepted by its pre-existing listeners will not be attributed",
                            l.pid, l.netns_inode
                        )
                    })
                    .ok()
            });
            if let Some(netns_cookie) = cookie {
                seeds.push(ListenerSeed {
                    netns_cookie,
                    port: l.port,
                    cgroup_id: l.cgroup_id,
                    tgid: l.pid,
                    comm: l.comm.clone(),
                });
            }
        }
        seeds
    }

    pub fn remaining(&self) -> usize {
        self.namespaces.values().map(|(_, s)| s.len()).sum()
    }

    /// Re-reads each namespace that still has pre-existing sockets: updates
    /// their states (an old connection entering CLOSE_WAIT shows up) and
    /// removes the ones that are gone.
    pub fn refresh(&mut self, agg: &mut Aggregator, now_ns: u64) {
        self.namespaces.retain(|_, (pid, inodes)| {
            let Ok(entries) = procfs_sockets::read_netns_tables(&self.proc_root, *pid) else {
                // The namespace's reference process is gone: we can no longer
                // see these sockets, so stop reporting them as open.
                for inode in inodes.drain() {
                    forget(agg, inode, now_ns);
                }
                return false;
            };
            let now_state: HashMap<u64, u8> = entries.iter().map(|e| (e.inode, e.state)).collect();
            inodes.retain(|inode| match now_state.get(inode) {
                Some(&state) => {
                    let id = PREEXISTING_TAG | inode;
                    // Seen changed now, so it entered the state by now: a
                    // wait counted from here is a lower bound, as its age is.
                    if agg.sockets.get(id).is_some_and(|s| s.state != state) {
                        agg.set_socket_state(id, state, now_ns);
                    }
                    true
                }
                None => {
                    forget(agg, *inode, now_ns);
                    false
                }
            });
            !inodes.is_empty()
        });
    }
}

/// inode -> socket cookie of the listeners in `pid`'s network namespace;
/// empty (logged) when the namespace cannot be asked.
fn listener_cookies_of(proc_root: &Path, pid: u32) -> HashMap<u64, u64> {
    let mut q = Query::states(&[tcp_state::LISTEN]);
    q.tcp_info = false;
    match sock_diag::tcp_sockets(proc_root, pid, &q) {
        Ok(sockets) => sockets
            .iter()
            .map(|s| (u64::from(s.inode), s.cookie))
            .collect(),
        Err(e) => {
            log::debug!("listener cookies in the namespace of pid {pid}: {e}; their closes are noticed by the /proc refresh");
            HashMap::new()
        }
    }
}

fn forget(agg: &mut Aggregator, inode: u64, now_ns: u64) {
    let id = PREEXISTING_TAG | inode;
    agg.forget_socket(id, now_ns);
    agg.listeners.remove_preexisting(id, now_ns);
}
