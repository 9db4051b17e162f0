//! Human formatting of durations, ages, byte counts, addresses, numbers and
//! times (UTC, or the reader's zone for findings), in the same vocabulary
//! as the agent's own table ("850µs", "3h12m", "EST:3,CW:1", "curl(4411)").

use std::{collections::HashMap, net::IpAddr};

pub use sockeye_core::format::{age_s, bytes, duration_ns, number};

/// A duration where zero means "not measured".
pub fn duration_nonzero(ns: u64) -> String {
    duration_ns((ns > 0).then_some(ns))
}

/// "2.5%" of `part` in `whole`; "-" when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_string();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Cuts `s` to `max` characters by replacing its middle with "…": both
/// ends of a name carry meaning (a namespace and a container, a host and
/// its domain).
pub fn truncate(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max || max == 0 {
        return s.to_string();
    }
    if max == 1 {
        return "…".to_string();
    }
    let keep = max - 1;
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    out
}

/// "10.0.1.12:6379", "[fd00::1]:53"; a text that is not an address is
/// kept as it is.
pub fn endpoint(ip: &str, port: u32) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        Ok(v4) => format!("{v4}:{port}"),
        Err(_) if ip.is_empty() => format!("*:{port}"),
        Err(_) => format!("{ip}:{port}"),
    }
}

pub fn endpoint_of(e: Option<&sockeye_proto::v1::Endpoint>) -> String {
    e.map_or_else(|| "-".to_string(), |e| endpoint(&e.ip, e.port))
}

/// "curl(4411)", or "-" when no process was seen.
pub fn process(comm: &str, pid: u32) -> String {
    match (comm.is_empty(), pid) {
        (true, 0) => "-".to_string(),
        (false, 0) => comm.to_string(),
        (true, pid) => format!("({pid})"),
        (false, pid) => format!("{comm}({pid})"),
    }
}

/// The agent's short TCP state names.
pub fn short_state(s: &str) -> &str {
    match s {
        "ESTABLISHED" => "EST",
        "CLOSE_WAIT" => "CW",
        "TIME_WAIT" => "TW",
        "SYN_SENT" => "SYN",
        "SYN_RECV" => "SYNR",
        "FIN_WAIT1" => "FW1",
        "FIN_WAIT2" => "FW2",
        "LAST_ACK" => "LA",
        "CLOSING" => "CLG",
        other => other,
    }
}

/// "EST:198,CW:14": most first, then by name; "-" when empty.
pub fn states(m: &HashMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = m.iter().filter(|(_, n)| **n > 0).collect();
    if v.is_empty() {
        return "-".to_string();
    }
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(s, n)| format!("{}:{n}", short_state(s)))
        .collect::<Vec<_>>()
        .join(",")
}

