//! The TCP families: outbound connects (latency, failures by cause, SYN
//! retransmits), connections, open sockets by state and their ages, and
//! pools (the busiest container's connections and the ceiling a pool
//! finding stated), per workload label set.

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};
use sockeye_common::tcp_state;

use super::{
    families::{counter, family, gauge, histogram, workload, Done, SECONDS},
    labels::TcpKey,
    tcp::TcpSeries,
};
use crate::aggregate::{cause::FailureCause, flows::Direction};

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Outbound => "outbound",
        Direction::Inbound => "inbound",
    }
}

/// The labels of an outbound-only TCP series (no direction label).
fn outbound(k: &TcpKey) -> Option<[(&'static str, &str); 4]> {
    let [ns, wl, c] = workload(&k.workload);
    (k.direction == Direction::Outbound).then_some([ns, wl, c, ("destination", &k.destination)])
}

fn both(k: &TcpKey) -> [(&'static str, &str); 5] {
    let [ns, wl, c] = workload(&k.workload);
    [
        ns,
        wl,
        c,
        ("direction", direction(k.direction)),
        ("destination", &k.destination),
    ]
}

pub fn encode(enc: &mut DescriptorEncoder, series: &[(TcpKey, TcpSeries)]) -> Done {
    let mut m = family(
        enc,
        "sockeye_tcp_connect_duration",
        "Outbound connects that completed: SYN sent to SYN-ACK received.",
        Some(&SECONDS),
        MetricType::Histogram,
    )?;
    for (k, s) in series {
        if let Some(l) = outbound(k) {
            histogram(&mut m, &l, &s.connect_duration)?;
        }
    }
    let mut m = family(
        enc,
        "sockeye_tcp_connect_failures",
        "Outbound connects that failed, by cause: refused (RST), timed_out (SYN retries ran out), unreachable (ICMP error), aborted (closed by the application before the handshake ended), other.",
        None,
        MetricType::Counter,
    )?;
    for (k, s) in series {
        let Some([ns, wl, c, dst]) = outbound(k) else {
            continue;
        };
        for (cause, n) in FailureCause::ALL.iter().zip(s.failed) {
            counter(&mut m, &[ns, wl, c, dst, ("cause", cause.name())], n)?;
        }
    }
    let mut m = family(
        enc,
        "sockeye_tcp_syn_retransmits",
        "SYN retransmissions of outbound connects.",
        None,
        MetricType::Counter,
    )?;
    for (k, s) in series {
        if let Some(l) = outbound(k) {
            counter(&mut m, &l, s.syn_retransmits)?;
        }
    }
    let mut m = family(
        enc,
        "sockeye_tcp_connections",
        "Connections established: outbound connects that completed, inbound connections accepted.",
        None,
        MetricType::Counter,
    )?;
    for (k, s) in series {
        counter(&mut m, &both(k), s.connections)?;
    }
    let mut m = family(
        enc,
        "sockeye_tcp_open_sockets",
        "Sockets open now by TCP state (TIME_WAIT for the kernel's 60 s); states with none are left out.",
        None,
        MetricType::Gauge,
    )?;
    for (k, s) in series {
        let [ns, wl, c, dir, dst] = both(k);
        for (state, &n) in s.open.iter().enumerate().filter(|(_, n)| **n > 0) {
            let state = ("state", tcp_state::name(state as u8));
            gauge(&mut m, &[ns, wl, c, dir, dst, state], n)?;
        }
    }
    let mut m = family(
        enc,
        "sockeye_tcp_oldest_open",
        "Age of the oldest socket open now (TIME_WAIT aside); label sets with none open are left out. Sockets older than the agent count from its start.",
        Some(&SECONDS),
        MetricType::Gauge,
    )?;
    for (k, s) in series.iter().filter(|(_, s)| s.oldest_open_ns > 0) {
        m.encode_family(&both(k))?
            .encode_gauge(&(s.oldest_open_ns as f64 / 1e9))?;
    }
    let mut m = family(
        enc,
        "sockeye_tcp_pool_connections",
        "Established connections the one container of this workload that holds the most to the destination holds now: its pool's size (replicas on a node share the label set, a pool is per process).",
        None,
        MetricType::Gauge,
    )?;
    for (k, s) in series {
        if let Some(l) = outbound(k) {
            gauge(&mut m, &l, s.pool_connections)?;
        }
    }
    let mut m = family(
        enc,
        "sockeye_tcp_pool_ceiling",
        "Established connections at which the pool detector last found this workload's connects to the destination stalling (a pool_exhaustion finding); kept after it resolves, so the pool can be watched against it.",
        None,
        MetricType::Gauge,
    )?;
    for (k, s) in series {
        if let (Some(l), Some(c)) = (outbound(k), s.pool_ceiling) {
            gauge(&mut m, &l, c)?;
        }
    }
    Ok(())
}
