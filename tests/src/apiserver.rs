//! A stand-in for the Kubernetes API server's TokenReview endpoint (no
//! kube-apiserver can run here), on loopback with real TLS: the collector's
//! real TokenReview client (kube-rs, rustls) connects to it through a real
//! kubeconfig, presents its own bearer token, and gets back what a real
//! API server answers for the tokens the test registered, bound pod tokens
//! carrying `user.extra["authentication.kubernetes.io/node-name"]` as
//! Kubernetes 1.30 and later do.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;

/// Who a token belongs to, as the stand-in reviews it.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub username: String,
    pub groups: Vec<String>,
    /// Set for a token bound to a pod on that node.
    pub node: Option<String>,
    /// The audience it was issued for.
    pub audience: String,
}

impl TokenOwner {
    /// A projected ServiceAccount token of a pod on `node`.
    pub fn pod(namespace: &str, sa: &str, node: &str, audience: &str) -> Self {
        Self {
            username: format!("system:serviceaccount:{namespace}:{sa}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            node: Some(node.into()),
            audience: audience.into(),
        }
    }

    /// A token made with `kubectl create token` (no pod, so no node).
    pub fn service_account(namespace: &str, sa: &str, audience: &str) -> Self {
        Self {
            node: None,
            ..Self::pod(namespace, sa, "-", audience)
        }
    }
}

struct State {
    tokens: Mutex<HashMap<String, TokenOwner>>,
    /// The token the collector must present to the API server itself.
    client_token: String,
    reviews: AtomicU64,
    up: AtomicBool,
}

/// The running stand-in; it stops with the test's runtime.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub ca: PathBuf,
    state: Arc<State>,
    dir: PathBuf,
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {}", state.client_token));
    if !authorized {
        let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Unauthorized", "code": 401});
        return Ok(json(StatusCode::UNAUTHORIZED, body));
    }
    if req.method() != hyper::Method::POST
        || req.uri().path() != "/apis/authentication.k8s.io/v1/tokenreviews"
    {
        let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403});
        return Ok(json(StatusCode::FORBIDDEN, body));
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let review: serde_json::Value = match body.ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        Some(v) => v,
        None => return Ok(json(StatusCode::BAD_REQUEST, serde_json::json!({}))),
    };
    state.reviews.fetch_add(1, Ordering::Relaxed);
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let audiences: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let owner = state.tokens.lock().unwrap().get(token).cloned();
    let status = match owner {
        Some(o) if audiences.is_empty() || audiences.contains(&o.audience) => {
            let mut extra = serde_json::Map::new();
            if let Some(n) = &o.node {
                extra.insert(
                    "authentication.kubernetes.io/node-name".into(),
                    serde_json::json!([n]),
                );
                extra.insert(
                    "authentication.kubernetes.io/pod-name".into(),
                    serde_json::json!(["sockeye-agent-x1"]),
                );
            }
            serde_json::json!({
                "authenticated": true,
                "audiences": [o.audience],
                "user": {"username": o.username, "uid": "u-1", "groups": o.groups, "extra": extra},
            })
        }
        Some(_) => {
            serde_json::json!({"authenticated": false, "error": "[invalid bearer token, token audiences are invalid]"})
        }
        None => {
            serde_json::json!({"authenticated": false, "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]"})
        }
    };
    let mut answer = review.clone();
    answer["status"] = status;
    answer["apiVersion"] = "authentication.k8s.io/v1".into();
    answer["kind"] = "TokenReview".into();
    Ok(json(StatusCode::CREATED, answer))
}

impl ApiServer {
    /// Starts on the current tokio runtime; certificates and the
    /// kubeconfig go under `dir`.
    pub async fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("api dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "stand-in kube-apiserver CA");
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("server cert");
        let ca_path = dir.join("apiserver-ca.crt");
        std::fs::write(&ca_path, ca.pem()).expect("write CA");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            tokens: Mutex::new(HashMap::new()),
            client_token: "collector-own-token".into(),
            reviews: AtomicU64::new(0),
            up: AtomicBool::new(true),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                if !st.up.load(Ordering::Relaxed) {
                    // Down: the connection is reset at once.
                    drop(tcp);
                    continue;
                }
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca: ca_path,
            state,
            dir: dir.to_path_buf(),
        }
    }

    pub fn add_token(&self, token: &str, owner: TokenOwner) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.to_string(), owner);
    }

    /// Writes a kubeconfig that points at the stand-in, trusts its CA and
    /// presents the collector's own token; returns its path.
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: https://{}\n    certificate-authority: {}\nusers:\n- name: collector\n  user:\n    token: {}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: collector\ncurrent-context: standin\n",
            self.addr,
            self.ca.display(),
            self.state.client_token
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// TokenReviews answered so far.
    pub fn reviews(&self) -> u64 {
        self.state.reviews.load(Ordering::Relaxed)
    }

    /// Down: connections are reset; up again: answered.
    pub fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::Relaxed);
    }
}
