//! "DNS server 10.96.0.10:53 is degraded for 2 container(s) on this node:
//! 29% of queries time out".

use super::{text, Cx, Words};

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let dest = cx.dest();
    let mut what = Vec::new();
    if cx.has("timeout_ratio") {
        what.push(format!(
            "{:.0}% of queries time out",
            cx.value("timeout_ratio") * 100.0
        ));
    }
    if cx.has("slow_ratio") {
        what.push(format!("p90 latency above {}", cx.span("slow_threshold_s")));
    }
    if cx.has("servfail_ratio") {
        what.push(format!(
            "{:.0}% SERVFAIL",
            cx.value("servfail_ratio") * 100.0
        ));
    }
    let clients = cx.affected();
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "queries" => format!("{} queries in the last {}", f.n(), cx.span("window_s")),
            "answers" => format!("{} answers", f.n()),
            "window_s" => format!("judged over the last {}", text::span(f.ns())),
            "timeouts" => format!("{} timed out", f.n()),
            "timeout_ratio" => format!(
                "{} of {} queries to {dest} timed out in the last {} ({:.1}%)",
                cx.n("timeouts"),
                cx.n("queries"),
                cx.span("window_s"),
                f.value * 100.0
            ),
            "slow_answers" => format!("{} slow answers", f.n()),
            "slow_threshold_s" => format!("slow means longer than {}", text::span(f.ns())),
            "slow_ratio" => format!(
                "{} of {} answers took longer than {} ({:.0}%: p90 is above it)",
                cx.n("slow_answers"),
                cx.n("answers"),
                cx.span("slow_threshold_s"),
                f.value * 100.0
            ),
            "servfail" => format!("{} SERVFAIL answers", f.n()),
            "servfail_ratio" => format!(
                "{} of {} answers were SERVFAIL",
                cx.n("servfail"),
                cx.n("answers")
            ),
            "name_timeouts" => format!("{} ({} timeouts)", cx.about_of(f), f.n()),
            "name_servfail" => format!("{} ({} SERVFAIL)", cx.about_of(f), f.n()),
            "clients" => format!("containers affected: {clients}"),
            _ => return None,
        })
    });
    Words {
        summary: format!(
            "DNS server {dest} is degraded for {} container(s) on this node: {}",
            cx.n("clients"),
            what.join(", ")
        ),
        facts,
        next_step: format!(
            "check the DNS server {dest} (CoreDNS/kube-dns pods, their upstreams and load) and the path to it (conntrack on UDP 53, network policy)"
        ),
    }
}
