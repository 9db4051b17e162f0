//! "data/redis-0/redis holds 120 connections on port 6379 whose clients
//! are gone: each restart of auth/otp-service/app left 40 (3 restarts in
//! 10m)".

use super::{plain, text, Cx, Words};

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let server = cx.subject();
    let port = cx.v.destination.as_ref().map_or(0, |d| d.port);
    let stale = cx.n("stale_connections");
    let held = cx.n("held_connections");
    let window = cx.span("restart_window_s");
    // The workload whose restarts left the most (facts come sorted).
    let lead = cx.v.fact("client_restarts").cloned();
    let lead = lead.map(|f| {
        let per =
            cx.v.facts
                .iter()
                .find(|g| g.key == "left_per_instance" && g.about == f.about)
                .map_or(0.0, |g| g.value);
        (cx.about_of(&f), f.n(), per)
    });
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "stale_connections" => format!(
                "{} of the {held} connections {server} holds on port {port} belong to clients that are gone (their socket closed, or their pod removed, without a FIN reaching {server})",
                f.n()
            ),
            "stale_from" => format!(
                "{} from {} (gone since {})",
                f.n(),
                cx.about_of(f),
                text::clock_time(f.at_ns)
            ),
            "stale_from_others" => format!("{} from other clients that are gone", f.n()),
            "client_restarts" => {
                let instances = cx
                    .v
                    .facts
                    .iter()
                    .find(|g| g.key == "dead_instances" && g.about == f.about)
                    .map_or(0, crate::findings::Fact::n);
                let per = cx
                    .v
                    .facts
                    .iter()
                    .find(|g| g.key == "left_per_instance" && g.about == f.about)
                    .map_or(0.0, |g| g.value);
                format!(
                    "{}: {} restarts in the last {window}; {instances} instances gone, each left {} connections behind",
                    cx.about_of(f),
                    f.n(),
                    super::number(per)
                )
            }
            k if k.starts_with("limit_") => return super::at_limit(cx, f),
            "oldest_stale_s" => format!(
                "the oldest has been held for {} since its client left",
                text::span(f.ns())
            ),
            "held_connections" | "stale_ratio" | "dead_instances" | "left_per_instance"
            | "restart_window_s" => return None,
            k if k.starts_with("probed_") => return super::probed(cx, f, None),
            _ => plain(f),
        })
    });
    let summary = match &lead {
        Some((who, restarts, per)) if *restarts > 0 => format!(
            "{server} holds {stale} connections on port {port} whose clients are gone: each restart of {who} leaves {} behind ({restarts} restarts in {window})",
            super::number(*per)
        ),
        Some((who, _, _)) => format!(
            "{server} holds {stale} connections on port {port} whose clients are gone ({who} went away without closing them)"
        ),
        None => format!(
            "{server} holds {stale} connections on port {port} whose clients are gone"
        ),
    };
    let summary = summary + &super::leak::limit_suffix(cx);
    let who = lead.map_or_else(|| "its clients".to_string(), |(w, _, _)| w);
    Words {
        summary,
        facts,
        next_step: format!(
            "let {server} drop dead peers (TCP keepalive: redis tcp-keepalive, PostgreSQL tcp_keepalives_idle; or an idle timeout), and find why {who} goes away without closing its connections (killed before its pool closes, or its network torn down first)"
        ),
    }
}
