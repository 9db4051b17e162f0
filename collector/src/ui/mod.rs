//! The web view on the collector's HTTP port: one page (`/ui`) with the
//! cluster's open findings, their evidence and a timeline of the signals
//! behind each, and the flows of a workload, polled from JSON endpoints
//! under `/ui/api/`. Its files are compiled into the binary (no CDN: it
//! works offline and in air-gapped clusters).
//!
//! Served behind the same authentication as queries: a reader's token as
//! `Authorization: Bearer`, or the cookie `/ui/login` sets from one (a
//! browser cannot add a header to a page it navigates to), unless the
//! collector runs with `--ui-anonymous`. The page, its script and the data
//! carry a strict Content-Security-Policy, and the script writes what it
//! shows as text, never as markup: names come from the cluster.

mod data;

use std::time::Instant;

use axum::{
    extract::{ConnectInfo, State},
    http::{header, HeaderMap, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tonic::metadata::MetadataMap;

use crate::{
    accept::PeerInfo,
    auth::Caller,
    limits::{Kind, Refused},
    stats::Counters,
    Collector,
};

const PAGE: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const LOGIN_JS: &str = include_str!("assets/login.js");
const STYLE: &str = include_str!("assets/style.css");

/// The cookie `/ui/login` sets: the reader's token itself, so every
/// request is checked exactly as a query with that token is (and stops
/// working when the token expires or is revoked).
const COOKIE: &str = "sockeye_ui";
/// Nothing but the collector's own files; no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub(crate) fn routes() -> Router<Collector> {
    Router::new()
        .route("/ui", get(|c, p, u, h| guard(c, p, u, h, Asset::Page)))
        .route(
            "/ui/api/findings",
            get(|c, p, u, h| guard(c, p, u, h, Asset::Findings)),
        )
        .route(
            "/ui/api/flows",
            get(|c, p, u, h| guard(c, p, u, h, Asset::Flows)),
        )
        .route(
            "/ui/login",
            get(|| async { html(StatusCode::OK, LOGIN) }).post(login),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route(
            "/ui/login.js",
            get(|| async { asset("text/javascript", LOGIN_JS) }),
        )
        .route("/ui/style.css", get(|| async { asset("text/css", STYLE) }))
}

#[derive(Clone, Copy)]
enum Asset {
    Page,
    Findings,
    Flows,
}

fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn html(status: StatusCode, body: &'static str) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    secure_headers(&mut r);
    r
}

fn asset(ty: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, ty)], body).into_response();
    secure_headers(&mut r);
    r
}

/// The request's credentials as gRPC metadata: its Authorization header,
/// else the cookie's token as one.
fn metadata(h: &HeaderMap) -> MetadataMap {
    let mut headers = axum::http::HeaderMap::new();
    if let Some(v) = h.get(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, v.clone());
    } else if let Some(token) = cookie(h) {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(header::AUTHORIZATION, v);
        }
    }
    MetadataMap::from_headers(headers)
}

fn cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
        .filter(|t| !t.is_empty())
}

/// Whether the caller may read, as for a query; `Err` is the refusal.
async fn reader(
    c: &Collector,
    peer: std::net::SocketAddr,
    h: &HeaderMap,
) -> Result<Caller, Response> {
    if c.shared.config.ui_anonymous {
        return Ok(Caller::Anonymous {
            listener: crate::auth::Listener::Tcp,
            ip: Some(peer.ip()),
        });
    }
    let mut ext = tonic::Extensions::new();
    ext.insert(PeerInfo {
        remote: peer,
        tls: false,
    });
    c.shared
        .auth
        .reader(&metadata(h), &ext)
        .await
        .map_err(|status| {
            Counters::add(&c.shared.counters.ui_refused, 1);
            let code = match status.code() {
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            let mut r = (
                code,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                LOGIN,
            )
                .into_response();
            secure_headers(&mut r);
            if let Ok(v) = HeaderValue::from_str(&format!(
                "Bearer realm=\"sockeye\", error_description=\"{}\"",
                status.message().replace(['"', '\\'], "'")
            )) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r
        })
}

async fn guard(
    State(c): State<Collector>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    uri: Uri,
    h: HeaderMap,
    what: Asset,
) -> Response {
    let caller = match reader(&c, peer, &h).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    if let Asset::Page = what {
        return html(StatusCode::OK, PAGE);
    }
    // The data costs what a query costs, from the same per-caller budget.
    let key = caller.key();
    let limits = &c.shared.per_caller;
    let _slot = match limits.acquire(&key, Kind::Query, Instant::now()) {
        Ok(slot) => slot,
        Err(refused) => {
            let counters = &c.shared.counters;
            match refused {
                Refused::Busy { .. } => Counters::add(&counters.caller_limit_refused, 1),
                Refused::Budget { .. } => Counters::add(&counters.query_cost_refused, 1),
            }
            let body = serde_json::json!({"error": refused.to_string()}).to_string();
            let mut r = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
            secure_headers(&mut r);
            return r;
        }
    };
    let (mut r, read) = match what {
        Asset::Findings => data::findings(&c).await,
        Asset::Flows | Asset::Page => data::flows(&c, uri.query().unwrap_or_default()).await,
    };
    limits.charge(&key, read, Instant::now());
    secure_headers(&mut r);
    r
}

/// Checks the Bearer token like any request and, if it may read, keeps it
/// in a cookie only this collector's `/ui` receives (HttpOnly: no script
/// reads it; SameSite=Strict: no other site's page sends it).
async fn login(
    State(c): State<Collector>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    h: HeaderMap,
) -> Response {
    if let Err(refused) = reader(&c, peer, &h).await {
        return refused;
    }
    let token = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let mut r = StatusCode::NO_CONTENT.into_response();
    if !token.is_empty() {
        let cookie = format!("{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=3600");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    secure_headers(&mut r);
    r
}
