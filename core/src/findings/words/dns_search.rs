//! "shop/api-1/app wastes 75% of its DNS queries to 10.96.0.10:53 on
//! search-list expansion (ndots:5, 3 search domains)".

use super::{plain, Cx, Words};
use crate::findings::Fact;

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let dest = cx.dest();
    let subject = cx.subject();
    let ratio = cx.value("wasted_ratio");
    let (queries, wasted) = (cx.n("queries"), cx.n("wasted"));
    let conf = cx.has("ndots").then(|| {
        format!(
            "ndots:{}, {} search domain(s)",
            cx.n("ndots"),
            cx.n("search_domains")
        )
    });
    let named: Vec<Fact> = cx.v.facts_of("name_wasted").cloned().collect();
    let names: Vec<(String, u64)> = named.iter().map(|f| (cx.about_of(f), f.n())).collect();
    let listed = names
        .iter()
        .map(|(n, w)| format!("{n} ({w} wasted)"))
        .collect::<Vec<_>>()
        .join(", ");
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "wasted_ratio" => format!(
                "{wasted} of {queries} queries to {dest} in the last {} were NXDOMAIN answers for search-list candidates ({:.0}%: {:.1} queries for each one needed)",
                cx.span("window_s"),
                f.value * 100.0,
                per_needed(queries, wasted)
            ),
            "names" if listed.is_empty() => format!("{} name(s) walked the search list", f.n()),
            "names" => format!("{} name(s) walked the search list, most: {listed}", f.n()),
            "ndots" => format!(
                "the resolv.conf of {}: ndots:{}, {} search domain(s): a name with fewer than {} dots is tried with every search domain before it is asked as it is",
                cx.about_of(f),
                f.n(),
                cx.n("search_domains"),
                f.n()
            ),
            "suggested_ndots" => format!(
                "with ndots:{0}, names of {0} or more dots are asked as they are first",
                f.n()
            ),
            "server_degraded" => format!(
                "the DNS server {dest} is degraded too (its own dns_degradation finding): every wasted query is one more that can time out or wait there"
            ),
            "queries" | "wasted" | "window_s" | "name_wasted" | "search_domains" => return None,
            _ => plain(f),
        })
    });
    Words {
        summary: format!(
            "{subject} wastes {:.0}% of its DNS queries to {dest} on search-list expansion{}",
            ratio * 100.0,
            conf.map(|c| format!(" ({c})")).unwrap_or_default()
        ),
        facts,
        next_step: next_step(cx, &names),
    }
}

/// Queries asked for each one the lookups needed.
fn per_needed(queries: u64, wasted: u64) -> f64 {
    queries as f64 / queries.saturating_sub(wasted).max(1) as f64
}

/// A trailing dot for the names, and a lower ndots when one would do.
fn next_step(cx: &Cx<'_, '_>, names: &[(String, u64)]) -> String {
    let absolute = names
        .iter()
        .map(|(n, _)| format!("\"{n}.\""))
        .collect::<Vec<_>>()
        .join(", ");
    let dot = if absolute.is_empty() {
        "ask for absolute names, with a trailing dot, so each is asked once".to_string()
    } else {
        format!("ask for absolute names, with a trailing dot ({absolute}), so each is asked once")
    };
    if cx.has("suggested_ndots") {
        let n = cx.n("suggested_ndots");
        format!(
            "{dot}; or lower ndots to {n} in the pod spec: dnsConfig: {{options: [{{name: ndots, value: \"{n}\"}}]}} (names of {n} or more dots are then asked as they are first)"
        )
    } else if cx.has("ndots") {
        dot
    } else {
        format!(
            "{dot}; or lower ndots in the pod spec's dnsConfig (options: [{{name: ndots, value: \"1\"}}]): the pod's resolv.conf could not be read to say more"
        )
    }
}
