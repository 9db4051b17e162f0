//! The smoke test's own cgroup v2 child. The smoke process moves itself in
//! before it opens any socket, so every flow it makes belongs to a cgroup
//! the agent has never seen before: the agent must name it (the
//! `cgroup_mkdir` tracepoint) and attribute both ends of each connection to
//! it (sock_ops owners, listener inheritance).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct SmokeCgroup {
    root: PathBuf,
    dir: PathBuf,
    /// The agent's name for it: its path under the cgroup v2 mount.
    pub path: String,
    /// A cgroup v2 id is the inode number of its directory.
    pub id: u64,
}

impl SmokeCgroup {
    /// Creates `/<name>` under the cgroup v2 mount and moves this whole
    /// process (every thread) into it.
    pub fn enter(name: &str) -> Result<Self> {
        let root = cgroup2_mount()?;
        let dir = root.join(name);
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let id = fs::metadata(&dir)
            .with_context(|| format!("stat {}", dir.display()))?
            .ino();
        let cgroup = Self {
            root,
            dir,
            path: format!("/{name}"),
            id,
        };
        move_self(&cgroup.dir)?;
        Ok(cgroup)
    }
}

impl Drop for SmokeCgroup {
    /// Moves the process back to the root and removes the cgroup, also when
    /// the smoke test fails half-way.
    fn drop(&mut self) {
        if let Err(e) = move_self(&self.root) {
            eprintln!("smoke: cannot leave {}: {e:#}", self.dir.display());
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("smoke: cannot remove {}: {e}", self.dir.display());
        }
    }
}

fn move_self(cgroup: &Path) -> Result<()> {
    let procs = cgroup.join("cgroup.procs");
    fs::write(&procs, std::process::id().to_string())
        .with_context(|| format!("writing our pid to {}", procs.display()))
}

/// The cgroup v2 mount whose root is the hierarchy's root:
/// `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a hybrid
/// one.
fn cgroup2_mount() -> Result<PathBuf> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            // id parent dev root mount-point options [optional...] - fstype ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            (fields.get(dash + 1) == Some(&"cgroup2") && fields.get(3) == Some(&"/"))
                .then(|| PathBuf::from(fields[4]))
        })
        .context("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)")
}
