//! "10.0.0.9:6379 restarted (pid 4411 (redis-server), data/redis-0/redis):
//! not accepting for 3.06s; 15 connects from 1 workload(s) refused".

use super::{plain, text, Cx, Words};

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let dest = cx.dest();
    let port = cx.v.destination.as_ref().map_or(0, |d| d.port);
    let addr =
        cx.v.destination
            .as_ref()
            .map_or_else(String::new, |d| d.addr.to_string());
    let subject = cx.subject();
    let who =
        cx.v.fact("listener_pid")
            .cloned()
            .map(|f| format!("{}, {subject}", cx.about_of(&f)));
    let clients = cx.affected();
    let refused = cx.n("refused");
    let workloads = cx.n("clients");
    let ended = cx.v.ended_ns.is_some();
    let down = cx.span("not_accepting_s");
    let gap_text = if ended {
        format!("not accepting for {down}")
    } else {
        format!("not accepting for {down} so far")
    };
    let first = cx.v.fact("refused").map_or(0, |f| f.at_ns);
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "gap_s" => format!(
                "{} stopped listening on port {port} at {} and listened again at {}: not accepting for {}",
                who.clone().unwrap_or_default(),
                text::clock_time(f.at_ns),
                text::clock_time(f.at_ns + f.ns()),
                text::span(f.ns())
            ),
            "down_s" => format!(
                "{} stopped listening on port {port} at {} and has not listened again ({} so far)",
                who.clone().unwrap_or_default(),
                text::clock_time(f.at_ns),
                text::span(f.ns())
            ),
            "matched_by_port_only" => format!(
                "matched by port only: {addr} was not seen on that listener's network namespace"
            ),
            "refused" => format!(
                "{} connects refused ({} failed in all) from {workloads} workload(s) between {} and {}",
                f.n(),
                cx.n("connects_failed"),
                text::clock_time(first),
                text::clock_time(first + cx.v.fact("failing_for_s").map_or(0, |f| f.ns()))
            ),
            "recovered_after_s" => format!(
                "connects succeeded again at {}, {} after the first refusal",
                text::clock_time(f.at_ns),
                text::span(f.ns())
            ),
            "clients" => format!("clients: {clients}"),
            "listener_pid" | "connects_failed" | "failing_for_s" | "not_accepting_s" => {
                return None
            }
            _ => plain(f),
        })
    });
    let summary = match (&who, ended) {
        (Some(who), true) => format!(
            "{dest} restarted ({who}): {gap_text}; {refused} connects from {workloads} workload(s) refused"
        ),
        (Some(who), false) => format!(
            "{dest} is down ({who} stopped listening): {gap_text}; {refused} connects from {workloads} workload(s) refused"
        ),
        (None, _) => format!(
            "{dest} refused {refused} connects from {workloads} workload(s), {gap_text}: the dependency restarted or went away (its listener is not on this node)"
        ),
    };
    let next_step = if ended {
        format!(
            "it was down {down}: if its clients' probes or timeouts are shorter than that, they failed too; check restarts of {clients} and why the dependency restarted"
        )
    } else {
        format!(
            "check why {dest} is down (its pod's events and logs); its clients ({clients}) keep failing"
        )
    };
    Words {
        summary,
        facts,
        next_step,
    }
}
