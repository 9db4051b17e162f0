//! Kubernetes Events for findings, written by the collector with its real
//! kube client to a stand-in API server that validates and keeps them:
//! windows pushed as agents push them open and resolve findings, and the
//! Events carry the reason, note and pod; a repeat updates the series; the
//! rate limit, findings without a pod and refused writes are counted.

mod common;

use common::{kubeapi::KubeApi, *};
use serde_json::Value;
use sockeye_collector::{
    auth::kube_client,
    events::{write::REPORTING_CONTROLLER, EventsConfig},
    Stats,
};
use sockeye_proto::v1 as pb;

async fn start(api: &KubeApi, per_minute: u32) -> TestCollector {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = kube_client(Some(&api.kubeconfig(dir.path())))
        .await
        .expect("a client of the stand-in");
    let mut cfg = config(dir.path());
    cfg.events = Some(EventsConfig {
        client,
        per_minute,
        instance: "sockeye-collector-test".into(),
    });
    TestCollector::start_in(dir, cfg).await
}

fn leak(id: &str, pod_name: &str, updated: i64) -> pb::Finding {
    let p = pod("prod", pod_name, "php", "node-a");
    let mut f = finding(
        id,
        "node-a",
        "connection_leak",
        &p,
        Some(ep("10.77.0.3", 6379)),
        "critical",
        updated,
    );
    f.summary = format!("prod/{pod_name}/php is leaking connections to 10.77.0.3:6379");
    f
}

fn resolved(mut f: pb::Finding, at: i64) -> pb::Finding {
    f.resolved_unix_ms = at;
    f.updated_unix_ms = at;
    f
}

fn s<'a>(e: &'a Value, p: &str) -> &'a str {
    e.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

