//! A real `clickhouse-server` for the tests (installed by
//! `scripts/bootstrap.sh --test`): its own data directory in a temp dir,
//! free loopback ports, ready once it answers `SELECT 1` on HTTP; killed
//! and removed when dropped.
//!
//! The query tests share one server per test binary ([`shared`]), each test
//! in a database of its own; tests that stop and restart the server start
//! their own ([`ClickHouseServer::start`]).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use sockeye_collector::store::ClickHouseUrl;

const SERVER: &str = "clickhouse-server";
const CONFIG: &str = "/etc/clickhouse-server/config.xml";

pub struct ClickHouseServer {
    child: Option<Child>,
    pub http: SocketAddr,
    ports: [u16; 3],
    dir: PathBuf,
    /// Owns the directory unless the server is the shared one (removed at
    /// exit instead).
    _tmp: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    // Bound and released: another process could take it before the server
    // binds it; then the server exits, and `start` says so.
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// One HTTP request to ClickHouse with std only (tests use it where no
/// runtime is at hand). Returns (status, body).
pub fn http(addr: SocketAddr, sql: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST / HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

impl ClickHouseServer {
    /// A server of its own in a new temp dir.
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let ports = [free_port(), free_port(), free_port()];
        let mut s = Self {
            child: None,
            http: SocketAddr::from((Ipv4Addr::LOCALHOST, ports[0])),
            ports,
            dir,
            _tmp: Some(tmp),
        };
        s.spawn();
        s
    }

    /// Starts the server process on this server's directory and ports (again,
    /// after [`ClickHouseServer::kill`]), and waits until it answers.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let d = self.dir.display();
        let log = std::fs::File::create(self.dir.join("stdout.log")).expect("log file");
        let mut cmd = Command::new(SERVER);
        cmd.arg(format!("--config-file={CONFIG}"))
            .arg("--")
            .arg(format!("--path={d}/"))
            .arg(format!("--tmp_path={d}/tmp/"))
            .arg(format!("--user_files_path={d}/user_files/"))
            .arg(format!("--format_schema_path={d}/format_schemas/"))
            .arg(format!("--logger.log={d}/server.log"))
            .arg(format!("--logger.errorlog={d}/server.err.log"))
            .arg(format!("--http_port={}", self.ports[0]))
            .arg(format!("--tcp_port={}", self.ports[1]))
            .arg(format!("--interserver_http_port={}", self.ports[2]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // SAFETY: prctl only sets this child's parent-death signal; it
        // allocates nothing and is async-signal-safe. The server then dies
        // with the test process even when that is killed.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {SERVER}: {e}; install it with scripts/bootstrap.sh --test")
        });
        let deadline = Instant::now() + super::WAIT;
        loop {
            if let Ok((200, body)) = http(self.http, "SELECT 1") {
                assert_eq!(body.trim(), "1");
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let out =
                    std::fs::read_to_string(self.dir.join("server.err.log")).unwrap_or_default();
                panic!("{SERVER} exited with {status} before answering (a port taken?): {out}");
            }
            assert!(
                Instant::now() < deadline,
                "{SERVER} did not answer on {} within {:?}",
                self.http,
                super::WAIT
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// SIGKILL, and waits for the process to be gone: what a crash or an
    /// OOM kill does.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `sql`, which must succeed; returns the answer.
    pub fn sql(&self, sql: &str) -> String {
        let (status, body) = http(self.http, sql).expect("ask ClickHouse");
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    /// Cuts the inserts of window `seq` into `db.windows` after ClickHouse
    /// wrote their raw part, as a kill while answering would: a view on
    /// the table that throws for it. Views run in name order, and this one
    /// is named to run first. [`Self::uncut_inserts`] removes it.
    pub fn cut_inserts_of(&self, db: &str, seq: u64) {
        self.sql(&format!(
            "CREATE TABLE {db}.a_cut (x UInt8) ENGINE = Memory"
        ));
        self.sql(&format!(
            "CREATE MATERIALIZED VIEW {db}.a_cut_mv TO {db}.a_cut AS SELECT throwIf(seq = {seq}) AS x FROM {db}.windows"
        ));
    }

    pub fn uncut_inserts(&self, db: &str) {
        self.sql(&format!("DROP TABLE {db}.a_cut_mv"));
        self.sql(&format!("DROP TABLE {db}.a_cut"));
    }

    /// A URL for a new database of its own on this server.
    pub fn fresh_db(&self) -> ClickHouseUrl {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("clickhouse://{}/t{}_{n}", self.http, std::process::id())
            .parse()
            .expect("test URL")
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        self.kill();
    }
}

static SHARED: OnceLock<ClickHouseServer> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(s) = SHARED.get() {
        if let Some(c) = &s.child {
            // SAFETY: kill(2) on the server's own pid; nothing else runs
            // at exit.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
        }
        // Give the process a moment to release its files, then remove them.
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

/// The server shared by this test binary: started on first use, from a
/// thread that lives as long as the process (the parent-death signal is
/// tied to the thread that forked), and killed and removed at exit.
pub fn shared() -> &'static ClickHouseServer {
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = ClickHouseServer::start();
            // The directory is removed at exit by `stop_shared`.
            if let Some(t) = s._tmp.take() {
                let _ = t.keep();
            }
            tx.send(s).expect("send server");
            loop {
                std::thread::park();
            }
        });
        let s = rx.recv().expect("shared server started");
        // SAFETY: registers a plain extern "C" function to run at exit.
        unsafe { libc::atexit(stop_shared) };
        s
    })
}
