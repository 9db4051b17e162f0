//! A real PostgreSQL server (Debian's) in a pod: its own cluster in a
//! temporary directory, run as the `postgres` user, trust authentication on
//! the pod's address; and its clients, `netpeer`'s PostgreSQL modes.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::{
    net::Pod,
    peer::{self, command_as, Peer},
};

pub const PORT: u16 = 5432;
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// postgres in a pod; stopped and its directory removed on drop.
pub struct PostgresServer {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// The `postgres` user's uid and gid (from the Debian package).
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("no postgres user: apt install postgresql (scripts/bootstrap.sh --test)");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().expect("uid"), f[3].parse().expect("gid"))
}

/// `/usr/lib/postgresql/<version>/bin/<name>`, the newest version.
fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: apt install postgresql")
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
}

impl PostgresServer {
    /// A new cluster in `pod`, listening on its IPv4 address, accepting at
    /// most `max_connections` sessions (none held back for superusers:
    /// the clients log in as `postgres`).
    pub fn start(pod: &Pod, max_connections: u32) -> Self {
        let (uid, gid) = postgres_user();
        let dir = std::env::temp_dir().join(format!(
            "sockeye-pg-{}-{}",
            std::process::id(),
            pod.cgroup_id
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir pg dir");
        crate::sh(
            "chown",
            &[&format!("{uid}:{gid}"), dir.to_str().expect("utf-8")],
        );
        let data = dir.join("data");
        let out = {
            use std::os::unix::process::CommandExt;
            Command::new(bin("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data)
                .uid(uid)
                .gid(gid)
                .output()
                .expect("run initdb")
        };
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The clients are other pods: trust them by address too (initdb's
        // trust covers only loopback and the unix socket).
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        rules.push_str("host all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, rules).expect("write pg_hba.conf");
        let addr = SocketAddr::new(IpAddr::V4(pod.ip4), PORT);
        let mut child = command_as(pod, bin("postgres"), uid, gid)
            .arg("-D")
            .arg(&data)
            .args(["-c", &format!("listen_addresses={}", pod.ip4)])
            .args(["-c", &format!("port={PORT}")])
            .args(["-c", &format!("max_connections={max_connections}")])
            .args(["-c", "superuser_reserved_connections=0"])
            .args(["-c", &format!("unix_socket_directories={}", dir.display())])
            .args(["-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start postgres");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end, so the server's later lines never block it.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        peer::wait_for_listener(child.id(), PORT, READY_TIMEOUT);
        let mut said = Vec::new();
        loop {
            match rx.recv_timeout(READY_TIMEOUT) {
                Ok(l) if l.contains("ready to accept connections") => break,
                Ok(l) => said.push(l),
                Err(e) => panic!("postgres did not get ready ({e}): {}", said.join("\n")),
            }
        }
        Self { child, addr, dir }
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown of the postmaster and its backends.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `netpeer pg-pool`: a background job with a pool of sessions, which can
/// be told to leak one a second; killed on drop.
pub struct JobClient {
    pub peer: Peer,
    /// (sessions leaked so far, monotonic ns of the connect), in order.
    pub leaks: Vec<(u64, u64)>,
    /// Monotonic ns of each leak the server refused.
    pub refused: Vec<u64>,
}

impl JobClient {
    pub fn start(pod: &Pod, server: SocketAddr, size: u64) -> Self {
        let mut peer = peer::spawn(pod, &["pg-pool", &server.to_string(), &size.to_string()]);
        let line = peer.expect_line(READY_TIMEOUT);
        assert!(line.starts_with("ready "), "pg-pool said {line:?}");
        Self {
            peer,
            leaks: Vec::new(),
            refused: Vec::new(),
        }
    }

    pub fn start_leaking(&mut self, every_ms: u64) {
        self.peer.send(&format!("leak {every_ms}"));
    }

    pub fn read(&mut self) {
        while let Some(line) = self.peer.try_line() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["leak", n, t] => self.leaks.push((num(n), num(t))),
                ["refused", t, ..] => self.refused.push(num(t)),
                _ => panic!("pg-pool said {line:?}"),
            }
        }
        if let Ok(Some(status)) = self.peer.child.try_wait() {
            panic!("pg-pool exited ({status}); its error is on stderr");
        }
    }
}

/// `netpeer pg-churn`: a session per request; killed on drop.
pub struct ApiClient {
    pub peer: Peer,
    pub ok: Vec<u64>,
    /// (monotonic ns, the server's message) of each refused session.
    pub failed: Vec<(u64, String)>,
}

impl ApiClient {
    pub fn start(pod: &Pod, server: SocketAddr, period_ms: u64) -> Self {
        Self {
            peer: peer::spawn(
                pod,
                &["pg-churn", &server.to_string(), &period_ms.to_string()],
            ),
            ok: Vec::new(),
            failed: Vec::new(),
        }
    }

    pub fn read(&mut self) {
        while let Some(line) = self.peer.try_line() {
            let mut w = line.splitn(3, ' ');
            match (w.next(), w.next(), w.next()) {
                (Some("ok"), Some(t), None) => self.ok.push(num(t)),
                (Some("fail"), Some(t), why) => self
                    .failed
                    .push((num(t), why.unwrap_or_default().to_string())),
                _ => panic!("pg-churn said {line:?}"),
            }
        }
        if let Ok(Some(status)) = self.peer.child.try_wait() {
            panic!("pg-churn exited ({status}); its error is on stderr");
        }
    }
}

fn num(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|e| panic!("netpeer printed {s:?}, not a number: {e}"))
}
