//! Pool exhaustion, from a client ("10.0.0.9:5432 accepts no more
//! connections from shop/web-1/app ...") or at a server whose accept queue
//! overflows ("... cannot accept connections on port 5432 as fast as they
//! arrive").

use super::{text, Cx, Words};

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    if cx.has("listen_overflows") {
        server(cx)
    } else {
        client(cx)
    }
}

/// The accept queue facts, shared by both shapes.
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
        "accept_queue_limit" => Some(format!(
            "its listen backlog is {}",
            cx.n("accept_queue_limit")
        )),
        "accept_queue_port" => Some(format!("on port {}", cx.n("accept_queue_port"))),
        _ => None,
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
            "ceiling" => format!("the ceiling: {} established", f.n()),
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
            "timed_out" => format!("{} timed out", f.n()),
            "aborted" => format!("{} given up by the application", f.n()),
            "slow_connects" => format!(
                "{} took longer than {}",
                f.n(),
                cx.span("slow_connect_s")
            ),
            "slow_connect_s" => format!("slow means longer than {}", text::span(f.ns())),
            "window_s" => format!("judged over the last {}", text::span(f.ns())),
            "connects_waiting" => format!("{} connects waiting for an answer now", f.n()),
            "syn_retransmits" => format!(
                "{} SYN retransmissions: the server is dropping new connections",
                f.n()
            ),
            "connect_p50_s" => format!("connect latency p50 {}", text::span(f.ns())),
            "connect_p99_s" => format!(
                "connect latency p50 {} p99 {} max {}",
                cx.span("connect_p50_s"),
                text::span(f.ns()),
                cx.span("connect_max_s")
            ),
            "connect_max_s" => format!("slowest connect {}", text::span(f.ns())),
            k => return queue(cx, k),
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
            "overflow_window_s" => format!("counted over {}", text::span(f.ns())),
            "listener_pid" => format!("the listener is {}", cx.about_of(f)),
            k => return queue(cx, k),
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
