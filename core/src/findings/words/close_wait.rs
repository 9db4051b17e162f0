//! "shop/web-1/app does not close 8 connections to 10.0.0.9:8080 that the
//! peer has closed (CLOSE_WAIT)".

use super::{peer, text, Cx, Words};

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let label = cx.subject();
    let peer = peer(cx);
    let waited = cx.n("close_wait_sockets");
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "close_wait_sockets" => format!(
                "{} sockets {peer} in CLOSE_WAIT for more than {} ({} in CLOSE_WAIT in all, {} open)",
                f.n(),
                cx.span("min_wait_s"),
                cx.n("close_wait_total"),
                cx.n("open_sockets")
            ),
            "min_wait_s" => format!("counted when waiting longer than {}", text::span(f.ns())),
            "close_wait_total" => format!("{} in CLOSE_WAIT in all", f.n()),
            "open_sockets" => format!("{} open", f.n()),
            "longest_wait_s" => format!(
                "the oldest has waited {} (since {})",
                text::span(f.ns()),
                text::clock_time(f.at_ns)
            ),
            "accepted" => format!(
                "the connections were {} by {label}",
                if f.value != 0.0 { "accepted" } else { "opened" }
            ),
            "held_by" => format!("{} held by {}", f.n(), cx.about_of(f)),
            "other_owners" => format!("{} held by other processes", f.n()),
            _ => return None,
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
