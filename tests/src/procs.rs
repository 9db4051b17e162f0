//! The real `sockeye-collector` and `sockeye-agent` binaries as processes,
//! for the fault tests: built once per test run (the tests crate cannot
//! name other packages' binaries), started with the flags a test gives,
//! waited for on the thing a test uses next (every listener bound, the
//! agent ready), read through their own /metrics, and killed on drop.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

/// How long a process may take to say it is ready (a busy machine, a
/// debug build loading eBPF programs).
pub const START: Duration = Duration::from_secs(60);

/// `(sockeye-agent, sockeye-collector)`, built by `cargo build` from this
/// workspace the first time they are asked for. Always the same command,
/// so after the first run it only checks that they are fresh.
pub fn binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let t = Instant::now();
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "sockeye-agent",
            "-p",
            "sockeye-collector",
            "--bins",
        ])
        .current_dir(&root);
        // What cargo set for this test process (CARGO_MANIFEST_DIR and the
        // like) would differ from a plain build's environment, and some
        // build scripts rebuild when it does: run it as from a shell.
        const KEEP: [&str; 8] = [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_INCREMENTAL",
            "CARGO_BUILD_",
            "CARGO_PROFILE_",
            "CARGO_TERM_",
            "CARGO_NET_",
            "CARGO_HTTP_",
        ];
        for (k, _) in std::env::vars() {
            if (k.starts_with("CARGO_") && !KEEP.iter().any(|p| k.starts_with(p))) || k == "OUT_DIR"
            {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "building the binaries failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("binaries ready in {:?}", t.elapsed());
        // target/debug/deps/<test> -> target/debug
        let dir = std::env::current_exe()
            .expect("test binary")
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        (dir.join("sockeye-agent"), dir.join("sockeye-collector"))
    })
}

/// A process whose stderr is kept (and echoed, prefixed) for the test.
pub struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(program: &Path, args: &[String], envs: &[(&str, &str)], tag: &str) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        let tag = tag.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{tag}: {line}");
                keep.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// The first line (from the start) containing `pat`, waiting for it.
    pub fn wait_line(&self, pat: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(pat)) {
                return l.clone();
            }
            if let Ok(Some(status)) = self.try_status() {
                panic!("exited ({status}) before logging {pat:?}");
            }
            assert!(
                Instant::now() < deadline,
                "no line with {pat:?} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lines containing `pat` logged so far.
    pub fn count_lines(&self, pat: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(pat))
            .count()
    }

    fn try_status(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        // Child::try_wait needs &mut; the pid is enough to ask.
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on our own child's pid.
        let r =
            unsafe { libc::waitpid(self.child.id() as libc::pid_t, &mut status, libc::WNOHANG) };
        if r > 0 {
            use std::os::unix::process::ExitStatusExt;
            return Ok(Some(std::process::ExitStatus::from_raw(status)));
        }
        Ok(None)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `grace`).
    pub fn stop(mut self, grace: Duration) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().ok().and_then(|s| s.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` over plain HTTP/1.1: `(status code, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: sockeye\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// The value of the sample `name` with all of `labels` in Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    crate::metrics::sample(&scrape, name, labels)
}

/// A `sockeye-collector` process, ready.
pub struct CollectorProc {
    pub proc: Proc,
    /// Its TCP gRPC listener and its HTTP (/metrics) listener.
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl CollectorProc {
    /// Starts it with `args` (add `--listen`, `--http-addr` with port 0 or a
    /// fixed port) and waits until every listener is bound.
    pub fn start(args: &[String], envs: &[(&str, &str)]) -> Self {
        let proc = Proc::spawn(&binaries().1, args, envs, "collector");
        let ready = proc.wait_line(sockeye_collector::READY_LOG, START);
        let listening = ready
            .split(sockeye_collector::READY_LOG)
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let find = |kind: &str| -> SocketAddr {
            listening
                .split(", ")
                .find_map(|l| l.strip_prefix(kind))
                .unwrap_or_else(|| panic!("no {kind}listener in {listening:?}"))
                .trim()
                .parse()
                .expect("a socket address")
        };
        Self {
            grpc: find("tcp "),
            http: find("http "),
            proc,
        }
    }

    /// `sockeye_collector_<name>` (counters: `<name>_total`) now.
    pub fn stat(&self, name: &str) -> u64 {
        let (code, body) = http_get(self.http, "/metrics").expect("collector /metrics");
        assert_eq!(code, 200, "{body}");
        metric(&body, &format!("sockeye_collector_{name}_total"), &[])
            .or_else(|| metric(&body, &format!("sockeye_collector_{name}"), &[]))
            .unwrap_or_else(|| panic!("no collector metric {name}")) as u64
    }
}

/// A `sockeye-agent` process, ready (its /readyz answers 200).
pub struct AgentProc {
    pub proc: Proc,
    pub http: SocketAddr,
}

impl AgentProc {
    /// Starts it with `args` plus `--http-addr 127.0.0.1:0`.
    pub fn start(args: &[String], envs: &[(&str, &str)]) -> Self {
        let mut all = args.to_vec();
        all.extend(["--http-addr".into(), "127.0.0.1:0".into()]);
        let proc = Proc::spawn(&binaries().0, &all, envs, "agent");
        let line = proc.wait_line("health and metrics endpoint on http://", START);
        let http: SocketAddr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("address")
            .parse()
            .expect("a socket address");
        let a = Self { proc, http };
        a.wait_ready();
        a
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + START;
        while http_get(self.http, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
            assert!(Instant::now() < deadline, "the agent never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent's /metrics, checked as OpenMetrics.
    pub fn metrics(&self) -> prometheus_parse::Scrape {
        let (code, body) = http_get(self.http, "/metrics").expect("agent /metrics");
        assert_eq!(code, 200, "{body}");
        crate::metrics::parse(&body)
    }

    /// A push counter or gauge (`sockeye_push_<name>`).
    pub fn push(&self, name: &str) -> u64 {
        let m = self.metrics();
        crate::metrics::sample(&m, &format!("sockeye_push_{name}"), &[])
            .or_else(|| crate::metrics::sample(&m, &format!("sockeye_push_{name}_total"), &[]))
            .unwrap_or_else(|| panic!("no sockeye_push_{name}")) as u64
    }

    /// One of the agent's drop counters (`sockeye_dropped_events_total`).
    pub fn dropped(&self, counter: &str) -> u64 {
        let m = self.metrics();
        crate::metrics::sample(&m, "sockeye_dropped_events_total", &[("counter", counter)])
            .unwrap_or(0.0) as u64
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `timeout`;
/// panics with `what` otherwise.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP port free now on 127.0.0.1 (for a process that must come back on
/// the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
