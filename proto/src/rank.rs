//! The order of a finding's severity and confidence, which travel as text
//! ("critical", "high", ...): for sorting and merging, in one place.

/// "info" < "warning" < "critical"; anything else below them.
pub fn severity(s: &str) -> u8 {
    match s {
        "critical" => 3,
        "warning" => 2,
        "info" => 1,
        _ => 0,
    }
}

/// "low" < "medium" < "high"; anything else below them.
pub fn confidence(s: &str) -> u8 {
    match s {
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}
