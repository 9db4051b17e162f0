//! A server at its connection limit ("data/pg-0/postgres is at its
//! connection limit on port 5432: it holds 20 connections, flat for 31s,
//! and closes new ones at once"), and the same seen from a client of a
//! server elsewhere ("10.0.0.9:5672 closes shop/worker/app's new sessions
//! at once").

use super::{number, plain, text, Cx, Words};
use crate::findings::Kind;

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    match cx.v.kind {
        Kind::ServerAtLimit => server(cx),
        _ => client(cx),
    }
}

/// "within 500ms, having sent at most 320 bytes".
fn refusal() -> String {
    format!(
        "within {} of opening, having sent at most {} bytes",
        text::span(crate::aggregate::flows::SHORT_SESSION_NS),
        crate::aggregate::flows::FEW_BYTES
    )
}

fn server(cx: &mut Cx<'_, '_>) -> Words {
    let server = cx.subject();
    let port = cx.v.destination.as_ref().map_or(0, |d| d.port);
    let held = cx.n("held_connections");
    let refused = cx.n("refused_sessions");
    let rate = number(cx.value("refused_per_s"));
    let window = cx.span("window_s");
    let flat = cx.span("flat_for_s");
    let holder =
        cx.v.fact("held_by")
            .cloned()
            .map(|f| cx.about_of(&f))
            .unwrap_or_else(|| "its clients".into());
    let clients = cx.abouts_of("refused_from");
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "held_connections" => format!(
                "{server} holds {} connections on port {port}, none more for {flat} (since {})",
                f.n(),
                text::clock_time(f.at_ns)
            ),
            "refused_sessions" => format!(
                "{} new connections closed by {server} {} in the last {window} ({rate}/s)",
                f.n(),
                refusal()
            ),
            "refused_from" => format!("{} refused from {}", f.n(), cx.about_of(f)),
            "held_by" => format!("{} held by {}", f.n(), cx.about_of(f)),
            "flat_for_s" | "refused_per_s" | "window_s" => return None,
            k if k.starts_with("probed_") => return super::probed(cx, f, None),
            _ => plain(f),
        })
    });
    Words {
        summary: format!(
            "{server} is at its connection limit on port {port}: it holds {held} connections, flat for {flat}, and closes new ones at once ({refused} refused in {window})"
        ),
        facts,
        next_step: format!(
            "{server} has reached a limit (redis maxclients, PostgreSQL max_connections, a full worker pool): free the connections {holder} holds, or raise the limit; meanwhile its new clients ({}) are refused",
            if clients.is_empty() {
                "-".to_string()
            } else {
                clients.join(", ")
            }
        ),
    }
}

fn client(cx: &mut Cx<'_, '_>) -> Words {
    let label = cx.subject();
    let dest = cx.dest();
    let refused = cx.n("refused_sessions");
    let window = cx.span("window_s");
    let rate = number(cx.value("refused_per_s"));
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "refused_sessions" => format!(
                "{} sessions to {dest} closed by the server {} in the last {window} ({rate}/s)",
                f.n(),
                refusal()
            ),
            "established" => format!("{} other connections to it stay open", f.n()),
            "connects_ok" => format!(
                "{} connects completed in all: the server accepts, then says no",
                f.n()
            ),
            "refused_per_s" | "window_s" => return None,
            k if k.starts_with("probed_") => return super::probed(cx, f, None),
            _ => plain(f),
        })
    });
    Words {
        summary: format!(
            "{dest} closes {label}'s new sessions at once: {refused} in the last {window}"
        ),
        facts,
        next_step: format!(
            "{dest} refuses these sessions: it is at its connection limit, or rejects {label}'s credentials (a rotated secret); its logs say which (too many clients, authentication failed)"
        ),
    }
}
