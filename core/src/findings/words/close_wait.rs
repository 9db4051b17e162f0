//! "shop/web-1/app does not close 8 connections to 10.0.0.9:8080 that the
//! peer has closed (CLOSE_WAIT)".

use super::{peer, plain, text, Cx, Words};

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let label = cx.subject();
    let peer = peer(cx);
    let waited = cx.n("close_wait_sockets");
    let single = cx.v.facts_of("held_by").count() == 1 && !cx.has("other_owners");
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "close_wait_sockets" => format!(
                "{} sockets {peer} in CLOSE_WAIT for more than {} ({} in CLOSE_WAIT in all, {} open)",
                f.n(),
                cx.span("min_wait_s"),
                cx.n("close_wait_total"),
                cx.n("open_sockets")
            ),
            "longest_wait_s" => format!(
                "the oldest has waited {} (since {})",
                text::span(f.ns()),
                text::clock_time(f.at_ns)
            ),
            "held_by" if single => format!("all held by {}", cx.about_of(f)),
            "held_by" => format!("{} held by {}", f.n(), cx.about_of(f)),
            "other_owners" => format!("{} held by other processes", f.n()),
            "min_wait_s" | "close_wait_total" | "open_sockets" | "accepted" => return None,
            _ => plain(f),
        })
    });
    Words {
        summary: format!(
            "{label} does not close {waited} connections {peer} that the peer has closed (CLOSE_WAIT)"
        ),
        facts,
        next_step: format!(
            "find where {label} stops using its connections {peer} without closing them: a missing close() after EOF, or an error path that skips the release"
        ),
    }
}
