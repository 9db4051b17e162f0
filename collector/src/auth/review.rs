//! Checking a bearer token: the Kubernetes TokenReview API says whose it is
//! (and, for a token bound to a pod, on which node that pod runs), and a
//! small cache keeps one Push stream or a burst of queries from asking
//! again for every call.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::{api::PostParams, Api, Client};

use super::policy::Identity;

/// The `user.extra` key the API server fills with the node of the pod a
/// token is bound to (feature ServiceAccountTokenPodNodeInfo: beta and on by
/// default since Kubernetes 1.30).
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// What the reviewer said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    Authenticated(Identity),
    /// Not a valid token for this collector, and why.
    Rejected(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the Kubernetes TokenReview API did not answer: {source}")]
    Api {
        #[source]
        source: kube::Error,
    },
    #[error("cannot use the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes API to ask (not in a pod, no $KUBECONFIG): {source}")]
    NoCluster {
        #[source]
        source: kube::Error,
    },
}

/// Something that can tell whose a token is.
#[tonic::async_trait]
pub trait TokenReviewer: Send + Sync + 'static {
    async fn review(&self, token: &str) -> Result<Review, ReviewError>;
}

/// The TokenReview API of the cluster the collector runs in. The
/// collector's ServiceAccount needs `create` on `tokenreviews`
/// (the built-in ClusterRole `system:auth-delegator` grants it).
pub struct KubeTokenReview {
    api: Api<TokenReview>,
    audience: String,
}

impl KubeTokenReview {
    /// Tokens must have been issued for `audience` (a projected token's
    /// `audience`; `kubectl create token --audience`), so a token meant for
    /// another service cannot be replayed here.
    pub fn new(client: Client, audience: impl Into<String>) -> Self {
        Self {
            api: Api::all(client),
            audience: audience.into(),
        }
    }

    /// Through the cluster `kubeconfig` names, or (`None`) the pod's own
    /// ServiceAccount in a pod, else `$KUBECONFIG` / `~/.kube/config`.
    pub async fn connect(
        kubeconfig: Option<&std::path::Path>,
        audience: impl Into<String>,
    ) -> Result<Self, ReviewError> {
        Ok(Self::new(kube_client(kubeconfig).await?, audience))
    }
}

/// A client of the cluster `kubeconfig` names, or (`None`) of the one the
/// pod runs in, else `$KUBECONFIG` / `~/.kube/config`. The collector makes
/// one and shares it (TokenReview, Events).
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<Client, ReviewError> {
    match kubeconfig {
        Some(path) => {
            let bad = |source| ReviewError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(bad)?;
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(bad)?;
            Client::try_from(config).map_err(|source| ReviewError::NoCluster { source })
        }
        None => Client::try_default()
            .await
            .map_err(|source| ReviewError::NoCluster { source }),
    }
}

#[tonic::async_trait]
impl TokenReviewer for KubeTokenReview {
    async fn review(&self, token: &str) -> Result<Review, ReviewError> {
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let answer = self
            .api
            .create(&PostParams::default(), &request)
            .await
            .map_err(|source| ReviewError::Api { source })?;
        Ok(judge(answer.status.as_ref(), &self.audience))
    }
}

/// The identity in a TokenReview's status, or why there is none.
pub fn judge(status: Option<&TokenReviewStatus>, audience: &str) -> Review {
    let Some(s) = status else {
        return Review::Rejected("the TokenReview answer has no status".into());
    };
    if s.authenticated != Some(true) {
        let why = s
            .error
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "not authenticated".into());
        return Review::Rejected(why);
    }
    // An API server that ignores audiences would accept any of the user's
    // tokens; it must say this one is for us.
    if !s
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| x == audience))
    {
        return Review::Rejected(format!(
            "the token was not issued for audience {audience:?}"
        ));
    }
    let Some(user) = &s.user else {
        return Review::Rejected("the TokenReview answer names no user".into());
    };
    let Some(username) = user.username.clone().filter(|u| !u.is_empty()) else {
        return Review::Rejected("the TokenReview answer names no user".into());
    };
    let node = user
        .extra
        .as_ref()
        .and_then(|e| e.get(NODE_NAME_EXTRA))
        .and_then(|v| match v.as_slice() {
            [one] if !one.is_empty() => Some(one.clone()),
            _ => None,
        });
    Review::Authenticated(Identity {
        username,
        groups: user.groups.clone().unwrap_or_default(),
        node,
    })
}