/// Waits until the collector's counters satisfy `ok` (for what does not
/// reach the API server: rate-limited and skipped changes).
async fn stats_until(tc: &TestCollector, what: &str, ok: impl Fn(&Stats) -> bool) -> Stats {
    within(what, async {
        loop {
            let st = tc.collector.stats();
            if ok(&st) {
                return st;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_finding_opens_and_resolves_as_events_on_its_pod_and_a_repeat_joins_the_series() {
    let api = KubeApi::start().await;
    let tc = start(&api, 100).await;
    let mut client = tc.client().await;
    let t = now_ms() - 60_000;
    let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
    let first = leak("leak-1", "payments-1", t);
    a.send(findings_window(
        "node-a",
        "agent-a",
        1,
        t,
        vec![first.clone()],
    ))
    .await;
    api.wait_writes(1).await;
    let events = api.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(s(e, "/reason"), "SockeyeConnectionLeak");
    assert_eq!(
        s(e, "/note"),
        "prod/payments-1/php is leaking connections to 10.77.0.3:6379"
    );
    assert_eq!((s(e, "/type"), s(e, "/action")), ("Warning", "Opened"));
    assert_eq!(
        (
            s(e, "/regarding/kind"),
            s(e, "/regarding/apiVersion"),
            s(e, "/regarding/namespace"),
            s(e, "/regarding/name"),
            s(e, "/regarding/uid"),
        ),
        ("Pod", "v1", "prod", "payments-1", "uid-payments-1")
    );
    assert_eq!(s(e, "/metadata/namespace"), "prod");
    assert!(s(e, "/metadata/name").starts_with("payments-1."));
    assert_eq!(s(e, "/reportingController"), REPORTING_CONTROLLER);
    assert_eq!(s(e, "/reportingInstance"), "sockeye-collector-test");
    assert!(
        s(e, "/eventTime").starts_with(&micro_prefix(first.since_unix_ms)),
        "{e}"
    );
    assert!(e.get("series").is_none());

    // Still open in the next window: nothing new. Then resolved: the
    // Resolved Event is the next write, so the window between wrote none.
    a.send(findings_window(
        "node-a",
        "agent-a",
        2,
        t + 10_000,
        vec![first.clone()],
    ))
    .await;
    a.send(findings_window(
        "node-a",
        "agent-a",
        3,
        t + 20_000,
        vec![resolved(first.clone(), t + 15_000)],
    ))
    .await;
    api.wait_writes(2).await;
    let events = api.events();
    assert_eq!(events.len(), 2, "{events:?}");
    let r = &events[1];
    assert_eq!(
        (s(r, "/reason"), s(r, "/type"), s(r, "/action")),
        ("SockeyeConnectionLeak", "Normal", "Resolved")
    );
    assert_eq!(
        s(r, "/note"),
        "Resolved: prod/payments-1/php is leaking connections to 10.77.0.3:6379"
    );
    assert_eq!(s(r, "/regarding/name"), "payments-1");

    // It leaks again (a new finding, same pod and kind): the first Event's
    // series counts it, as kubectl shows "(x2 over ...)".
    let again = leak("leak-2", "payments-1", t + 30_000);
    a.send(findings_window(
        "node-a",
        "agent-a",
        4,
        t + 30_000,
        vec![again.clone()],
    ))
    .await;
    api.wait_writes(3).await;
    let events = api.events();
    assert_eq!(events.len(), 2, "a repeat adds no Event: {events:?}");
    let opened = events
        .iter()
        .find(|e| s(e, "/action") == "Opened")
        .expect("the Opened Event");
    assert_eq!(opened["series"]["count"], 2, "{opened}");
    assert!(s(opened, "/series/lastObservedTime").starts_with(&micro_prefix(again.since_unix_ms)));
    a.ack_through(4).await;
    // The counters move once the collector has the API server's answer.
    let st = stats_until(&tc, "3 writes counted", |s| {
        s.events_written + s.events_updated >= 3
    })
    .await;
    assert_eq!(
        (
            st.events_written,
            st.events_updated,
            st.events_failed,
            st.events_rate_limited
        ),
        (2, 1, 0, 0)
    );
    let metrics = sockeye_collector::metrics::render(&st);
    assert!(metrics.contains("sockeye_collector_events_written_total 2\n"));
    assert!(metrics.contains("sockeye_collector_events_updated_total 1\n"));
    tc.stop().await;
}

/// The Event's time to the second, as the API server prints MicroTime.
fn micro_prefix(unix_ms: i64) -> String {
    let ts = k8s_openapi::jiff::Timestamp::from_millisecond(unix_ms).unwrap();
    ts.strftime("%Y-%m-%dT%H:%M:%S").to_string()
}

#[tokio::test]
async fn the_rate_limit_findings_without_a_pod_and_refused_writes_are_counted() {
    let api = KubeApi::start().await;
    let tc = start(&api, 2).await;
    let mut client = tc.client().await;
    let t = now_ms() - 60_000;
    let mut host = finding(
        "host-1",
        "node-a",
        "connect_resource_exhaustion",
        &pb::Workload {
            label: "host".into(),
            ..Default::default()
        },
        None,
        "critical",
        t,
    );
    host.summary = "host processes ran out of local ports".into();
    let a = Pusher::open(&mut client, "node-a", "agent-a").await;
    a.send(findings_window(
        "node-a",
        "agent-a",
        1,
        t,
        vec![
            host,
            leak("l1", "web-1", t),
            leak("l2", "web-2", t),
            leak("l3", "web-3", t),
            leak("l4", "web-4", t),
        ],
    ))
    .await;
    let st = stats_until(&tc, "4 pods' changes handled", |s| {
        s.events_written + s.events_rate_limited >= 4
    })
    .await;
    assert_eq!(
        (
            st.events_written,
            st.events_rate_limited,
            st.events_skipped_no_pod
        ),
        (2, 2, 1)
    );
    assert_eq!(api.events().len(), 2);
    tc.stop().await;

    // Refused by the API server (no RBAC): counted, and the collector goes on.
    let api = KubeApi::start().await;
    api.refuse_events(true);
    let tc = start(&api, 100).await;
    let mut client = tc.client().await;
    let a = Pusher::open(&mut client, "node-a", "agent-a").await;
    a.send(findings_window(
        "node-a",
        "agent-a",
        1,
        t,
        vec![leak("l1", "web-1", t)],
    ))
    .await;
    api.wait_writes(1).await;
    // Missing from the next window: resolved, inferred; written once the
    // API server accepts again.
    api.refuse_events(false);
    a.send(findings_window("node-a", "agent-a", 2, t + 10_000, vec![]))
        .await;
    api.wait_writes(2).await;
    let events = api.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        s(&events[0], "/note"),
        "Resolved (no longer reported by its node): prod/web-1/php is leaking connections to 10.77.0.3:6379"
    );
    let st = stats_until(&tc, "2 writes counted", |s| {
        s.events_failed + s.events_written >= 2
    })
    .await;
    assert_eq!((st.events_failed, st.events_written), (1, 1));
    tc.stop().await;
}

#[tokio::test]
async fn findings_open_before_a_restart_are_not_written_again() {
    let api = KubeApi::start().await;
    let tc = start(&api, 100).await;
    let mut client = tc.client().await;
    let t = now_ms() - 60_000;
    let mut a = Pusher::open(&mut client, "node-a", "agent-a").await;
    a.send(findings_window(
        "node-a",
        "agent-a",
        1,
        t,
        vec![leak("l1", "web-1", t)],
    ))
    .await;
    a.ack_through(1).await;
    api.wait_writes(1).await;
    drop(a);
    let tc = tc.restart().await;
    let mut client = tc.client().await;
    let a = Pusher::open(&mut client, "node-a", "agent-a").await;
    // Still open after the restart, then resolved: only the resolution is
    // news.
    a.send(findings_window(
        "node-a",
        "agent-a",
        2,
        t + 10_000,
        vec![leak("l1", "web-1", t)],
    ))
    .await;
    a.send(findings_window(
        "node-a",
        "agent-a",
        3,
        t + 20_000,
        vec![resolved(leak("l1", "web-1", t), t + 15_000)],
    ))
    .await;
    api.wait_writes(2).await;
    let actions: Vec<String> = api
        .events()
        .iter()
        .map(|e| s(e, "/action").to_string())
        .collect();
    assert_eq!(actions, ["Opened", "Resolved"]);
    tc.stop().await;
}
