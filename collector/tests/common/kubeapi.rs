//! A stand-in for the parts of the Kubernetes API server the collector
//! calls (no kube-apiserver runs here): TokenReview, and creating and
//! patching `events.k8s.io/v1` Events, which it checks the way the API
//! server validates them and keeps for the test to read. Plain HTTP on
//! loopback; the collector reaches it with its real kube client through a
//! real kubeconfig that presents the collector's own token.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use axum::{
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{patch, post},
    Router,
};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::within;

/// The token the collector presents to the stand-in.
pub const COLLECTOR_TOKEN: &str = "collector-own-token";

#[derive(Default)]
struct Inner {
    /// namespace/name -> the stored Event.
    events: Mutex<HashMap<String, Value>>,
    /// Reader tokens: token -> user name.
    tokens: Mutex<HashMap<String, String>>,
    refuse_events: AtomicBool,
}

#[derive(Clone)]
struct St {
    inner: Arc<Inner>,
    /// Event writes answered (created, patched or refused).
    writes: Arc<watch::Sender<u64>>,
}

pub struct KubeApi {
    pub addr: SocketAddr,
    st: St,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "message": message, "code": code.as_u16()});
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {COLLECTOR_TOKEN}").as_str())
}

/// What the API server's validation of an events.k8s.io/v1 Event checks
/// on create.
fn invalid(ns: &str, e: &Value) -> Option<String> {
    let s = |p: &str| e.pointer(p).and_then(Value::as_str).unwrap_or_default();
    for (p, what) in [
        ("/reportingController", "reportingController"),
        ("/reportingInstance", "reportingInstance"),
        ("/action", "action"),
        ("/reason", "reason"),
        ("/eventTime", "eventTime"),
        ("/metadata/name", "metadata.name"),
    ] {
        if s(p).is_empty() {
            return Some(format!("{what}: Required value"));
        }
    }
    if !["Normal", "Warning"].contains(&s("/type")) {
        return Some("type: Unsupported value".into());
    }
    if s("/regarding/namespace") != ns || !["", ns].contains(&s("/metadata/namespace")) {
        return Some("regarding.namespace: does not match event.namespace".into());
    }
    if s("/note").len() > 1024 || s("/reason").len() > 128 || s("/action").len() > 128 {
        return Some("note, reason or action: Too long".into());
    }
    None
}

async fn create_event(
    State(st): State<St>,
    UrlPath(ns): UrlPath<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let r = create(&st, &ns, &h, &body);
    st.writes.send_modify(|n| *n += 1);
    r
}

fn create(st: &St, ns: &str, h: &HeaderMap, body: &[u8]) -> Response {
    if !authorized(h) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if st.inner.refuse_events.load(Ordering::Relaxed) {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "events.events.k8s.io is forbidden",
        );
    }
    let Ok(mut e) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    if let Some(why) = invalid(ns, &e) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &why);
    }
    let name = e["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut events = st.inner.events.lock().unwrap();
    let key = format!("{ns}/{name}");
    if events.contains_key(&key) {
        return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
    }
    e["metadata"]["namespace"] = ns.into();
    e["metadata"]["resourceVersion"] = "1".into();
    events.insert(key, e.clone());
    (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        e.to_string(),
    )
        .into_response()
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (into, patch) => *into = patch.clone(),
    }
}

async fn patch_event(
    State(st): State<St>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let r = (|| {
        if !authorized(&h) {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
        if h.get("content-type").and_then(|v| v.to_str().ok())
            != Some("application/merge-patch+json")
        {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "",
            );
        }
        let Ok(p) = serde_json::from_slice::<Value>(&body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
        };
        let mut events = st.inner.events.lock().unwrap();
        let Some(e) = events.get_mut(&format!("{ns}/{name}")) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "not found");
        };
        merge(e, &p);
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            e.to_string(),
        )
            .into_response()
    })();
    st.writes.send_modify(|n| *n += 1);
    r
}

async fn token_review(State(st): State<St>, h: HeaderMap, body: Bytes) -> Response {
    if !authorized(&h) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let Ok(mut review) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let audiences = review["spec"]["audiences"].clone();
    let user = st.inner.tokens.lock().unwrap().get(token).cloned();
    review["status"] = match user {
        Some(u) => json!({"authenticated": true, "audiences": audiences,
            "user": {"username": u, "groups": ["system:authenticated"]}}),
        None => json!({"authenticated": false, "error": "[invalid bearer token]"}),
    };
    (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        review.to_string(),
    )
        .into_response()
}

impl KubeApi {
    pub async fn start() -> Self {
        let (tx, _) = watch::channel(0);
        let st = St {
            inner: Arc::default(),
            writes: Arc::new(tx),
        };
        let app = Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_review),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(create_event),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                patch(patch_event),
            )
            .with_state(st.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in API server");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("stand-in API server");
        });
        Self { addr, st, task }
    }

    /// A kubeconfig in `dir` that points at the stand-in.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://{}\nusers:\n- name: collector\n  user:\n    token: {COLLECTOR_TOKEN}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: collector\ncurrent-context: standin\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A token the TokenReview answers as `user`'s.
    pub fn add_token(&self, token: &str, user: &str) {
        let mut t = self.st.inner.tokens.lock().unwrap();
        t.insert(token.into(), user.into());
    }

    /// From now on Event writes get 403 Forbidden (or again succeed).
    pub fn refuse_events(&self, refuse: bool) {
        self.st.inner.refuse_events.store(refuse, Ordering::Relaxed);
    }

    /// Waits until `n` Event writes (creates and patches, accepted or not)
    /// were answered.
    pub async fn wait_writes(&self, n: u64) {
        let mut rx = self.st.writes.subscribe();
        within(&format!("{n} Event writes"), rx.wait_for(|w| *w >= n))
            .await
            .expect("the stand-in runs");
    }

    /// Every stored Event, oldest name first.
    pub fn events(&self) -> Vec<Value> {
        let mut v: Vec<Value> = self
            .st
            .inner
            .events
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|e| e["eventTime"].as_str().unwrap_or_default().to_string());
        v
    }
}
