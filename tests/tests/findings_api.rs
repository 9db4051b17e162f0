//! Findings over the agent's real API (unix socket), from the real agent
//! loop: a CLOSE_WAIT pile-up between two pods is listed by ListFindings,
//! seen opening and resolving by WatchFindings, and carried in GetSnapshot;
//! filters select it or leave it out; bad requests get clear statuses.

use std::time::Duration;

use sockeye_agent::{
    api::server::ServeOptions,
    findings::{config::CloseWaitConfig, FindingsConfig},
    Config,
};
use sockeye_proto::v1::{self as pb, agent_service_client::AgentServiceClient, Filter};
use sockeye_tests::{
    api::{runtime, ApiAgent},
    net::{Pod, TestNet},
    peer, require_root,
};
use tonic::{transport::Channel, Code, Streaming};

/// Sockets the client holds in CLOSE_WAIT (the detector's default minimum
/// is 5).
const HELD: u32 = 8;
/// The wait before a CLOSE_WAIT socket counts, lowered from 30 s.
const MIN_WAIT_S: f64 = 2.0;
/// Opening: the wait, an evaluation a second, and a slow machine's margin.
/// Resolving: 10 s of grace after the pile-up ends, and the same margin.
const WAIT: Duration = Duration::from_secs(40);

fn config() -> Config {
    Config {
        findings: Some(FindingsConfig {
            close_wait: CloseWaitConfig {
                min_sockets: 5,
                min_wait_s: MIN_WAIT_S,
            },
            ..FindingsConfig::default()
        }),
        ..Config::default()
    }
}

/// The pod's cgroup path under the v2 mount, as the API's container filter
/// takes it.
fn cgroup_path(pod: &Pod) -> String {
    let path = pod.cgroup_dir.display().to_string();
    path.trim_start_matches("/sys/fs/cgroup/unified")
        .to_string()
}

fn filter(container: &str, destination: &str) -> Option<Filter> {
    Some(Filter {
        container: container.into(),
        destination: destination.into(),
        ..Default::default()
    })
}

async fn list(
    api: &mut AgentServiceClient<Channel>,
    filter: Option<Filter>,
    include_resolved: bool,
) -> pb::FindingsReply {
    api.list_findings(pb::ListFindingsRequest {
        filter,
        include_resolved,
    })
    .await
    .expect("ListFindings")
    .into_inner()
}

async fn next_update(stream: &mut Streaming<pb::FindingUpdate>) -> pb::FindingUpdate {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a finding update in time")
        .expect("stream ok")
        .expect("stream open")
}

