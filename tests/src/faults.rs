//! The rig of the fault tests: the real collector binary (TLS from files
//! laid out like a mounted Secret, tokens checked by the stand-in
//! TokenReview API) and the real agent binary (pushing with its own pod
//! token), two test pods with traffic between them, and what the store
//! holds once the collector stopped, to check that every window is either
//! stored or counted as dropped by the one after it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use sockeye_proto::{
    connect::{connect, with_bearer, AuthChannel, Bearer, ClientTls},
    v1::{self as pb, collector_service_client::CollectorServiceClient},
};

use crate::{
    apiserver::{ApiServer, TokenOwner},
    net::TestNet,
    peer,
    procs::{AgentProc, CollectorProc},
    tls::TestPki,
};

pub const AUDIENCE: &str = "sockeye-collector";
pub const READER: &str = "reader-token";

/// Everything one fault test runs against; removed on drop.
pub struct Rig {
    pub dir: PathBuf,
    pub rt: tokio::runtime::Runtime,
    pub api: ApiServer,
    pub pki: TestPki,
    /// The Secret-like directory the collector's TLS files are read from.
    pub secret: PathBuf,
    pub node: String,
    pub token_file: PathBuf,
    pub net: TestNet,
    /// The client pod's cgroup path below the v2 root: QueryTop's filter.
    pub client_cgroup: String,
    _server: peer::Peer,
}

impl Rig {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sockeye-fault-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("rig dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let api = rt.block_on(ApiServer::start(&dir.join("api")));
        let node = format!("fault-{name}-{}", std::process::id());
        api.add_token(
            "agent-token",
            TokenOwner::pod("sockeye", "sockeye-agent", &node, AUDIENCE),
        );
        api.add_token(
            READER,
            TokenOwner::service_account("ops", "sockeye-reader", AUDIENCE),
        );
        let token_file = dir.join("agent.token");
        std::fs::write(&token_file, "agent-token\n").expect("token file");
        let pki = TestPki::new(&dir.join("pki"));
        let secret = dir.join("secret");
        std::fs::create_dir_all(&secret).expect("secret dir");
        let cert = std::fs::read_to_string(&pki.server_cert).expect("cert");
        let key = std::fs::read_to_string(&pki.server_key).expect("key");
        publish_secret(&secret, "v1", &cert, &key);
        let net = TestNet::with_pods(name, &["client", "server"]);
        let server = peer::listen(net.pod(1), &format!("{}:8080", net.pod(1).ip4), "read");
        let client_cgroup = net
            .pod(0)
            .cgroup_dir
            .display()
            .to_string()
            .trim_start_matches("/sys/fs/cgroup/unified")
            .to_string();
        Self {
            dir,
            rt,
            api,
            pki,
            secret,
            node,
            token_file,
            net,
            client_cgroup,
            _server: server,
        }
    }

    /// The collector's flags: TLS from the Secret directory, tokens
    /// checked through the stand-in, the reader allowed to query.
    pub fn collector_args(&self, port: u16, data: &Path, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--tls-cert".into(),
            self.secret.join("tls.crt").display().to_string(),
            "--tls-key".into(),
            self.secret.join("tls.key").display().to_string(),
            "--tls-reload-every".into(),
            "1s".into(),
            "--kubeconfig".into(),
            self.api.kubeconfig().display().to_string(),
            "--reader".into(),
            "system:serviceaccount:ops:sockeye-reader".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    pub fn start_collector(&self, port: u16, data: &Path, extra: &[&str]) -> CollectorProc {
        CollectorProc::start(
            &self.collector_args(port, data, extra),
            &[("RUST_LOG", "info")],
        )
    }

    /// Starts the agent, pushing every 0.5 s to the collector on `port`;
    /// a flag in `extra` replaces the rig's value for it.
    pub fn start_agent(&self, port: u16, extra: &[&str]) -> AgentProc {
        let defaults: Vec<(&str, String)> = vec![
            ("--output", "none".into()),
            ("--node-name", self.node.clone()),
            (
                "--api-socket",
                self.dir.join("agent.sock").display().to_string(),
            ),
            ("--collector", format!("https://127.0.0.1:{port}")),
            ("--collector-ca", self.pki.ca.display().to_string()),
            (
                "--collector-token-file",
                self.token_file.display().to_string(),
            ),
            ("--push-every", "0.5".into()),
            ("--reconcile-every", "1".into()),
            // Room for the whole machine's events (other tests' too).
            ("--ringbuf-mib", "16".into()),
        ];
        let mut a: Vec<String> = vec!["--no-kube-api".into(), "--no-dns".into()];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                a.extend([flag.to_string(), value]);
            }
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        AgentProc::start(&a, &[("RUST_LOG", "info")])
    }

    /// `n` connects from the client pod to the server pod, all accepted.
    pub fn connect(&self, n: u32) {
        let server = self.net.pod(1);
        let (_c, results) = peer::connect(
            self.net.pod(0),
            &format!("{}:8080", server.ip4),
            n,
            false,
            2000,
        );
        assert_eq!(results.len(), n as usize, "{results:?}");
        assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");
    }

