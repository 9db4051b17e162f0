//! "shop/web-1/app is leaking connections to 10.0.0.9:6379".

use super::{peer, text, Cx, Words};

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let label = cx.subject();
    let peer = peer(cx);
    let verb = if cx.yes("accepted") {
        "accepted"
    } else {
        "opened"
    };
    let since = cx.at("baseline_sockets");
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "open_sockets" => format!(
                "{} sockets open (was {} at {since})",
                f.n(),
                cx.n("baseline_sockets")
            ),
            "baseline_sockets" => format!("{} open at {since}, when the growth began", f.n()),
            "growth_per_min" => format!("+{:.0}/min over {}", f.value, cx.span("growth_span_s")),
            "growth_span_s" => format!("growing for {}", text::span(f.ns())),
            "opened" => format!("{} {verb} since {since}", f.n()),
            "closed" => format!("{} closed since {since}", f.n()),
            "oldest_age_s" => format!("oldest open {}", text::span(f.ns())),
            "open_older_than_1m" => format!("{} open longer than 1m", f.n()),
            "accepted" => format!("the connections were {verb} by {label}"),
            "idle_sockets" => format!(
                "{} of {} idle for more than {} (median idle {}, longest {})",
                f.n(),
                cx.n("described_sockets"),
                cx.span("idle_after_s"),
                cx.span("idle_median_s"),
                cx.span("idle_longest_s")
            ),
            "described_sockets" => format!("{} of them described by the kernel", f.n()),
            "idle_after_s" => format!("idle means no data for {}", text::span(f.ns())),
            "idle_median_s" => format!("median idle {}", text::span(f.ns())),
            "idle_longest_s" => format!("longest idle {}", text::span(f.ns())),
            "held_by" => format!("{} {verb} by {}", f.n(), cx.about_of(f)),
            "other_owners" => format!("{} by other processes", f.n()),
            _ => return None,
        })
    });
    let client = match text::service_of_port(cx.v.destination.as_ref().map_or(0, |d| d.port)) {
        Some(svc) if !cx.yes("accepted") => format!("the {svc} client's"),
        _ => "the connection".to_string(),
    };
    Words {
        summary: format!("{label} is leaking connections {peer}"),
        facts,
        next_step: format!(
            "check {client} pool release path in {label}: connections {peer} are {verb} and not closed"
        ),
    }
}
