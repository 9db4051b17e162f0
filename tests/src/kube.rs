//! A stand-in for the Kubernetes API server on loopback: no kube-apiserver
//! can run on this machine, and the agent only lists and watches this
//! node's pods. It answers `GET /api/v1/pods` (a list, then a watch that
//! stays open) with the pods a test gives, and writes a kubeconfig that
//! points there, for `--kubeconfig`. The agent's real watch runs against it.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    Router,
};
use sockeye_agent::attribution::kube_watch::{self, WatchOptions};
use sockeye_agent::Agent;

pub struct StandInApi {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

async fn answer(State(pods): State<Arc<Vec<serde_json::Value>>>, req: Request) -> Response {
    if req.uri().path() != "/api/v1/pods" {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    if !req.uri().query().unwrap_or_default().contains("watch=true") {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "1"}, "items": *pods});
        return ([("content-type", "application/json")], list.to_string()).into_response();
    }
    // Nothing changes: the watch stays open, as a real one does.
    Response::new(Body::from_stream(futures_util::stream::pending::<
        Result<String, std::io::Error>,
    >()))
}

impl StandInApi {
    /// Serves `pods` (Pod objects as JSON).
    pub fn start(pods: Vec<serde_json::Value>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let addr = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let router = Router::new().fallback(answer).with_state(Arc::new(pods));
            tokio::spawn(async move { axum::serve(listener, router).await });
            addr
        });
        let kubeconfig = std::env::temp_dir().join(format!(
            "sockeye-kubeconfig-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://{addr}\nusers:\n- name: t\n  user: {{}}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: t\ncurrent-context: t\n"
            ),
        )
        .expect("write kubeconfig");
        Self {
            addr,
            kubeconfig,
            runtime: Some(runtime),
        }
    }

    /// Starts the agent's own pod watch against this server, as
    /// `--kubeconfig` does, and gives the agent its index.
    pub fn watch_for(&self, agent: &mut Agent, node: &str) {
        let runtime = self.runtime.as_ref().expect("running");
        let _entered = runtime.enter();
        let (index, task) = kube_watch::start(&WatchOptions {
            enabled: true,
            node_name: Some(node.to_string()),
            kubeconfig: Some(self.kubeconfig.clone()),
        });
        runtime.spawn(task.expect("a watch with a kubeconfig"));
        agent.attributor.set_pod_index(index);
    }
}

impl Drop for StandInApi {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}