    /// A client of the collector at `addr` over TLS, presenting `token`.
    pub fn client(
        &self,
        addr: SocketAddr,
        token: Option<&str>,
        domain: Option<&str>,
    ) -> CollectorServiceClient<AuthChannel> {
        let tls = ClientTls {
            ca: Some(self.pki.ca.clone()),
            domain: domain.map(String::from),
            ..Default::default()
        };
        let channel = self
            .rt
            .block_on(connect(&format!("https://{addr}"), Some(&tls)))
            .expect("connect to the collector");
        let bearer = match token {
            Some(t) => Bearer::from_token(t, "test").expect("token"),
            None => Bearer::none(),
        };
        CollectorServiceClient::new(with_bearer(channel, bearer))
    }

    /// The client pod's connects to the server pod's port 8080, as the
    /// collector sums them over all time, and the windows it says agents
    /// dropped.
    pub fn collected(&self, addr: SocketAddr) -> (u64, u64) {
        self.collected_on(addr, "")
    }

    /// [`Rig::collected`] from one node's windows only ("" for all): every
    /// agent on this machine sees the same connects, so a test running two
    /// in two nodes' names counts one of them.
    pub fn collected_on(&self, addr: SocketAddr, node: &str) -> (u64, u64) {
        let mut c = self.client(addr, Some(READER), None);
        let resp = self
            .rt
            .block_on(c.query_top(pb::QueryTopRequest {
                filter: Some(pb::Filter {
                    container: self.client_cgroup.clone(),
                    destination: format!("{}:8080", self.net.pod(1).ip4),
                    node: node.into(),
                    ..Default::default()
                }),
                from_unix_ms: 0,
                to_unix_ms: i64::MAX / 2,
                by: "failures".into(),
                limit: 10,
            }))
            .expect("QueryTop as the reader")
            .into_inner();
        (
            resp.rows.iter().map(|r| r.connects_ok).sum(),
            resp.dropped_windows,
        )
    }

    /// Waits until the collector has `expected` connects of the client pod
    /// and returns them. Every agent here sees the whole machine's TCP
    /// traffic, other tests' included: under that load its ring buffer may
    /// overflow, and connects are then lost in the kernel. So fewer is
    /// accepted only when the agent counted kernel events lost; more never.
    pub fn expect_connects(&self, agent: &AgentProc, addr: SocketAddr, expected: u64) -> u64 {
        self.expect_connects_on(agent, addr, "", expected)
    }

    /// [`Rig::expect_connects`] counting the windows of `node` only.
    pub fn expect_connects_on(
        &self,
        agent: &AgentProc,
        addr: SocketAddr,
        node: &str,
        expected: u64,
    ) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.collected_on(addr, node).0;
            assert!(
                got <= expected,
                "{got} connects at the collector, only {expected} were made"
            );
            if got == expected {
                return got;
            }
            if std::time::Instant::now() > deadline {
                let lost = agent.dropped("kernel_ringbuf_full");
                assert!(
                    lost > 0,
                    "{got} of {expected} connects at the collector, and the agent counted no event lost"
                );
                eprintln!("{got} of {expected} connects: the machine's load overflowed the agent's ring ({lost} events lost, counted)");
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every window in the store at `data` (the collector must be stopped).
    pub fn stored(&self, data: &Path) -> Vec<pb::Window> {
        use sockeye_collector::store::{RedbStore, Store};
        self.rt.block_on(async {
            let store = RedbStore::open(data, 8 << 20).expect("open the stopped collector's store");
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .scan(i64::MIN..=i64::MAX, after, 512)
                    .await
                    .expect("scan");
                out.extend(page.windows);
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            store.close().await.expect("close");
            out
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The connects of the client pod in `windows`.
pub fn connects_in(windows: &[pb::Window], cgroup: &str) -> u64 {
    windows
        .iter()
        .flat_map(|w| w.aggregates.iter().flat_map(|a| a.tcp_flows.iter()))
        .filter(|f| {
            f.workload
                .as_ref()
                .is_some_and(|w| w.cgroup_path.contains(cgroup))
        })
        .map(|f| f.connects_ok)
        .sum()
}

/// Checks that one agent's windows leave nothing unaccounted for: no seq
/// stored twice, and the windows missing from 1 to the highest seq stored
/// are exactly as many as the stored windows report dropped (a drop is
/// reported by the next window the agent kept, which may be well after
/// the gap). Returns (windows stored, windows reported dropped).
pub fn check_accounted(windows: &[pb::Window]) -> (u64, u64) {
    let mut seqs: Vec<u64> = windows.iter().map(|w| w.seq).collect();
    seqs.sort_unstable();
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "a seq was stored twice");
    let reported: u64 = windows.iter().map(|w| w.dropped_windows_before).sum();
    let missing = seqs.last().copied().unwrap_or(0) - n as u64;
    assert_eq!(
        reported,
        missing,
        "{missing} windows are missing below seq {:?}, the stored ones report {reported}",
        seqs.last()
    );
    (n as u64, reported)
}

/// Lays out `cert` and `key` the way the kubelet updates a mounted Secret:
/// a new versioned directory, then one atomic rename of `..data`.
pub fn publish_secret(dir: &Path, version: &str, cert: &str, key: &str) {
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&v).expect("version dir");
    std::fs::write(v.join("tls.crt"), cert).expect("cert");
    std::fs::write(v.join("tls.key"), key).expect("key");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).expect("symlink");
        }
    }
}

/// How long the outage of the outage test lasts: 20 s unless
/// `SOCKEYE_FAULT_OUTAGE_SECS` says (600 for the 10 minutes).
pub fn outage() -> Duration {
    let secs = std::env::var("SOCKEYE_FAULT_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
    Duration::from_secs(secs.max(10))
}
