//! CLOSE_WAIT pile-up: the peer closed its side, the application never
//! closed its own. The kernel keeps such a socket until the application
//! calls close(), so a count that lasts is the application's bug.

use super::{owners_fact, Context, FlowNow};
use crate::{
    aggregate::flows::Direction,
    findings::{text, Candidate, Destination, Evidence, Key, Kind, Severity},
};

/// Past these, a pile-up is critical: it is either large or very old.
const CRITICAL_SOCKETS: u64 = 100;
const CRITICAL_WAIT_NS: u64 = 10 * 60 * 1_000_000_000;

pub fn detect(cx: &mut Context<'_, '_>, flows: &[FlowNow<'_>]) -> Vec<Candidate> {
    let cfg = &cx.config.close_wait;
    let now = cx.now();
    let mut out = Vec::new();
    for f in flows {
        let s = &f.sockets;
        if s.close_wait_waited < cfg.min_sockets {
            continue;
        }
        let since = s.oldest_close_wait_since_ns.unwrap_or(now);
        let longest = now.saturating_sub(since);
        let dest = Destination {
            addr: f.key.remote,
            port: f.key.port,
            dns_name: None,
        };
        let label = cx.label(f.key.cgroup_id);
        let peer = match f.key.direction {
            Direction::Outbound => format!("to {dest}"),
            Direction::Inbound => format!("from {} on port {}", f.key.remote, f.key.port),
        };
        let mut evidence = vec![
            Evidence::new(
                format!(
                    "{} sockets {peer} in CLOSE_WAIT for more than {} ({} in CLOSE_WAIT in all, {} open)",
                    s.close_wait_waited,
                    text::span(crate::findings::config::ns(cfg.min_wait_s)),
                    s.close_wait,
                    s.open
                ),
                s.close_wait_waited as f64,
                "sockets",
                now,
            ),
            Evidence::new(
                format!(
                    "the oldest has waited {} (since {})",
                    text::span(longest),
                    text::clock_time(since)
                ),
                text::secs(longest),
                "s",
                since,
            ),
        ];
        if let Some((fact, n)) = owners_fact(cx, s, "held") {
            evidence.push(Evidence::new(fact, n as f64, "sockets", now));
        }
        let severity = if s.close_wait_waited >= CRITICAL_SOCKETS || longest >= CRITICAL_WAIT_NS {
            Severity::Critical
        } else {
            Severity::Warning
        };
        // The kernel's state is itself proof that the peer closed and the
        // application did not; a long wait and a large count corroborate.
        let signals = 2 + u32::from(s.close_wait_waited >= 2 * cfg.min_sockets);
        out.push(Candidate {
            key: Key {
                kind: Kind::CloseWait,
                subject: f.key.cgroup_id,
                destination: Some(dest.clone()),
            },
            subject: f.key.cgroup_id,
            since_ns: since,
            ended_ns: None,
            severity,
            signals,
            summary: format!(
                "{label} does not close {} connections {peer} that the peer has closed (CLOSE_WAIT)",
                s.close_wait_waited
            ),
            evidence,
            next_step: format!(
                "find where {label} stops using its connections {peer} without closing them: a missing close() after EOF, or an error path that skips the release"
            ),
            affected: Vec::new(),
        });
    }
    out
}
