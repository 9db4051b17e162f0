//! The watch against a stand-in API server on loopback (no kube-apiserver
//! can run here): it checks the requests the agent makes, which is what the
//! RBAC rules must allow, and that list, add and delete reach the index.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Router,
};

use super::*;

type Requests = Arc<Mutex<Vec<String>>>;

fn pod_json(uid: &str, name: &str, container_id: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": "11",
            "labels": {"app": name}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "main"}]},
        "status": {"containerStatuses": [{"name": "main", "containerID": format!("cri-o://{container_id}"),
            "image": "i", "imageID": "i", "ready": true, "restartCount": 0}]}
    })
}

/// Answers the list with pod "a", then a watch that adds "b" and deletes "a".
async fn api(State(seen): State<Requests>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or_default().to_string();
    seen.lock()
        .unwrap()
        .push(format!("{} {}?{query}", req.method(), req.uri().path()));
    if req.uri().path() != "/api/v1/pods" {
        return StatusCode::FORBIDDEN.into_response();
    }
    if !query.contains("watch=true") {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "10"}, "items": [pod_json("ua", "a", "ca")]});
        return ([("content-type", "application/json")], list.to_string()).into_response();
    }
    let lines: Vec<Result<String, std::io::Error>> = vec![
        Ok(
            serde_json::json!({"type": "ADDED", "object": pod_json("ub", "b", "cb")}).to_string()
                + "\n",
        ),
        Ok(
            serde_json::json!({"type": "DELETED", "object": pod_json("ua", "a", "ca")}).to_string()
                + "\n",
        ),
    ];
    // The watch then stays open, as a real one does until its timeout.
    let body = futures_util::stream::iter(lines).chain(futures_util::stream::pending());
    Response::new(Body::from_stream(body))
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn client(addr: SocketAddr) -> Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    Client::try_from(config).expect("client for a plain-http API server")
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn lists_and_watches_only_this_nodes_pods() {
    let seen = Requests::default();
    let addr = serve(Router::new().fallback(api).with_state(seen.clone())).await;
    let index = PodIndex::new(WatchState::Starting);
    let task = tokio::spawn(watch(client(addr), "node-a".into(), index.clone()));

    wait_until("pod b from the watch", || {
        index.lookup(Some("cb"), None).is_some()
    })
    .await;
    assert_eq!(index.stats().state, WatchState::Watching);
    assert_eq!(
        index.lookup(Some("cb"), None).unwrap().label(),
        "shop/b/main"
    );
    // "a" was deleted, and is still named for its retention period.
    wait_until("the delete of pod a", || index.stats().events >= 3).await;
    assert_eq!(index.lookup(Some("ca"), None).unwrap().labels["app"], "a");
    task.abort();

    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    for r in &seen {
        // Only GETs on the cluster-wide pods collection, always narrowed to
        // this node: exactly the `list` and `watch` verbs the ClusterRole grants.
        assert!(r.starts_with("GET /api/v1/pods?"), "{r}");
        assert!(r.contains("fieldSelector=spec.nodeName%3Dnode-a"), "{r}");
    }
    assert!(
        seen.iter().any(|r| !r.contains("watch=true")),
        "a list: {seen:?}"
    );
    assert!(
        seen.iter().any(|r| r.contains("watch=true")),
        "a watch: {seen:?}"
    );
}

#[tokio::test]
async fn a_refusing_api_server_is_counted_and_retried() {
    let router = Router::new().fallback(|| async { StatusCode::FORBIDDEN });
    let addr = serve(router).await;
    let index = PodIndex::new(WatchState::Starting);
    let task = tokio::spawn(watch(client(addr), "node-a".into(), index.clone()));
    wait_until("two failed attempts", || index.stats().watch_errors >= 2).await;
    assert_eq!(index.stats().state, WatchState::Retrying);
    task.abort();
}

/// In a cluster the API server speaks HTTPS: the client must find its TLS
/// crypto provider (ring, the only one compiled in) without panicking.
#[tokio::test]
async fn an_https_client_can_be_built() {
    let config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
    Client::try_from(config).expect("TLS client");
}

#[test]
fn outside_a_cluster_it_does_not_start() {
    // The test environment has no service account; a real pod would.
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        eprintln!("skipped: running inside a Kubernetes pod");
        return;
    }
    let (index, task) = start(&WatchOptions {
        enabled: true,
        node_name: Some("node-a".into()),
        kubeconfig: None,
    });
    assert!(task.is_none());
    assert_eq!(index.stats().state, WatchState::NotInCluster);
    let (index, task) = start(&WatchOptions::default());
    assert!(task.is_none());
    assert_eq!(index.stats().state, WatchState::Disabled);
}
