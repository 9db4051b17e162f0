//! Wording shared by the detectors: times, spans, owners, destinations.

use crate::{clock, format};

/// Wall-clock "HH:MM:SS UTC" of a monotonic timestamp.
pub fn clock_time(mono_ns: u64) -> String {
    let unix_ns = mono_ns as i64 + clock::monotonic_to_unix_offset_ns();
    let day_s = (unix_ns / 1_000_000_000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02} UTC",
        day_s / 3600,
        (day_s % 3600) / 60,
        day_s % 60
    )
}

/// A span for people: "850ms", "3.21s", "7m", "3h12m".
pub fn span(ns: u64) -> String {
    if ns < 60_000_000_000 {
        format::duration_ns(Some(ns))
    } else {
        format::age_s(ns as f64 / 1e9)
    }
}

/// Seconds as a float, for evidence values.
pub fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e9 * 1000.0).round() / 1000.0
}

/// "pid 4411 (php-fpm)", or "pid 4411" when its name is unknown (the
/// process is gone).
pub fn process(pid: u32, comm: Option<&str>) -> String {
    match comm {
        Some(c) if !c.is_empty() => format!("pid {pid} ({c})"),
        _ => format!("pid {pid}"),
    }
}

/// What usually talks to a well-known port, for the next step's wording.
pub fn service_of_port(port: u16) -> Option<&'static str> {
    Some(match port {
        6379 => "Redis",
        5432 => "PostgreSQL",
        3306 => "MySQL",
        27017 => "MongoDB",
        11211 => "memcached",
        9092 => "Kafka",
        5672 => "RabbitMQ",
        9200 => "Elasticsearch",
        2379 => "etcd",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_well() {
        assert_eq!(span(3_210_000_000), "3.21s");
        assert_eq!(span(31 * 60_000_000_000), "31m");
        assert!(clock_time(0).ends_with(" UTC"));
    }
}