/// "kernel_ringbuf_full:12,user_flows_evicted:3" for the counters above 0,
/// by name.
pub fn counters(m: &HashMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = m.iter().filter(|(_, n)| **n > 0).collect();
    v.sort();
    v.iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`): no time zone database needed,
/// because the CLI prints UTC.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn split_ns(ts_ns: i64) -> (i64, i64) {
    (
        ts_ns.div_euclid(1_000_000_000),
        ts_ns.rem_euclid(1_000_000_000),
    )
}

/// "07:31:02.123" (UTC).
pub fn time_of_day_ns(ts_ns: i64) -> String {
    let (secs, ns) = split_ns(ts_ns);
    let s = secs.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        (s % 3600) / 60,
        s % 60,
        ns / 1_000_000
    )
}

/// "2025-03-01T07:31:02.123456Z".
pub fn rfc3339_ns(ts_ns: i64) -> String {
    let (secs, ns) = split_ns(ts_ns);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        (s % 3600) / 60,
        s % 60,
        ns / 1_000
    )
}

pub fn time_of_day_ms(ms: i64) -> String {
    time_of_day_ns(ms.saturating_mul(1_000_000))
}

/// A moment in the reader's time zone: "02:03:10 CET" on the day of
/// `now_ms` there, "2025-02-28 23:59:01 CET" on another day; "-" for 0 or
/// a time out of range.
pub fn local_time(ms: i64, now_ms: i64, tz: &jiff::tz::TimeZone) -> String {
    let zoned = |ms| {
        jiff::Timestamp::from_millisecond(ms)
            .ok()
            .map(|t| t.to_zoned(tz.clone()))
    };
    let (Some(t), true) = (zoned(ms), ms != 0) else {
        return "-".to_string();
    };
    let same_day = zoned(now_ms).is_some_and(|n| n.date() == t.date());
    let f = if same_day {
        "%H:%M:%S %Z"
    } else {
        "%Y-%m-%d %H:%M:%S %Z"
    };
    t.strftime(f).to_string()
}

/// How long before `now_ms` `ms` was: "31m ago", "just now" under a
/// second, "in 5s" for a clock ahead of ours.
pub fn ago(ms: i64, now_ms: i64) -> String {
    let d = now_ms.saturating_sub(ms);
    if d < 0 {
        format!("in {}", age_s(-d as f64 / 1e3))
    } else if d < 1_000 {
        "just now".to_string()
    } else {
        format!("{} ago", age_s(d as f64 / 1e3))
    }
}

/// `items` joined by `sep` into lines of at most `width` characters,
/// breaking only between items (an item longer than a line gets a line of
/// its own); each line but the last keeps its separator, trimmed.
pub fn wrap(items: &[String], sep: &str, width: usize) -> Vec<String> {
    let len = |s: &str| s.chars().count();
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, item) in items.iter().enumerate() {
        let piece = if i + 1 < items.len() {
            format!("{item}{sep}")
        } else {
            item.clone()
        };
        if !cur.is_empty() && len(&cur) + len(piece.trim_end()) > width {
            lines.push(cur.trim_end().to_string());
            cur.clear();
        }
        cur.push_str(&piece);
    }
    if !cur.is_empty() {
        lines.push(cur.trim_end().to_string());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percents() {
        assert_eq!(duration_nonzero(0), "-");
        assert_eq!(percent(1, 40), "2.5%");
        assert_eq!(percent(3, 4), "75%");
        assert_eq!(percent(0, 4), "0%");
        assert_eq!(percent(0, 0), "-");
    }

    #[test]
    fn truncation_keeps_both_ends() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(
            truncate("prod/payments-7d9f8b6c5-x2x4q/php", 20),
            "prod/payme…x2x4q/php"
        );
        assert_eq!(
            truncate("prod/payments-7d9f8b6c5-x2x4q/php", 20)
                .chars()
                .count(),
            20
        );
        assert_eq!(truncate("abcdef", 1), "…");
        assert_eq!(truncate("abcdef", 2), "a…");
        assert_eq!(truncate("µµµµµµ", 3), "µ…µ");
    }

    #[test]
    fn addresses_processes_states() {
        assert_eq!(endpoint("10.0.1.12", 6379), "10.0.1.12:6379");
        assert_eq!(endpoint("fd00::1", 53), "[fd00::1]:53");
        assert_eq!(endpoint("", 80), "*:80");
        assert_eq!(endpoint_of(None), "-");
        assert_eq!(process("curl", 4411), "curl(4411)");
        assert_eq!(process("", 0), "-");
        assert_eq!(process("", 7), "(7)");
        let m: HashMap<String, u64> = [
            ("CLOSE_WAIT".to_string(), 14),
            ("ESTABLISHED".to_string(), 198),
            ("TIME_WAIT".to_string(), 0),
            ("LISTEN".to_string(), 14),
        ]
        .into();
        assert_eq!(states(&m), "EST:198,CW:14,LISTEN:14");
        assert_eq!(states(&HashMap::new()), "-");
        let c: HashMap<String, u64> = [
            ("b".to_string(), 2),
            ("a".to_string(), 1),
            ("z".to_string(), 0),
        ]
        .into();
        assert_eq!(counters(&c), "a:1,b:2");
    }

    #[test]
    fn utc_times() {
        // 2025-03-01T07:31:02.123456789Z
        let ts = 1_740_814_262_123_456_789;
        assert_eq!(time_of_day_ns(ts), "07:31:02.123");
        assert_eq!(rfc3339_ns(ts), "2025-03-01T07:31:02.123456Z");
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000Z");
        // A leap day and the end of a century year.
        assert_eq!(
            rfc3339_ns(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_ns(978_307_199 * 1_000_000_000),
            "2000-12-31T23:59:59.000000Z"
        );
        assert_eq!(time_of_day_ms(1_740_814_262_123), "07:31:02.123");
    }

    #[test]
    fn local_times_and_ages() {
        let tz = jiff::tz::TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2025-03-01T07:31:02Z is 08:31:02 CET.
        let now = 1_740_814_262_123;
        assert_eq!(local_time(now - 60_000, now, &tz), "08:30:02 CET");
        assert_eq!(
            local_time(now - 9 * 3_600_000, now, &tz),
            "2025-02-28 23:31:02 CET"
        );
        // Summer time has its own name.
        assert_eq!(
            local_time(now + 120 * 86_400_000, now, &tz),
            "2025-06-29 09:31:02 CEST"
        );
        assert_eq!(local_time(0, now, &tz), "-");
        assert_eq!(ago(now - 1_860_000, now), "31m ago");
        assert_eq!(ago(now - 300, now), "just now");
        assert_eq!(ago(now + 5_000, now), "in 5s");
    }

    #[test]
    fn wrapping() {
        let items: Vec<String> = ["aaaa", "bbbb", "cc", "a-very-long-item"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            wrap(&items, "; ", 12),
            ["aaaa; bbbb;", "cc;", "a-very-long-item"]
        );
        assert_eq!(
            wrap(&items, "; ", 100),
            ["aaaa; bbbb; cc; a-very-long-item"]
        );
        assert!(wrap(&[], "; ", 10).is_empty());
    }
}
