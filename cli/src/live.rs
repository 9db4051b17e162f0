//! `-w`: ask again every few seconds. On a terminal each frame replaces
//! the last (like watch(1)); on a pipe frames follow each other, each under
//! a title line with its time, and JSON lines simply continue.

use std::{io::Write, time::Duration};

use tokio::time::Instant;

use crate::{args::Output, error::CliError, format};

/// Cursor home, then clear the screen.
pub const CLEAR: &str = "\x1b[H\x1b[2J";

/// "Every 2s: sockeye conns  unix:///run/sockeye/agent.sock  07:31:02 UTC".
pub fn title_line(title: &str, every: Duration, now_unix_ms: i64) -> String {
    let time = format::time_of_day_ms(now_unix_ms);
    // Seconds to the millisecond are noise in a clock line.
    let time = time.split('.').next().unwrap_or(&time);
    format!(
        "Every {}: {title}  {time} UTC\n",
        humantime::format_duration(every)
    )
}

/// One frame as written: what precedes the command's own output.
pub fn frame(
    text: &str,
    title: &str,
    every: Duration,
    now_unix_ms: i64,
    terminal: bool,
    output: Output,
    first: bool,
) -> String {
    if output == Output::Json {
        return text.to_string();
    }
    let mut out = String::new();
    if terminal {
        out.push_str(CLEAR);
    } else if !first {
        out.push('\n');
    }
    out.push_str(&title_line(title, every, now_unix_ms));
    out.push('\n');
    out.push_str(text);
    out
}

/// Renders `source` every `every` until `count` frames (or forever; the
/// user stops it with ^C). A failed request ends the loop with its error.
pub async fn refresh(
    mut source: impl AsyncFnMut() -> Result<String, CliError>,
    title: &str,
    every: Duration,
    count: Option<u64>,
    terminal: bool,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        let started = Instant::now();
        let text = source().await?;
        let shown = frame(
            &crate::safe::shown(&text, output),
            title,
            every,
            crate::now_unix_ms(),
            terminal,
            output,
            n == 0,
        );
        out.write_all(shown.as_bytes())?;
        out.flush()?;
        n += 1;
        if count.is_some_and(|c| n >= c) {
            break;
        }
        // The period is from start to start, so a slow answer does not
        // stretch it.
        tokio::time::sleep_until(started + every).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_740_814_262_123;

    #[test]
    fn frames_on_a_terminal_a_pipe_and_in_json() {
        let every = Duration::from_secs(2);
        assert_eq!(
            frame(
                "X\n",
                "sockeye conns  unix:///a.sock",
                every,
                T,
                true,
                Output::Table,
                true
            ),
            "\x1b[H\x1b[2JEvery 2s: sockeye conns  unix:///a.sock  07:31:02 UTC\n\nX\n"
        );
        assert_eq!(
            frame("X\n", "sockeye dns  t", every, T, false, Output::Wide, true),
            "Every 2s: sockeye dns  t  07:31:02 UTC\n\nX\n"
        );
        assert_eq!(
            frame(
                "X\n",
                "sockeye dns  t",
                Duration::from_millis(500),
                T,
                false,
                Output::Table,
                false
            ),
            "\nEvery 500ms: sockeye dns  t  07:31:02 UTC\n\nX\n"
        );
        assert_eq!(
            frame("{}\n", "t", every, T, true, Output::Json, false),
            "{}\n"
        );
    }

    #[tokio::test]
    async fn stops_after_count_and_on_the_first_error() {
        let mut out = Vec::new();
        let mut calls = 0;
        refresh(
            async || {
                calls += 1;
                Ok(format!("frame {calls}\n"))
            },
            "t",
            Duration::from_millis(100),
            Some(3),
            false,
            Output::Table,
            &mut out,
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("Every 100ms: t").count(), 3, "{text}");
        assert!(
            text.contains("frame 1\n") && text.ends_with("frame 3\n"),
            "{text}"
        );

        let mut out = Vec::new();
        let e = refresh(
            async || Err(CliError::BothTargets),
            "t",
            Duration::from_millis(100),
            None,
            false,
            Output::Table,
            &mut out,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, CliError::BothTargets));
        assert!(out.is_empty());
    }
}
