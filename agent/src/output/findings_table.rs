//! The FINDINGS section at the top of the terminal table: one block per
//! open finding (worst first), then one line per finding resolved lately.

use std::fmt::Write as _;

use super::format::age_s;
use crate::findings::Finding;

/// Open findings shown in full; the rest are counted.
pub const MAX_OPEN_SHOWN: usize = 8;
/// Findings resolved this recently get a line.
pub const RESOLVED_SHOWN_FOR_NS: u64 = 10 * 60 * 1_000_000_000;
pub const MAX_RESOLVED_SHOWN: usize = 5;

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The findings the table shows: open ones worst first, resolved ones
/// newest first (as `Findings` lists them), already filtered.
#[derive(Debug, Default)]
pub struct Shown<'a> {
    pub open: Vec<&'a Finding>,
    pub resolved: Vec<&'a Finding>,
    /// Monotonic ns, for ages.
    pub now_ns: u64,
}

impl Shown<'_> {
    pub fn render(&self) -> String {
        render(&self.open, &self.resolved, self.now_ns)
    }
}

/// Renders the section; empty when nothing is open or lately resolved.
pub fn render(open: &[&Finding], resolved: &[&Finding], now_ns: u64) -> String {
    let recent: Vec<&&Finding> = resolved
        .iter()
        .filter(|f| {
            f.resolved_ns
                .is_some_and(|r| now_ns.saturating_sub(r) <= RESOLVED_SHOWN_FOR_NS)
        })
        .collect();
    let mut s = String::new();
    if open.is_empty() && recent.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\nFINDINGS ({} open, {} resolved in the last {})",
        open.len(),
        recent.len(),
        age_s(secs(RESOLVED_SHOWN_FOR_NS))
    );
    for f in open.iter().take(MAX_OPEN_SHOWN) {
        block(&mut s, f, now_ns);
    }
    if open.len() > MAX_OPEN_SHOWN {
        let _ = writeln!(
            s,
            "... {} more open findings not shown (narrow with --container, or use -o json or the API)",
            open.len() - MAX_OPEN_SHOWN
        );
    }
    for f in recent.iter().take(MAX_RESOLVED_SHOWN) {
        let end = f.resolved_ns.unwrap_or(now_ns);
        let _ = writeln!(
            s,
            "RESOLVED {} ago (held {}): {}",
            age_s(secs(now_ns.saturating_sub(end))),
            age_s(secs(end.saturating_sub(f.since_ns))),
            f.summary
        );
    }
    s
}

fn block(s: &mut String, f: &Finding, now_ns: u64) {
    let _ = writeln!(s, "ROOT CAUSE: {}", f.summary);
    if !f.evidence.is_empty() {
        // Facts worded within another's sentence have none of their own.
        let facts: Vec<&str> = f
            .evidence
            .iter()
            .map(|e| e.fact.as_str())
            .filter(|f| !f.is_empty())
            .collect();
        let _ = writeln!(s, "  EVIDENCE: {}", facts.join("; "));
    }
    if !f.next_step.is_empty() {
        let _ = writeln!(s, "  NEXT: {}", f.next_step);
    }
    let _ = writeln!(
        s,
        "  CONFIDENCE: {} ({} corroborating signal{}: {}); {} {}, for {}",
        f.confidence.name(),
        f.signals.len(),
        if f.signals.len() == 1 { "" } else { "s" },
        f.signals.join(", "),
        f.severity.name(),
        f.kind.name(),
        age_s(secs(now_ns.saturating_sub(f.since_ns)))
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::convert_findings::tests::{close_wait, dns, pod_workload},
        findings::{Confidence, Severity},
    };

    const S: u64 = 1_000_000_000;

    #[test]
    fn blocks_for_open_findings_lines_for_recently_resolved() {
        let payments = close_wait(pod_workload(42, "shop", "payments-7d9f8b", "app"));
        let mut slow_dns = dns(
            pod_workload(43, "shop", "checkout-5c4d", "app"),
            "api.stripe.com",
        );
        slow_dns.severity = Severity::Warning;
        slow_dns.signals = vec!["slow"];
        slow_dns.confidence = Confidence::Low;
        slow_dns.evidence.truncate(1);
        let mut gone = close_wait(pod_workload(44, "shop", "cart-1", "app"));
        gone.summary = "cart held 9 sockets in CLOSE_WAIT".into();
        gone.resolved_ns = Some(700 * S);
        let mut old = gone.clone();
        old.summary = "long ago".into();
        old.resolved_ns = Some(10 * S);
        // Now: 1000 s; payments since 70 s, cart resolved 300 s ago after 630 s.
        let out = render(&[&payments, &slow_dns], &[&gone, &old], 1000 * S);
        let expected = "
FINDINGS (2 open, 1 resolved in the last 10m)
ROOT CAUSE: shop/payments-7d9f8b/app holds 212 sockets in CLOSE_WAIT to 10.0.1.12:6379
  EVIDENCE: 212 sockets in CLOSE_WAIT; oldest waiting 31 min
  NEXT: check where payments closes its Redis connections
  CONFIDENCE: high (3 corroborating signals: close_wait_state, waited, many); critical close_wait, for 15m
ROOT CAUSE: DNS answers for api.stripe.com take 1.2 s (p90)
  EVIDENCE: 212 sockets in CLOSE_WAIT
  NEXT: check the DNS server's upstream
  CONFIDENCE: low (1 corroborating signal: slow); warning dns_degradation, for 15m
RESOLVED 5m ago (held 10m): cart held 9 sockets in CLOSE_WAIT
";
        assert_eq!(out, expected);
    }

    #[test]
    fn nothing_when_nothing_open_or_lately_resolved_and_many_are_capped() {
        let mut old = close_wait(pod_workload(44, "shop", "cart-1", "app"));
        old.resolved_ns = Some(10 * S);
        assert_eq!(render(&[], &[&old], 1000 * S), "");
        let many: Vec<_> = (0..MAX_OPEN_SHOWN as u64 + 3)
            .map(|i| close_wait(pod_workload(100 + i, "shop", "p-1", "app")))
            .collect();
        let refs: Vec<&Finding> = many.iter().collect();
        let out = render(&refs, &[], 1000 * S);
        assert_eq!(out.matches("ROOT CAUSE:").count(), MAX_OPEN_SHOWN);
        assert!(out.contains("... 3 more open findings not shown"), "{out}");
    }
}
