//! Text that came from the kernel or from peers (process names, DNS names
//! from packets, pod names and labels, cgroup paths, what an agent put in a
//! window), made safe to print on a terminal; also `sockeye_proto::text`
//! for the CLI and the collector.
//!
//! A hostile container can name its process `\x1b]0;pwned\x07`, ask DNS for
//! a name with an escape sequence in it, or push a window whose labels carry
//! one; printed as is, that moves the cursor, rewrites the screen or the
//! window title, or hides text. Every renderer (the agent's table, the CLI's
//! tables, both binaries' logs) passes such text through [`escape`].

use std::{borrow::Cow, fmt::Write as _};

/// Whether a terminal would act on `c` instead of showing it: the C0 and C1
/// control characters and DEL (Unicode's `Cc`, which includes ESC and the
/// 8-bit CSI U+009B), and the bidirectional formatting characters, which
/// reorder what follows them on screen.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every [unsafe](is_unsafe) character written out visibly: `\n`,
/// `\r` and `\t` by those names, other characters below U+0100 as `\xHH`,
/// the rest as `\u{HHHH}`. Safe text (nearly all of it) is returned as is,
/// without a copy. A backslash is left alone: cgroup paths carry systemd's
/// own `\x2d` escapes, which should read as they are; the escaped form is for
/// eyes, not for parsing back.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_unsafe(c) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\n' => write!(out, "\\n"),
            '\r' => write!(out, "\\r"),
            '\t' => write!(out, "\\t"),
            c if (c as u32) < 0x100 => write!(out, "\\x{:02x}", c as u32),
            c => write!(out, "\\u{{{:04x}}}", c as u32),
        };
    }
    Cow::Owned(out)
}

/// [`escape`] line by line: the line breaks of a rendered table or block
/// stay, everything else unsafe is written out.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&escape(line));
    }
    Cow::Owned(out)
}

/// JSON text (serde_json escapes C0 controls, not DEL, C1 or bidi
/// characters) with every [unsafe](is_unsafe) character left as a JSON
/// `\uXXXX` escape: the same JSON to a parser, inert on a terminal. Outside
/// strings JSON holds only printable ASCII, so this never changes structure.
pub fn escape_json(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c != '\n' && is_unsafe(c) {
            // Every unsafe character is in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_text_is_borrowed_unchanged() {
        for s in ["", "shop/checkout-7d9f/app", "münchen.example.", "a\\x2db"] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }

    #[test]
    fn control_sequences_are_written_out() {
        assert_eq!(escape("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(escape("a\nb\rc\td\x7f"), "a\\nb\\rc\\td\\x7f");
        // 8-bit CSI: some terminals act on it even in UTF-8.
        assert_eq!(escape("x\u{9b}2J"), "x\\x9b2J");
        // A right-to-left override reorders the rest of the line.
        assert_eq!(escape("evil\u{202e}gnp.exe"), "evil\\u{202e}gnp.exe");
        assert_eq!(escape("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn rendered_text_keeps_its_lines_and_json_stays_json() {
        assert_eq!(escape_lines("a\x1b[2J\nb\n"), "a\\x1b[2J\nb\n");
        assert!(matches!(escape_lines("a\nb\n"), Cow::Borrowed(_)));
        let json = "{\"comm\":\"x\u{9b}2J\u{202e}\"}\n";
        assert_eq!(escape_json(json), "{\"comm\":\"x\\u009b2J\\u202e\"}\n");
    }

    #[test]
    fn escaped_text_has_nothing_left_to_escape() {
        let once = escape("\x1b[31mred\x1b[0m\u{202e}");
        assert!(!once.chars().any(is_unsafe));
        assert!(matches!(escape(&once), Cow::Borrowed(_)));
    }
}
