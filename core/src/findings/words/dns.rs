//! "DNS server 10.96.0.10:53 is degraded for 2 container(s) on this node:
//! 29% of queries time out".

use super::{plain, Cx, Words};

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
    // The names most affected, in one sentence on the first name's fact.
    let named: Vec<crate::findings::Fact> = cx.v.facts_of("name_timeouts").cloned().collect();
    let mut names = Vec::new();
    for f in &named {
        let name = cx.about_of(f);
        let servfails =
            cx.v.facts
                .iter()
                .find(|g| g.key == "name_servfail" && g.about == f.about)
                .map_or(0, crate::findings::Fact::n);
        names.push(match (f.n(), servfails) {
            (t, 0) => format!("{name} ({t} timeouts)"),
            (0, s) => format!("{name} ({s} SERVFAIL)"),
            (t, s) => format!("{name} ({t} timeouts, {s} SERVFAIL)"),
        });
    }
    let mut names_said = false;
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "timeout_ratio" => format!(
                "{} of {} queries to {dest} timed out in the last {} ({:.1}%)",
                cx.n("timeouts"),
                cx.n("queries"),
                cx.span("window_s"),
                f.value * 100.0
            ),
            "slow_ratio" => format!(
                "{} of {} answers took longer than {} ({:.0}%: p90 is above it)",
                cx.n("slow_answers"),
                cx.n("answers"),
                cx.span("slow_threshold_s"),
                f.value * 100.0
            ),
            "servfail_ratio" => format!(
                "{} of {} answers were SERVFAIL",
                cx.n("servfail"),
                cx.n("answers")
            ),
            "name_timeouts" if !names_said => {
                names_said = true;
                format!("names most affected: {}", names.join(", "))
            }
            "clients" => format!("containers affected: {clients}"),
            "queries" | "answers" | "window_s" | "timeouts" | "slow_answers"
            | "slow_threshold_s" | "servfail" | "name_timeouts" | "name_servfail" => return None,
            _ => plain(f),
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
