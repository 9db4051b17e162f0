//! Pool exhaustion, from a client ("10.0.0.9:5432 accepts no more
//! connections from shop/web-1/app ...") or at a server whose accept queue
//! overflows ("... cannot accept connections on port 5432 as fast as they
//! arrive").

use super::{plain, text, Cx, Words};

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    if cx.has("listen_overflows") {
        server(cx)
    } else {
        client(cx)
    }
}

/// The accept queue facts, shared by both shapes; `Some("")` for a key
/// it does not know.
fn queue(cx: &mut Cx<'_, '_>, key: &str) -> Option<String> {
    match key {
        "accept_queue_waiting" => {
            let waiting = cx.n("accept_queue_waiting");
            let limit = cx.n("accept_queue_limit");
            let who =
                cx.v.fact("accept_queue_waiting")
                    .cloned()
                    .map(|f| cx.about_of(&f))
                    .unwrap_or_default();
            Some(format!(
                "accept queue of {who} on port {}: {waiting} waiting, limit {limit}{}",
                cx.n("accept_queue_port"),
                if waiting > limit { ": full" } else { "" }
            ))
        }
        "accept_queue_limit" | "accept_queue_port" => None,
        _ => Some(String::new()),
    }
}

fn client(cx: &mut Cx<'_, '_>) -> Words {
    let label = cx.subject();
    let dest = cx.dest();
    let failed = cx.n("connects_failed");
    let waited = failed + cx.n("slow_connects") + cx.n("connects_waiting");
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "established" => format!(
                "{} connections open to {dest}, flat at that ceiling since {}",
                f.n(),
                cx.at("ceiling")
            ),
            "connects_failed" => {
                let slow = cx.n("slow_connects");
                format!(
                    "{} connects failed in the last {} ({} timed out, {} given up by the application){}",
                    f.n(),
                    cx.span("window_s"),
                    cx.n("timed_out"),
                    cx.n("aborted"),
                    if slow > 0 {
                        format!(" and {slow} took longer than {}", cx.span("slow_connect_s"))
                    } else {
                        String::new()
                    }
                )
            }
            "connects_waiting" => format!("{} connects waiting for an answer now", f.n()),
            "syn_retransmits" => format!(
                "{} SYN retransmissions: the server is dropping new connections",
                f.n()
            ),
            "connect_p99_s" => format!(
                "connect latency p50 {} p99 {} max {}",
                cx.span("connect_p50_s"),
                text::span(f.ns()),
                cx.span("connect_max_s")
            ),
            "ceiling" | "timed_out" | "aborted" | "slow_connects" | "slow_connect_s"
            | "window_s" | "connect_p50_s" | "connect_max_s" => return None,
            k => match queue(cx, k) {
                Some(s) if s.is_empty() => plain(f),
                other => return other,
            },
        })
    });
    Words {
        summary: format!(
            "{dest} accepts no more connections from {label}: {} open at a ceiling, {waited} connects failed or waited",
            cx.n("established")
        ),
        facts,
        next_step: format!(
            "check {dest}'s connection limit and accept backlog (is it accepting? ss -lnt shows its queue), and whether {label} returns connections to its pool"
        ),
    }
}

fn server(cx: &mut Cx<'_, '_>) -> Words {
    let label = cx.subject();
    let rose = cx.n("listen_overflows");
    let port = cx.v.destination.as_ref().map_or(0, |d| d.port);
    let who =
        cx.v.fact("listener_pid")
            .cloned()
            .map(|f| cx.about_of(&f))
            .unwrap_or_default();
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "listen_overflows" => format!(
                "{} connections dropped by a full accept queue (ListenOverflows) in {label}'s network namespace in the last {}",
                f.n(),
                cx.span("overflow_window_s")
            ),
            "overflow_window_s" | "listener_pid" => return None,
            k => match queue(cx, k) {
                Some(s) if s.is_empty() => plain(f),
                other => return other,
            },
        })
    });
    Words {
        summary: format!(
            "{label} ({who}) cannot accept connections on port {port} as fast as they arrive: {rose} dropped"
        ),
        facts,
        next_step: format!(
            "{label} accepts too slowly or its backlog is too small: check its worker/thread pool, what blocks its accept loop, and its listen backlog (net.core.somaxconn)"
        ),
    }
}
