//! Authentication and authorisation of every call.
//!
//! Agents and readers present a Kubernetes ServiceAccount token as
//! `authorization: Bearer <token>`. The collector asks the TokenReview API
//! whose it is ([`review`]); a token bound to an agent's pod also names the
//! node that pod runs on, and the collector lets it push only windows of
//! that node. Who may push and who may read are separate lists
//! ([`policy`]). A call without a token is anonymous: refused on TCP unless
//! configured otherwise, allowed on the unix socket, whose file mode (0600)
//! already decides who can connect.

pub mod policy;
pub mod review;

use std::{
    sync::{atomic::AtomicI64, Arc},
    time::{Duration, Instant},
};

use tonic::{metadata::MetadataMap, Extensions, Status};

pub use policy::{Caller, Denied, Identity, Listener, Perms, Policy, Subject};
pub use review::{kube_client, KubeTokenReview, Review, ReviewCache, ReviewError, TokenReviewer};

use crate::{accept::PeerInfo, stats::Counters};

/// Accepted tokens are not asked about again for this long; a revoked token
/// keeps working at most this much longer (and on a stream opened before).
const ACCEPTED_FOR: Duration = Duration::from_secs(60);
const REJECTED_FOR: Duration = Duration::from_secs(5);
const CACHE_ENTRIES: usize = 8192;

/// The token reviewer of a configuration (a wrapper so the configuration
/// can still be printed).
#[derive(Clone)]
pub struct Reviewer(pub Arc<dyn TokenReviewer>);

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reviewer(..)")
    }
}

/// Turns a request into a [`Caller`] and checks it against the policy.
pub(crate) struct Auth {
    policy: Policy,
    reviewer: Option<Reviewer>,
    cache: ReviewCache,
    counters: Arc<Counters>,
    /// Unix seconds of the last refusal logged, so a client that keeps
    /// trying fills the counters, not the log.
    last_logged: AtomicI64,
}

fn bearer(meta: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(v) = meta.get("authorization") else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| {
        Status::unauthenticated("the authorization header is not text; send `Bearer <token>`")
    })?;
    match v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
    {
        Some(t) if !t.trim().is_empty() => Ok(Some(t.trim())),
        _ => Err(Status::unauthenticated(
            "the authorization header must be `Bearer <token>`",
        )),
    }
}

/// Which listener and peer a request came from. Connections the collector
/// accepted itself carry [`PeerInfo`] (TCP); unix sockets carry tonic's
/// `UdsConnectInfo`. Anything else (routes mounted in another server) is
/// treated as TCP from an unknown address, the stricter of the two.
fn listener_of(ext: &Extensions) -> (Listener, Option<std::net::IpAddr>) {
    if let Some(p) = ext.get::<PeerInfo>() {
        return (Listener::Tcp, Some(p.remote.ip()));
    }
    if ext
        .get::<tonic::transport::server::UdsConnectInfo>()
        .is_some()
    {
        return (Listener::Unix, None);
    }
    if let Some(t) = ext.get::<tonic::transport::server::TcpConnectInfo>() {
        return (Listener::Tcp, t.remote_addr.map(|a| a.ip()));
    }
    (Listener::Tcp, None)
}

impl Auth {
    pub fn new(policy: Policy, reviewer: Option<Reviewer>, counters: Arc<Counters>) -> Self {
        Self {
            policy,
            reviewer,
            cache: ReviewCache::new(ACCEPTED_FOR, REJECTED_FOR, CACHE_ENTRIES),
            counters,
            last_logged: AtomicI64::new(0),
        }
    }

    /// Who sent this request. A token that is not valid is refused here
    /// (`Unauthenticated`); one that cannot be checked now gets
    /// `Unavailable` (retry later).
    pub async fn caller(&self, meta: &MetadataMap, ext: &Extensions) -> Result<Caller, Status> {
        let (listener, ip) = listener_of(ext);
        let anonymous = Caller::Anonymous { listener, ip };
        let Some(token) = bearer(meta)? else {
            return Ok(anonymous);
        };
        let Some(reviewer) = &self.reviewer else {
            // Tokens are not checked here (--auth none): what the caller may
            // do is what anonymous callers may do, token or not.
            return Ok(anonymous);
        };
        let review = match self.cache.get(token, Instant::now()) {
            Some(r) => r,
            None => {
                let r = reviewer.0.review(token).await.map_err(|e| {
                    Counters::add(&self.counters.auth_review_errors, 1);
                    self.log_refusal(&format!("cannot check a token: {e}"));
                    Status::unavailable(format!("the collector cannot check tokens right now: {e}"))
                })?;
                self.cache.put(token, r.clone(), Instant::now());
                r
            }
        };
        match review {
            Review::Authenticated(id) => Ok(Caller::Authenticated(id)),
            Review::Rejected(why) => {
                Counters::add(&self.counters.auth_tokens_rejected, 1);
                let msg = format!("the token was not accepted: {why}");
                self.log_refusal(&format!("{msg} (from {})", anonymous));
                Err(Status::unauthenticated(msg))
            }
        }
    }

    /// The caller, if it may query.
    pub async fn reader(&self, meta: &MetadataMap, ext: &Extensions) -> Result<Caller, Status> {
        let caller = self.caller(meta, ext).await?;
        self.policy.may_read(&caller).map_err(|d| {
            Counters::add(&self.counters.auth_reads_refused, 1);
            self.log_refusal(&format!("query refused ({caller}): {d}"));
            refusal(&caller, d)
        })?;
        Ok(caller)
    }

    /// The caller, if it may open a Push stream; the node it may push as
    /// is checked at its Hello ([`Auth::push_as`]).
    pub async fn pusher(&self, meta: &MetadataMap, ext: &Extensions) -> Result<Caller, Status> {
        let caller = self.caller(meta, ext).await?;
        self.policy.may_push(&caller).map_err(|d| {
            Counters::add(&self.counters.auth_pushes_refused, 1);
            self.log_refusal(&format!("push refused ({caller}): {d}"));
            refusal(&caller, d)
        })?;
        Ok(caller)
    }

    /// Whether `caller` may push windows of `node`. Always logged when
    /// refused: someone pushing under another node's name is an attack or
    /// a broken deployment, and either needs a look.
    pub fn push_as(&self, caller: &Caller, node: &str) -> Result<(), Status> {
        self.policy.may_push_as(caller, node).map_err(|d| {
            Counters::add(&self.counters.auth_pushes_refused, 1);
            log::warn!("push refused ({caller}): {d}");
            Status::permission_denied(d.0)
        })
    }

    fn log_refusal(&self, what: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = crate::collector::unix_ms_now() / 1000;
        let last = self.last_logged.load(Relaxed);
        if now - last >= 10
            && self
                .last_logged
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            log::warn!("{what} (further refusals for 10 s are only counted)");
        }
    }
}

fn refusal(caller: &Caller, d: Denied) -> Status {
    match caller {
        Caller::Anonymous { .. } => Status::unauthenticated(d.0),
        Caller::Authenticated(_) => Status::permission_denied(d.0),
    }
}