/// Reviews remembered for a while, keyed by the token itself (held in
/// memory like any credential the process sees, never logged). Accepted
/// tokens are kept `accepted_for`, rejected ones `rejected_for` (shorter, so
/// a token that was just issued is soon tried again). At most `max`
/// entries: when full, expired ones go first, then all of them.
pub struct ReviewCache {
    entries: Mutex<HashMap<String, (Instant, Review)>>,
    accepted_for: Duration,
    rejected_for: Duration,
    max: usize,
}

impl ReviewCache {
    pub fn new(accepted_for: Duration, rejected_for: Duration, max: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            accepted_for,
            rejected_for,
            max: max.max(1),
        }
    }

    pub fn get(&self, token: &str, now: Instant) -> Option<Review> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (until, review) = entries.get(token)?;
        (now < *until).then(|| review.clone())
    }

    pub fn put(&self, token: &str, review: Review, now: Instant) {
        let ttl = match review {
            Review::Authenticated(_) => self.accepted_for,
            Review::Rejected(_) => self.rejected_for,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max {
            entries.retain(|_, (until, _)| now < *until);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(token.to_string(), (now + ttl, review));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(auth: bool, audiences: &[&str], node: Option<&str>) -> TokenReviewStatus {
        let mut extra = BTreeMap::new();
        if let Some(n) = node {
            extra.insert(NODE_NAME_EXTRA.to_string(), vec![n.to_string()]);
        }
        TokenReviewStatus {
            authenticated: Some(auth),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:sockeye:sockeye-agent".into()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                extra: Some(extra),
                uid: None,
            }),
            error: None,
        }
    }

    #[test]
    fn a_bound_token_names_its_user_and_node() {
        let r = judge(
            Some(&status(true, &["sockeye-collector"], Some("n1"))),
            "sockeye-collector",
        );
        let Review::Authenticated(id) = r else {
            panic!("{r:?}")
        };
        assert_eq!(id.node.as_deref(), Some("n1"));
        assert_eq!(id.username, "system:serviceaccount:sockeye:sockeye-agent");
        let r = judge(
            Some(&status(true, &["sockeye-collector"], None)),
            "sockeye-collector",
        );
        assert!(matches!(
            r,
            Review::Authenticated(Identity { node: None, .. })
        ));
    }

    #[test]
    fn wrong_audience_unauthenticated_and_empty_answers_are_rejected() {
        let r = judge(
            Some(&status(
                true,
                &["https://kubernetes.default.svc"],
                Some("n1"),
            )),
            "sockeye-collector",
        );
        assert!(
            matches!(r, Review::Rejected(ref w) if w.contains("audience")),
            "{r:?}"
        );
        let mut s = status(false, &[], None);
        s.error = Some("token has expired".into());
        assert_eq!(
            judge(Some(&s), "sockeye-collector"),
            Review::Rejected("token has expired".into())
        );
        assert!(matches!(judge(None, "a"), Review::Rejected(_)));
    }

    #[test]
    fn the_cache_forgets_after_its_time_and_stays_bounded() {
        let c = ReviewCache::new(Duration::from_secs(60), Duration::from_secs(5), 2);
        let t0 = Instant::now();
        c.put("bad", Review::Rejected("no".into()), t0);
        assert!(c.get("bad", t0 + Duration::from_secs(4)).is_some());
        assert!(c.get("bad", t0 + Duration::from_secs(6)).is_none());
        c.put("a", Review::Rejected("x".into()), t0);
        c.put(
            "b",
            Review::Rejected("y".into()),
            t0 + Duration::from_secs(10),
        );
        assert!(c.len() <= 2);
    }
}
