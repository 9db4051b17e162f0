//! "the liveness probe of shop/payments-1/app (timeout 2.00s) failed 3
//! times in the last 1m; the pod waited on 10.0.0.9:6379, whose connects
//! failed meanwhile".

use super::{plain, Cx, Words};
use crate::workload::probes::ProbeKind;

pub fn word(cx: &mut Cx<'_, '_>) -> Words {
    let pod = cx.subject();
    let port = cx.v.destination.as_ref().map_or(0, |d| d.port);
    let kind = ProbeKind::from_code(cx.n("probe_kind")).name();
    let n = cx.n("probe_failures");
    let timeout = cx.span("probe_timeout_s");
    let deps = cx.abouts_of("dependency_failures");
    let facts = cx.facts(|cx, f| {
        Some(match f.key {
            "probe_failures" => format!(
                "the kubelet gave up on {} {kind} probes of port {port} after {} without an answer (timeout {timeout}, every {})",
                f.n(),
                cx.span("longest_wait_s"),
                cx.span("probe_period_s")
            ),
            "dependency_failures" => format!(
                "{} connects of {pod} to {} failed meanwhile",
                f.n(),
                cx.about_of(f)
            ),
            "restarts_the_pod" => format!(
                "{} failures in a row restart the pod (failureThreshold)",
                cx.n("failure_threshold")
            ),
            "probe_kind" | "probe_timeout_s" | "probe_period_s" | "failure_threshold"
            | "longest_wait_s" | "failures_needed" => return None,
            _ => plain(f),
        })
    });
    let waits = if deps.is_empty() {
        String::new()
    } else {
        format!(
            "; it waits on {}, whose connects failed meanwhile",
            deps.join(", ")
        )
    };
    let next_step = if deps.is_empty() {
        format!(
            "{pod} answers its {kind} probe too slowly and nothing it connects to failed: look at what the probe's handler waits on (a lock, a slow query, the CPU limit), and whether {timeout} is enough"
        )
    } else {
        format!(
            "make the {kind} probe of {pod} not wait on {} (a probe that checks a dependency restarts healthy pods when the dependency is slow), or give it a timeout longer than the dependency's recovery",
            deps.join(", ")
        )
    };
    Words {
        summary: format!(
            "the {kind} probe of {pod} (timeout {timeout}) timed out {}{waits}",
            super::times(n)
        ),
        facts,
        next_step,
    }
}
