//! The agent's windows reaching a real collector: exact totals through a
//! collector outage (nothing lost or counted twice within the buffer), and
//! a buffer too small for the outage dropping the oldest windows and saying
//! so.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use sockeye_agent::{api::server::ServeOptions, push::PushConfig, Config};
use sockeye_collector::{Collector, CollectorConfig};
use sockeye_proto::{
    connect::connect,
    v1::{self as pb, collector_service_client::CollectorServiceClient, Filter},
};
use sockeye_tests::{api::ApiAgent, net::TestNet, peer, require_root};

const WAIT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A real collector on a unix socket; `stop` keeps its data for a restart.
struct RunningCollector {
    collector: Collector,
    serving: tokio::task::JoinHandle<()>,
}

async fn start_collector(dir: &Path) -> RunningCollector {
    let collector = Collector::open(CollectorConfig::new(dir.join("data")))
        .await
        .expect("collector opens");
    let listener = sockeye_collector::bind_unix(&dir.join("collector.sock"))
        .await
        .expect("collector socket");
    let c = collector.clone();
    let serving = tokio::spawn(async move {
        let _ = c.serve_unix(listener).await;
    });
    RunningCollector { collector, serving }
}

impl RunningCollector {
    async fn stop(self) {
        self.collector.close().await.expect("collector closes");
        let _ = self.serving.await;
    }
}

/// Connects accepted between the pods, per the collector, over all time.
async fn collected(dir: &Path, client_cgroup: &str) -> (u64, u64) {
    let channel = connect(
        &format!("unix://{}", dir.join("collector.sock").display()),
        None,
    )
    .await
    .expect("collector reachable");
    let resp = CollectorServiceClient::new(channel)
        .query_top(pb::QueryTopRequest {
            filter: Some(Filter {
                container: client_cgroup.into(),
                ..Default::default()
            }),
            from_unix_ms: 0,
            to_unix_ms: i64::MAX / 2,
            by: "failures".into(),
            limit: 10,
        })
        .await
        .expect("query")
        .into_inner();
    let ok = resp.rows.iter().map(|r| r.connects_ok).sum();
    (ok, resp.dropped_windows)
}

fn pods(name: &str) -> (TestNet, String) {
    let net = TestNet::with_pods(name, &["client", "server"]);
    let rel = net
        .pod(0)
        .cgroup_dir
        .display()
        .to_string()
        .trim_start_matches("/sys/fs/cgroup/unified")
        .to_string();
    (net, rel)
}

fn connect_n(net: &TestNet, n: u32) {
    let server = net.pod(1);
    let (_c, results) = peer::connect(net.pod(0), &format!("{}:8080", server.ip4), n, false, 2000);
    assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");
}

#[test]
fn windows_reach_the_collector_exactly_once_across_its_restart() {
    if !require_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockeye-push-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = runtime();
    let collector = rt.block_on(start_collector(&dir));
    let (net, rel) = pods("pushok");
    let _srv = peer::listen(net.pod(1), &format!("{}:8080", net.pod(1).ip4), "read");
    let agent = ApiAgent::start_pushing(
        Config::default(),
        ServeOptions::default(),
        Some(PushConfig {
            target: format!("unix://{}", dir.join("collector.sock").display()),
            every: Duration::from_millis(500),
            buffer: 1000,
            ..PushConfig::default()
        }),
    );
    connect_n(&net, 5);
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + WAIT;
        while collected(&dir, &rel).await.0 < 5 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "windows never arrived"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The collector goes away for a while; traffic goes on.
    rt.block_on(collector.stop());
    connect_n(&net, 7);
    std::thread::sleep(Duration::from_secs(3));
    connect_n(&net, 4);
    let collector = rt.block_on(start_collector(&dir));
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (ok, dropped) = collected(&dir, &rel).await;
            assert!(ok <= 16, "counted twice: {ok}");
            if ok == 16 {
                assert_eq!(dropped, 0);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {ok} of 16 arrived"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Some windows were resent after the restart; none was stored twice
        // (the exact total above), and the collector says it saw repeats or
        // none were needed.
        let stats = collector.collector.stats();
        assert!(stats.windows_stored > 0);
    });
    drop(agent);
    rt.block_on(collector.stop());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_buffer_smaller_than_the_outage_drops_the_oldest_and_says_so() {
    if !require_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockeye-pushdrop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = runtime();
    let (net, rel) = pods("pushdrop");
    let _srv = peer::listen(net.pod(1), &format!("{}:8080", net.pod(1).ip4), "read");
    // No collector yet; 2 windows of buffer, a window every 200 ms.
    let agent = ApiAgent::start_pushing(
        Config::default(),
        ServeOptions::default(),
        Some(PushConfig {
            target: format!("unix://{}", dir.join("collector.sock").display()),
            every: Duration::from_millis(200),
            buffer: 2,
            ..PushConfig::default()
        }),
    );
    connect_n(&net, 3);
    // The agent drops windows while the collector is away, and counts them
    // as a loss.
    let agent_dropped = || {
        let channel = rt.block_on(agent.channel());
        let snap = rt
            .block_on(
                pb::agent_service_client::AgentServiceClient::new(channel)
                    .get_snapshot(pb::GetSnapshotRequest::default()),
            )
            .expect("snapshot")
            .into_inner();
        let drops = snap.aggregates.unwrap().drops.unwrap();
        drops
            .counters
            .get("push_windows_dropped")
            .copied()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + WAIT;
    while agent_dropped() < 3 {
        assert!(
            Instant::now() < deadline,
            "the agent dropped no windows while the collector was away"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The collector, once back, is told about them.
    let collector = rt.block_on(start_collector(&dir));
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (ok, dropped) = collected(&dir, &rel).await;
            if dropped > 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no dropped windows reported to the collector (it has {ok} connects of the pod)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    drop(agent);
    rt.block_on(collector.stop());
    let _ = std::fs::remove_dir_all(&dir);
}
