//! Human formatting of durations, ages, byte counts and table rows.

use std::fmt::Write as _;

/// "850µs", "12.3ms", "1.02s", "—" for none.
pub fn duration_ns(ns: Option<u64>) -> String {
    let Some(ns) = ns else {
        return "-".to_string();
    };
    let us = ns as f64 / 1e3;
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1e6 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// "42s", "7m", "3h12m".
pub fn age_s(secs: f64) -> String {
    let s = secs as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

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

/// Column title, width and whether it is right-aligned (numbers are).
pub type Column = (&'static str, usize, bool);

/// One table line: each cell padded to its column's width.
pub fn columns(cells: &[String], columns: &[Column]) -> String {
    let mut line = String::new();
    for (cell, (_, width, right)) in cells.iter().zip(columns) {
        let width = *width;
        let _ = if *right {
            write!(line, "{cell:>width$} ")
        } else {
            write!(line, "{cell:<width$} ")
        };
    }
    line.trim_end().to_string()
}

/// The header line of a table.
pub fn header(cols: &[Column]) -> String {
    let titles: Vec<String> = cols.iter().map(|c| c.0.to_string()).collect();
    columns(&titles, cols)
}

pub fn socket(ip: &std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    }
}

/// Cuts `s` to `n` characters, marking the cut with an ellipsis.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(duration_ns(None), "-");
        assert_eq!(duration_ns(Some(850_000)), "850µs");
        assert_eq!(duration_ns(Some(12_300_000)), "12.3ms");
        assert_eq!(duration_ns(Some(1_020_000_000)), "1.02s");
        assert_eq!(age_s(42.9), "42s");
        assert_eq!(age_s(7.0 * 60.0), "7m");
        assert_eq!(age_s(3.0 * 3600.0 + 12.0 * 60.0), "3h12m");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5KiB");
    }
}
