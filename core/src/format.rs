//! Human formatting of durations, ages, byte counts and addresses, one
//! vocabulary for the agent's table, findings' words and the CLI.

pub use crate::text::escape;

/// "850µs", "12.3ms", "1.02s", "3m05s"; "-" when there is no value.
pub fn duration_ns(ns: Option<u64>) -> String {
    let Some(ns) = ns else {
        return "-".to_string();
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    let us = ns as f64 / 1e3;
    // Rounding can carry a value into the next unit ("999.96µs" would
    // print as "1000µs"), so compare the rounded text's magnitude.
    if us < 999.5 {
        return format!("{us:.0}µs");
    }
    let ms = us / 1e3;
    if ms < 99.95 {
        return format!("{ms:.1}ms");
    }
    if ms < 999.5 {
        return format!("{ms:.0}ms");
    }
    let s = ms / 1e3;
    if s < 59.995 {
        return format!("{s:.2}s");
    }
    let whole = ns / 1_000_000_000;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        age_s(whole as f64)
    }
}

/// "42s", "7m", "3h12m", "2d03h".
pub fn age_s(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_string();
    }
    let s = secs as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// "512B", "1.5KiB", "3.2MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// A measured value as people write it: "212", "0.25", "1.5e-7".
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    if v.abs() >= 0.001 {
        let s = format!("{v:.3}");
        return s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{v:e}")
}

pub fn socket(ip: &std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ns(None), "-");
        assert_eq!(duration_ns(Some(999)), "999ns");
        assert_eq!(duration_ns(Some(12_400)), "12µs");
        assert_eq!(duration_ns(Some(850_000)), "850µs");
        // Rounds up into the next unit rather than printing "1000µs".
        assert_eq!(duration_ns(Some(999_700)), "1.0ms");
        assert_eq!(duration_ns(Some(1_230_000)), "1.2ms");
        assert_eq!(duration_ns(Some(12_300_000)), "12.3ms");
        assert_eq!(duration_ns(Some(99_960_000)), "100ms");
        assert_eq!(duration_ns(Some(850_000_000)), "850ms");
        assert_eq!(duration_ns(Some(999_600_000)), "1.00s");
        assert_eq!(duration_ns(Some(1_020_000_000)), "1.02s");
        assert_eq!(duration_ns(Some(59_990_000_000)), "59.99s");
        assert_eq!(duration_ns(Some(65_000_000_000)), "1m05s");
        assert_eq!(duration_ns(Some(3 * 3600 * 1_000_000_000)), "3h00m");
    }

    #[test]
    fn ages_bytes() {
        assert_eq!(age_s(42.9), "42s");
        assert_eq!(age_s(7.0 * 60.0 + 59.0), "7m");
        assert_eq!(age_s(3.0 * 3600.0 + 12.0 * 60.0), "3h12m");
        assert_eq!(age_s(2.0 * 86_400.0 + 3.0 * 3600.0), "2d03h");
        assert_eq!(age_s(f64::NAN), "-");
        assert_eq!(age_s(-1.0), "-");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 200 * 1024), "3.2MiB");
    }

    #[test]
    fn numbers() {
        assert_eq!(number(212.0), "212");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(40.0 / 3.0), "13.333");
        assert_eq!(number(-3.5), "-3.5");
        assert_eq!(number(0.000_15), "1.5e-4");
    }
}
