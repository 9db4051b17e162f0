//! Connects and socket() calls that failed because a local port or a file
//! descriptor ran out, per (cgroup, errno, syscall, destination):
//! cumulative counts, the current episode, the last process, and the limit
//! it ran into.

pub mod decode;
pub mod recent;
pub mod view;

use std::net::SocketAddr;

use ahash::HashMap;
use sockeye_common::resources::errno;

pub use decode::{errno_meaning, errno_name, DecodeError, Failure, Syscall};
use recent::Recent;

/// Keys kept by default; past it the stalest is forgotten (counted).
pub const DEFAULT_MAX_KEYS: usize = 1024;
/// Default window: failures further apart start a new episode.
pub const DEFAULT_WINDOW_NS: u64 = 60_000_000_000;
/// A limit is read again for another process of the same key at most this
/// often: a pre-forking server's workers each fail in turn, and reading
/// /proc for every one of them would cost more than it tells.
const REREAD_NS: u64 = 10_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailureKey {
    pub cgroup_id: u64,
    pub errno: u32,
    pub syscall: Syscall,
    /// connect()'s destination; None for socket(), or when unknown.
    pub destination: Option<SocketAddr>,
}

/// The limit a failure ran into, read from /proc when its episode began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Limit {
    /// `net.ipv4.ip_local_port_range` of the process's network namespace.
    PortRange { low: u16, high: u16 },
    /// RLIMIT_NOFILE of the process (None: unlimited), and the descriptors
    /// it had open when read (None: not counted).
    OpenFiles {
        soft: Option<u64>,
        hard: Option<u64>,
        open: Option<u64>,
    },
    /// `fs.file-nr`: files allocated on the node, and `fs.file-max`.
    SystemFiles { allocated: u64, max: u64 },
}

impl Limit {
    /// Whether failures with `errno` have a limit worth reading.
    pub const fn exists_for(e: u32) -> bool {
        matches!(e, errno::EADDRNOTAVAIL | errno::EMFILE | errno::ENFILE)
    }
}

#[derive(Debug, Clone)]
pub struct FailureStats {
    pub total: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub last_tgid: u32,
    pub last_comm: [u8; 16],
    /// First failure of the current episode: a run of failures none more
    /// than the window apart.
    pub episode_start_ns: u64,
    pub episode_failures: u64,
    recent: Recent,
    pub limit: Option<Limit>,
    /// The process whose limit was last asked for, and when.
    limit_tgid: u32,
    limit_asked_ns: u64,
    limit_pending: bool,
}

impl FailureStats {
    fn new(window_ns: u64) -> Self {
        Self {
            total: 0,
            first_ns: 0,
            last_ns: 0,
            last_tgid: 0,
            last_comm: [0; 16],
            episode_start_ns: 0,
            episode_failures: 0,
            recent: Recent::new(window_ns),
            limit: None,
            limit_tgid: 0,
            limit_asked_ns: 0,
            limit_pending: false,
        }
    }

    /// Failures in the window ending at `now_ns`.
    pub fn recent(&self, now_ns: u64) -> u64 {
        self.recent.count(now_ns)
    }
}

#[derive(Debug)]
pub struct ResourceFailures {
    entries: HashMap<FailureKey, FailureStats>,
    max_keys: usize,
    window_ns: u64,
    /// Keys whose limit should be read (each listed once while pending).
    limit_requests: Vec<FailureKey>,
    /// Records decoded and counted.
    pub received: u64,
    pub decode_errors: u64,
    /// Keys forgotten, with their counts, to admit new ones.
    pub evicted: u64,
    /// cgroup ids of new keys since the caller last took them: resolve
    /// them now, while the cgroup exists.
    pub new_cgroups: Vec<u64>,
}

impl Default for ResourceFailures {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS, DEFAULT_WINDOW_NS)
    }
}

impl ResourceFailures {
    /// `window_ns`: the span "recent" counts cover and the longest gap
    /// within one episode (the findings' `resources.resolve_after_s`).
    pub fn new(max_keys: usize, window_ns: u64) -> Self {
        Self {
            entries: HashMap::default(),
            max_keys: max_keys.max(1),
            window_ns: window_ns.max(1),
            limit_requests: Vec::new(),
            received: 0,
            decode_errors: 0,
            evicted: 0,
            new_cgroups: Vec::new(),
        }
    }

    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FailureKey, &FailureStats)> {
        self.entries.iter()
    }

    pub fn get(&self, key: &FailureKey) -> Option<&FailureStats> {
        self.entries.get(key)
    }

    /// Decodes and counts one ring buffer record; bad records are counted.
    pub fn handle_record(&mut self, bytes: &[u8]) {
        match Failure::decode(bytes) {
            Ok(f) => self.record(&f),
            Err(e) => {
                self.decode_errors += 1;
                log::debug!("dropping undecodable resource failure: {e}");
            }
        }
    }

    pub fn record(&mut self, f: &Failure) {
        self.received += 1;
        let key = FailureKey {
            cgroup_id: f.cgroup_id,
            errno: f.errno,
            syscall: f.syscall,
            destination: f.destination,
        };
        if !self.entries.contains_key(&key) {
            if self.entries.len() >= self.max_keys {
                self.evict_stalest();
            }
            self.new_cgroups.push(f.cgroup_id);
        }
        let window_ns = self.window_ns;
        let s = self
            .entries
            .entry(key)
            .or_insert_with(|| FailureStats::new(window_ns));
        let new_episode = s.total == 0 || f.ts_ns.saturating_sub(s.last_ns) > window_ns;
        if s.total == 0 {
            s.first_ns = f.ts_ns;
        }
        if new_episode {
            s.episode_start_ns = f.ts_ns;
            s.episode_failures = 0;
        }
        s.total += 1;
        s.episode_failures += 1;
        s.last_ns = s.last_ns.max(f.ts_ns);
        s.last_tgid = f.tgid;
        s.last_comm = f.comm;
        s.recent.add(f.ts_ns);
        let other_process =
            f.tgid != s.limit_tgid && f.ts_ns.saturating_sub(s.limit_asked_ns) >= REREAD_NS;
        if Limit::exists_for(f.errno) && !s.limit_pending && (new_episode || other_process) {
            s.limit_pending = true;
            s.limit_tgid = f.tgid;
            s.limit_asked_ns = f.ts_ns;
            self.limit_requests.push(key);
        }
    }

    /// Keys whose limit should be read now, with the process to read it
    /// for. Read them soon: the process that failed may not live long.
    pub fn take_limit_requests(&mut self) -> Vec<(FailureKey, u32)> {
        let keys = std::mem::take(&mut self.limit_requests);
        keys.into_iter()
            .filter_map(|k| {
                let s = self.entries.get_mut(&k)?;
                s.limit_pending = false;
                Some((k, s.limit_tgid))
            })
            .collect()
    }

    /// Records the limit read for `key`; None (the process was gone, or
    /// /proc could not be read) keeps what was known.
    pub fn set_limit(&mut self, key: &FailureKey, limit: Option<Limit>) {
        if let (Some(s), Some(l)) = (self.entries.get_mut(key), limit) {
            s.limit = Some(l);
        }
    }

    fn evict_stalest(&mut self) {
        let stalest = self
            .entries
            .iter()
            .min_by_key(|(_, s)| s.last_ns)
            .map(|(k, _)| *k);
        if let Some(k) = stalest {
            self.entries.remove(&k);
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests;
