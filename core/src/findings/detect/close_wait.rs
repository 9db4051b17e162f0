//! CLOSE_WAIT pile-up: the peer closed its side, the application never
//! closed its own. The kernel keeps such a socket until the application
//! calls close(), so a count that lasts is the application's bug.

use super::{owner_facts, Context, FlowNow};
use crate::{
    aggregate::flows::Direction,
    findings::{config::ns, Destination, Fact, Kind, Severity, Unit, Verdict},
};

/// Past these, a pile-up is critical: it is either large or very old.
const CRITICAL_SOCKETS: u64 = 100;
const CRITICAL_WAIT_NS: u64 = 10 * 60 * 1_000_000_000;

pub fn detect(cx: &mut Context<'_, '_>, flows: &[FlowNow<'_>]) -> Vec<Verdict> {
    let cfg = cx.config.close_wait.clone();
    let now = cx.now();
    let mut out = Vec::new();
    for f in flows {
        // Sockets that waited long enough are among those in CLOSE_WAIT.
        if f.counts().close_wait < cfg.min_sockets {
            continue;
        }
        let s = f.sockets();
        if s.close_wait_waited < cfg.min_sockets {
            continue;
        }
        let since = s.oldest_close_wait_since_ns.unwrap_or(now);
        let longest = now.saturating_sub(since);
        let mut facts = vec![
            Fact::count(
                "close_wait_sockets",
                s.close_wait_waited,
                Unit::Sockets,
                now,
            ),
            Fact::seconds("min_wait_s", ns(cfg.min_wait_s), now),
            Fact::count(
                "close_wait_total",
                f.counts().close_wait,
                Unit::Sockets,
                now,
            ),
            Fact::count("open_sockets", f.counts().open, Unit::Sockets, now),
            Fact::seconds("longest_wait_s", longest, since),
            Fact::flag("accepted", f.key.direction == Direction::Inbound, now),
        ];
        owner_facts(cx, s, now, &mut facts);
        let severity = if s.close_wait_waited >= CRITICAL_SOCKETS || longest >= CRITICAL_WAIT_NS {
            Severity::Critical
        } else {
            Severity::Warning
        };
        // The kernel's state is itself proof that the peer closed and the
        // application did not; a long wait and a large count corroborate.
        let mut signals = vec!["close_wait_state", "waited"];
        if s.close_wait_waited >= 2 * cfg.min_sockets {
            signals.push("many");
        }
        out.push(Verdict {
            kind: Kind::CloseWait,
            key_subject: f.key.cgroup_id,
            subject: f.key.cgroup_id,
            destination: Some(Destination::of_flow(&f.key)),
            since_ns: since,
            ended_ns: None,
            severity,
            signals,
            facts,
            affected: Vec::new(),
        });
    }
    out
}
