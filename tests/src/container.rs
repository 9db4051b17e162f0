//! Real podman containers (runc), each in the network namespace of a test
//! pod, running `netpeer` from a minimal root filesystem built for the test
//! (no registry is reachable here, so no image is pulled).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::net::Pod;

/// podman settings that work on this class of host: runc (crun fails with
/// hybrid cgroups), the cgroupfs manager (no systemd), file events.
const CONTAINERS_CONF: &str = r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"#;

/// A directory holding netpeer, its shared libraries and containers.conf.
pub struct Rootfs {
    dir: PathBuf,
}

impl Rootfs {
    pub fn build(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sockeye-rootfs-{name}-{}", std::process::id()));
        let root = dir.join("root");
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
            fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
        }
        let netpeer = crate::peer::netpeer_path();
        fs::copy(&netpeer, root.join("bin/netpeer")).expect("copy netpeer");
        // Its shared libraries (glibc and the loader), at the same paths.
        let ldd = Command::new("ldd").arg(&netpeer).output().expect("run ldd");
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let dest = root.join(lib.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().expect("lib dir")).expect("mkdir lib");
            fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
        }
        fs::write(dir.join("containers.conf"), CONTAINERS_CONF).expect("write containers.conf");
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("containers.conf")
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A running container; removed (killed) on drop.
pub struct Container {
    pub id: String,
    pub pid: u32,
    conf: PathBuf,
}

impl Container {
    /// `podman run -d` of `netpeer ARGS` in `pod`'s network namespace.
    pub fn run(rootfs: &Rootfs, pod: &Pod, args: &[&str]) -> Self {
        Self::run_annotated(rootfs, pod, &[], args)
    }

    /// Like [`Container::run`], with OCI annotations on the container (podman
    /// writes them into its config.json as the CRI runtimes do).
    pub fn run_annotated(
        rootfs: &Rootfs,
        pod: &Pod,
        annotations: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let netns = format!("ns:/run/netns/{}", pod.netns);
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", rootfs.conf())
            .args(["run", "-d", "--network", &netns]);
        for (k, v) in annotations {
            cmd.arg("--annotation").arg(format!("{k}={v}"));
        }
        cmd.arg("--rootfs")
            .arg(rootfs.root())
            .arg("/bin/netpeer")
            .args(args);
        let out = cmd.output().expect("run podman");
        assert!(
            out.status.success(),
            "podman run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let inspect = Command::new("podman")
            .env("CONTAINERS_CONF", rootfs.conf())
            .args(["inspect", "-f", "{{.State.Pid}}", &id])
            .output()
            .expect("podman inspect");
        let pid = String::from_utf8_lossy(&inspect.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("container {id} has no pid: {e}"));
        Self {
            id,
            pid,
            conf: rootfs.conf(),
        }
    }

    /// The container's cgroup v2 id (podman's cgroupfs manager puts it in
    /// `/libpod_parent/libpod-<id>`).
    pub fn cgroup_id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let dir = format!("/sys/fs/cgroup/unified/libpod_parent/libpod-{}", self.id);
        fs::metadata(&dir)
            .unwrap_or_else(|e| panic!("container {} has no cgroup at {dir}: {e}", self.id))
            .ino()
    }

    /// Kills and removes it now (SIGKILL: nothing it holds is closed by it).
    pub fn remove(self) {
        drop(self);
    }

    /// The container's output so far.
    pub fn logs(&self) -> String {
        let out = Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(["logs", &self.id])
            .output()
            .expect("podman logs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the logs contain `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "container {} did not print {needle:?}: {logs}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(["rm", "-f", "-t", "0", &self.id])
            .output();
    }
}

/// Whether podman can be used here (it is installed by the test bootstrap).
pub fn podman_available() -> bool {
    Path::new("/usr/bin/podman").exists()
}
