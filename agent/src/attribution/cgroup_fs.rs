//! Finds the cgroup v2 mount and maps cgroup ids (directory inode numbers) to cgroup paths.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup_handle::HandleResolver;

const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Bounds the resolver's memory; real hosts have a few thousand cgroups at most.
const MAX_ENTRIES: usize = 65536;
const DEFAULT_MIN_RESCAN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CgroupFsError {
    #[error("no cgroup v2 filesystem is mounted (looked in {mountinfo}); mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`")]
    NotMounted { mountinfo: String },
    #[error("failed to read {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Parses /proc/self/mountinfo and returns the first cgroup2 mount point.
pub fn find_cgroup2_mount() -> Result<PathBuf, CgroupFsError> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| CgroupFsError::Io {
        path: MOUNTINFO.to_string(),
        source,
    })?;
    find_cgroup2_mount_in(&text).ok_or_else(|| CgroupFsError::NotMounted {
        mountinfo: MOUNTINFO.to_string(),
    })
}

/// Pure part of [`find_cgroup2_mount`]. A mount whose root is "/" is preferred: a bind mount
/// of a subtree would make every path relative to that subtree, which the classifier cannot
/// read. Otherwise the first cgroup2 mount is returned.
pub fn find_cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    let mut first = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional fields...] - fstype source super-options
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = fields.iter().skip(6).position(|f| *f == "-") else {
            continue;
        };
        if fields.get(6 + sep + 1) != Some(&"cgroup2") {
            continue;
        }
        let (Some(root), Some(mount)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mount = PathBuf::from(unescape(mount));
        if *root == "/" {
            return Some(mount);
        }
        first.get_or_insert(mount);
    }
    first
}

/// The kernel escapes space, tab, newline and backslash in mountinfo as `\ooo` octal.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Id (inode) of a cgroup directory; `rel` is relative to the mount ("/" for the root).
pub fn cgroup_id_of(root: &Path, rel: &str) -> Result<u64, CgroupFsError> {
    let trimmed = rel.trim_start_matches('/');
    let path = if trimmed.is_empty() {
        root.to_path_buf()
    } else {
        root.join(trimmed)
    };
    let io_err = |source| CgroupFsError::Io {
        path: path.display().to_string(),
        source,
    };
    // ".." would let a caller read inodes outside the cgroup tree.
    if trimmed.split('/').any(|c| c == "..") {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cgroup path must not contain '..'",
        )));
    }
    let meta = std::fs::symlink_metadata(&path).map_err(io_err)?;
    if !meta.is_dir() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a cgroup directory",
        )));
    }
    Ok(meta.ino())
}

/// Caches id → path for the cgroup tree under one mount.
pub struct CgroupResolver {
    root: PathBuf,
    /// O(1) lookups by file handle, when we have CAP_DAC_READ_SEARCH.
    handles: Option<HandleResolver>,
    cache: HashMap<u64, String>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
    max_entries: usize,
    rescans: u64,
    unresolved: u64,
    truncated: u64,
}

impl CgroupResolver {
    pub fn new(root: PathBuf) -> Self {
        let handles = HandleResolver::new(&root)
            .map_err(|e| log::debug!("cgroup handle lookups unavailable: {e}"))
            .ok();
        Self {
            handles,
            root,
            cache: HashMap::new(),
            last_scan: None,
            min_rescan: DEFAULT_MIN_RESCAN,
            max_entries: MAX_ENTRIES,
            rescans: 0,
            unresolved: 0,
            truncated: 0,
        }
    }

