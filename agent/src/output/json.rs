//! JSON lines: `finding` objects for the findings that opened, changed or
//! resolved (see `findings`), one `flow` object per flow and one `dns`
//! object per DNS name per interval, `dns_total` objects per workload (all
//! servers and each server), `resource_failure` objects per (workload,
//! errno, syscall, destination) that ran out of ports or fds, a `stats`
//! object per interval, `listener_change` objects as they happen, and
//! `ready` once.

use std::io::Write;

use serde::Serialize;

use crate::{
    ebpf::Feature,
    snapshot::{Health, Snapshot},
};

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    /// Seconds since the Unix epoch.
    ts: f64,
    #[serde(flatten)]
    body: T,
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn line<W: Write, T: Serialize>(out: &mut W, kind: &str, body: T) -> std::io::Result<()> {
    let tagged = Tagged {
        kind,
        ts: now_unix(),
        body,
    };
    // serde leaves DEL, C1 controls and bidi characters as they are; a
    // container's process or DNS name must not reach a terminal that way.
    let json = serde_json::to_string(&tagged)?;
    out.write_all(sockeye_proto::text::escape_json(&json).as_bytes())?;
    out.write_all(b"\n")
}

#[derive(Serialize)]
struct Ready<'a> {
    features: &'a [Feature],
    preexisting_sockets: u64,
}

pub fn ready<W: Write>(out: &mut W, features: &[Feature], preexisting: u64) -> std::io::Result<()> {
    line(
        out,
        "ready",
        Ready {
            features,
            preexisting_sockets: preexisting,
        },
    )?;
    out.flush()
}

/// Writes one interval; listener changes up to `printed_seq` were printed
/// before. Returns the new high-water mark.
pub fn window<W: Write>(
    out: &mut W,
    snap: &Snapshot,
    health: &Health,
    printed_seq: u64,
) -> std::io::Result<u64> {
    for flow in &snap.flows {
        line(out, "flow", flow)?;
    }
    for name in &snap.dns_names {
        line(out, "dns", name)?;
    }
    for total in &snap.dns_totals {
        line(out, "dns_total", total)?;
    }
    for failure in &snap.resource_failures {
        line(out, "resource_failure", failure)?;
    }
    let mut seq = printed_seq;
    for change in snap.listener_changes.iter().filter(|c| c.seq > printed_seq) {
        line(out, "listener_change", change)?;
        seq = seq.max(change.seq);
    }
    stats(out, health)?;
    Ok(seq)
}

pub fn stats<W: Write>(out: &mut W, health: &Health) -> std::io::Result<()> {
    line(out, "stats", health)?;
    out.flush()
}