#[test]
fn close_wait_pile_up_is_listed_watched_open_and_resolved() {
    if !require_root() {
        return;
    }
    let net = TestNet::with_pods("fndcw", &["client", "server", "bystander"]);
    let (client, server, bystander) = (net.pod(0), net.pod(1), net.pod(2));
    let agent = ApiAgent::start(config(), ServeOptions::default());
    let pod = cgroup_path(client);
    let dest = format!("{}:8080", server.ip4);
    // The server closes every connection at once; the client never closes
    // its side, so each of its sockets stays in CLOSE_WAIT.
    let _srv = peer::listen(server, &dest, "close");
    runtime().block_on(async {
        let mut api = agent.client().await;
        let mut watch = api
            .watch_findings(pb::ListFindingsRequest {
                filter: filter(&pod, ""),
                include_resolved: true,
            })
            .await
            .expect("WatchFindings")
            .into_inner();
        let before = list(&mut api, filter(&pod, ""), true).await;
        assert!(before.findings.is_empty(), "a fresh pod: {before:#?}");

        let (held, results) = peer::connect(client, &dest, HELD, true, 2000);
        assert_eq!(results.len(), HELD as usize);
        assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");
        // A bystander's connections to the same server close normally.
        let (_b, results) = peer::connect(bystander, &dest, 3, false, 2000);
        assert!(results.iter().all(|r| r.starts_with("ok")), "{results:?}");

        // WatchFindings: the stream had nothing to start with, so its
        // first update is the finding opening.
        let opened = next_update(&mut watch).await;
        assert_eq!(opened.missed_before, 0);
        let f = opened.finding.expect("a finding");
        assert_eq!(f.kind, "close_wait", "{f:#?}");
        assert_eq!(f.resolved_unix_ms, 0, "open: {f:#?}");
        let subject = f.subject.as_ref().expect("subject");
        assert_eq!(subject.cgroup_id, client.cgroup_id);
        assert!(!subject.node.is_empty());
        let d = f.destination.as_ref().expect("destination");
        assert_eq!(
            (d.ip.as_str(), d.port),
            (server.ip4.to_string().as_str(), 8080)
        );
        assert!(!f.summary.is_empty() && !f.next_step.is_empty(), "{f:#?}");
        assert!(!f.evidence.is_empty(), "{f:#?}");
        assert!(f.since_unix_ms > 0 && f.since_unix_ms <= f.updated_unix_ms);
        assert!(["info", "warning", "critical"].contains(&f.severity.as_str()));
        assert!(["low", "medium", "high"].contains(&f.confidence.as_str()));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (now_ms - f.updated_unix_ms).abs() < 60_000,
            "Unix ms, not monotonic: {} vs now {now_ms}",
            f.updated_unix_ms
        );

        // ListFindings has it, and the filters select it or not.
        let reply = list(&mut api, filter(&pod, ""), false).await;
        assert_eq!(reply.findings.len(), 1, "{reply:#?}");
        assert_eq!(reply.findings[0].id, f.id);
        assert_eq!(reply.node, subject.node);
        assert!(reply.taken_unix_ms >= f.updated_unix_ms);
        let drops = reply.drops.expect("drops");
        assert!(
            drops.counters.contains_key("kernel_ringbuf_full"),
            "{drops:?}"
        );
        for (dest_filter, want) in [
            (dest.as_str(), 1),
            (":8080", 1),
            (&server.ip4.to_string(), 1),
            (":9", 0),
        ] {
            let r = list(&mut api, filter(&pod, dest_filter), false).await;
            assert_eq!(r.findings.len(), want, "destination {dest_filter}: {r:#?}");
        }
        let r = list(&mut api, filter(&cgroup_path(bystander), ""), true).await;
        assert!(
            r.findings.is_empty(),
            "the bystander closed its sockets: {r:#?}"
        );

        // GetSnapshot carries the open findings too.
        let snap = api
            .get_snapshot(pb::GetSnapshotRequest {
                filter: filter(&pod, ""),
            })
            .await
            .expect("snapshot")
            .into_inner();
        let agg = snap.aggregates.expect("aggregates");
        assert!(agg.findings.iter().any(|s| s.id == f.id), "{agg:#?}");

        // A watcher that starts now gets it first, from the current list.
        let mut late = api
            .watch_findings(pb::ListFindingsRequest {
                filter: filter(&pod, ""),
                include_resolved: false,
            })
            .await
            .expect("WatchFindings")
            .into_inner();
        let first = next_update(&mut late).await;
        assert_eq!(first.finding.expect("finding").id, f.id);

        // The client exits: its sockets close and the finding resolves.
        drop(held);
        let resolved = loop {
            let u = next_update(&mut watch).await;
            let g = u.finding.expect("a finding");
            assert_eq!(g.id, f.id, "one finding for this pod: {g:#?}");
            if g.resolved_unix_ms != 0 {
                break g;
            }
        };
        assert!(resolved.resolved_unix_ms >= resolved.since_unix_ms);
        assert!(resolved.updated_unix_ms >= resolved.resolved_unix_ms);

        let open = list(&mut api, filter(&pod, ""), false).await;
        assert!(open.findings.is_empty(), "resolved: {open:#?}");
        let all = list(&mut api, filter(&pod, ""), true).await;
        assert_eq!(all.findings.len(), 1, "{all:#?}");
        assert_eq!(all.findings[0].resolved_unix_ms, resolved.resolved_unix_ms);
    });
}

#[test]
fn findings_requests_are_checked_and_refused_when_detection_is_off() {
    if !require_root() {
        return;
    }
    let agent = ApiAgent::start(config(), ServeOptions::default());
    runtime().block_on(async {
        let mut api = agent.client().await;
        let bad = pb::ListFindingsRequest {
            filter: filter("", "10.0.0.1:port"),
            include_resolved: false,
        };
        let e = api.list_findings(bad.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("10.0.0.1:port"), "{e}");
        let e = api.watch_findings(bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");

        // Another node's findings are not this agent's.
        let other_node = Some(Filter {
            node: "not-this-node".into(),
            ..Default::default()
        });
        let r = list(&mut api, other_node, true).await;
        assert!(r.findings.is_empty());
        assert!(!r.node.is_empty() && r.taken_unix_ms > 0);
    });
    drop(agent);

    // With detection off an empty list would read as "nothing wrong".
    let off = ApiAgent::start(
        Config {
            findings: None,
            ..Config::default()
        },
        ServeOptions::default(),
    );
    runtime().block_on(async {
        let mut api = off.client().await;
        let req = pb::ListFindingsRequest::default();
        let e = api.list_findings(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        assert!(e.message().contains("--no-findings"), "{e}");
        let e = api.watch_findings(req).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        // Snapshots are still served, without findings.
        let snap = api
            .get_snapshot(pb::GetSnapshotRequest::default())
            .await
            .expect("snapshot")
            .into_inner();
        assert!(snap.aggregates.expect("aggregates").findings.is_empty());
    });
}