    /// Path relative to the mount, e.g. "/libpod_parent/libpod-abc". A miss triggers a full
    /// rescan, at most once per `min_rescan`, so a flood of unknown ids (short-lived cgroups,
    /// other namespaces) cannot keep the agent walking the tree.
    pub fn resolve(&mut self, id: u64) -> Option<String> {
        if let Some(path) = self.cache.get(&id) {
            return Some(path.clone());
        }
        if let Some(path) = self.by_handle(id) {
            return Some(path);
        }
        let due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.min_rescan);
        if due {
            self.rescan();
            if let Some(path) = self.cache.get(&id) {
                return Some(path.clone());
            }
        }
        self.unresolved += 1;
        None
    }

    /// Direct lookup; on EPERM (no CAP_DAC_READ_SEARCH) it is switched off
    /// for good, with one log line, and scanning takes over.
    fn by_handle(&mut self, id: u64) -> Option<String> {
        let handles = self.handles.as_ref()?;
        match handles.path_of(id) {
            Ok(path) => {
                if self.cache.len() < self.max_entries {
                    self.cache.insert(id, path.clone());
                }
                Some(path)
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                log::warn!("cannot open cgroups by id ({e}: CAP_DAC_READ_SEARCH is missing); falling back to scanning the cgroup tree, which may miss short-lived containers");
                self.handles = None;
                None
            }
            Err(_) => None,
        }
    }

    pub fn set_min_rescan(&mut self, d: Duration) {
        self.min_rescan = d;
    }

    /// Number of full rescans done.
    pub fn rescans(&self) -> u64 {
        self.rescans
    }

    /// Number of `resolve` calls that returned None.
    pub fn unresolved(&self) -> u64 {
        self.unresolved
    }

    /// Cgroups left out of the cache because it was full, summed over all rescans.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Rebuilds the map from scratch so removed cgroups (and their recycled inode numbers)
    /// do not linger.
    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.rescans += 1;
        let mut map = HashMap::new();
        match std::fs::symlink_metadata(&self.root) {
            Ok(meta) => {
                map.insert(meta.ino(), "/".to_string());
            }
            Err(e) => {
                log::warn!("cannot stat cgroup root {}: {e}", self.root.display());
                self.cache = map;
                return;
            }
        }
        // An explicit stack instead of call recursion: depth is then bounded by memory, not
        // by the thread's stack.
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                // A cgroup removed mid-walk is normal churn, not an error.
                Err(e) => {
                    log::debug!("skipping {}: {e}", dir.display());
                    continue;
                }
            };
            for entry in entries.flatten() {
                // file_type() comes from readdir and does not follow symlinks; control files
                // are skipped without a stat.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
                if map.len() < self.max_entries {
                    map.insert(meta.ino(), child.clone());
                } else {
                    self.truncated += 1;
                }
                stack.push((entry.path(), child));
            }
        }
        self.cache = map;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mount(text: &str) -> Option<String> {
        find_cgroup2_mount_in(text).map(|p| p.display().to_string())
    }

    #[test]
    fn mountinfo_hybrid() {
        let text = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
";
        assert_eq!(mount(text).as_deref(), Some("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn mountinfo_pure_v2_optional_fields_and_escapes() {
        let cases = [
            // no optional fields
            ("35 25 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw", "/sys/fs/cgroup"),
            // several optional fields
            ("35 25 0:30 / /sys/fs/cgroup rw shared:9 master:3 - cgroup2 none rw", "/sys/fs/cgroup"),
            // escaped space in the mount point
            ("35 25 0:30 / /mnt/my\\040cg rw - cgroup2 none rw", "/mnt/my cg"),
            // a subtree bind mount listed first loses to the real root
            ("40 25 0:30 /kubepods /host/cg rw - cgroup2 none rw\n41 25 0:30 / /sys/fs/cgroup rw - cgroup2 none rw", "/sys/fs/cgroup"),
        ];
        for (text, want) in cases {
            assert_eq!(mount(text).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn mountinfo_without_cgroup2() {
        let text = "\
35 33 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 25 0:31 / /cgroup2-lookalike rw - tmpfs cgroup2 rw
garbage line
";
        assert_eq!(mount(text), None);
        assert_eq!(mount(""), None);
    }

    /// Removes the tree even when an assertion fails.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("sockeye-cgfs-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            TempTree(dir)
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn resolver_maps_ids_and_rate_limits() {
        let tree = TempTree::new("resolve");
        let root = &tree.0;
        fs::create_dir_all(root.join("kubepods/burstable/podabc/ctr")).expect("mkdir");
        fs::create_dir_all(root.join("system.slice")).expect("mkdir");
        fs::write(root.join("system.slice/cgroup.procs"), "").expect("write");
        std::os::unix::fs::symlink(root.join("system.slice"), root.join("kubepods/link"))
            .expect("symlink");

        let ctr = cgroup_id_of(root, "/kubepods/burstable/podabc/ctr").expect("id");
        let sys = cgroup_id_of(root, "/system.slice").expect("id");
        let top = cgroup_id_of(root, "/").expect("id");
        assert!(cgroup_id_of(root, "/system.slice/cgroup.procs").is_err());
        assert!(cgroup_id_of(root, "/../etc").is_err());

        let mut r = CgroupResolver::new(root.clone());
        r.set_min_rescan(Duration::from_secs(3600));
        assert_eq!(
            r.resolve(ctr).as_deref(),
            Some("/kubepods/burstable/podabc/ctr")
        );
        // Found via the real directory, never through the symlink.
        assert_eq!(r.resolve(sys).as_deref(), Some("/system.slice"));
        assert_eq!(r.resolve(top).as_deref(), Some("/"));
        assert_eq!(r.rescans(), 1);

        // Two misses inside min_rescan: no further rescan.
        fs::create_dir(root.join("fresh")).expect("mkdir");
        let fresh = cgroup_id_of(root, "/fresh").expect("id");
        assert_eq!(r.resolve(fresh), None);
        assert_eq!(r.resolve(u64::MAX), None);
        assert_eq!(r.rescans(), 1);
        assert_eq!(r.unresolved(), 2);

        // Once the limit allows, the new cgroup appears and removed ones fall out.
        fs::remove_dir(root.join("kubepods/burstable/podabc/ctr")).expect("rmdir");
        r.set_min_rescan(Duration::ZERO);
        assert_eq!(r.resolve(fresh).as_deref(), Some("/fresh"));
        assert_eq!(r.rescans(), 2);
        assert_eq!(r.resolve(u64::MAX), None);
        assert_eq!(r.rescans(), 3);
        assert!(r.cache.values().all(|p| !p.ends_with("/ctr")));
        assert_eq!(r.truncated(), 0);
    }

    #[test]
    fn resolver_cap_and_missing_root() {
        let tree = TempTree::new("cap");
        for name in ["a", "b", "c"] {
            fs::create_dir(tree.0.join(name)).expect("mkdir");
        }
        let mut r = CgroupResolver::new(tree.0.clone());
        r.max_entries = 2;
        assert_eq!(r.resolve(u64::MAX), None);
        assert_eq!(r.cache.len(), 2);
        assert_eq!(r.truncated(), 2);

        let mut gone = CgroupResolver::new(tree.0.join("does-not-exist"));
        assert_eq!(gone.resolve(1), None);
        assert_eq!(gone.rescans(), 1);
    }
}
