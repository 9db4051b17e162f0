//! "shop/web-1/app is leaking connections to 10.0.0.9:6379".

use super::{peer, plain, text, Cx, Words};

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let label = cx.subject();
    let peer = peer(cx);
    let verb = if cx.yes("accepted") {
        "accepted"
    } else {
        "opened"
    };
    let since = cx.at("baseline_sockets");
    let single = cx.v.facts_of("held_by").count() == 1 && !cx.has("other_owners");
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "open_sockets" => format!(
                "{} sockets open (was {} at {since})",
                f.n(),
                cx.n("baseline_sockets")
            ),
            "growth_per_min" => format!("+{:.0}/min over {}", f.value, cx.span("growth_span_s")),
            "closed" => format!(
                "{} {verb} and {} closed since {since}",
                cx.n("opened"),
                f.n()
            ),
            "oldest_age_s" => format!(
                "oldest open {}; {} open longer than 1m",
                text::span(f.ns()),
                cx.n("open_older_than_1m")
            ),
            "idle_sockets" => format!(
                "{} of {} idle for more than {} (median idle {}, longest {})",
                f.n(),
                cx.n("described_sockets"),
                cx.span("idle_after_s"),
                cx.span("idle_median_s"),
                cx.span("idle_longest_s")
            ),
            "held_by" if single => format!("all {verb} by {}", cx.about_of(f)),
            "held_by" => format!("{} {verb} by {}", f.n(), cx.about_of(f)),
            "other_owners" => format!("{} by other processes", f.n()),
            k if k.starts_with("limit_") => return super::at_limit(cx, f),
            "held_at_server" => format!(
                "{} of them held open at the server, {}",
                f.n(),
                cx.about_of(f)
            ),
            // Said with the facts above.
            "baseline_sockets" | "growth_span_s" | "opened" | "open_older_than_1m" | "accepted"
            | "described_sockets" | "idle_after_s" | "idle_median_s" | "idle_longest_s" => {
                return None
            }
            k if k.starts_with("probed_") => return super::probed(cx, f, None),
            _ => plain(f),
        })
    });
    let client = match text::service_of_port(cx.v.destination.as_ref().map_or(0, |d| d.port)) {
        Some(svc) if !cx.yes("accepted") => format!("the {svc} client's"),
        _ => "the connection".to_string(),
    };
    let limit = limit_suffix(cx);
    Words {
        summary: format!("{label} is leaking connections {peer}{limit}"),
        facts,
        next_step: format!(
            "check {client} pool release path in {label}: connections {peer} are {verb} and not closed"
        ),
    }
}

/// "; shop/pg-0/postgres is at its connection limit and refuses new ones",
/// when a server's limit was folded into this verdict.
pub(super) fn limit_suffix(cx: &mut Cx<'_, '_>) -> String {
    match cx.v.fact("limit_server").cloned() {
        Some(f) => format!(
            "; {} is at its connection limit and refuses new ones",
            cx.about_of(&f)
        ),
        None => String::new(),
    }
}
