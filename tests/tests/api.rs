//! The agent's gRPC API over real sockets, with the real agent loaded: a
//! pod's connections in a snapshot, live traces, bad requests, a stuck
//! watcher, health, reflection, TLS and mutual TLS.

use std::{net::SocketAddr, time::Duration};

use sockeye_agent::{
    api::server::{ServeOptions, TlsFiles},
    Config,
};
use sockeye_proto::{
    connect::ClientTls,
    v1::{self as pb, agent_service_client::AgentServiceClient, trace_event::Event as Ev, Filter},
};
use sockeye_tests::{
    api::{runtime, ApiAgent},
    net::TestNet,
    peer, require_root,
    tls::TestPki,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);

fn pod_filter(cgroup_path: &str) -> Option<Filter> {
    Some(Filter {
        container: cgroup_path.to_string(),
        ..Default::default()
    })
}

/// Polls GetSnapshot until `done` holds.
async fn wait_snapshot(
    client: &mut AgentServiceClient<tonic::transport::Channel>,
    filter: Option<Filter>,
    done: impl Fn(&pb::Aggregates) -> bool,
) -> pb::Aggregates {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snap = client
            .get_snapshot(pb::GetSnapshotRequest {
                filter: filter.clone(),
            })
            .await
            .expect("snapshot")
            .into_inner();
        let agg = snap.aggregates.expect("aggregates");
        if done(&agg) {
            return agg;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met: {agg:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn snapshot_over_the_unix_socket_shows_a_pods_connections() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("apisnap", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    let socket = agent.listening.unix.clone().unwrap();
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600,
        "the socket is private to root"
    );
    let _srv = peer::listen(server, &format!("{}:8080", server.ip4), "read");
    let (_cli, results) = peer::connect(client, &format!("{}:8080", server.ip4), 3, false, 2000);
    assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");

    let path = client.cgroup_dir.display().to_string();
    let rel = path.trim_start_matches("/sys/fs/cgroup/unified");
    runtime().block_on(async {
        let mut api = agent.client().await;
        let agg = wait_snapshot(&mut api, pod_filter(rel), |a| {
            a.tcp_flows.iter().any(|f| f.closed == 3)
        })
        .await;
        assert_eq!(agg.tcp_flows.len(), 1, "only the client pod: {agg:#?}");
        let f = &agg.tcp_flows[0];
        assert_eq!(f.workload.as_ref().unwrap().cgroup_id, client.cgroup_id);
        assert_eq!(f.direction, pb::Direction::Outbound as i32);
        let remote = f.remote.as_ref().unwrap();
        assert_eq!(
            (remote.ip.as_str(), remote.port),
            (server.ip4.to_string().as_str(), 8080)
        );
        assert_eq!(f.connects_ok, 3);
        assert_eq!(f.connect_latency.as_ref().unwrap().count, 3);
        assert!(
            f.drops.is_some(),
            "every aggregate carries its drop counters"
        );
        assert!(agg
            .drops
            .unwrap()
            .counters
            .contains_key("kernel_ringbuf_full"));

        // A destination filter that matches nothing of this pod.
        let agg = wait_snapshot(
            &mut api,
            Some(Filter {
                container: rel.to_string(),
                destination: ":9".into(),
                ..Default::default()
            }),
            |_| true,
        )
        .await;
        assert!(agg.tcp_flows.is_empty(), "{agg:#?}");
    });
}

#[test]
fn live_traces_follow_one_pod() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("apiwatch", &["client", "server", "other"]);
    let (client, server, other) = (net.pod(0), net.pod(1), net.pod(2));
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    let _srv = peer::listen(server, &format!("{}:8080", server.ip4), "read");
    let path = client.cgroup_dir.display().to_string();
    let rel = path
        .trim_start_matches("/sys/fs/cgroup/unified")
        .to_string();
    runtime().block_on(async {
        let mut api = agent.client().await;
        let mut stream = api
            .watch_traces(pb::WatchTracesRequest {
                filter: pod_filter(&rel),
                kinds: vec!["tcp".into()],
            })
            .await
            .expect("watch")
            .into_inner();
        let addr = format!("{}:8080", server.ip4);
        let (c, o) = (client, other);
        let (_cli, results) = peer::connect(c, &addr, 2, false, 2000);
        assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");
        // Another pod's traffic must not show up in this watch.
        let (_oth, _) = peer::connect(o, &addr, 2, false, 2000);

        let mut kinds = Vec::new();
        while kinds.iter().filter(|k| *k == "closed").count() < 2 {
            let ev = tokio::time::timeout(WAIT, stream.message())
                .await
                .expect("a trace in time")
                .expect("stream ok")
                .expect("stream open");
            assert_eq!(ev.workload.as_ref().unwrap().cgroup_id, c.cgroup_id);
            let Some(Ev::Tcp(tcp)) = ev.event else {
                panic!("only tcp asked: {ev:?}")
            };
            assert_eq!(tcp.remote.as_ref().unwrap().port, 8080);
            kinds.push(tcp.kind);
        }
        assert_eq!(
            kinds.iter().filter(|k| *k == "established").count(),
            2,
            "{kinds:?}"
        );
    });
}

#[test]
fn bad_requests_get_clear_statuses_and_the_agent_keeps_serving() {
    if !require_root() {
        return;
    }
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    runtime().block_on(async {
        let mut api = agent.client().await;
        let bad = |destination: &str| pb::GetSnapshotRequest {
            filter: Some(Filter {
                destination: destination.into(),
                ..Default::default()
            }),
        };
        let e = api.get_snapshot(bad("10.0.0.1:port")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("10.0.0.1:port"), "{e}");
        let e = api
            .watch_traces(pb::WatchTracesRequest {
                filter: None,
                kinds: vec!["udp".into()],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        // Far past the 64 KiB request limit.
        let e = api
            .get_snapshot(pb::GetSnapshotRequest {
                filter: Some(Filter {
                    pod: "x".repeat(1 << 20),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                e.code(),
                Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
            ),
            "{e}"
        );
        // Still serving.
        api.get_snapshot(pb::GetSnapshotRequest { filter: None })
            .await
            .expect("the agent still answers");
    });
}

#[test]
fn a_stuck_watcher_misses_traces_but_memory_stays_bounded() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("apislow", &["client", "server"]);
    let (client, server) = (net.pod(0), net.pod(1));
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    let _srv = peer::listen(server, &format!("{}:8080", server.ip4), "close");
    runtime().block_on(async {
        let mut api = agent.client().await;
        // Subscribed, then not read while the node makes far more traces
        // than the queue holds.
        let mut stream = api
            .watch_traces(pb::WatchTracesRequest::default())
            .await
            .expect("watch")
            .into_inner();
        let rss_before = rss_kib();
        let addr = format!("{}:8080", server.ip4);
        for _ in 0..6 {
            let (_c, results) = peer::connect(client, &addr, 2000, false, 2000);
            assert!(results.iter().all(|r| r.starts_with("ok")));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let grown = rss_kib().saturating_sub(rss_before);
        let mut missed = 0;
        for _ in 0..10_000 {
            let Ok(Ok(Some(ev))) =
                tokio::time::timeout(Duration::from_secs(2), stream.message()).await
            else {
                break;
            };
            missed += ev.missed_before;
            if missed > 0 {
                break;
            }
        }
        assert!(missed > 0, "the stuck watcher was told what it missed");
        // 12,000 connections make ~50,000 traces; the shared queue holds
        // 8192. The test process (agent included) must not grow by the
        // size of everything produced.
        assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    });
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn health_and_reflection_work_for_generic_clients() {
    if !require_root() {
        return;
    }
    let agent = ApiAgent::start(Config::default(), ServeOptions::default());
    runtime().block_on(async {
        let channel = agent.channel().await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "sockeye.v1.AgentService".into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let mut refl = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut resp = refl
            .server_reflection_info(tokio_stream_once(req))
            .await
            .expect("reflection")
            .into_inner();
        let msg = resp.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
            panic!("{msg:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"sockeye.v1.AgentService".to_string()),
            "{names:?}"
        );
    });
}

fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tokio_stream::Stream<Item = T> {
    tokio_stream::once(item)
}

#[test]
fn tcp_api_with_tls_and_mutual_tls() {
    if !require_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sockeye-pki-{}", std::process::id()));
    let pki = TestPki::new(&dir);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let agent = ApiAgent::start(
        Config::default(),
        ServeOptions {
            unix: None,
            tcp: Some(addr),
            tls: Some(TlsFiles {
                cert: pki.server_cert.clone(),
                key: pki.server_key.clone(),
                client_ca: Some(pki.ca.clone()),
            }),
        },
    );
    runtime().block_on(async {
        let trusted = |cert: &std::path::Path, key: &std::path::Path| ClientTls {
            ca: Some(pki.ca.clone()),
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
            domain: Some("localhost".into()),
        };
        let good = agent
            .tcp_channel(Some(&trusted(&pki.client_cert, &pki.client_key)))
            .await
            .expect("mTLS with a client certificate from our CA");
        AgentServiceClient::new(good)
            .get_snapshot(pb::GetSnapshotRequest::default())
            .await
            .expect("snapshot over mTLS");
        // No client certificate, or one from another CA: refused.
        for tls in [
            ClientTls {
                ca: Some(pki.ca.clone()),
                domain: Some("localhost".into()),
                ..Default::default()
            },
            trusted(&pki.stranger_cert, &pki.stranger_key),
        ] {
            let refused = match agent.tcp_channel(Some(&tls)).await {
                Err(_) => true,
                Ok(ch) => AgentServiceClient::new(ch)
                    .get_snapshot(pb::GetSnapshotRequest::default())
                    .await
                    .is_err(),
            };
            assert!(refused, "a client without a trusted certificate got in");
        }
        // Plain HTTP/2 against the TLS port fails too.
        let plain = match agent.tcp_channel(None).await {
            Err(_) => true,
            Ok(ch) => AgentServiceClient::new(ch)
                .get_snapshot(pb::GetSnapshotRequest::default())
                .await
                .is_err(),
        };
        assert!(plain);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
